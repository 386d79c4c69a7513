"""Command-line front end: `rdnas <command>` (also `python -m rdnas <command>`).

One module per command, each with ``add_parser(commands)`` and ``run(args) -> int``; heavy modules are imported
inside ``run``, so the CLI starts fast. Shared argparse types and output helpers live in arguments.py.
"""

import argparse
import os
import sys

from rdnas.cli import arch, bench, dass, demo, evaluate, merge_tables, predictor, proxies, search, teacher, train

COMMANDS = {"demo": demo, "train": train, "eval": evaluate, "proxies": proxies, "merge-tables": merge_tables,
            "search": search, "arch": arch, "bench": bench, "predictor": predictor,
            "teacher": teacher, "dass": dass}  # in the order of `rdnas --help`


class _CommandListFormatter(argparse.HelpFormatter):
    """`rdnas --help` lists every command with its summary on one line: wide, and aligned past the longest command
    (argparse measures the commands without their extra indent, which pushed merge-tables' summary to a new line)."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=140)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            self._action_max_length += self._indent_increment


def build_parser() -> argparse.ArgumentParser:
    import rdnas

    parser = argparse.ArgumentParser(
        prog="rdnas",
        description="Ranking distillation for one-shot neural architecture search (RD-NAS).",
        formatter_class=_CommandListFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rdnas {rdnas.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


# Commands that run under torchrun (WORLD_SIZE > 1): each splits its work across the ranks (see rdnas.distributed);
# proxies shards with --shard env. A command with sub-commands is named whole ("bench") or by one sub-command
# ("dass bench"). The others run in one process.
DISTRIBUTED_COMMANDS = ("demo", "train", "eval", "search", "bench", "proxies", "dass bench")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    size = _launched_size()
    if size <= 1:
        return _handled(args, "")
    if args.command not in DISTRIBUTED_COMMANDS and command_name(args) not in DISTRIBUTED_COMMANDS:
        print(f"rdnas {args.command}: error: this command runs in one process, but WORLD_SIZE={size} (torchrun); the "
              f"commands that run on several are {', '.join(DISTRIBUTED_COMMANDS)}", file=sys.stderr)
        return 2
    from rdnas.run_folder import exit_with_launcher

    exit_with_launcher(command_name(args))  # a worker whose launcher (torchrun) is killed stops, not writing on
    body = _distributed_main
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):  # torchrun: its failure summary then shows this rank's traceback
        from torch.distributed.elastic.multiprocessing.errors import record

        body = record(body)
    return body(args)


def _launched_size() -> int:
    from rdnas.distributed import launched_size

    try:
        return launched_size()
    except ValueError:
        return 1  # rdnas.distributed.init names the bad value where a command needs it


def _distributed_main(args) -> int:
    """One rank of a torchrun job: errors name the rank; the process group is left at the end. A rank that finished
    its work then ends at once with its exit code (``os._exit``, after flushing its output), without the
    interpreter's teardown: there, gloo's threads were seen to abort the process (SIGABRT, "terminate called without
    an active exception", in about 1 of 20 two-process runs on the 2-core machine, with or without the shared
    memory sum), and torchrun then reports a finished job as failed."""
    from rdnas import distributed

    label = f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}: "
    finished = False
    try:
        with distributed.failure_named(command_name(args)):
            code = _handled(args, label)
        finished = True
    finally:
        distributed.shutdown(finished)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _handled(args, where: str) -> int:
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: the message names what was expected
        print(f"rdnas {command_name(args)}: {where}error: {error}", file=sys.stderr)
        return 2
    finally:
        from rdnas.run_folder import release_claims

        release_claims()  # the run folders and files this command locked


def command_name(args) -> str:
    """The command as typed, with its sub-command where it has one: "train", "bench build", "predictor fit"."""
    sub = next((value for name, value in vars(args).items() if name.endswith("_command") and value), None)
    return f"{args.command} {sub}" if sub else args.command


def _run(args) -> int:
    if args.command not in COMMANDS:
        raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands
    return COMMANDS[args.command].run(args)

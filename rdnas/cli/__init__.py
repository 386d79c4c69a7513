"""Command-line front end: `rdnas <command>` (also `python -m rdnas <command>`).

One module per command, each with ``add_parser(commands)`` and ``run(args) -> int``; heavy modules are imported
inside ``run``, so the CLI starts fast. Shared argparse types and output helpers live in arguments.py.
"""

import argparse
import sys

from rdnas.cli import arch, bench, demo, evaluate, merge_tables, predictor, proxies, search, train

COMMANDS = {"demo": demo, "train": train, "eval": evaluate, "proxies": proxies, "merge-tables": merge_tables,
            "search": search, "arch": arch, "bench": bench, "predictor": predictor}  # in the order of `rdnas --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdnas",
        description="Ranking distillation for one-shot neural architecture search (RD-NAS).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: the message names what was expected
        print(f"rdnas {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command not in COMMANDS:
        raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands
    return COMMANDS[args.command].run(args)

"""The run / report harness shared by the experiment scripts (predictor_experiments.py, search_experiments.py,
learned_teacher_experiment.py).

An experiment is a list of jobs (e.g. (model, N, seed)), one JSON file per job. ``run`` runs the jobs whose file
does not exist yet and writes each file atomically when its job ends, so a script can be stopped and restarted at
any time, and several processes can share the work (each takes a subset through the script's options).
``run --dry-run`` lists which jobs are done and which would run, without running any. ``report`` reads the
files back (:func:`load_results`) and prints the script's table.

A script defines its jobs, ``run_one`` and ``report`` and hands them to :func:`main`::

    def run(args):
        return run_pending(jobs, result_path, run_one, label, summary, dry_run=args.dry_run, prepare=load_tables)

    sys.exit(command_line(__doc__, run, report, choices_option="--methods", choices=METHODS, ...))
"""

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rdnas.atomic_file import write_text_atomic


def comma_list(kind: Callable = str) -> Callable[[str], list]:
    """An argparse type: ``"a,b,,c"`` -> ``[kind("a"), kind("b"), kind("c")]`` (empty items dropped)."""
    def parse(text: str) -> list:
        return [kind(item) for item in text.split(",") if item]
    return parse


def run_pending(jobs: Iterable[tuple], result_path: Callable[..., Path], run_one: Callable[..., dict],
                label: Callable[..., str], summary: Callable[[dict, float], str], dry_run: bool = False,
                prepare: Callable[[], object] | None = None, indent: int | None = None) -> int:
    """Runs every job whose result file does not exist yet, in order.

    Args:
        jobs: tuples of job arguments; ``result_path(*job)`` is the job's JSON file.
        run_one: ``run_one(*job)`` (or ``run_one(context, *job)`` with ``prepare``) -> the result dict.
        label: ``label(*job)``, how the job is named in the progress lines.
        summary: ``summary(result, seconds)``, the rest of a finished job's progress line.
        dry_run: list the jobs ("done already" or "to run") and run none.
        prepare: called once, before the first job that runs (never when every job is done): loads what the
            jobs share (tables, teachers); its return value becomes ``run_one``'s first argument.
        indent: the JSON files' indentation (None: one line).

    Returns:
        0 (the exit status).
    """
    context, prepared, pending = None, False, 0
    for job in jobs:
        path = result_path(*job)
        if path.exists():
            print(f"{label(*job)}: done already ({path.name})")
            continue
        pending += 1
        if dry_run:
            print(f"{label(*job)}: to run ({path.name})")
            continue
        if prepare is not None and not prepared:
            context, prepared = prepare(), True
        started = time.perf_counter()
        result = run_one(context, *job) if prepare is not None else run_one(*job)
        seconds = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=indent))
        print(f"{label(*job)}: {summary(result, seconds)}", flush=True)
    if dry_run:
        print(f"{pending} job(s) to run")
    return 0


def shard(text: str) -> tuple[int, int]:
    """An argparse ``type`` for a script's ``--shard i/n``: ``(i, n)`` with 0 <= i < n
    (:func:`rdnas.distributed.parse_shard`), anything else a usage error naming the expected form."""
    from rdnas.distributed import parse_shard

    try:
        return parse_shard(text, "--shard")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--shard: ")) from None


def shard_jobs(jobs: Sequence, chosen: tuple[int, int] | None) -> list:
    """The jobs of shard ``chosen`` = (i, n) (:func:`shard`): those at positions p with p mod n = i, for one process
    per core side by side; every job where ``chosen`` is None."""
    if chosen is None:
        return list(jobs)
    first, count = chosen
    return list(jobs)[first::count]


def table_sha256(path) -> str:
    """The SHA-256 (hex) of a ground-truth table's bytes: a file, or a table rdnas ships (``shipped:<name>``,
    :func:`rdnas.rank.ground_truth.table_path`). Experiments record it so that runs on different tables never mix."""
    import hashlib

    from rdnas.rank.ground_truth import table_path

    return hashlib.sha256(table_path(path).read_bytes()).hexdigest()


def load_table(path, column: str, option: str, space: str = "nb201"):
    """The ground-truth table at ``path`` (a file or ``shipped:<name>``) with ``column``; a missing, malformed or
    foreign table, or one without ``column``, exits with one line naming ``option`` (rdnas.cli.checkpoint.read_table)
    instead of a traceback."""
    from rdnas.cli.checkpoint import read_table

    try:
        return read_table(path, space, column, option)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def load_results(folder: Path, pattern: str = "*.json") -> list[dict]:
    """Every result file of ``folder`` matching ``pattern``, in file-name order."""
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob(pattern))]


def command_line(description: str, run: Callable[[argparse.Namespace], int],
                 report: Callable[[argparse.Namespace], int], choices_option: str, choices: Sequence[str],
                 defaults: Sequence[str] | None = None,
                 run_options: Callable[[argparse.ArgumentParser], None] | None = None,
                 report_options: Callable[[argparse.ArgumentParser], None] | None = None, run_help: str = "",
                 report_help: str = "", choices_help: str | None = None, argv: Sequence[str] | None = None) -> int:
    """The command line of an experiment script: ``run [--<choices> a,b] [--dry-run] [script options]`` and
    ``report [script options]``; a name outside ``choices`` is a usage error (exit 2) naming the valid ones.

    Args:
        description: the script's docstring (``--help``).
        run, report: called with the parsed arguments; their return value is the exit status.
        choices_option: the option that picks what to run, e.g. ``"--models"`` or ``"--methods"``; parsed as a
            comma list into ``args.<name>``.
        choices, defaults: every valid name, and those run by default (all of ``choices`` if None).
        run_options, report_options: add the script's own options to each step's parser.
        run_help, report_help, choices_help: help lines.
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    defaults = list(choices if defaults is None else defaults)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    run_parser = steps.add_parser("run", help=run_help)
    run_parser.add_argument(choices_option, type=comma_list(), default=defaults,
                            help=choices_help or f"default: {','.join(defaults)}")
    run_parser.add_argument("--dry-run", action="store_true",
                            help="list the finished runs and those that would run; run nothing")
    if run_options is not None:
        run_options(run_parser)
    report_parser = steps.add_parser("report", help=report_help)
    if report_options is not None:
        report_options(report_parser)
    args = parser.parse_args(argv)
    if args.step == "run":
        picked = getattr(args, choices_option.lstrip("-").replace("-", "_"))
        unknown = set(picked) - set(choices)
        if unknown:
            kind = choices_option.lstrip("-").removesuffix("s")
            parser.error(f"unknown {kind}(s) {sorted(unknown)}; {kind}s: {', '.join(choices)}")
        return run(args)
    return report(args)

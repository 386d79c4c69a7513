"""How reproducible the KD benchmark's labels are: the same students, trained again, against themselves.

Two comparisons per task, both Spearman over the task's students (and the mean and spread of the differences):

- ``rebuild``: the runs a build set aside because their teacher was lost (``SUPERSEDED``, one CSV of run rows with
  their teacher digests) against the rebuilt runs of the same (student, seed, regime): the same recipe, but a
  teacher retrained from its recipe on another CPU (another digest) and the students trained there too. This is
  how far a label moves when nothing changes but the machine;
- ``seeds``: seed 0 against seed 1 of the build's own runs (the meta-test tasks have both): the seed ceiling the
  evaluation reports, for comparison.

    PYTHONPATH=. python benchmarks/dass_label_agreement.py \\
        [--bench benchmarks/results/dass_kdbench] [--superseded BENCH/superseded/kd_runs_of_lost_teachers.csv] \\
        [--regime kd] [--out BENCH/superseded/agreement.json]

It writes the JSON and a Markdown table beside it (``.md``) and prints the table. Nothing is trained.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rdnas.atomic_file import write_text_atomic
from rdnas.kd.bench import REGIMES, read_run_rows, read_runs
from rdnas.kd.evaluation import seed_ceiling
from rdnas.rank import spearman_rho
from rdnas.rank.metrics import UndefinedRankCorrelation

BENCH = Path(__file__).resolve().parent / "results" / "dass_kdbench"
MIN_STUDENTS = 3


def _pair(first: dict, second: dict) -> dict | None:
    """Spearman and differences over the keys both ``{student: accuracy}`` maps have; None below 3 students."""
    shared = sorted(set(first) & set(second))
    if len(shared) < MIN_STUDENTS:
        return None
    a, b = np.array([first[k] for k in shared]), np.array([second[k] for k in shared])
    try:
        rho = spearman_rho(a.tolist(), b.tolist())
    except UndefinedRankCorrelation:  # constant accuracies on one side
        rho = float("nan")
    return {"students": len(shared), "spearman": float(rho), "mean_first": float(a.mean()),
            "mean_second": float(b.mean()), "difference_mean": float((b - a).mean()),
            "difference_std": float((b - a).std()), "spread_second": float(b.std())}


def agreement(runs: list[dict], superseded: list[dict], regime: str) -> dict:
    """Per task: ``rebuild`` (superseded against rebuilt runs, one :func:`_pair` entry per seed; None where fewer
    than 3 students are shared) and ``seeds`` (the build's seed ceiling over the students of its seed 0,
    :func:`rdnas.kd.evaluation.seed_ceiling`, with ``students``; None with one seed). Teacher digests of both
    sides are kept."""
    def by_task_seed(rows):
        table = {}
        for r in rows:
            if r["regime"] == regime:
                table.setdefault((r["task"], r["seed"]), {})[r["arch_str"]] = r["valid_acc"]
        return table

    new, old = by_task_seed(runs), by_task_seed(superseded)
    digests = {side: {r["task"]: r["teacher"] for r in rows if r["regime"] == regime}
               for side, rows in (("superseded", superseded), ("rebuilt", runs))}
    tasks = list(dict.fromkeys(task for task, _ in [*old, *new]))
    result = {}
    for task in tasks:
        entry = {"teachers": {side: digests[side].get(task) for side in digests},
                 "rebuild": {str(seed): _pair(old[(task, seed)], new[(task, seed)])
                             for (name, seed) in old if name == task and (task, seed) in new},
                 "seeds": None}
        students = list(new.get((task, 0), {}))
        ceiling = seed_ceiling(runs, task, students, regime) if students else None
        if ceiling is not None:
            entry["seeds"] = {**ceiling, "students": len(students)}
        result[task] = entry
    return result


def table(result: dict, regime: str) -> str:
    """The Markdown table of :func:`agreement`."""
    def cell(pair):
        return "-" if pair is None else f"{pair['spearman']:.2f} ({pair['students']})"

    lines = [f"Spearman of {regime} validation accuracy over each task's students (students compared). 'another "
             "machine': the same seed, teacher and students retrained from their recipe on another CPU; "
             "'another seed': seeds 0 and 1 of one build.", "",
             "| task | another machine, seed 0 | mean difference (points) | sd of the difference | sd of the students "
             "| another seed |",
             "|---|---:|---:|---:|---:|---:|"]
    for task, entry in result.items():
        pair = entry["rebuild"].get("0")
        difference = "-" if pair is None else f"{pair['difference_mean']:+.2f}"
        noise = "-" if pair is None else f"{pair['difference_std']:.2f}"
        signal = "-" if pair is None else f"{pair['spread_second']:.2f}"
        lines.append(f"| {task} | {cell(pair)} | {difference} | {noise} | {signal} | {cell(entry['seeds'])} |")
    rhos = [e["rebuild"]["0"]["spearman"] for e in result.values() if e["rebuild"].get("0")]
    seeds = [e["seeds"]["spearman"] for e in result.values() if e["seeds"]]
    lines.append(f"| mean | {np.nanmean(rhos):.2f} ({len(rhos)} tasks) | | | | "
                 + (f"{np.nanmean(seeds):.2f} ({len(seeds)} tasks) |" if seeds else "- |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, default=BENCH, help=f"the build folder (default {BENCH})")
    parser.add_argument("--superseded", type=Path,
                        help="the set-aside runs (default BENCH/superseded/kd_runs_of_lost_teachers.csv)")
    parser.add_argument("--regime", default="kd", choices=REGIMES, help="the regime compared (default kd)")
    parser.add_argument("--out", type=Path, help="the JSON (default BENCH/superseded/agreement.json)")
    args = parser.parse_args(argv)
    superseded = args.superseded or args.bench / "superseded" / "kd_runs_of_lost_teachers.csv"
    if not superseded.is_file():
        parser.error(f"--superseded: no file {superseded}")
    try:
        runs, old = read_runs(args.bench), read_run_rows(superseded, "a KD run row")
    except ValueError as error:
        parser.error(str(error))
    if not runs:
        parser.error(f"--bench: no runs in {args.bench}")
    result = agreement(runs, old, args.regime)
    out = args.out or args.bench / "superseded" / "agreement.json"
    text = table(result, args.regime)
    write_text_atomic(out, json.dumps({"regime": args.regime, "bench": str(args.bench),
                                       "superseded": str(superseded), "tasks": result}, indent=1) + "\n")
    write_text_atomic(out.with_suffix(".md"), text)
    print(text)
    print(f"-> {out}, {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

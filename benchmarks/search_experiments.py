"""Search on NAS-Bench-201's ground truth at equal query budgets (issue 18): NAR's sampling search (with NAR, and
with the gradient-boosted trees as its predictor) against random search and regularised evolution.

Every method queries ``cifar10_valid_acc`` of the cells it picks (each cell counts once; disconnected cells are
never proposed) and, after q queries, returns the cell with the best validation accuracy so far; the table reports
that cell's ``cifar10_test_acc`` at q = 25, 50, 75, 100 (mean ± std over runs; the report prints the space's best
test accuracy beside it) and how often the final pick is among the space's top 0.1 % by test accuracy. Seeds
0..R-1, one JSON per (method, seed) in ``benchmarks/results/search/``; finished runs are skipped::

    OMP_NUM_THREADS=1 python benchmarks/search_experiments.py run --runs 25
    python benchmarks/search_experiments.py report

Settings: budget 100; evolution: population 20, tournament 5, one child per query (Real et al.); sampling search:
50 random queries, then 2 rounds of 25 (fit on everything queried so far; top tier = best fifth; 20,000 uniform
draws resampled to 2,000 candidates by the top tier's op frequencies, FLOPs within the top tier's range, NAR's
predicted top tier, ranked by score). NAR runs on NB201's 7 stage tokens (``cells="stages"``); ``-live``: the
predictor sees the live cell (``edges="live"``, see rdnas.predictors.features).
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from experiment_harness import command_line, load_results, run_pending
from rdnas.atomic_file import write_text_atomic
from rdnas.predictors import ArchFeatures, NARPredictor, get_predictor
from rdnas.predictors.sampling_search import sampling_search
from rdnas.rank import GroundTruth
from rdnas.search import evolution_search, random_search
from rdnas.spaces import nb201

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "search"
DATA = ROOT.parent.parent / "shared" / "data"
BUDGET = 100
CHECKPOINTS = (25, 50, 75, 100)
METHODS = ("random", "evolution", "sampling+nar", "sampling+gbt", "sampling+nar-live", "sampling+gbt-live")


def run_method(method: str, seed: int, valid: torch.Tensor):
    def fitness(archs):
        return valid[nb201.SPACE.index(archs)]

    if method == "random":
        return random_search(fitness, BUDGET, seed=seed)
    if method == "evolution":
        return evolution_search(fitness, BUDGET, seed=seed, population=20, sample_size=5, batch=1)
    kind, _, edges = method.split("+")[1].partition("-")
    features = ArchFeatures("nb201", cells="stages" if kind == "nar" else "all", edges=edges or "all")
    # NAR on the authors' input ran at their batch size, as recorded; "-live": rdnas's defaults
    options = {"batch_size": NARPredictor.AUTHORS_BATCH_SIZE} if kind == "nar" and not edges else {}
    return sampling_search(fitness, BUDGET, lambda: get_predictor(kind)(features=features, seed=seed, **options),
                           seed=seed)


def result_path(method: str, seed: int) -> Path:
    return RUNS / f"{method.replace('+', '_')}_seed{seed}.json"


def run_one(context, method: str, seed: int) -> dict:
    valid, test = context
    started = time.perf_counter()
    history = run_method(method, seed, valid)
    seconds = time.perf_counter() - started
    archs = torch.tensor(history.archs, dtype=torch.long)
    index = nb201.SPACE.index(archs).numpy()
    best = np.maximum.accumulate(np.asarray(history.scores))  # best validation accuracy after q queries
    pick = [int(index[int(np.argmax(np.asarray(history.scores[:q])))]) for q in range(1, len(index) + 1)]
    return {"method": method, "seed": seed, "budget": BUDGET, "queried_index": index.tolist(),
            "best_valid": best.tolist(), "picked_test": [float(test[i]) for i in pick],
            "seconds": seconds, "torch": torch.__version__, "machine": platform.machine()}


def run(args) -> int:
    def prepare():
        gt = GroundTruth.load(args.gt)
        everything = nb201.all_archs()
        return torch.from_numpy(gt.values(everything, "cifar10_valid_acc")), gt.values(everything, "cifar10_test_acc")

    jobs = [(method, seed) for method in args.methods for seed in range(args.runs)]
    return run_pending(jobs, result_path, run_one, lambda method, seed: f"{method:13} seed {seed:2}",
                       lambda result, seconds: f"final pick test {result['picked_test'][-1]:.2f} % "
                       f"({result['seconds']:.0f} s)", dry_run=args.dry_run, prepare=prepare)


def report(args) -> int:
    gt = GroundTruth.load(args.gt)
    test = gt.values(nb201.all_archs(), "cifar10_test_acc")
    top = np.sort(test)[::-1][max(1, len(test) // 1000) - 1]  # the 0.1 % cut
    results = {}
    for result in load_results(RUNS, "*_seed*.json"):
        results.setdefault(result["method"], []).append(result)
    if not results:
        print("no runs yet: run `python benchmarks/search_experiments.py run` first", file=sys.stderr)
        return 1
    lines = ["| method | runs | " + " | ".join(f"q = {q}" for q in CHECKPOINTS)
             + f" | pick at q = {BUDGET} in the top 0.1 % | vs random at q = {BUDGET} (Mann-Whitney p) | s per run |",
             "|---|---:|" + "---:|" * (len(CHECKPOINTS) + 3)]
    summary = {}
    baseline = [r["picked_test"][-1] for r in results.get("random", [])]
    for method in [m for m in METHODS if m in results]:
        runs = results[method]
        cells = []
        for q in CHECKPOINTS:
            values = np.array([r["picked_test"][q - 1] for r in runs if len(r["picked_test"]) >= q])
            cells.append(f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else "")
        final = [r["picked_test"][-1] for r in runs]
        in_top = float(np.mean([value >= top for value in final]))
        versus = "-"
        if method != "random" and len(baseline) > 1:
            versus = f"{mannwhitneyu(final, baseline, alternative='two-sided').pvalue:.3f}"
        seconds = float(np.mean([r["seconds"] for r in runs]))
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + f" | {in_top:.0%} | {versus} | "
                     f"{seconds:.1f} |")
        summary[method] = {"runs": len(runs), "final_test_mean": float(np.mean(final)),
                           "final_test_std": float(np.std(final, ddof=1)) if len(final) > 1 else None,
                           "final_in_top_0.1pct": in_top, "seconds_mean": seconds,
                           **{f"test_after_{q}": float(np.mean([r["picked_test"][q - 1] for r in runs]))
                              for q in CHECKPOINTS}}
    text = (f"Test accuracy (CIFAR-10, %) of the best-by-validation cell after q ground-truth queries, NB201; "
            f"mean ± std over runs. Best test accuracy in the space: {test.max():.2f} %; top 0.1 % cut: "
            f"{top:.2f} %.\n\n" + "\n".join(lines))
    print(text)
    write_text_atomic(RESULTS / "search_experiments.json", json.dumps(summary, indent=1))
    return 0


def run_options(parser) -> None:
    parser.add_argument("--runs", type=int, default=25, help="seeds 0..runs-1 (default 25)")
    parser.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))


def report_options(parser) -> None:
    parser.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))


if __name__ == "__main__":
    sys.exit(command_line(__doc__, run, report, "--methods", METHODS, run_options=run_options,
                          report_options=report_options, run_help="run every method for seeds 0..runs-1; resumable",
                          report_help="the Markdown table and benchmarks/results/search_experiments.json"))

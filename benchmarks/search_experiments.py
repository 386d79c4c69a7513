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

``--table T``: the same methods, settings and seeds against another whole-space NB201 table as the ground truth,
e.g. the digits table of every cell (issue 27; ``benchmarks/results/nb201_digits_full/table_partial.csv`` while it
is built, ``rdnas/minibench/data/nb201_digits_full.csv`` once shipped). The table is read with
:class:`rdnas.rank.GroundTruth` (rows matched by architecture string; every one of the 15,625 cells must have a
row, isomorphic cells share one); each method queries ``--column`` (default ``digits_valid_acc``) and after q
queries holds the best value found, whose regret is the table's best minus it (one column: no separate test
column). Each string counts as one query, as on CIFAR-10, even where an isomorphic string was queried before.
Runs go to ``benchmarks/results/nb201_digits_full_search/<table>-<seeds>-<sha256[:8]>/`` (one folder per table
content, so runs on different tables never mix); ``report --table T`` writes ``<that name>.json``, ``.md`` and
``.png`` (best accuracy and regret against queries) beside it, each naming the table, its SHA-256 and seeds::

    OMP_NUM_THREADS=1 python benchmarks/search_experiments.py run --table rdnas/minibench/data/nb201_digits_full.csv
    python benchmarks/search_experiments.py report --table rdnas/minibench/data/nb201_digits_full.csv
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from experiment_harness import command_line, load_results, run_pending, table_sha256
from rdnas.atomic_file import write_text_atomic
from rdnas.predictors import ArchFeatures, NARPredictor, get_predictor
from rdnas.predictors.sampling_search import sampling_search
from rdnas.rank import GroundTruth
from rdnas.rank.ground_truth import table_path
from rdnas.search import evolution_search, random_search
from rdnas.spaces import nb201

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "search"
DATA = ROOT.parent.parent / "shared" / "data"
BUDGET = 100
CHECKPOINTS = (25, 50, 75, 100)
METHODS = ("random", "evolution", "sampling+nar", "sampling+gbt", "sampling+nar-live", "sampling+gbt-live")
TABLE_RESULTS = RESULTS / "nb201_digits_full_search"  # --table runs: one folder per table content
TABLE_CHECKPOINTS = (10, 25, 50, 75, 100)


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


def load_table(path, column: str) -> tuple:
    """A whole-space NB201 table as the ground truth of a search: ``column`` of every one of the 15,625 cells in
    rdnas's enumeration order (Tensor[15625], float64; read with GroundTruth, rows matched by architecture) and a
    description ({"table", "sha256", "column", "seeds_per_cell" (the ``seeds`` column's values over trained
    cells), "trained_cells", "best", "name"}). ValueError naming ``--table`` when the table cannot be read or lacks
    the column or a cell."""
    path = table_path(path)
    try:
        gt = GroundTruth.load(path, "nb201")
        gt.require_columns(column)
        values = gt.values(nb201.all_archs(), column)
    except (OSError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # a KeyError's str quotes
        raise ValueError(f"--table {path}: {message} (a whole-space table gives each of the 15,625 NB201 cells a "
                         "row, e.g. nb201_digits_full.py's)") from None
    sha = table_sha256(path)
    trained = gt.columns["trained"] > 0 if "trained" in gt.columns else np.ones(len(gt), dtype=bool)
    seeds = sorted({int(s) for s in gt.columns["seeds"][trained]}) if "seeds" in gt.columns else []
    seeds_label = "-".join(str(s) for s in seeds) + ("seed" if seeds == [1] else "seeds") if seeds else "seeds-unknown"
    try:
        shown = str(path.resolve().relative_to(ROOT.parent))
    except ValueError:
        shown = str(path)
    return torch.from_numpy(values), {
        "table": shown, "sha256": sha, "column": column, "seeds_per_cell": seeds, "trained_cells": int(trained.sum()),
        "best": float(values.max()), "name": f"{path.stem}-{seeds_label}-{sha[:8]}"}


def table_result_path(table: dict, method: str, seed: int) -> Path:
    return TABLE_RESULTS / table["name"] / f"{method.replace('+', '_')}_seed{seed}.json"


def run_one_table(context, method: str, seed: int) -> dict:
    values, table = context
    started = time.perf_counter()
    history = run_method(method, seed, values)
    seconds = time.perf_counter() - started
    index = nb201.SPACE.index(torch.tensor(history.archs, dtype=torch.long)).numpy()
    best = np.maximum.accumulate(np.asarray(history.scores))  # the best value found after q queries
    return {"method": method, "seed": seed, "budget": BUDGET, "table": table["table"], "sha256": table["sha256"],
            "column": table["column"], "queried_index": index.tolist(), "best": best.tolist(),
            "regret": (table["best"] - best).tolist(), "seconds": seconds, "torch": torch.__version__,
            "machine": platform.machine()}


def _load_table_or_usage_error(args) -> tuple | None:
    try:
        return load_table(args.table, args.column)
    except ValueError as error:
        print(f"search_experiments.py {args.step}: error: {error}", file=sys.stderr)
        return None


def run_table(args) -> int:
    loaded = _load_table_or_usage_error(args)
    if loaded is None:
        return 2
    values, table = loaded
    print(f"ground truth: {table['column']} of {table['table']} (seeds per cell {table['seeds_per_cell']}, sha256 "
          f"{table['sha256'][:12]}); runs in {TABLE_RESULTS / table['name']}")
    jobs = [(method, seed) for method in args.methods for seed in range(args.runs)]
    return run_pending(jobs, lambda method, seed: table_result_path(table, method, seed), run_one_table,
                       lambda method, seed: f"{method:17} seed {seed:2}",
                       lambda result, seconds: f"best found {result['best'][-1]:.2f} % (regret "
                       f"{result['regret'][-1]:.2f}; {result['seconds']:.0f} s)",
                       dry_run=args.dry_run, prepare=lambda: (values, table))


def summarise_table_runs(results: dict, table: dict, values: np.ndarray) -> dict:
    """Per method ({method: [run results]}): runs, and at each of TABLE_CHECKPOINTS the mean and std (ddof 1; None
    for one run) over runs of the best value found and of its regret; at the budget, the share of runs whose best
    is in the top 0.1 % of the 15,625 cells (``values``) and the Mann-Whitney p against random."""
    top = np.sort(values)[::-1][max(1, len(values) // 1000) - 1]
    baseline = [r["best"][-1] for r in results.get("random", [])]
    summary = {}
    for method in [m for m in METHODS if m in results]:
        runs = results[method]
        entry = {"runs": len(runs), "seconds_mean": float(np.mean([r["seconds"] for r in runs])), "queries": {}}
        for q in TABLE_CHECKPOINTS:
            best = np.array([r["best"][q - 1] for r in runs if len(r["best"]) >= q])
            if not len(best):
                continue
            regret = table["best"] - best
            spread = (lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else None)
            entry["queries"][str(q)] = {"best_mean": float(best.mean()), "best_std": spread(best),
                                        "regret_mean": float(regret.mean()), "regret_std": spread(regret)}
        final = [r["best"][-1] for r in runs]
        entry["final_in_top_0.1pct"] = float(np.mean([value >= top for value in final]))
        entry["mann_whitney_p_vs_random"] = (float(mannwhitneyu(final, baseline, alternative="two-sided").pvalue)
                                             if method != "random" and len(baseline) > 1 else None)
        summary[method] = entry
    return {"table": {k: v for k, v in table.items() if k != "name"}, "top_0.1pct_cut": float(top),
            "budget": BUDGET, "checkpoints": list(TABLE_CHECKPOINTS), "methods": summary}


def plot_table_curves(path: Path, results: dict, table: dict) -> None:
    """PNG: mean best value found (band: ± one std over runs) and mean regret (log scale) against queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in [m for m in METHODS if m in results]:
        curves = np.array([r["best"] for r in results[method] if len(r["best"]) == BUDGET])
        if not len(curves):
            continue
        queries = np.arange(1, BUDGET + 1)
        mean, std = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else np.zeros(BUDGET)
        line, = left.plot(queries, mean, label=f"{method} ({len(curves)} runs)")
        left.fill_between(queries, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        right.plot(queries, np.maximum(table["best"] - mean, 1e-3), color=line.get_color())
    left.axhline(table["best"], color="black", linestyle="--", linewidth=0.8, label="best in the table")
    left.set_ylim(max(left.get_ylim()[0], table["best"] - 4), table["best"] + 0.3)
    left.set(xlabel="queries", ylabel=f"best {table['column']} found (%)")
    right.set(xlabel="queries", ylabel="regret (table best - mean best found, points)", yscale="log")
    left.legend(fontsize=8)
    seeds = ", ".join(str(s) for s in table["seeds_per_cell"])
    figure.suptitle(f"NB201 search on {table['table']} ({table['column']}; seeds per cell: {seeds}; "
                    f"sha256 {table['sha256'][:8]})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report_table(args) -> int:
    loaded = _load_table_or_usage_error(args)
    if loaded is None:
        return 2
    values, table = loaded
    results = {}
    for result in load_results(TABLE_RESULTS / table["name"], "*_seed*.json"):
        results.setdefault(result["method"], []).append(result)
    if not results:
        print(f"no runs on {table['table']} yet: run `python benchmarks/search_experiments.py run --table "
              f"{args.table}` first", file=sys.stderr)
        return 1
    summary = summarise_table_runs(results, table, values.numpy())
    seeds = ", ".join(str(s) for s in table["seeds_per_cell"])
    lines = [f"Best {table['column']} (%) found after q queries of the table, mean ± std over runs (regret: the "
             f"table's best minus it). Ground truth: {table['table']} (sha256 {table['sha256'][:12]}; seeds per "
             f"trained cell: {seeds}; {table['trained_cells']:,} trained cells of 15,625, the rest at chance). Best "
             f"in the table: {table['best']:.2f} %; top 0.1 % cut: {summary['top_0.1pct_cut']:.2f} %.", "",
             "| method | runs | " + " | ".join(f"q = {q}" for q in TABLE_CHECKPOINTS) + " | regret at q = "
             f"{BUDGET} | best in the top 0.1 % at q = {BUDGET} | vs random (Mann-Whitney p) | s per run |",
             "|---|---:|" + "---:|" * (len(TABLE_CHECKPOINTS) + 4)]
    for method, entry in summary["methods"].items():
        cells = []
        for q in TABLE_CHECKPOINTS:
            at = entry["queries"].get(str(q))
            shown = "" if at is None or at["best_std"] is None else f"{at['best_mean']:.2f} ± {at['best_std']:.2f}"
            cells.append(shown)
        last = entry["queries"].get(str(BUDGET))
        regret = "" if last is None or last["regret_std"] is None else \
            f"{last['regret_mean']:.2f} ± {last['regret_std']:.2f}"
        versus = "-" if entry["mann_whitney_p_vs_random"] is None else f"{entry['mann_whitney_p_vs_random']:.3f}"
        lines.append(f"| {method} | {entry['runs']} | " + " | ".join(cells) + f" | {regret} | "
                     f"{entry['final_in_top_0.1pct']:.0%} | {versus} | {entry['seconds_mean']:.1f} |")
    text = "\n".join(lines)
    print(text)
    stem = TABLE_RESULTS / table["name"]
    write_text_atomic(stem.with_suffix(".json"), json.dumps(summary, indent=1))
    write_text_atomic(stem.with_suffix(".md"), text + "\n")
    plot_table_curves(stem.with_suffix(".png"), results, table)
    print(f"written {stem.with_suffix('.json')}, .md and .png")
    return 0


def run(args) -> int:
    if args.table is not None:
        return run_table(args)

    def prepare():
        gt = GroundTruth.load(args.gt)
        everything = nb201.all_archs()
        return torch.from_numpy(gt.values(everything, "cifar10_valid_acc")), gt.values(everything, "cifar10_test_acc")

    jobs = [(method, seed) for method in args.methods for seed in range(args.runs)]
    return run_pending(jobs, result_path, run_one, lambda method, seed: f"{method:13} seed {seed:2}",
                       lambda result, seconds: f"final pick test {result['picked_test'][-1]:.2f} % "
                       f"({result['seconds']:.0f} s)", dry_run=args.dry_run, prepare=prepare)


def report(args) -> int:
    if args.table is not None:
        return report_table(args)
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


def table_options(parser) -> None:
    parser.add_argument("--table", help="search against this whole-space NB201 table instead of NB201 CIFAR-10 "
                        "(e.g. rdnas/minibench/data/nb201_digits_full.csv); results under "
                        "benchmarks/results/nb201_digits_full_search/")
    parser.add_argument("--column", default="digits_valid_acc", help="--table: the column searched (default "
                        "digits_valid_acc)")


def run_options(parser) -> None:
    parser.add_argument("--runs", type=int, default=25, help="seeds 0..runs-1 (default 25)")
    parser.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))
    table_options(parser)


def report_options(parser) -> None:
    parser.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))
    table_options(parser)


if __name__ == "__main__":
    sys.exit(command_line(__doc__, run, report, "--methods", METHODS, run_options=run_options,
                          report_options=report_options, run_help="run every method for seeds 0..runs-1; resumable",
                          report_help="the Markdown table and benchmarks/results/search_experiments.json"))

"""Search under a FLOPs cap, and Pareto fronts, on NAS-Bench-201's ground truth (issue 28).

Constrained search (``cap``): every method queries ``cifar10_valid_acc`` of the cells it picks, 100 queries, each
inside ``flops <= cap`` (``space.cost``'s FLOPs, the gt table's ``flops_M_cifar10`` x 1e6), where the cap is the
25th, 50th or 75th percentile of the FLOPs of the 15,625 cells; after 100 queries it returns the cell with the best
validation accuracy, and the table reports that cell's ``cifar10_test_acc`` against the best test accuracy of any
cell under the cap. Methods: ``sampling+gbt-live+zc`` (NAR's sampling search with the gradient-boosted trees on the
live cell plus the zero-cost proxy and cost columns, as ``gbt-live+zc`` in benchmarks/predictor_experiments.py, the
settings of benchmarks/search_experiments.py), and ``random`` (100 uniform cells under the cap). Paired by seed:
the Wilcoxon signed-rank test of sampling against random on the same seeds.

Pareto (``pareto``): 100 uniform ground-truth queries, the same predictor fitted on them, then NSGA-II
(:func:`rdnas.pareto.pareto_evolution`; population 50, 50 children per generation, 2,000 predictor evaluations)
with the predictor as fitness and FLOPs as the cost; its front (by estimate) is scored at its cells' test accuracy
and compared, by hypervolume, with the true front of the space (test accuracy against FLOPs). Beside it, per seed:
the front of the 100 queried cells by their validation accuracy (what the queries alone give), and the front of the
predictor over the whole space (what a perfect search over this predictor would find). Hypervolume reference:
(median test accuracy of the space, largest FLOPs of the space); reported as a fraction of the true front's.

Seeds 0..R-1, one JSON per (experiment, method, cap, seed) in ``benchmarks/results/constrained_search/``; finished
runs are skipped, so the script can be stopped and restarted::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/constrained_search_experiments.py run --runs 25
    python benchmarks/constrained_search_experiments.py report
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from predictor_experiments import COST_COLUMNS, PROXY_COLUMNS, zc_table
from rdnas.atomic_file import write_text_atomic
from rdnas.pareto import hypervolume, pareto_evolution, pareto_front, plot_front
from rdnas.predictors import ArchFeatures, ProxyFeatures, get_predictor
from rdnas.predictors.sampling_search import sampling_search
from rdnas.rank import GroundTruth
from rdnas.search import CostConstraint, random_search
from rdnas.spaces import nb201
from search_experiments import BUDGET

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "constrained_search"
DATA = ROOT.parent.parent / "shared" / "data"
PERCENTILES = (25, 50, 75)
METHODS = ("sampling+gbt-live+zc", "random")
PARETO_EVALUATIONS, PARETO_POPULATION = 2000, 50


class Bench:
    """The ground truth, the caps and the predictor features, loaded once."""

    def __init__(self, gt_path: str, zc_path: str):
        self.gt = GroundTruth.load(gt_path)
        everything = nb201.all_archs()
        self.valid = torch.from_numpy(self.gt.values(everything, "cifar10_valid_acc"))
        self.test = self.gt.values(everything, "cifar10_test_acc")
        self.flops = self.gt.values(everything, "flops_M_cifar10") * 1e6
        self.costs = CostConstraint("nb201")
        model = self.costs.costs(everything)["flops"].numpy()
        if not np.allclose(model, self.flops, rtol=1e-6):  # the caps are in space.cost's units
            raise ValueError("space.cost's FLOPs differ from the table's flops_M_cifar10 x 1e6")
        self.connected = nb201.connected(everything).numpy()
        self.caps = {q: float(np.percentile(self.flops, q)) for q in PERCENTILES}
        self.features_path = zc_table(Path(gt_path), Path(zc_path))

    def fitness(self, archs: torch.Tensor) -> torch.Tensor:
        return self.valid[nb201.SPACE.index(archs)]

    def make_predictor(self, seed: int):
        features = ArchFeatures("nb201", ProxyFeatures.from_table(self.features_path, PROXY_COLUMNS + COST_COLUMNS),
                                edges="live")
        return lambda: get_predictor("gbt")(features=features, seed=seed)


def run_cap(bench: Bench, method: str, percentile: int, seed: int) -> dict:
    cap = bench.caps[percentile]
    constraint = CostConstraint("nb201", maximum={"flops": cap})
    if method == "random":
        history = random_search(bench.fitness, BUDGET, seed=seed, constraint=constraint)
    else:
        history = sampling_search(bench.fitness, BUDGET, bench.make_predictor(seed), seed=seed, constraint=constraint)
    index = nb201.SPACE.index(torch.tensor(history.archs, dtype=torch.long)).numpy()
    under = (bench.flops <= cap) & bench.connected
    pick = int(index[int(np.argmax(np.asarray(history.scores)))])
    return {"experiment": "cap", "method": method, "percentile": percentile, "cap_flops": cap, "seed": seed,
            "budget": BUDGET, "queried_index": index.tolist(), "max_queried_flops": float(bench.flops[index].max()),
            "picked_index": pick, "picked_test": float(bench.test[pick]),
            "best_test_under_cap": float(bench.test[under].max()), "cells_under_cap": int(under.sum())}


def true_front(bench: Bench) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, test accuracy) of the true front of the connected cells, in order of FLOPs."""
    cells = np.flatnonzero(bench.connected)
    front = cells[pareto_front(bench.test[cells], bench.flops[cells]).numpy()]
    return bench.flops[front], bench.test[front]


def run_pareto(bench: Bench, seed: int) -> dict:
    queried = random_search(bench.fitness, BUDGET, seed=seed)
    archs = torch.tensor(queried.archs, dtype=torch.long)
    predictor = bench.make_predictor(seed)().fit(archs, torch.tensor(queried.scores, dtype=torch.float64))
    searched = pareto_evolution(lambda a: predictor.predict(a), PARETO_EVALUATIONS, cost="flops", seed=seed,
                                population=PARETO_POPULATION, batch=PARETO_POPULATION)
    searched_index = nb201.SPACE.index(torch.tensor(searched.archs, dtype=torch.long)).numpy()
    front = searched_index[pareto_front(torch.tensor(searched.scores), bench.flops[searched_index]).numpy()]
    queried_index = nb201.SPACE.index(archs).numpy()
    queried_front = queried_index[pareto_front(torch.tensor(queried.scores), bench.flops[queried_index]).numpy()]
    cells = np.flatnonzero(bench.connected)
    whole = predictor.predict(nb201.all_archs()[cells]).numpy()
    whole_front = cells[pareto_front(whole, bench.flops[cells]).numpy()]
    reference = (float(np.median(bench.test)), float(bench.flops.max()))
    true_volume = hypervolume(*reversed(true_front(bench)), reference)
    volume = {name: hypervolume(bench.test[f], bench.flops[f], reference) / true_volume
              for name, f in (("nsga2", front), ("queried", queried_front), ("whole_space", whole_front))}
    return {"experiment": "pareto", "method": "nsga2+gbt-live+zc", "seed": seed, "budget": BUDGET,
            "predictor_evaluations": len(searched.archs), "front_index": front.tolist(),
            "front_estimate": [float(s) for s in predictor.predict(nb201.all_archs()[front])],
            "queried_front_index": queried_front.tolist(), "whole_space_front_index": whole_front.tolist(),
            "reference": reference, "hypervolume_fraction": volume, "searched_index": searched_index.tolist()}


def run(args) -> int:
    bench = Bench(args.gt, args.zc)
    RUNS.mkdir(parents=True, exist_ok=True)
    jobs = [("cap", m, q) for q in PERCENTILES for m in METHODS] + [("pareto", None, None)]
    for experiment, method, percentile in jobs:  # the capped searches of every seed first
        for seed in range(args.runs):
            name = (f"cap{percentile}_{method.replace('+', '_')}" if experiment == "cap" else "pareto")
            path = RUNS / f"{name}_seed{seed}.json"
            if path.exists():
                continue
            started = time.perf_counter()
            result = run_cap(bench, method, percentile, seed) if experiment == "cap" else run_pareto(bench, seed)
            result.update(seconds=time.perf_counter() - started, torch=torch.__version__, machine=platform.machine())
            write_text_atomic(path, json.dumps(result))
            what = (f"test {result['picked_test']:.2f} % (best under cap {result['best_test_under_cap']:.2f})"
                    if experiment == "cap" else
                    "hypervolume " + ", ".join(f"{k} {v:.3f}" for k, v in result["hypervolume_fraction"].items()))
            print(f"{name:34} seed {seed:2}: {what} ({result['seconds']:.0f} s)", flush=True)
    return 0


def _spread(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def report(args) -> int:
    results = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*_seed*.json"))]
    if not results:
        print("no runs yet: run `python benchmarks/constrained_search_experiments.py run` first", file=sys.stderr)
        return 1
    lines = ["| FLOPs cap (percentile) | cells under it | best test under it | method | runs | picked test "
             "(mean ± std) | gap to best | vs random: paired diff, Wilcoxon p |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    summary = {"cap": {}, "pareto": {}}
    for q in PERCENTILES:
        by_method = {m: {r["seed"]: r for r in results if r["experiment"] == "cap" and r["percentile"] == q
                         and r["method"] == m} for m in METHODS}
        for method in METHODS:
            runs = by_method[method]
            if not runs:
                continue
            first = next(iter(runs.values()))
            picked = [r["picked_test"] for r in runs.values()]
            best = first["best_test_under_cap"]
            versus = "-"
            entry = {"runs": len(runs), "picked_test_mean": float(np.mean(picked)),
                     "picked_test_std": float(np.std(picked, ddof=1)) if len(picked) > 1 else None,
                     "best_test_under_cap": best, "cap_flops": first["cap_flops"],
                     "cells_under_cap": first["cells_under_cap"],
                     "max_queried_flops": max(r["max_queried_flops"] for r in runs.values())}
            if method != "random":
                seeds = sorted(set(runs) & set(by_method["random"]))
                diff = [runs[s]["picked_test"] - by_method["random"][s]["picked_test"] for s in seeds]
                if len(seeds) > 1:
                    p = wilcoxon(diff).pvalue if any(diff) else 1.0
                    versus = f"{np.mean(diff):+.2f} ± {np.std(diff, ddof=1):.2f} (n = {len(seeds)}), p = {p:.3g}"
                    entry.update(paired_diff_mean=float(np.mean(diff)), paired_n=len(seeds), wilcoxon_p=float(p))
            lines.append(f"| {first['cap_flops'] / 1e6:.2f} M ({q}th) | {first['cells_under_cap']:,} | {best:.2f} | "
                         f"{method} | {len(runs)} | {_spread(picked)} | {best - np.mean(picked):.2f} | {versus} |")
            summary["cap"][f"{q}:{method}"] = entry
    pareto = [r for r in results if r["experiment"] == "pareto"]
    if pareto:
        lines += ["", "| front (test accuracy vs FLOPs) | runs | hypervolume / true front's (mean ± std) |",
                  "|---|---:|---:|"]
        for name, label in (("nsga2", "NSGA-II over the predictor (2,000 predictor evaluations)"),
                            ("queried", "the 100 queried cells, by validation accuracy"),
                            ("whole_space", "the predictor over the whole space")):
            values = [r["hypervolume_fraction"][name] for r in pareto]
            lines.append(f"| {label} | {len(values)} | {np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f} |")
            summary["pareto"][name] = {"runs": len(values), "mean": float(np.mean(values)),
                                       "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}
        seeds = [r["hypervolume_fraction"] for r in pareto]
        diff = [s["nsga2"] - s["queried"] for s in seeds]
        if len(diff) > 1 and any(diff):
            p = float(wilcoxon(diff).pvalue)
            lines.append(f"\nNSGA-II against the queried front: paired difference {np.mean(diff):+.3f} ± "
                         f"{np.std(diff, ddof=1):.3f} (n = {len(diff)}), Wilcoxon p = {p:.3g}.")
            summary["pareto"]["nsga2_vs_queried"] = {"diff_mean": float(np.mean(diff)), "n": len(diff), "p": p}
        plot_pareto(pareto[0], args)
    text = ("Test accuracy (CIFAR-10, %) of the best-by-validation cell after 100 ground-truth queries under a FLOPs "
            "cap, NB201; mean ± std over seeds.\n\n" + "\n".join(lines))
    print(text)
    write_text_atomic(RUNS / "summary.json", json.dumps(summary, indent=1))
    return 0


def plot_pareto(result: dict, args) -> None:
    """benchmarks/results/constrained_search/pareto_seed<s>.png: one run's evaluated cells, found and true fronts."""
    bench = Bench(args.gt, args.zc)
    searched = np.asarray(result["searched_index"])
    front = np.asarray(result["front_index"])
    estimates = dict(zip(front.tolist(), result["front_estimate"]))
    cost = np.concatenate([bench.flops[searched], bench.flops[front]])
    # every evaluated cell at its true test accuracy (the estimates are not stored), the front at its estimate
    estimate = np.concatenate([bench.test[searched], [estimates[i] for i in front]])
    order = len(searched) + np.argsort(bench.flops[front], kind="stable")
    plot_front(RUNS / f"pareto_seed{result['seed']}.png", torch.from_numpy(cost), torch.from_numpy(estimate),
               torch.from_numpy(order), cost_name="FLOPs", estimate_name="CIFAR-10 accuracy (%)",
               truth=bench.test[front[np.argsort(bench.flops[front], kind="stable")]], true_front=true_front(bench),
               title=f"NB201: NSGA-II over gbt-live+zc (seed {result['seed']}); grey: evaluated cells' test accuracy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("run", "report"):
        step = steps.add_parser(name)
        step.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))
        step.add_argument("--zc", default=str(DATA / "nb201_zc_proxies.csv"))
        if name == "run":
            step.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()
    for path in (args.gt, args.zc):
        if not Path(path).is_file():
            parser.error(f"{path} is not a file (the NB201 ground truth and proxy tables)")
    return run(args) if args.step == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())

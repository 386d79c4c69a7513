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
(:func:`rdnas.pareto.pareto_evolution`; population 50, 50 children per generation, a budget of 2,000 predictor
evaluations) with the predictor as fitness and FLOPs as the cost; its front (by estimate) is scored at its cells' test accuracy
and compared, by hypervolume, with the true front of the space (test accuracy against FLOPs). Beside it, per seed:
the front of the 100 queried cells by their validation accuracy (what the queries alone give), and the front of the
predictor over the whole space (what a perfect search over this predictor would find). Hypervolume reference:
(median test accuracy of the space, largest FLOPs of the space); reported as a fraction of the true front's.

Digits (``digits``, with ``--checkpoint``): the same caps over the 240 cells of the shipped digits mini-benchmark
(``rdnas/minibench/data/nb201_digits.csv``, ``digits_valid_acc``), with a trained supernet as the fitness (its
accuracy on the run's validation split, BN recalibrated per cell; computed once for the 240 cells, which gives the
same values as calling it during the search) and a budget of 30 evaluations inside the 240 cells (``domain``):
regularised evolution (population 10, tournament 4, one child per evaluation) against random search, both picking
the best cell by the supernet; the table reports the picked cell's ``digits_valid_acc``. The supernet of the
recorded runs: ``rdnas train --data digits --channels 8 --cells 1 --epochs 30 --seed 0 --out
runs/constrained_search/spos_digits`` (SPOS; the checkpoint is not committed).

The whole-space digits table (``--on digits-full``, steps ``run`` and ``report``): the capped searches and the
Pareto experiment above over every NB201 cell of ``shipped:nb201_digits_full`` (``--digits-full-gt``), querying
and reporting ``digits_valid_acc`` (the table has no separate test split: the picked cell is judged on the column
it was picked by, so the gap to the best cell under the cap is a search regret, not a generalisation gap). The
predictor is the gradient-boosted trees on the live cell without proxy columns (``gbt-live``; no published proxy
table exists for the digits network). The caps are the same FLOPs percentiles as above, in the units of
``space.cost`` (the benchmark's CIFAR-10 network): a cell's FLOPs are an affine function of its numbers of 1x1 and
3x3 convolutions with the same 1:9 ratio in every NB201 network, so the digits network orders the cells, and a
percentile cap selects them, exactly as the CIFAR-10 network does. Results in
``benchmarks/results/constrained_search/digits_full/``::

    OMP_NUM_THREADS=1 python benchmarks/constrained_search_experiments.py run --on digits-full --runs 25
    python benchmarks/constrained_search_experiments.py report --on digits-full

The ``*_index`` fields of the run files are positions in ``nb201.all_archs()`` (``nb201.SPACE.index``), as in
benchmarks/search_experiments.py.

Seeds 0..R-1, one JSON per (experiment, method, cap, seed) in ``benchmarks/results/constrained_search/``; finished
runs are skipped, so the script can be stopped and restarted::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/constrained_search_experiments.py run --runs 25
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/constrained_search_experiments.py digits --runs 25 \
        --checkpoint runs/constrained_search/spos_digits/checkpoint.pt
    python benchmarks/constrained_search_experiments.py report
"""

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from experiment_harness import comma_list, load_results, load_table, run_pending
from predictor_experiments import COST_COLUMNS, PROXY_COLUMNS, zc_table
from rdnas.atomic_file import write_text_atomic
from rdnas.pareto import hypervolume, pareto_evolution, pareto_front, plot_front
from rdnas.predictors import ArchFeatures, ProxyFeatures, get_predictor
from rdnas.predictors.sampling_search import sampling_search
from rdnas.rank.ground_truth import table_path
from rdnas.search import CostConstraint, evolution_search, random_search
from rdnas.spaces import nb201
from search_experiments import BUDGET

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "constrained_search"
DATA = ROOT.parent.parent / "shared" / "data"
PERCENTILES = (25, 50, 75)
METHODS = ("sampling+gbt-live+zc", "random")
DIGITS_FULL_METHODS = ("sampling+gbt-live", "random")
METHODS_ON = {"cifar10": METHODS, "digits-full": DIGITS_FULL_METHODS}  # --on: the methods run on that table
PARETO_EVALUATIONS, PARETO_POPULATION = 2000, 50


class Bench:
    """The ground truth, the caps and the predictor features, loaded once: NB201 CIFAR-10 (queries
    ``cifar10_valid_acc``, reports ``cifar10_test_acc``; the predictor with the published proxies' columns)."""

    predictor_name, reported_column = "gbt-live+zc", "cifar10_test_acc"

    def __init__(self, gt_path: str, zc_path: str):
        self.gt = load_table(gt_path, "cifar10_valid_acc", "--gt")
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


class DigitsFullBench(Bench):
    """The whole-space digits table as a :class:`Bench`: every cell's ``digits_valid_acc`` is both the query and
    the reported value (``test``), FLOPs from ``space.cost`` (see the module docstring), and the trees on the live
    cell without proxy columns."""

    predictor_name, reported_column = "gbt-live", "digits_valid_acc"

    def __init__(self, table: str):
        self.gt = load_table(table, "digits_valid_acc", "--digits-full-gt")
        everything = nb201.all_archs()
        values = self.gt.values(everything, "digits_valid_acc")
        self.valid, self.test = torch.from_numpy(values), values
        self.costs = CostConstraint("nb201")
        self.flops = self.costs.costs(everything)["flops"].numpy()
        self.connected = nb201.connected(everything).numpy()
        self.caps = {q: float(np.percentile(self.flops, q)) for q in PERCENTILES}

    def make_predictor(self, seed: int):
        features = ArchFeatures("nb201", edges="live")
        return lambda: get_predictor("gbt")(features=features, seed=seed)


def make_bench(args) -> Bench:
    """The bench of ``--on``."""
    return DigitsFullBench(args.digits_full_gt) if args.on == "digits-full" else Bench(args.gt, args.zc)


def runs_folder(args) -> Path:
    """Where ``--on``'s run files go: the CIFAR-10 runs (and the 240-cell digits runs) in RUNS, the whole-space
    digits runs in RUNS/digits_full."""
    return RUNS / "digits_full" if getattr(args, "on", "cifar10") == "digits-full" else RUNS


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
            "best_test_under_cap": float(bench.test[under].max()), "cells_under_cap": int(under.sum()),
            "reported_column": bench.reported_column}


def true_front(bench: Bench) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, test accuracy) of the true front of the connected cells, in order of FLOPs."""
    cells = np.flatnonzero(bench.connected)
    front = cells[pareto_front(bench.test[cells], bench.flops[cells]).numpy()]
    return bench.flops[front], bench.test[front]


def run_pareto(bench: Bench, seed: int) -> dict:
    queried = random_search(bench.fitness, BUDGET, seed=seed)
    archs = torch.tensor(queried.archs, dtype=torch.long)
    predictor = bench.make_predictor(seed)().fit(archs, torch.tensor(queried.scores, dtype=torch.float64))
    # the predictor's score of every cell, once (the trees score each cell on its own: the same values as calling
    # the predictor inside the search, at a fraction of the time)
    scores = predictor.predict(nb201.all_archs()).double()
    searched = pareto_evolution(lambda a: scores[nb201.SPACE.index(a)], PARETO_EVALUATIONS, cost="flops",
                                seed=seed, population=PARETO_POPULATION, batch=PARETO_POPULATION)
    searched_index = nb201.SPACE.index(torch.tensor(searched.archs, dtype=torch.long)).numpy()
    front = searched_index[pareto_front(torch.tensor(searched.scores), bench.flops[searched_index]).numpy()]
    queried_index = nb201.SPACE.index(archs).numpy()
    queried_front = queried_index[pareto_front(torch.tensor(queried.scores), bench.flops[queried_index]).numpy()]
    cells = np.flatnonzero(bench.connected)
    whole = scores[cells].numpy()
    whole_front = cells[pareto_front(whole, bench.flops[cells]).numpy()]
    reference = (float(np.median(bench.test)), float(bench.flops.max()))
    true_volume = hypervolume(*reversed(true_front(bench)), reference)
    volume = {name: hypervolume(bench.test[f], bench.flops[f], reference) / true_volume
              for name, f in (("nsga2", front), ("queried", queried_front), ("whole_space", whole_front))}
    return {"experiment": "pareto", "method": f"nsga2+{bench.predictor_name}", "seed": seed, "budget": BUDGET,
            "predictor_evaluations": len(searched.archs), "front_index": front.tolist(),
            "front_estimate": scores[front].tolist(),
            "queried_front_index": queried_front.tolist(), "whole_space_front_index": whole_front.tolist(),
            "reference": reference, "hypervolume_fraction": volume, "searched_index": searched_index.tolist()}


def run_one(bench: Bench, experiment: str, method: str | None, percentile: int | None, seed: int) -> dict:
    started = time.perf_counter()
    result = run_cap(bench, method, percentile, seed) if experiment == "cap" else run_pareto(bench, seed)
    result.update(seconds=time.perf_counter() - started, torch=torch.__version__, machine=platform.machine())
    return result


def run_name(experiment: str, method: str | None, percentile: int | None) -> str:
    return f"cap{percentile}_{method.replace('+', '_')}" if experiment == "cap" else "pareto"


def run_summary(result: dict, seconds: float) -> str:
    what = (f"test {result['picked_test']:.2f} % (best under cap {result['best_test_under_cap']:.2f})"
            if result["experiment"] == "cap" else
            "hypervolume " + ", ".join(f"{k} {v:.3f}" for k, v in result["hypervolume_fraction"].items()))
    return f"{what} ({result['seconds']:.0f} s)"


def run(args) -> int:
    methods = METHODS_ON[args.on]
    experiments = [("cap", m, q) for q in PERCENTILES for m in methods] + [("pareto", None, None)]
    seeds = list(range(args.runs))[::-1 if args.reverse else 1]  # a second process can start from the other end
    # the capped searches of every seed first
    jobs = [(*job, seed) for job in experiments if job[0] in args.experiments for seed in seeds]
    folder = runs_folder(args)
    return run_pending(jobs, lambda *job: folder / f"{run_name(*job[:3])}_seed{job[3]}.json", run_one,
                       lambda *job: f"{run_name(*job[:3]):34} seed {job[3]:2}", run_summary,
                       dry_run=args.dry_run, prepare=lambda: make_bench(args))


def _spread(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def _versus_random(runs: dict, random_runs: dict, key: str, entry: dict) -> str:
    """The table cell of a method against random search on the seeds both ran ({seed: result}): mean ± std of the
    paired difference of ``key`` and the Wilcoxon p ("-" under two seeds); the figures go into ``entry`` too."""
    seeds = sorted(set(runs) & set(random_runs))
    if len(seeds) < 2:
        return "-"
    diff = [runs[s][key] - random_runs[s][key] for s in seeds]
    p = wilcoxon(diff).pvalue if any(diff) else 1.0
    entry.update(paired_diff_mean=float(np.mean(diff)), paired_n=len(seeds), wilcoxon_p=float(p))
    return f"{np.mean(diff):+.2f} ± {np.std(diff, ddof=1):.2f} (n = {len(seeds)}), p = {p:.3g}"


def report(args) -> int:
    folder = runs_folder(args)
    methods = METHODS_ON[args.on]
    results = load_results(folder, "*_seed*.json")
    if not results:
        print("no runs yet: run `python benchmarks/constrained_search_experiments.py run` first", file=sys.stderr)
        return 1
    value = "test" if args.on == "cifar10" else "accuracy"  # digits-full: the one column both picks and judges
    lines = [f"| FLOPs cap (percentile) | cells under it | best {value} under it | method | runs | picked {value} "
             "(mean ± std) | gap to best | vs random: paired diff, Wilcoxon p |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    summary = {"cap": {}, "pareto": {}}
    for q in PERCENTILES:
        by_method = {m: {r["seed"]: r for r in results if r["experiment"] == "cap" and r["percentile"] == q
                         and r["method"] == m} for m in methods}
        for method in methods:
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
                versus = _versus_random(runs, by_method["random"], "picked_test", entry)
            lines.append(f"| {first['cap_flops'] / 1e6:.2f} M ({q}th) | {first['cells_under_cap']:,} | {best:.2f} | "
                         f"{method} | {len(runs)} | {_spread(picked)} | {best - np.mean(picked):.2f} | {versus} |")
            summary["cap"][f"{q}:{method}"] = entry
    pareto = [r for r in results if r["experiment"] == "pareto"]
    if pareto:
        lines += ["", f"| front ({'test accuracy' if args.on == 'cifar10' else 'accuracy'} vs FLOPs) | runs | hypervolume / true front's (mean ± std) |",
                  "|---|---:|---:|"]
        for name, label in (("nsga2", "NSGA-II over the predictor (budget 2,000 evaluations)"),
                            ("queried", "the 100 queried cells, by their queried accuracy"),
                            ("whole_space", "the predictor over the whole space")):
            values = [r["hypervolume_fraction"][name] for r in pareto]
            spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
            lines.append(f"| {label} | {len(values)} | {np.mean(values):.3f} ± {spread:.3f} |")
            summary["pareto"][name] = {"runs": len(values), "mean": float(np.mean(values)),
                                       "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}
        evaluated = [r["predictor_evaluations"] for r in pareto]
        lines.append(f"\nNSGA-II evaluated {np.mean(evaluated):.0f} distinct cells on average ({min(evaluated)}-"
                     f"{max(evaluated)}; it stops after 100 generations without a new one); the front it reports "
                     f"has {np.mean([len(r['front_index']) for r in pareto]):.1f} cells.")
        summary["pareto"]["evaluated_mean"] = float(np.mean(evaluated))
        seeds = [r["hypervolume_fraction"] for r in pareto]
        diff = [s["nsga2"] - s["queried"] for s in seeds]
        if len(diff) > 1 and any(diff):
            p = float(wilcoxon(diff).pvalue)
            lines.append(f"\nNSGA-II against the queried front: paired difference {np.mean(diff):+.3f} ± "
                         f"{np.std(diff, ddof=1):.3f} (n = {len(diff)}), Wilcoxon p = {p:.3g}.")
            summary["pareto"]["nsga2_vs_queried"] = {"diff_mean": float(np.mean(diff)), "n": len(diff), "p": p}
        plot_pareto(pareto[0], args)
    digit_runs = [r for r in results if r["experiment"] == "digits"]
    if digit_runs:
        lines += ["", "| digits: FLOPs cap (percentile) | cells under it | best / mean digits_valid_acc under it | "
                  "method | runs | picked (mean ± std) | vs random: paired diff, Wilcoxon p |",
                  "|---|---:|---:|---|---:|---:|---:|"]
        for q in PERCENTILES:
            by_method = {m: {r["seed"]: r for r in digit_runs if r["percentile"] == q and r["method"] == m}
                         for m in DIGITS_METHODS}
            for method in DIGITS_METHODS:
                runs = by_method[method]
                if not runs:
                    continue
                first = next(iter(runs.values()))
                picked = [r["picked_truth"] for r in runs.values()]
                versus = "-"
                entry = {"runs": len(runs), "picked_mean": float(np.mean(picked)),
                         "picked_std": float(np.std(picked, ddof=1)) if len(picked) > 1 else None,
                         "best_under_cap": first["best_truth_under_cap"],
                         "mean_under_cap": first["mean_truth_under_cap"], "cap_flops": first["cap_flops"]}
                if method != "random":
                    versus = _versus_random(runs, by_method["random"], "picked_truth", entry)
                lines.append(f"| {first['cap_flops'] / 1e6:.2f} M ({q}th) | {first['cells_under_cap']} | "
                             f"{first['best_truth_under_cap']:.2f} / {first['mean_truth_under_cap']:.2f} | {method} | "
                             f"{len(runs)} | {_spread(picked)} | {versus} |")
                summary.setdefault("digits", {})[f"{q}:{method}"] = entry
        tau_file = RUNS / "digits_supernet_accuracy.json"
        if tau_file.exists():
            tau = json.loads(tau_file.read_text())["kendall_tau"]
            lines.append(f"\nThe supernet's Kendall tau with digits_valid_acc over the 240 cells: {tau:.3f}.")
            summary.setdefault("digits", {})["supernet_kendall_tau"] = tau
    head = ("Test accuracy (CIFAR-10, %) of the best-by-validation cell after 100 ground-truth queries under a FLOPs "
            "cap, NB201; mean ± std over seeds." if args.on == "cifar10" else
            "digits_valid_acc (%) of the best cell after 100 ground-truth queries of the whole-space digits table "
            "under a FLOPs cap (the same column picks and judges: the gap is the search's regret); mean ± std over "
            "seeds.")
    text = head + "\n\n" + "\n".join(lines)
    print(text)
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1))
    return 0


def plot_pareto(result: dict, args) -> None:
    """``pareto_seed<s>.png`` beside the runs: one run's evaluated cells, found and true fronts."""
    bench = make_bench(args)
    searched = np.asarray(result["searched_index"])
    front = np.asarray(result["front_index"])
    estimates = dict(zip(front.tolist(), result["front_estimate"]))
    cost = np.concatenate([bench.flops[searched], bench.flops[front]])
    # every evaluated cell at its true test accuracy (the estimates are not stored), the front at its estimate
    estimate = np.concatenate([bench.test[searched], [estimates[i] for i in front]])
    order = len(searched) + np.argsort(bench.flops[front], kind="stable")
    what = "CIFAR-10 accuracy (%)" if args.on == "cifar10" else "digits accuracy (%)"
    plot_front(runs_folder(args) / f"pareto_seed{result['seed']}.png", torch.from_numpy(cost),
               torch.from_numpy(estimate), torch.from_numpy(order), cost_name="FLOPs", estimate_name=what,
               truth=bench.test[front[np.argsort(bench.flops[front], kind="stable")]], true_front=true_front(bench),
               title=f"NB201{'' if args.on == 'cifar10' else ' on digits'}: NSGA-II over {bench.predictor_name} "
                     f"(seed {result['seed']}); grey: evaluated cells' {bench.reported_column}")


DIGITS_BUDGET = 30
DIGITS_METHODS = ("evolution", "random")


class DigitsBench:
    """The digits experiment's cells, their truth and FLOPs, and the supernet's accuracy of each (computed once and
    cached in ``digits_supernet_accuracy.json``)."""

    def __init__(self, args):
        from rdnas.cli.checkpoint import load_supernet
        from rdnas.rank import kendall_tau, recalibrated_accuracy_fn

        table = load_table(args.digits_gt, "digits_valid_acc", "--digits-gt")
        self.cells = table.archs[~nb201.SPACE.is_trivial(table.archs)]
        cells = self.cells
        self.truth = dict(zip(map(tuple, cells.tolist()), table.values(cells, "digits_valid_acc").tolist()))
        cached = RUNS / "digits_supernet_accuracy.json"
        if cached.exists():
            recorded = json.loads(cached.read_text())
            self.accuracy = {tuple(nb201.SPACE.from_string(a).tolist()): v for a, v in recorded["accuracy"].items()}
        else:
            supernet, config, data = load_supernet(args.checkpoint, "cpu")
            fitness = recalibrated_accuracy_fn(supernet, data, "cpu", calibration_batch_size=config.batch_size,
                                               seed=0, subnets_per_pass=32)
            self.accuracy = dict(zip(map(tuple, cells.tolist()), fitness(cells).double().tolist()))
            tau = kendall_tau(np.array([self.accuracy[a] for a in self.truth]), np.array(list(self.truth.values())))
            RUNS.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cached, json.dumps({"checkpoint": str(args.checkpoint), "config": asdict(config),
                                                  "kendall_tau": tau,
                                                  "accuracy": {nb201.to_string(a): v
                                                               for a, v in self.accuracy.items()}}))
        self.flops = CostConstraint("nb201").costs(cells)["flops"].numpy()

    def fitness(self, archs: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.accuracy[tuple(a)] for a in archs.tolist()], dtype=torch.float64)


def run_digits(bench: DigitsBench, percentile: int, method: str, seed: int) -> dict:
    cap = float(np.percentile(bench.flops, percentile))
    constraint = CostConstraint("nb201", maximum={"flops": cap})
    under = [a for a, f in zip(map(tuple, bench.cells.tolist()), bench.flops) if f <= cap]
    if method == "random":
        history = random_search(bench.fitness, DIGITS_BUDGET, seed=seed, constraint=constraint, domain=bench.cells)
    else:
        history = evolution_search(bench.fitness, DIGITS_BUDGET, seed=seed, population=10, sample_size=4, batch=1,
                                   constraint=constraint, domain=bench.cells)
    pick = history.top(1)[0][0]
    truth = bench.truth
    return {"experiment": "digits", "method": method, "percentile": percentile, "cap_flops": cap, "seed": seed,
            "budget": DIGITS_BUDGET, "evaluated": [nb201.to_string(a) for a in history.archs],
            "picked": nb201.to_string(pick), "picked_truth": truth[pick],
            "best_truth_under_cap": max(truth[a] for a in under), "cells_under_cap": len(under),
            "mean_truth_under_cap": float(np.mean([truth[a] for a in under]))}


def digits(args) -> int:
    """The digits experiment (module docstring): supernet accuracies of the 240 cells once, then the searches."""
    jobs = [(q, method, seed) for q in PERCENTILES for method in DIGITS_METHODS for seed in range(args.runs)]
    return run_pending(jobs, lambda q, method, seed: RUNS / f"digits_cap{q}_{method}_seed{seed}.json", run_digits,
                       lambda q, method, seed: f"digits cap{q} {method:9} seed {seed:2}",
                       lambda result, seconds: f"{result['picked_truth']:.2f} % (best under cap "
                                               f"{result['best_truth_under_cap']:.2f})",
                       dry_run=args.dry_run, prepare=lambda: DigitsBench(args))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("run", "digits", "report"):
        step = steps.add_parser(name)
        step.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))
        step.add_argument("--zc", default=str(DATA / "nb201_zc_proxies.csv"))
        step.add_argument("--digits-gt", default=str(ROOT.parent / "rdnas" / "minibench" / "data" / "nb201_digits.csv"))
        step.add_argument("--digits-full-gt", default="shipped:nb201_digits_full",
                          help="the whole-space digits table of --on digits-full (default: the shipped one)")
        if name in ("run", "report"):
            step.add_argument("--on", choices=list(METHODS_ON), default="cifar10",
                              help="cifar10: NB201's CIFAR-10 ground truth (default); digits-full: the whole-space "
                              "digits table")
        if name in ("run", "digits"):
            step.add_argument("--runs", type=int, default=25)
            step.add_argument("--dry-run", action="store_true",
                              help="list the finished runs and those that would run; run nothing")
        if name == "run":
            step.add_argument("--experiments", type=comma_list(), default=["cap", "pareto"],
                              help="cap, pareto or both (default)")
            step.add_argument("--reverse", action="store_true", help="seeds from the last one down")
        if name == "digits":
            step.add_argument("--checkpoint", default=str(ROOT.parent / "runs" / "constrained_search" / "spos_digits"
                                                          / "checkpoint.pt"))
    args = parser.parse_args(argv)
    needed = ((args.digits_gt,) if args.step == "digits" else (args.digits_full_gt,) if args.on == "digits-full"
              else (args.gt, args.zc))
    for path in needed:
        try:
            found = table_path(path).is_file()
        except FileNotFoundError as error:  # an unknown shipped:<name>; the message lists the shipped tables
            parser.error(str(error).removeprefix("rdnas.rank.GroundTruth: "))
        if not found:
            parser.error(f"{path} is not a file (the ground-truth and proxy tables)")
    return {"run": run, "digits": digits, "report": report}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())

"""NB201 on digits over the whole space: progress, cost, reliability, agreement with the 240-cell table, shipping.

The build itself is ``bash benchmarks/nb201_digits_full.sh`` (two resumable shards of ``rdnas bench build
--archs-file``); this script reads its run files:

    python benchmarks/nb201_digits_full.py report   # progress, cost per network, reliability, agreement -> report.json
    python benchmarks/nb201_digits_full.py ship     # once every run is in: the package data table + recipe + reliability

``report`` also writes ``table_partial.csv`` (the classes that have every seed of the seeds finished so far, spread
over the whole space, NB201 ground-truth format) so experiments can start before the build ends.

What ``report`` measures (``report.json``):

- reliability: Kendall tau between the means of two disjoint seed halves of the complete seeds (seeds 0-2 against
  3-5 once the build is done; target >= 0.6 for the half), and the Spearman-Brown estimate for the mean over all
  seeds, 2 tau / (1 + tau) (Spearman-Brown is a formula for correlations: applied to Kendall tau it is an
  approximation). Before two seeds are complete, ``split_half_so_far`` uses the classes that already have two (or
  more) seeds and projects the half's and the full mean's figure with Spearman-Brown (labelled a projection).
- agreement with the shipped 240-cell table (``rdnas/minibench/data/nb201_digits.csv``, 10 seeds) on its 240
  cells, with a 95 % bootstrap interval over the cells. The full build's seed s of a cell is the same training run
  (``rdnas.minibench.build.network_seed``) as the 240-cell build's seed s, so that table's mean over all 10 seeds
  shares seeds with this one: ``against_independent_seeds`` compares with the 240-cell runs of the seeds this build
  does not have (``benchmarks/results/nb201_digits_runs.csv``), and ``same_seed_reruns`` says how closely the
  shared (cell, seed) runs reproduce.
- cost per network: wall seconds of one network's share of its stack (median, mean, and the total in CPU-hours).
"""

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np

from rdnas.atomic_file import write_text_atomic
from rdnas.minibench import Recipe, benchmark_table, read_all_runs, read_runs, reliability
from rdnas.minibench.whole_space import whole_space_table, write_whole_space_table
from rdnas.rank import GroundTruth, bootstrap_interval, kendall_tau
from rdnas.spaces import get_space

RESULTS = Path(__file__).resolve().parent / "results"
BUILD = RESULTS / "nb201_digits_full"
SMALL_RUNS = RESULTS / "nb201_digits_runs.csv"  # every run of the shipped 240-cell table
SEEDS = list(range(6))
HALF_TARGET = 0.6  # the target for the split-half Kendall tau
BOOTSTRAP_SAMPLES = 1000
PACKAGE_DATA = Path(str(resources.files("rdnas.minibench") / "data"))


def _archs(build: Path) -> list[str]:
    lines = (build / "archs.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _complete_seeds(runs: list[dict], archs: list[str]) -> list[int]:
    """The seeds every architecture of the build has finished."""
    done = {}
    for run in runs:
        done.setdefault(run["seed"], set()).add(run["arch_str"])
    return [seed for seed in SEEDS if len(done.get(seed, ())) == len(archs)]


def spearman_brown(tau: float, factor: float) -> float:
    """The Spearman-Brown estimate of a reliability ``tau`` for a mean over ``factor`` times as many seeds
    (factor tau / (1 + (factor - 1) tau)); applied to Kendall tau it is an approximation."""
    return factor * tau / (1 + (factor - 1) * tau)


def split_half_so_far(runs: list[dict], seeds: list[int] = SEEDS) -> dict | None:
    """Split-half reliability on the architectures that already have the most seeds, before two seeds are
    complete: the largest even number 2h of ``seeds`` (taken in order) that at least 3 architectures have all of,
    halves ``seeds[:h]`` against ``seeds[h:2h]``, and its Spearman-Brown projections to halves of
    ``len(seeds) // 2`` seeds and to the mean over all ``seeds``. None when no architecture has two seeds."""
    have = {}
    for run in runs:
        have.setdefault(run["arch_str"], set()).add(run["seed"])
    best = None
    for count in range(2, len(seeds) + 1, 2):
        wanted = set(seeds[:count])
        if sum(wanted <= present for present in have.values()) >= 3:
            best = count
    if best is None:
        return None
    half = best // 2
    result = reliability(runs, seeds[:half], seeds[half:best])
    tau = result["kendall_tau_valid_acc"]
    full_half = len(seeds) // 2
    return {**result, "projected_half_kendall_tau_valid_acc": spearman_brown(tau, full_half / half),
            "projected_spearman_brown_full_mean": spearman_brown(tau, len(seeds) / half),
            "note": f"on the {result['architectures']} architectures that have seeds {seeds[:best]} so far; the "
            f"projections (Spearman-Brown to halves of {full_half} seeds and to the mean of {len(seeds)}) are "
            "estimates, not measurements"}


def agreement(full: GroundTruth, small: GroundTruth, column: str = "digits_valid_acc", seed: int = 0) -> dict:
    """Kendall tau between two tables on the small one's architectures (rows matched by architecture), with a
    95 % bootstrap interval over those architectures."""
    truth = small.column(column)
    estimate = full.values(small.archs, column)
    low, high = bootstrap_interval(kendall_tau, estimate, truth, samples=BOOTSTRAP_SAMPLES, seed=seed)
    return {"architectures": len(small), "kendall_tau_valid_acc": kendall_tau(estimate, truth),
            "kendall_tau_valid_acc_ci95": [low, high]}


def agreement_with_runs(full_table: dict, small_runs: list[dict], full_seeds: list[int]) -> dict:
    """The full build's table ({key: row}, :func:`benchmark_table`) against the 240-cell build's runs: Kendall tau
    (95 % bootstrap interval) against the mean over the 240-cell build's seeds that the full build does not use,
    and how the (cell, seed) runs both builds share reproduce (fraction bitwise equal, largest difference, Kendall
    tau per shared seed)."""
    by_arch = {row["arch_str"]: row["valid_acc"] for row in full_table.values()}
    small_seeds = sorted({run["seed"] for run in small_runs})
    other = [seed for seed in small_seeds if seed not in full_seeds]
    result = {"small_seeds": small_seeds, "full_seeds": full_seeds}
    if other:
        independent = benchmark_table(small_runs, other)
        common = [row for row in independent.values() if row["arch_str"] in by_arch]
        if len(common) >= 3:
            estimate = np.array([by_arch[row["arch_str"]] for row in common])
            truth = np.array([row["valid_acc"] for row in common])
            low, high = bootstrap_interval(kendall_tau, estimate, truth, samples=BOOTSTRAP_SAMPLES)
            result["against_independent_seeds"] = {"architectures": len(common), "seeds_small": other,
                                                   "kendall_tau_valid_acc": kendall_tau(estimate, truth),
                                                   "kendall_tau_valid_acc_ci95": [low, high]}
    return result


def same_seed_reruns(full_runs: list[dict], small_runs: list[dict]) -> dict:
    """The (architecture, seed) runs two builds share: how many, the fraction with bitwise equal validation
    accuracy, the largest absolute difference (percentage points) and the Kendall tau per shared seed."""
    small = {(run["arch_str"], run["seed"]): run["valid_acc"] for run in small_runs}
    pairs = [(run["seed"], small[(run["arch_str"], run["seed"])], run["valid_acc"]) for run in full_runs
             if (run["arch_str"], run["seed"]) in small]
    if not pairs:
        return {"runs": 0}
    seeds = sorted({seed for seed, _, _ in pairs})
    a = np.array([x for _, x, _ in pairs])
    b = np.array([y for _, _, y in pairs])
    per_seed = {}
    for seed in seeds:
        take = np.array([s == seed for s, _, _ in pairs])
        if take.sum() >= 3:
            per_seed[str(seed)] = kendall_tau(b[take], a[take])
    return {"runs": len(pairs), "seeds": seeds, "bitwise_equal_fraction": float(np.mean(a == b)),
            "max_abs_difference_valid_acc": float(np.abs(a - b).max()), "kendall_tau_valid_acc_per_seed": per_seed}


def cost(runs: list[dict]) -> dict:
    """Cost per network from the runs' ``seconds`` (each network's share of its stack's wall time)."""
    seconds = [run["seconds"] for run in runs]
    if not seconds:
        return {}
    return {"seconds_per_network_median": statistics.median(seconds),
            "seconds_per_network_mean": statistics.fmean(seconds), "cpu_hours_so_far": sum(seconds) / 3600,
            "seconds_per_network_note": "wall seconds of one network's share of its stack of 64, one thread "
            "(measured while other work shared the machine: an upper bound)"}


def report(build: Path, package_data: Path = PACKAGE_DATA, small_runs_path: Path = SMALL_RUNS) -> dict:
    """Reads the build's runs and writes ``report.json`` (and ``table_partial.csv`` once a seed is complete)."""
    space = get_space("nb201")
    archs = _archs(build)
    wanted = set(archs)
    runs = [run for run in read_all_runs(build) if run["arch_str"] in wanted and run["seed"] in SEEDS]
    recipe = Recipe.from_dict(json.loads((build / "recipe.json").read_text()))
    shipped = Recipe.from_dict(json.loads((package_data / "nb201_digits_recipe.json").read_text()))
    per_seed = {seed: sum(run["seed"] == seed for run in runs) for seed in SEEDS}
    costs = cost(runs)
    result = {"runs": len(runs), "runs_total": len(archs) * len(SEEDS), "architectures": len(archs),
              "runs_per_seed": per_seed, "recipe": asdict(recipe), "recipe_is_the_shipped_one": recipe == shipped,
              "seconds_per_network_median": costs.get("seconds_per_network_median"), "cost": costs}
    complete = _complete_seeds(runs, archs)
    result["complete_seeds"] = complete
    result["split_half_target"] = HALF_TARGET
    if len(complete) >= 2:
        half = len(complete) // 2
        split = reliability(runs, complete[:half], complete[half:2 * half])
        tau = split["kendall_tau_valid_acc"]
        result["split_half"] = split
        result["split_half_meets_target"] = tau >= HALF_TARGET
        result["spearman_brown_kendall_valid_acc"] = spearman_brown(tau, 2)
    if len(complete) < len(SEEDS):
        so_far = split_half_so_far(runs)
        if so_far is not None:
            result["split_half_so_far"] = so_far
    if complete:
        table = benchmark_table(runs, complete)
        rows = whole_space_table(table, space, allow_missing=False)
        write_whole_space_table(build / "table_partial.csv", rows)
        full = GroundTruth.load(build / "table_partial.csv", space)
        small = GroundTruth.load(package_data / "nb201_digits.csv", space)
        shared = {"seeds_full": complete, **agreement(full, small),
                  "note": "against the 240-cell table's mean over its 10 seeds, which include this build's seeds "
                  "(the same runs, reproduced): see against_independent_seeds"}
        if Path(small_runs_path).is_file():
            small_runs = read_runs(small_runs_path)
            shared.update(agreement_with_runs(table, small_runs, complete))
            shared["same_seed_reruns"] = same_seed_reruns(runs, small_runs)
        result["agreement_with_240_cell_table"] = shared
        accuracies = np.array([row["valid_acc"] for row in table.values()])
        result["valid_acc_over_classes"] = {"mean": float(accuracies.mean()), "min": float(accuracies.min()),
                                            "max": float(accuracies.max())}
    write_text_atomic(build / "report.json", json.dumps(result, indent=2))
    return result


def reliability_record(result: dict) -> dict:
    """The shipped reliability JSON: the keys of ``nb201_digits_reliability.json`` (architectures, seeds_a,
    seeds_b, kendall_tau_valid_acc, kendall_tau_valid_loss), then the Spearman-Brown estimate for the full mean
    and the cost per network."""
    return {**result["split_half"], "spearman_brown_kendall_valid_acc": result["spearman_brown_kendall_valid_acc"],
            "cost": result["cost"]}


def ship(build: Path, package_data: Path = PACKAGE_DATA, small_runs_path: Path = SMALL_RUNS) -> None:
    """Writes the package data table, recipe and reliability once every seed of every class is in (exit
    otherwise, writing nothing to ``package_data``)."""
    result = report(build, package_data, small_runs_path)
    if result["complete_seeds"] != SEEDS:
        sys.exit(f"nb201_digits_full.py ship: seeds {result['complete_seeds']} of {SEEDS} are complete; "
                 f"{result['runs']} of {result['runs_total']} runs are in")
    write_whole_space_table(package_data / "nb201_digits_full.csv",
                            whole_space_table(benchmark_table(read_all_runs(build), SEEDS), "nb201"))
    write_text_atomic(package_data / "nb201_digits_full_recipe.json", json.dumps(result["recipe"], indent=2))
    write_text_atomic(package_data / "nb201_digits_full_reliability.json",
                      json.dumps(reliability_record(result), indent=2))
    print(f"shipped {package_data / 'nb201_digits_full.csv'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["report", "ship"])
    parser.add_argument("--build", type=Path, default=BUILD, help=f"the build folder (default {BUILD})")
    args = parser.parse_args(argv)
    if args.command == "report":
        print(json.dumps(report(args.build), indent=2))
    else:
        ship(args.build)


if __name__ == "__main__":
    main()

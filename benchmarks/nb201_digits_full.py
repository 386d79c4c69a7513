"""NB201 on digits over the whole space: progress, cost, reliability, agreement with the 240-cell table, shipping.

The build itself is ``bash benchmarks/nb201_digits_full.sh`` (two resumable shards of ``rdnas bench build
--archs-file``); this script reads its run files:

    python benchmarks/nb201_digits_full.py report   # progress, cost per network, reliability, agreement -> report.json
    python benchmarks/nb201_digits_full.py ship     # once every run is in: the package data table + recipe + reliability

``report`` also writes ``table_partial.csv`` (the classes that have every seed of the seeds finished so far, spread
over the whole space, NB201 ground-truth format) so experiments can start before the build ends.
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
from rdnas.minibench import Recipe, benchmark_table, read_all_runs, reliability
from rdnas.minibench.whole_space import whole_space_table, write_whole_space_table
from rdnas.rank import GroundTruth, kendall_tau
from rdnas.spaces import get_space

BUILD = Path(__file__).resolve().parent / "results" / "nb201_digits_full"
SEEDS = list(range(6))
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


def report(build: Path) -> dict:
    space = get_space("nb201")
    archs = _archs(build)
    wanted = set(archs)
    runs = [run for run in read_all_runs(build) if run["arch_str"] in wanted and run["seed"] in SEEDS]
    recipe = Recipe.from_dict(json.loads((build / "recipe.json").read_text()))
    shipped = Recipe.from_dict(json.loads((PACKAGE_DATA / "nb201_digits_recipe.json").read_text()))
    per_seed = {seed: sum(run["seed"] == seed for run in runs) for seed in SEEDS}
    seconds = [run["seconds"] for run in runs]
    result = {"runs": len(runs), "runs_total": len(archs) * len(SEEDS), "architectures": len(archs),
              "runs_per_seed": per_seed, "recipe": asdict(recipe), "recipe_is_the_shipped_one": recipe == shipped,
              "seconds_per_network_median": statistics.median(seconds) if seconds else None,
              "seconds_per_network_note": "wall seconds of one network's share of its stack of 64, one thread "
              "(measured while other work shared the machine: an upper bound)"}
    complete = _complete_seeds(runs, archs)
    result["complete_seeds"] = complete
    if len(complete) >= 2:
        half = len(complete) // 2
        split = reliability(runs, complete[:half], complete[half:2 * half])
        tau = split["kendall_tau_valid_acc"]
        result["split_half"] = split
        result["spearman_brown_kendall_valid_acc"] = 2 * tau / (1 + tau)
    if complete:
        table = benchmark_table(runs, complete)
        rows = whole_space_table(table, space, allow_missing=False)
        write_whole_space_table(build / "table_partial.csv", rows)
        full = GroundTruth.load(build / "table_partial.csv", space)
        small = GroundTruth.load(PACKAGE_DATA / "nb201_digits.csv", space)
        small_acc = small.column("digits_valid_acc")
        full_acc = full.values(small.archs, "digits_valid_acc")
        result["agreement_with_240_cell_table"] = {
            "architectures": len(small), "seeds_full": complete,
            "kendall_tau_valid_acc": kendall_tau(full_acc, small_acc)}
        accuracies = np.array([row["valid_acc"] for row in table.values()])
        result["valid_acc_over_classes"] = {"mean": float(accuracies.mean()), "min": float(accuracies.min()),
                                            "max": float(accuracies.max())}
    write_text_atomic(build / "report.json", json.dumps(result, indent=2))
    return result


def ship(build: Path) -> None:
    result = report(build)
    if result["complete_seeds"] != SEEDS:
        sys.exit(f"nb201_digits_full.py ship: seeds {result['complete_seeds']} of {SEEDS} are complete; "
                 f"{result['runs']} of {result['runs_total']} runs are in")
    write_whole_space_table(PACKAGE_DATA / "nb201_digits_full.csv",
                            whole_space_table(benchmark_table(read_all_runs(build), SEEDS), "nb201"))
    write_text_atomic(PACKAGE_DATA / "nb201_digits_full_recipe.json", json.dumps(result["recipe"], indent=2))
    write_text_atomic(PACKAGE_DATA / "nb201_digits_full_reliability.json",
                      json.dumps({**result["split_half"],
                                  "spearman_brown_kendall_valid_acc": result["spearman_brown_kendall_valid_acc"]},
                                 indent=2))
    print(f"shipped {PACKAGE_DATA / 'nb201_digits_full.csv'}")


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

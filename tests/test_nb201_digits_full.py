"""benchmarks/nb201_digits_full.py, the whole-space digits build's report and ship: split-half reliability (and its
projection before two seeds are complete), agreement with the 240-cell table with bootstrap intervals, same-seed
reruns, cost per network, and the shipped files (reliability JSON in the 240-cell table's format). Synthetic runs."""

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rdnas.minibench import Recipe, benchmark_table, sample_architectures
from rdnas.rank import kendall_tau
from rdnas.spaces import nb201

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import nb201_digits_full as full  # noqa: E402

COLUMNS = ["enumeration_index", "arch_str", "seed", "valid_acc", "valid_loss", "train_loss", "seconds"]


def _run(arch: tuple, seed: int, acc: float, seconds: float = 0.5) -> dict:
    return {"enumeration_index": nb201.enumeration_index(arch), "arch_str": nb201.to_string(arch), "seed": seed,
            "valid_acc": acc, "valid_loss": 1.0 / acc, "train_loss": 0.1, "seconds": seconds}


def _runs(archs, seeds, noise: float = 1.0, offset: int = 0) -> list[dict]:
    """Accuracy = the architecture's quality (its position) + seeded noise of ``noise`` points."""
    rng = np.random.default_rng(offset)
    return [_run(arch, seed, 60.0 + 0.1 * k + noise * rng.normal()) for seed in seeds
            for k, arch in enumerate(archs)]


def _write_runs(path: Path, runs: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(runs)


def test_spearman_brown_is_the_identity_at_factor_one_and_grows_with_more_seeds():
    assert full.spearman_brown(0.4, 1) == pytest.approx(0.4)
    assert full.spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert full.spearman_brown(0.35, 3) > full.spearman_brown(0.35, 2) > 0.35


def test_split_half_so_far_uses_the_architectures_with_the_most_seeds():
    archs = sample_architectures(12, seed=3)
    runs = _runs(archs, [0]) + _runs(archs[:8], [1]) + _runs(archs[:5], [2, 3])
    result = full.split_half_so_far(runs)
    assert result["seeds_a"] == [0, 1] and result["seeds_b"] == [2, 3] and result["architectures"] == 5
    tau = result["kendall_tau_valid_acc"]
    assert result["projected_half_kendall_tau_valid_acc"] == pytest.approx(full.spearman_brown(tau, 3 / 2))
    assert result["projected_spearman_brown_full_mean"] == pytest.approx(full.spearman_brown(tau, 3))
    assert "estimates, not measurements" in result["note"]
    fewer = full.split_half_so_far(_runs(archs, [0]) + _runs(archs[:2], [1, 2, 3]) + _runs(archs[:6], [1]))
    assert fewer["seeds_a"] == [0] and fewer["seeds_b"] == [1] and fewer["architectures"] == 6
    assert full.split_half_so_far(_runs(archs, [0])) is None


def test_agreement_with_runs_compares_against_the_seeds_the_full_build_does_not_share():
    archs = sample_architectures(30, seed=4)
    full_runs = _runs(archs, [0, 1], offset=1)
    small_runs = full_runs + _runs(archs, [2, 3], noise=2.0, offset=2)
    result = full.agreement_with_runs(benchmark_table(full_runs), small_runs, [0, 1])
    independent = result["against_independent_seeds"]
    assert independent["seeds_small"] == [2, 3] and independent["architectures"] == 30
    mine, theirs = benchmark_table(full_runs), benchmark_table(small_runs, [2, 3])
    expected = kendall_tau([mine[k]["valid_acc"] for k in sorted(mine)], [theirs[k]["valid_acc"] for k in sorted(mine)])
    assert independent["kendall_tau_valid_acc"] == pytest.approx(expected)
    low, high = independent["kendall_tau_valid_acc_ci95"]
    assert low <= expected <= high and low < high


def test_same_seed_reruns_counts_bitwise_equal_runs():
    archs = sample_architectures(10, seed=5)
    runs = _runs(archs, [0, 1])
    rerun = [dict(run) for run in runs]
    rerun[3]["valid_acc"] += 0.25
    result = full.same_seed_reruns(rerun, runs + _runs(archs, [7]))
    assert result["runs"] == 20 and result["seeds"] == [0, 1]
    assert result["bitwise_equal_fraction"] == pytest.approx(19 / 20)
    assert result["max_abs_difference_valid_acc"] == pytest.approx(0.25)
    assert result["kendall_tau_valid_acc_per_seed"]["1"] == pytest.approx(1.0)
    assert full.same_seed_reruns(runs, _runs(archs, [7])) == {"runs": 0}


def test_cost_per_network_from_the_runs_seconds():
    archs = sample_architectures(3, seed=6)
    runs = [_run(arch, 0, 70.0, seconds) for arch, seconds in zip(archs, (0.5, 1.0, 3.0))]
    result = full.cost(runs)
    assert result["seconds_per_network_median"] == 1.0
    assert result["seconds_per_network_mean"] == pytest.approx(1.5)
    assert result["cpu_hours_so_far"] == pytest.approx(4.5 / 3600)


def test_report_then_ship_a_complete_synthetic_build(tmp_path):
    package = Path(str(full.PACKAGE_DATA))
    data = tmp_path / "package"
    data.mkdir()
    for name in ("nb201_digits.csv", "nb201_digits_recipe.json"):
        (data / name).write_bytes((package / name).read_bytes())
    build = tmp_path / "build"
    build.mkdir()
    recipe = Recipe.from_dict(json.loads((package / "nb201_digits_recipe.json").read_text()))
    (build / "recipe.json").write_text(json.dumps(asdict(recipe)))
    archs = sample_architectures(6461, seed=0)  # one representative per class; the first 240: the shipped cells
    (build / "archs.txt").write_text("# every class\n" + "".join(nb201.to_string(a) + "\n" for a in archs))
    runs = _runs(archs, full.SEEDS, noise=1.0)
    small = tmp_path / "small_runs.csv"
    shipped_cells = {nb201.to_string(a) for a in archs[:240]}
    _write_runs(small, [run for run in runs if run["arch_str"] in shipped_cells] + _runs(archs[:240], [6, 7], offset=9))
    _write_runs(build / "runs.0of2.csv", [run for run in runs if run["seed"] != 5])

    with pytest.raises(SystemExit, match=r"seeds \[0, 1, 2, 3, 4\] of \[0, 1, 2, 3, 4, 5\] are complete"):
        full.ship(build, data, small)
    assert not (data / "nb201_digits_full.csv").exists()
    partial = json.loads((build / "report.json").read_text())
    assert partial["split_half"]["seeds_a"] == [0, 1] and partial["split_half"]["seeds_b"] == [2, 3]
    assert partial["split_half_so_far"]["seeds_a"] == [0, 1] and (build / "table_partial.csv").exists()

    _write_runs(build / "runs.1of2.csv", [run for run in runs if run["seed"] == 5])
    full.ship(build, data, small)
    result = json.loads((build / "report.json").read_text())
    assert result["complete_seeds"] == full.SEEDS and result["recipe_is_the_shipped_one"]
    assert "split_half_so_far" not in result
    tau = result["split_half"]["kendall_tau_valid_acc"]
    assert tau > 0.6 and result["split_half_meets_target"]  # quality spans 646 points, noise 1 point
    assert result["spearman_brown_kendall_valid_acc"] == pytest.approx(2 * tau / (1 + tau))
    agreement = result["agreement_with_240_cell_table"]
    assert agreement["architectures"] == 240
    low, high = agreement["kendall_tau_valid_acc_ci95"]
    assert low <= agreement["kendall_tau_valid_acc"] <= high
    assert agreement["same_seed_reruns"]["bitwise_equal_fraction"] == 1.0
    assert agreement["against_independent_seeds"]["seeds_small"] == [6, 7]

    shipped = json.loads((package / "nb201_digits_reliability.json").read_text())
    reliability = json.loads((data / "nb201_digits_full_reliability.json").read_text())
    assert list(reliability)[:len(shipped)] == list(shipped)  # the 240-cell table's format, then more
    assert reliability["seeds_a"] == [0, 1, 2] and reliability["seeds_b"] == [3, 4, 5]
    assert reliability["architectures"] == 6461 and reliability["kendall_tau_valid_acc"] == pytest.approx(tau)
    assert reliability["cost"]["seconds_per_network_median"] == 0.5
    assert Recipe.from_dict(json.loads((data / "nb201_digits_full_recipe.json").read_text())) == recipe
    rows = list(csv.DictReader(open(data / "nb201_digits_full.csv")))
    assert len(rows) == nb201.NUM_ARCHS and {row["seeds"] for row in rows} == {"0", "6"}


def test_the_shipped_whole_space_table():
    """rdnas/minibench/data/nb201_digits_full.csv, as shipped: every one of the 15,625 NB201 strings finds its row
    by name (``shipped:nb201_digits_full``); isomorphic cells share their class's values; the 6,461 trained
    classes have every seed and the cells that compute nothing sit at chance, marked untrained; it was built with
    the shipped digits recipe, and its reliability record is the build's."""
    import torch

    from rdnas.rank import GroundTruth, shipped_tables

    table = GroundTruth.load("shipped:nb201_digits_full", "nb201")
    assert table.path == shipped_tables()["nb201_digits_full"]
    archs = nb201.all_archs()
    accuracy = table.values(archs, "digits_valid_acc")  # raises if any string has no row
    trained = table.values(archs, "trained") == 1
    seeds = table.values(archs, "seeds")
    connected = nb201.connected(archs).numpy()
    np.testing.assert_array_equal(trained, connected)
    assert set(seeds[trained].tolist()) == {len(full.SEEDS)} and set(seeds[~trained].tolist()) == {0}
    np.testing.assert_array_equal(accuracy[~trained], 10.0)
    classes = {}
    for arch, value in zip(archs[torch.from_numpy(trained)].tolist(), accuracy[trained].tolist()):
        classes.setdefault(nb201.canonical_string(tuple(arch)), set()).add(value)
    assert len(classes) == 6461 and all(len(values) == 1 for values in classes.values())
    assert 10.0 < accuracy[trained].mean() < 100.0 and accuracy[trained].std() > 1.0  # a spread to rank
    package = Path(str(full.PACKAGE_DATA))
    recipe = json.loads((package / "nb201_digits_full_recipe.json").read_text())
    assert Recipe.from_dict(recipe) == Recipe.from_dict(json.loads((package / "nb201_digits_recipe.json").read_text()))
    reliability = json.loads((package / "nb201_digits_full_reliability.json").read_text())
    assert reliability["architectures"] == 6461 and reliability["seeds_a"] == [0, 1, 2]
    assert -1.0 <= reliability["kendall_tau_valid_acc"] <= 1.0

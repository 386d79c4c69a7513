"""benchmarks/constrained_search_experiments.py on the whole-space digits table (``--on digits-full``): two seeds of
every capped search and of the Pareto experiment, then the report. Every query stays under its cap, the picked
cell's value is the table's, the regret is against the best connected cell under the cap, and the report's
summary holds both methods at every cap."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from rdnas.rank import GroundTruth, shipped_tables  # noqa: E402
from rdnas.search import CostConstraint  # noqa: E402
from rdnas.spaces import nb201  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import constrained_search_experiments as script

    if "nb201_digits_full" not in shipped_tables():
        pytest.skip("the whole-space digits table is not shipped in this checkout")
    folder = tmp_path_factory.mktemp("constrained")
    saved, script.RUNS = script.RUNS, folder
    try:
        assert script.main(["run", "--on", "digits-full", "--runs", "2"]) == 0
        assert script.main(["report", "--on", "digits-full"]) == 0
    finally:
        script.RUNS = saved
    return folder / "digits_full"


def test_capped_searches_stay_under_their_caps_and_report_the_tables_values(runs):
    table = GroundTruth.load("shipped:nb201_digits_full", "nb201")
    everything = nb201.all_archs()
    truth = table.values(everything, "digits_valid_acc")
    flops = CostConstraint("nb201").costs(everything)["flops"].numpy()
    connected = nb201.connected(everything).numpy()
    results = [json.loads(p.read_text()) for p in sorted(runs.glob("cap*_seed*.json"))]
    assert len(results) == 3 * 2 * 2  # caps x methods x seeds
    for result in results:
        queried = np.asarray(result["queried_index"])
        assert len(queried) == 100 and (flops[queried] <= result["cap_flops"]).all()
        assert result["picked_test"] == truth[result["picked_index"]] == truth[queried].max()
        under = (flops <= result["cap_flops"]) & connected
        assert result["best_test_under_cap"] == truth[under].max()
        assert result["reported_column"] == "digits_valid_acc"
    summary = json.loads((runs / "summary.json").read_text())
    assert sorted(summary["cap"]) == sorted(f"{q}:{m}" for q in (25, 50, 75)
                                            for m in ("sampling+gbt-live", "random"))


def test_the_pareto_runs_measure_hypervolume_against_the_tables_true_front(runs):
    for seed in (0, 1):
        result = json.loads((runs / f"pareto_seed{seed}.json").read_text())
        assert result["method"] == "nsga2+gbt-live"
        for name in ("nsga2", "queried", "whole_space"):
            assert 0 < result["hypervolume_fraction"][name] <= 1 + 1e-9
    assert (runs / "pareto_seed0.png").stat().st_size > 0

"""benchmarks/teacher_curve_experiment.py end to end on a small slice (1 epoch, 100 classes, one seed): every run
keeps its estimates and its teacher's scores, the report pairs RD-NAS with SPOS on the teacher's own rows, and
``report --gt`` re-scores the runs against another table without training; a changed table or a missing array
file is refused with the reason."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from rdnas.rank import kendall_tau, shipped_tables  # noqa: E402

CLASSES, LABELLED = 100, 60


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    """(the script module, the runs folder, the table copy the runs were evaluated against)."""
    import teacher_curve_experiment as script

    if "nb201_digits_full" not in shipped_tables():
        pytest.skip("the whole-space digits table is not shipped in this checkout")
    root = tmp_path_factory.mktemp("teacher_curve")
    table = root / "table.csv"
    shutil.copy(shipped_tables()["nb201_digits_full"], table)
    runs = root / "runs"
    assert script.main(["run", "--epochs", "1", "--seeds", "0", "--teachers", f"oracle-0.6,trees-{LABELLED},oracle-0.9-w4",
                        "--eval-classes", str(CLASSES), "--gt", str(table), "--runs", str(runs),
                        "--work", str(root / "work")]) == 0
    return script, runs, table


def _report(script, runs, *extra) -> dict:
    assert script.main(["report", "--runs", str(runs), *extra]) == 0
    return {p["teacher"]: p for p in json.loads((runs.parent / "teacher_curve.json").read_text())}


def test_every_run_keeps_its_estimates_and_its_teachers_scores(curve):
    script, runs, _ = curve
    for name, rows in (("spos", CLASSES), ("oracle-0.6", CLASSES), (f"trees-{LABELLED}", CLASSES - LABELLED)):
        result = json.loads((runs / f"{name}_e1_seed0.json").read_text())
        with np.load(script.scores_path(runs, 1, 0, name)) as arrays:
            assert arrays["archs"].shape == (CLASSES, 6) and arrays["estimates"].shape == (CLASSES,)
            assert len(arrays["teacher_rows"]) == rows == result["evaluation_rows"]
            assert np.isnan(arrays["teacher_scores"]).all() == (name == "spos")
            truth = _truth(curve, arrays["archs"])
            assert result["kendall_tau"] == pytest.approx(kendall_tau(arrays["estimates"], truth), abs=1e-12)


def _truth(curve, archs):
    from rdnas.rank import GroundTruth

    return GroundTruth.load(curve[2], "nb201").values(archs.astype(np.int64), "digits_valid_acc")


def test_the_report_pairs_rdnas_with_spos_on_the_teachers_rows(curve):
    script, runs, _ = curve
    points = _report(script, runs)
    spos = np.load(script.scores_path(runs, 1, 0, "spos"))
    for name in ("oracle-0.6", f"trees-{LABELLED}"):
        result = json.loads((runs / f"{name}_e1_seed0.json").read_text())
        with np.load(script.scores_path(runs, 1, 0, name)) as arrays:
            rows = arrays["teacher_rows"]
            truth = _truth(curve, arrays["archs"])[rows]
            spos_tau = kendall_tau(spos["estimates"][rows], truth)
        point = points[name]
        assert point["teacher_kendall_tau"] == pytest.approx(result["teacher_kendall_tau"], abs=1e-12)
        assert point["rdnas_kendall_tau"] == pytest.approx(result["kendall_tau_teacher_rows"], abs=1e-12)
        assert point["spos_kendall_tau"] == pytest.approx(spos_tau, abs=1e-12)
        assert point["gain"] == pytest.approx(result["kendall_tau_teacher_rows"] - spos_tau, abs=1e-12)
    assert abs(points["oracle-0.6"]["teacher_kendall_tau"] - 0.6) < 0.005
    assert (runs.parent / "teacher_curve.png").stat().st_size > 0


def test_report_gt_rescores_the_runs_and_a_changed_table_is_refused(curve, tmp_path):
    script, runs, table = curve
    before = _report(script, runs)
    flipped = tmp_path / "flipped.csv"
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("digits_valid_acc")
    rows = []
    for line in lines[1:]:
        cells = line.split(",")
        cells[column] = repr(100.0 - float(cells[column]))
        rows.append(",".join(cells))
    flipped.write_text("\n".join([lines[0]] + rows) + "\n")
    after = _report(script, runs, "--gt", str(flipped))  # every tau against 100 - accuracy: the sign flips
    for name, point in before.items():
        for key in ("teacher_kendall_tau", "rdnas_kendall_tau", "spos_kendall_tau", "gain"):
            assert after[name][key] == pytest.approx(-point[key], abs=1e-12), (name, key)

    saved = table.read_bytes()
    try:
        shutil.copy(flipped, table)
        with pytest.raises(SystemExit, match="has changed since the runs were evaluated"):
            script.main(["report", "--runs", str(runs)])
    finally:
        table.write_bytes(saved)


def test_a_run_without_its_arrays_is_refused_by_name(curve, tmp_path):
    script, runs, _ = curve
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    script.scores_path(copy, 1, 0, "oracle-0.6").unlink()
    with pytest.raises(SystemExit, match=r"oracle-0.6_e1_seed0.npz is missing"):
        script.main(["report", "--runs", str(copy)])


def test_report_gt_of_a_missing_or_foreign_table_is_one_line(curve, tmp_path):
    script, runs, table = curve
    with pytest.raises(SystemExit, match=r"^--gt: no such file: .*nowhere.csv$"):
        script.main(["report", "--runs", str(runs), "--gt", str(tmp_path / "nowhere.csv")])
    foreign = tmp_path / "foreign.csv"  # NB201 cells, but not the column the curve needs
    foreign.write_text("arch_str,cifar10_valid_acc\n" + table.read_text().splitlines()[1].split(",")[1] + ",90.0\n")
    with pytest.raises(SystemExit, match=r"^--gt: .*foreign.csv has no column 'digits_valid_acc'"):
        script.main(["report", "--runs", str(runs), "--gt", str(foreign)])
    moved = tmp_path / "moved"  # the runs' own table deleted since they ran
    shutil.copytree(runs, moved)
    for path in moved.glob("*.json"):
        record = json.loads(path.read_text())
        record["gt"] = str(tmp_path / "deleted.csv")
        path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"deleted.csv, the table the runs .* were evaluated against, is gone"):
        script.main(["report", "--runs", str(moved)])


def test_report_ship_writes_the_curve_teacher_check_reads(curve, tmp_path, monkeypatch):
    from rdnas.rank.teacher_check import expected_gain

    script, runs, _ = curve
    monkeypatch.setattr(script, "SHIPPED_CURVE", tmp_path / "teacher_curve.json")
    points = _report(script, runs, "--ship")
    shipped = json.loads((tmp_path / "teacher_curve.json").read_text())
    assert {p["teacher"]: p for p in shipped} == points
    oracle = points["oracle-0.6"]
    prediction = expected_gain(shipped, oracle["teacher_kendall_tau"])
    assert prediction["epochs"] == 1 and prediction["gain"] == pytest.approx(oracle["gain"], abs=1e-12)


def test_a_weighted_run_distils_at_its_weight_and_stays_off_the_oracle_curve(curve):
    script, runs, _ = curve
    assert json.loads((runs / "oracle-0.9-w4_e1_seed0.json").read_text())["config"]["rank_weight"] == 4.0
    assert json.loads((runs / "oracle-0.6_e1_seed0.json").read_text())["config"]["rank_weight"] == 1.0
    points = _report(script, runs)
    assert points["oracle-0.9-w4"]["rank_weight"] == 4.0 and points["oracle-0.6"]["rank_weight"] == 1.0
    assert abs(points["oracle-0.9-w4"]["teacher_kendall_tau"] - 0.9) < 0.005
    # the crossing and the line need two oracle teachers at the default weight; the weighted one is not one
    assert json.loads((runs.parent / "teacher_curve_crossing.json").read_text()) == {}
    assert script.split_weight("oracle-0.9-w16") == ("oracle-0.9", 16.0)
    assert script.split_weight("trees-240") == ("trees-240", 1.0) and script.split_weight("spos") == ("spos", 1.0)


def test_the_tau_0_oracle_is_a_random_ranking():
    import teacher_curve_experiment as script

    truth = np.random.default_rng(5).normal(size=2000)
    scores, tau = script.perturbed_oracle(truth, 0, seed=3)
    assert tau == pytest.approx(kendall_tau(scores, truth)) and abs(tau) < 0.04
    assert np.array_equal(scores, np.random.default_rng(3).standard_normal(2000))  # the noise alone
    again, _ = script.perturbed_oracle(truth, 0.6, seed=3)
    assert abs(kendall_tau(again, truth) - 0.6) < 0.005


def test_zero_crossing_interpolates_after_the_last_teacher_that_did_not_pay():
    import teacher_curve_experiment as script

    # teachers given out of order; the gain is negative up to tau 0.45, positive from 0.6: crossing at 0.45 + 0.15/3
    assert script.zero_crossing([0.6, 0.3, 0.45, 0.75], [0.02, -0.05, -0.01, 0.04]) == pytest.approx(0.5)
    # a noisy dip above a first crossing: the crossing is after the last negative teacher
    assert script.zero_crossing([0.3, 0.45, 0.6, 0.75], [-0.02, 0.01, -0.01, 0.03]) == pytest.approx(0.6375)
    assert script.zero_crossing([0.3, 0.6], [0.01, 0.02]) == -np.inf
    assert script.zero_crossing([0.3, 0.6], [-0.01, -0.02]) == np.inf


def test_the_crossings_bootstrap_resamples_seeds_across_teachers_together():
    import teacher_curve_experiment as script

    rng = np.random.default_rng(0)
    per_seed = {}
    for tau in (0.3, 0.45, 0.6, 0.75, 0.9):  # gain = tau - 0.5 (crossing 0.5) plus seed noise
        per_seed[f"oracle-{tau}"] = {s: (0.4 + tau - 0.5 + 0.01 * noise, 0.4, tau)
                                     for s, noise in enumerate(rng.standard_normal(6))}
    found = script.crossing_interval(per_seed, samples=500)
    assert found["seeds"] == list(range(6))
    assert abs(found["crossing"] - 0.5) < 0.02
    low, high = found["crossing_ci95"]
    assert low <= found["crossing"] <= high and high - low < 0.1
    assert found["share_every_teacher_pays"] == found["share_no_teacher_pays"] == 0.0
    # a seed only some teachers have is left out of the paired bootstrap
    per_seed["oracle-0.3"][99] = (0.0, 0.4, 0.3)
    assert script.crossing_interval(per_seed, samples=10)["seeds"] == list(range(6))


def test_the_gain_line_fits_every_seed_of_every_oracle_teacher_and_resamples_seeds_together():
    import teacher_curve_experiment as script

    rng = np.random.default_rng(1)
    per_seed = {f"oracle-{tau}": {s: (0.4 + 0.2 * (tau - 0.5) + 0.005 * noise, 0.4, tau)
                                  for s, noise in enumerate(rng.standard_normal(5))}
                for tau in (0.3, 0.45, 0.6, 0.75, 0.9)}  # gain = 0.2 * (tau - 0.5) plus seed noise
    line = script.gain_slope(per_seed, samples=500)
    assert line["seeds"] == list(range(5))
    assert line["slope"] == pytest.approx(0.2, abs=0.02) and line["intercept"] == pytest.approx(-0.1, abs=0.01)
    low, high = line["slope_ci95"]
    assert low <= line["slope"] <= high and low > 0 and line["share_slope_not_positive"] == 0.0
    # the same line by hand: every (teacher, seed) one point
    x = np.array([v[2] for runs in per_seed.values() for v in runs.values()])
    y = np.array([v[0] - v[1] for runs in per_seed.values() for v in runs.values()])
    assert line["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], abs=1e-12)
    # a flat curve: the slope's interval holds zero and about half the resamples are not positive
    flat = {name: {s: (0.4 + 0.01 * rng.standard_normal(), 0.4, v[2]) for s, v in runs.items()}
            for name, runs in per_seed.items()}
    found = script.gain_slope(flat, samples=500)
    assert found["slope_ci95"][0] < 0 < found["slope_ci95"][1] and 0.05 < found["share_slope_not_positive"] < 0.95
    # one seed cannot be resampled: no line
    assert script.gain_slope({name: {0: runs[0]} for name, runs in per_seed.items()})["slope"] is None


def test_the_pooled_gain_averages_teachers_per_seed_and_resamples_seeds():
    import teacher_curve_experiment as script

    # two teachers, three seeds; seed 2's SPOS is low, which lifts both teachers' gains on that seed together
    per_seed = {"a": {0: (0.50, 0.48, 0.3), 1: (0.47, 0.46, 0.3), 2: (0.52, 0.40, 0.3)},
                "b": {0: (0.46, 0.48, 0.6), 1: (0.49, 0.46, 0.6), 2: (0.45, 0.40, 0.6), 7: (0.9, 0.1, 0.6)}}
    found = script.pooled_gain(per_seed, samples=2000)
    per_seed_mean = np.array([(0.02 - 0.02) / 2, (0.01 + 0.03) / 2, (0.12 + 0.05) / 2])  # seed 7: only b has it
    assert found["seeds"] == [0, 1, 2] and found["gain"] == pytest.approx(per_seed_mean.mean())
    from scipy.stats import ttest_1samp

    assert found["t_test_p"] == pytest.approx(ttest_1samp(per_seed_mean, 0).pvalue)
    low, high = found["gain_ci95"]
    assert per_seed_mean.min() - 1e-12 <= low <= found["gain"] <= high <= per_seed_mean.max() + 1e-12
    assert script.pooled_gain({"a": {0: (0.5, 0.4, 0.3)}})["gain_ci95"] is None


def test_the_dose_arm_is_compared_with_its_teacher_at_weight_1_by_seed():
    import teacher_curve_experiment as script

    teachers = {"oracle-0.9": {0: (0.50, 0.48, 0.9), 1: (0.49, 0.47, 0.9), 2: (0.52, 0.5, 0.9)},
                "oracle-0.9-w4": {0: (0.55, 0.48, 0.9), 1: (0.53, 0.47, 0.9), 2: (0.58, 0.5, 0.9), 3: (0.1, 0.5, 0.9)},
                "oracle-0.6-w4": {0: (0.55, 0.48, 0.6), 1: (0.53, 0.47, 0.6)}}  # its base teacher was not run
    found = script.dose_comparison(teachers)
    assert list(found) == ["oracle-0.9-w4"]
    dose = found["oracle-0.9-w4"]
    assert dose["against"] == "oracle-0.9" and dose["seeds"] == [0, 1, 2]
    assert dose["difference"] == pytest.approx(np.mean([0.05, 0.04, 0.06]))
    from scipy.stats import ttest_rel

    assert dose["paired_t_p"] == pytest.approx(ttest_rel([0.55, 0.53, 0.58], [0.50, 0.49, 0.52]).pvalue)
    assert 0.04 - 1e-12 <= dose["difference_ci95"][0] <= dose["difference_ci95"][1] <= 0.06 + 1e-12


def test_the_report_gives_each_supernets_top_pick_at_its_table_accuracy(curve):
    script, runs, _ = curve
    points = _report(script, runs)
    with np.load(script.scores_path(runs, 1, 0, "spos")) as spos, \
            np.load(script.scores_path(runs, 1, 0, "oracle-0.6")) as oracle:
        truth = _truth(curve, spos["archs"])
        assert points["oracle-0.6"]["spos_top_pick_acc"] == truth[np.argmax(spos["estimates"])]
        assert points["oracle-0.6"]["rdnas_top_pick_acc"] == truth[np.argmax(oracle["estimates"])]

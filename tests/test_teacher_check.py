"""rdnas teacher check: a teacher's rank quality on a few labelled architectures, beside the supernet's."""

import json

import numpy as np
import pytest

from rdnas.cli import main as rdnas_main
from rdnas.minibench import sample_architectures
from rdnas.rank import kendall_tau
from rdnas.rank.teacher_check import expected_gain, teacher_check, verdict
from rdnas.spaces import nb201


def test_a_perfect_and_a_reversed_teacher():
    truth = np.linspace(50, 90, 30)
    report = teacher_check(truth * 2 + 1, truth, bootstrap_samples=200)
    assert report["teacher_kendall_tau"] == pytest.approx(1.0) and report["teacher_kendall_tau_ci95"] == pytest.approx([1.0, 1.0])
    report = teacher_check(-truth, truth, truth + 0.5, bootstrap_samples=200)
    assert report["teacher_kendall_tau"] == pytest.approx(-1.0) and report["supernet_kendall_tau"] == pytest.approx(1)
    assert report["teacher_minus_supernet"] == pytest.approx(-2.0) and report["teacher_better_share"] == 0.0


def test_intervals_hold_the_estimate_and_the_difference_is_paired():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=60)
    teacher = truth + rng.normal(scale=0.5, size=60)
    supernet = truth + rng.normal(scale=2.0, size=60)
    report = teacher_check(teacher, truth, supernet, bootstrap_samples=500, seed=1)
    low, high = report["teacher_kendall_tau_ci95"]
    assert low < report["teacher_kendall_tau"] < high
    assert report["teacher_kendall_tau"] == pytest.approx(kendall_tau(teacher, truth))
    low, high = report["teacher_minus_supernet_ci95"]
    assert 0 < low < report["teacher_minus_supernet"] < high and report["teacher_better_share"] > 0.97
    assert teacher_check(teacher, truth, supernet, bootstrap_samples=500, seed=1) == report  # seeded


@pytest.mark.parametrize("teacher, truth, message", [
    ([1, 2, 3], [1, 2, 3, 4], "teacher_scores has 3 values for 4"),
    ([1, 2, 3], [1, 2, 3], "at least 4 labelled"),
    ([1, 2, np.nan, 4], [1, 2, 3, 4], "teacher_scores holds non-finite"),
])
def test_bad_input_is_named(teacher, truth, message):
    with pytest.raises(ValueError, match=message):
        teacher_check(teacher, truth)


def test_expected_gain_reads_the_measured_curve_through_a_line_and_lists_the_nearby_teachers():
    curve = [{"teacher": name, "epochs": 30, "teacher_kendall_tau": t, "gain": g, "gain_ci95": [g - 0.01, g + 0.01],
              "spos_kendall_tau": 0.5} for name, t, g in (("a", 0.3, -0.05), ("b", 0.6, 0.0), ("c", 0.9, 0.1))] + [
        {"epochs": 10, "teacher_kendall_tau": 0.5, "gain": 0.2, "spos_kendall_tau": 0.4},
        {"epochs": 30, "teacher_kendall_tau": 0.75, "gain": 5.0, "spos_kendall_tau": 0.5, "rank_weight": 4.0}]
    found = expected_gain(curve, 0.75)
    slope, intercept = np.polyfit([0.3, 0.6, 0.9], [-0.05, 0.0, 0.1], 1)  # the weighted point does not count
    assert found["epochs"] == 30 and found["slope"] == pytest.approx(slope)
    assert found["gain"] == pytest.approx(intercept + slope * 0.75)
    assert [p["teacher"] for p in found["nearby"]] == [] and found["within_measured_range"] is True
    assert [p["teacher"] for p in expected_gain(curve, 0.65)["nearby"]] == ["b"]
    assert [p["teacher"] for p in expected_gain(curve, 0.75, neighbourhood=0.2)["nearby"]] == ["b", "c"]
    assert expected_gain(curve, 0.95)["within_measured_range"] is False
    single = expected_gain(curve, 0.9, epochs=10)  # one measured tau: a flat line through it
    assert single["gain"] == pytest.approx(0.2) and single["slope"] == 0.0
    assert expected_gain(curve, 0.5, epochs=20) is None and expected_gain([], 0.5) is None


def test_the_verdict_follows_the_interval_of_teacher_minus_supernet():
    truth = np.linspace(60, 95, 40)
    rng = np.random.default_rng(1)
    noisy, exact = truth + rng.normal(scale=10, size=40), truth + rng.normal(scale=0.5, size=40)
    assert "clearly better" in verdict(teacher_check(exact, truth, noisy, bootstrap_samples=200))
    assert "clearly worse" in verdict(teacher_check(noisy, truth, exact, bootstrap_samples=200))
    assert "not clearly better" in verdict(teacher_check(noisy, truth, noisy + rng.normal(scale=0.1, size=40),
                                                         bootstrap_samples=200))
    assert "no supernet" in verdict(teacher_check(noisy, truth, bootstrap_samples=50))


def _tables(tmp_path, archs, truth, teacher):
    gt = tmp_path / "labelled.csv"
    gt.write_text("arch_str,valid_acc\n" + "".join(f"{nb201.to_string(a)},{v}\n" for a, v in zip(archs, truth)))
    table = tmp_path / "teacher.csv"  # rows in another order than --gt's: keyed by architecture
    order = np.random.default_rng(0).permutation(len(archs))
    table.write_text("arch,synflow\n" + "".join(f"{nb201.to_string(archs[k])},{teacher[k]}\n" for k in order))
    return gt, table


def test_cli_reports_the_teacher_and_the_supernet(tmp_path, capsys):
    from rdnas.train import OneShotTrainer, TrainConfig

    archs = sample_architectures(12, seed=4)
    truth = np.arange(12, dtype=float)
    gt, table = _tables(tmp_path, archs, truth, truth[::-1].copy())
    run = tmp_path / "run"
    OneShotTrainer(TrainConfig(data="digits", image_size=8, channels=4, cells_per_stage=1, epochs=1,
                               out_dir=str(run)), progress=False).fit()
    out = tmp_path / "check.json"
    assert rdnas_main(["teacher", "check", "--teacher-table", str(table), "--gt", str(gt), "--checkpoint",
                       str(run / "checkpoint.pt"), "--bootstrap", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "teacher synflow: Kendall tau -1.000" in printed and "supernet" in printed
    assert "verdict: the teacher ranks clearly worse than the supernet" in printed
    report = json.loads(out.read_text())
    assert report["teacher_kendall_tau"] == pytest.approx(-1.0) and -1 <= report["supernet_kendall_tau"] <= 1
    assert report["architectures"] == 12 and report["column"] == "valid_acc"


def test_cli_refuses_what_it_cannot_check(tmp_path, capsys):
    archs = sample_architectures(12, seed=4)
    truth = np.arange(12, dtype=float)
    gt, table = _tables(tmp_path, archs[:10], truth[:10], truth[:10])
    other_gt, _ = _tables(tmp_path / "..", archs, truth, truth)  # two architectures the teacher table lacks
    cases = [(["--gt", str(other_gt)], "has no row for 2 of the 12"),
             (["--gt", str(gt), "--teacher", "snip"], "no column 'snip'")]
    for extra, message in cases:
        status = None
        try:
            status = rdnas_main(["teacher", "check", "--teacher-table", str(table), *extra])
        except SystemExit as stop:
            status = stop.code
        assert status == 2
        assert message in capsys.readouterr().err

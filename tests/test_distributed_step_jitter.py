"""benchmarks/distributed_step_jitter.py: the analysis separates the imbalance the cost estimate predicts from
the ranks' noise (checked on synthetic steps whose parts are known), and the script runs end to end on 2 gloo
processes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def synthetic(steps: int, noise_ms: float, seed: int = 0):
    """Two ranks whose compute time is 10 ms + 4 ms per cost unit plus independent Gaussian noise."""
    rng = np.random.default_rng(seed)
    costs = rng.uniform(8, 14, size=(2, steps))
    compute = 0.010 + 0.004 * costs + rng.normal(0, noise_ms * 1e-3, size=(2, steps))
    starts = np.tile(np.arange(steps) * 0.2, (2, 1))
    return starts, starts + compute, costs


def test_the_analysis_recovers_the_cost_fit_and_the_noise():
    from distributed_step_jitter import analyse

    summary = analyse(*synthetic(4000, noise_ms=5.0))
    assert summary["compute_fit_ms"]["intercept"] == pytest.approx(10.0, abs=0.5)
    assert summary["compute_fit_ms"]["per_cost_unit"] == pytest.approx(4.0, abs=0.05)
    assert summary["noise_ms_std"] == pytest.approx(5.0 * np.sqrt(2), rel=0.05)  # the difference of two ranks
    assert summary["noise_only_gap_ms_median"] == pytest.approx(0.674 * 5.0 * np.sqrt(2), rel=0.05)
    assert 0.45 < summary["rank1_later_share"] < 0.55
    assert all(abs(value) < 0.1 for value in summary["speed_ratio_autocorrelation"].values())  # independent steps

    quiet = analyse(*synthetic(4000, noise_ms=0.01))  # no noise: the estimate explains every difference
    assert quiet["predicted_vs_measured_difference_correlation"] > 0.999
    assert quiet["gap_ms_median"] == pytest.approx(quiet["deterministic_gap_ms_median"], rel=0.01)


def test_a_persistent_speed_difference_shows_in_the_autocorrelation():
    from distributed_step_jitter import analyse

    starts, arrivals, costs = synthetic(2000, noise_ms=0.5)
    slow = np.repeat(np.random.default_rng(1).uniform(1.0, 1.6, size=20), 100)  # rank 1's speed, in stretches
    arrivals[1] = starts[1] + (arrivals[1] - starts[1]) * slow
    autocorrelation = analyse(starts, arrivals, costs)["speed_ratio_autocorrelation"]
    assert autocorrelation["20"] > 0.5


def test_the_script_runs_on_two_processes(tmp_path):
    import distributed_step_jitter

    out = tmp_path / "jitter.json"
    threads = torch.get_num_threads()
    assert distributed_step_jitter.main(["--steps", "40", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the caller's thread count is left alone
    summary = json.loads(out.read_text())
    assert summary["steps"] == 40 and summary["environment"]["num_threads"] == 1
    assert summary["gap_ms_median"] >= 0 and summary["step_ms_median"] > 0
    assert set(summary["speed_ratio_autocorrelation"]) == {"1", "2", "5", "10", "20"}


@pytest.mark.parametrize("steps", ["10", "0", "-5"])
def test_too_few_steps_is_a_usage_error(steps, capsys, tmp_path):
    import distributed_step_jitter

    out = tmp_path / "jitter.json"
    with pytest.raises(SystemExit) as exit_info:
        distributed_step_jitter.main(["--steps", steps, "--out", str(out)])
    assert exit_info.value.code == 2 and f"--steps must be at least 40, got {steps}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--steps", "nan"], ["--steps", ""], ["--network", "vgg"]])
def test_a_malformed_option_is_a_usage_error(argv, capsys, tmp_path):
    import distributed_step_jitter

    out = tmp_path / "jitter.json"
    with pytest.raises(SystemExit) as exit_info:
        distributed_step_jitter.main([*argv, "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and f"argument {argv[0]}:" in error and not out.exists()

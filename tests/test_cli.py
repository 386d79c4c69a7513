"""The command-line interface, run as a user runs it."""

import json
import subprocess
import sys

import pytest

from rdnas.cli import build_parser


def run_cli(*args, cwd):
    # The timeout only guards against a hang: the demo test takes about a minute alone, several on a loaded machine.
    return subprocess.run([sys.executable, "-m", "rdnas", *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd)


def test_help_lists_the_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_unknown_command_is_an_error(tmp_path):
    result = run_cli("bogus", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr


def test_demo_runs_the_pipeline_and_writes_report_and_plots(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--epochs", "2", "--eval-every", "1", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "SPOS supernet" in result.stdout and "RD-NAS supernet" in result.stdout and "synflow" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["supernets"]) == {"spos", "rdnas"} and report["num_archs"] >= 100
    for run in report["supernets"].values():
        assert [h["epoch"] for h in run["history"] if "kendall_tau" in h] == [1, 2]
        assert -1 <= run["report"]["kendall_tau"] <= 1 and len(run["estimates"]) == report["num_archs"]
    assert report["supernets"]["rdnas"]["config"]["paths_per_step"] == report["supernets"]["spos"]["config"]["paths_per_step"]
    assert "rank_loss" in report["supernets"]["rdnas"]["history"][0]
    assert (out / "tau_per_epoch.png").stat().st_size > 1000 and (out / "estimate_vs_truth.png").stat().st_size > 1000


def test_search_cli_prints_the_top_cells(tmp_path):
    from rdnas.train import OneShotTrainer, TrainConfig

    run = tmp_path / "run"
    OneShotTrainer(TrainConfig(data="digits", image_size=8, channels=4, cells_per_stage=1, epochs=1,
                               out_dir=str(run)), progress=False).fit()
    out = tmp_path / "not yet" / "top.json"  # its folder is created before the search starts
    result = run_cli("search", "--checkpoint", str(run / "checkpoint.pt"), "--strategy", "evolution", "--budget", "40",
                     "--population", "8", "--top-k", "3", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    top = json.loads(out.read_text())["top"]
    assert len(top) == 3 and top[0]["supernet_accuracy"] >= top[-1]["supernet_accuracy"]


def test_bench_build_cli(tmp_path):
    result = run_cli("bench", "build", "--archs", "4", "--seeds", "2", "--epochs", "1", "--train-images", "64",
                     "--channels", "4", "--out", str(tmp_path / "bench"), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reliability" in result.stdout
    lines = (tmp_path / "bench" / "nb201_digits.csv").read_text().splitlines()
    assert lines[0].startswith("index,arch_str,digits_valid_acc") and len(lines) == 5
    assert json.loads((tmp_path / "bench" / "reliability.json").read_text())["architectures"] == 4


def test_parser_defaults():
    from rdnas.demo import config_from_args

    config = config_from_args(build_parser().parse_args(["demo"]))
    assert (config.epochs, config.paths_per_step, config.teacher_proxies, config.device) == (30, 4, "synflow", "cpu")
    config = config_from_args(build_parser().parse_args(["demo", "--space", "resnet48"]))
    assert (config.space, config.epochs, config.paths_per_step, config.teacher_proxies) == ("resnet48", 15, 4, "flops")
    config = config_from_args(build_parser().parse_args(["demo", "--space", "resnet48", "--epochs", "3"]))
    assert config.epochs == 3


def test_train_rdnas_from_a_proxy_table(tmp_path):
    table = tmp_path / "flops.csv"
    result = run_cli("proxies", "--proxy", "flops", "--out", str(table), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "rdnas"
    result = run_cli("train", "--method", "rdnas", "--teacher-table", str(table), "--teacher", "flops", "--paths", "3",
                     "--data", "digits", "--image-size", "8", "--channels", "4", "--cells", "1", "--epochs", "1",
                     "--out", str(run), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["rank_loss"] >= 0 and metrics["rank_weight"] == 1.0
    result = run_cli("train", "--method", "rdnas", "--paths", "3", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert result.returncode != 0 and "needs a teacher" in result.stderr


@pytest.mark.parametrize("argv, message", [
    (["proxies", "--proxy", "synflow", "--out", "t.csv", "--device", "nonsense"],
     "argument --device: expected a torch device such as cpu, cuda or cuda:1, got 'nonsense'"),
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["eval", "--checkpoint", "c.pt", "--archs", "0"], "argument --archs: expected a positive integer, got '0'"),
    (["eval", "--checkpoint", "c.pt", "--archs", "-1"], "argument --archs: expected a positive integer, got '-1'"),
    (["search", "--checkpoint", "c.pt", "--top-k", "x"], "argument --top-k: expected an integer, got 'x'"),
])
def test_bad_arguments_are_one_line_usage_errors(argv, message, capsys):
    """Rejected while parsing (exit status 2), before any work: --archs -1 used to evaluate 15,624 cells."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_eval_out_that_is_a_folder_fails_before_the_evaluation(tmp_path, capsys):
    from rdnas.cli import main

    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    assert f"--out must be a file path, got the folder {tmp_path}" in capsys.readouterr().err

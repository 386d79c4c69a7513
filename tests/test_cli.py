"""The command-line interface, run as a user runs it."""

import json
import subprocess
import sys

from rdnas.cli import build_parser


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rdnas", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_help_lists_the_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_unknown_command_is_an_error(tmp_path):
    result = run_cli("bogus", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr


def test_demo_distils_the_ranking_and_writes_json(tmp_path):
    report_path = tmp_path / "demo.json"
    result = run_cli("demo", "--n", "256", "--steps", "60", "--json", str(report_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Kendall tau" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["correctness"]["margin_rank_loss_vs_F_max_abs_diff"] == 0.0
    assert report["correctness"]["pairwise_vs_reference_abs_diff"] < 1e-12
    assert report["distillation"]["kendall_tau_before"] < 0.2
    assert report["distillation"]["kendall_tau_after"] > 0.6
    assert report["pairwise_speed"]["fused_fwd_bwd_ms"] > 0


def test_parser_defaults():
    args = build_parser().parse_args(["demo"])
    assert (args.n, args.steps, args.device, args.json) == (2048, 150, "cpu", None)

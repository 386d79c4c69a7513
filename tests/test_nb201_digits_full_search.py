"""Search on a whole-space table as the ground truth (issue 27, section 3): benchmarks/search_experiments.py
--table (random search, regularised evolution, sampling search; best value and regret against queries, one
results folder per table content) and `rdnas search` with the table as fitness and ground truth. Synthetic tables."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rdnas.cli import main as rdnas_main
from rdnas.spaces import nb201

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import search_experiments as experiments  # noqa: E402
from experiment_harness import command_line  # noqa: E402


def _write_table(path: Path, seeds: int = 2, drop: int = 0, shift: float = 0.0) -> np.ndarray:
    """A whole-space table in nb201_digits_full.csv's format: accuracy grows with the cell's 3x3 convolutions and
    skip connections (plus a fixed pattern so values differ), disconnected cells at chance; rows in a shuffled order
    (readers match them by architecture), ``drop`` of them left out. Returns the accuracy of every cell in rdnas's
    enumeration order."""
    archs = nb201.all_archs()
    connected = nb201.connected(archs).numpy()
    convs = (archs == nb201.OPS.index("nor_conv_3x3")).sum(1).numpy()
    skips = (archs == nb201.OPS.index("skip_connect")).sum(1).numpy()
    index = np.arange(len(archs))
    accuracy = np.where(connected, 80.0 + 2.0 * convs + 0.5 * skips + (index % 97) / 100 + shift, 10.0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "arch_str", "digits_valid_acc", "digits_valid_loss", "seeds", "trained"])
        for k in np.random.default_rng(1).permutation(len(archs))[drop:].tolist():
            writer.writerow([k, nb201.to_string(archs[k]), f"{accuracy[k]:.4f}", "0.5",
                             seeds if connected[k] else 0, int(connected[k])])
    return np.round(accuracy, 4)


def _experiment(argv: list[str]) -> int:
    return command_line(experiments.__doc__, experiments.run, experiments.report, "--methods", experiments.METHODS,
                        run_options=experiments.run_options, report_options=experiments.report_options, argv=argv)


def test_load_table_reads_every_cell_through_the_ground_truth_reader(tmp_path):
    path = tmp_path / "digits.csv"
    accuracy = _write_table(path, seeds=3)
    values, table = experiments.load_table(path, "digits_valid_acc")
    assert values.shape == (nb201.NUM_ARCHS,) and values.numpy() == pytest.approx(accuracy)
    assert table["best"] == pytest.approx(accuracy.max()) and table["seeds_per_cell"] == [3]
    assert table["name"].startswith("digits-3seeds-") and table["name"].endswith(table["sha256"][:8])
    assert table["trained_cells"] == int(nb201.connected(nb201.all_archs()).sum())


def test_load_table_refuses_a_table_without_every_cell_or_the_column(tmp_path, capsys):
    short = tmp_path / "short.csv"
    _write_table(short, drop=5)
    with pytest.raises(ValueError, match=r"--table .*short.csv: .*has no row for .*whole-space"):
        experiments.load_table(short, "digits_valid_acc")
    whole = tmp_path / "whole.csv"
    _write_table(whole)
    with pytest.raises(ValueError, match=r"--table .*whole.csv: .*no column 'cifar10_valid_acc'"):
        experiments.load_table(whole, "cifar10_valid_acc")
    assert _experiment(["run", "--table", str(tmp_path / "absent.csv")]) == 2
    assert "search_experiments.py run: error: --table" in capsys.readouterr().err


def test_search_experiment_on_a_table_reports_best_and_regret_against_queries(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "TABLE_RESULTS", tmp_path / "results")
    path = tmp_path / "digits.csv"
    accuracy = _write_table(path)
    methods = "random,evolution,sampling+gbt"
    assert _experiment(["run", "--table", str(path), "--methods", methods, "--runs", "2"]) == 0
    _, table = experiments.load_table(path, "digits_valid_acc")
    folder = tmp_path / "results" / table["name"]
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*_seed*.json"))]
    assert len(runs) == 6
    for run in runs:
        queried = np.array(run["queried_index"])
        assert len(set(queried.tolist())) == experiments.BUDGET  # each cell queried once
        assert nb201.connected(nb201.all_archs()[torch.from_numpy(queried)]).all()  # never a disconnected cell
        assert run["best"] == pytest.approx(np.maximum.accumulate(accuracy[queried]).tolist())
        assert run["regret"] == pytest.approx((accuracy.max() - np.array(run["best"])).tolist())
        assert run["sha256"] == table["sha256"] and run["column"] == "digits_valid_acc"
    capsys.readouterr()
    assert _experiment(["run", "--table", str(path), "--methods", methods, "--runs", "2"]) == 0
    assert capsys.readouterr().out.count("done already") == 6  # resumed: none rerun

    assert _experiment(["report", "--table", str(path)]) == 0
    summary = json.loads(folder.with_suffix(".json").read_text())
    assert summary["table"]["sha256"] == table["sha256"] and summary["table"]["seeds_per_cell"] == [2]
    for method in methods.split(","):
        entry = summary["methods"][method]
        assert entry["runs"] == 2
        final = [r["best"][-1] for r in runs if r["method"] == method]
        at_budget = entry["queries"][str(experiments.BUDGET)]
        assert at_budget["best_mean"] == pytest.approx(np.mean(final))
        assert at_budget["regret_mean"] == pytest.approx(accuracy.max() - np.mean(final))
        assert at_budget["best_std"] == pytest.approx(np.std(final, ddof=1))
        assert entry["queries"]["10"]["best_mean"] <= at_budget["best_mean"]
    text = folder.with_suffix(".md").read_text()
    assert str(path) in text and table["sha256"][:12] in text and "seeds per trained cell: 2" in text
    assert folder.with_suffix(".png").stat().st_size > 0

    other = tmp_path / "other.csv"  # another table's runs go to another folder: never mixed with these
    _write_table(other, shift=0.5)
    assert _experiment(["run", "--table", str(other), "--methods", "random", "--runs", "1"]) == 0
    assert len(list(folder.glob("*.json"))) == 6
    assert len(list((tmp_path / "results").glob("other-2seeds-*/random_seed0.json"))) == 1


def test_rdnas_search_runs_with_a_whole_space_table_as_fitness_and_ground_truth(tmp_path, capsys):
    path = tmp_path / "digits.csv"
    accuracy = _write_table(path)
    out = tmp_path / "top.json"
    assert rdnas_main(["search", "--table", str(path), "--table-column", "digits_valid_acc", "--gt", str(path),
                       "--column", "digits_valid_acc", "--strategy", "evolution", "--budget", "60", "--top-k", "3",
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"best in the table: {accuracy.max():.2f}" in printed
    top = json.loads(out.read_text())["top"]
    assert len(top) == 3 and all(row["ground_truth"] == pytest.approx(row["table_score"]) for row in top)
    index = nb201.SPACE.index(torch.tensor([nb201.from_string(row["arch"]) for row in top]))
    assert [row["table_score"] for row in top] == pytest.approx(accuracy[index.numpy()].tolist())

"""benchmarks/dass_label_agreement.py: per-task Spearman of set-aside against rebuilt runs, and of seed 0 against
seed 1, on hand-made run files."""

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dass_label_agreement  # noqa: E402

from rdnas.kd.bench import RUN_COLUMNS  # noqa: E402


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({"valid_loss": 1.0, "train_loss": 1.0, "seconds": 1.0, "cpu_seconds": 1.0, **row})


def _rows(task, teacher, seed, accuracies, regime="kd"):
    return [{"task": task, "teacher": teacher, "arch_str": f"a{i}", "seed": seed, "regime": regime,
             "valid_acc": acc} for i, acc in enumerate(accuracies)]


def test_agreement_per_task_against_the_rebuild_and_across_seeds(tmp_path, capsys):
    bench = tmp_path / "bench"
    (bench / "superseded").mkdir(parents=True)
    _write(bench / "runs.0of2.csv", _rows("t1", "new1", 0, [1, 2, 3, 4]) + _rows("t1", "new1", 1, [4, 3, 2, 1])
           + _rows("t1", "-", 0, [9, 9, 9, 9], regime="ce"))
    _write(bench / "runs.1of2.csv", _rows("t2", "new2", 0, [10, 20, 30]))
    _write(bench / "superseded" / "kd_runs_of_lost_teachers.csv",
           _rows("t1", "old1", 0, [2, 3, 4, 5]) + _rows("t2", "old2", 0, [30, 20]))
    assert dass_label_agreement.main(["--bench", str(bench)]) == 0
    result = json.loads((bench / "superseded" / "agreement.json").read_text())["tasks"]
    t1 = result["t1"]
    assert t1["teachers"] == {"superseded": "old1", "rebuilt": "new1"}
    assert t1["rebuild"]["0"]["spearman"] == pytest.approx(1.0) and t1["rebuild"]["0"]["difference_mean"] == -1.0
    assert t1["seeds"]["spearman"] == pytest.approx(-1.0) and t1["seeds"]["students"] == 4
    assert result["t2"]["rebuild"]["0"] is None and result["t2"]["seeds"] is None  # 2 shared students: too few
    table = (bench / "superseded" / "agreement.md").read_text()
    assert "| t1 | 1.00 (4) | -1.00 | 0.00 | 1.12 | -1.00 (4) |" in table and "| t2 | - |" in table
    assert table == capsys.readouterr().out.split("-> ")[0].rstrip("\n") + "\n"


def test_a_missing_superseded_file_or_an_empty_build_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        dass_label_agreement.main(["--bench", str(tmp_path)])
    assert exit_.value.code == 2 and "--superseded: no file" in capsys.readouterr().err
    (tmp_path / "superseded").mkdir()
    _write(tmp_path / "superseded" / "kd_runs_of_lost_teachers.csv", _rows("t1", "old", 0, [1, 2, 3]))
    with pytest.raises(SystemExit) as exit_:
        dass_label_agreement.main(["--bench", str(tmp_path)])
    assert exit_.value.code == 2 and "--bench: no runs in" in capsys.readouterr().err


@pytest.mark.parametrize("argv, written, match", [
    (["--regime", "xyz"], "", "--regime: invalid choice: 'xyz'"),
    (["--regime", ""], "", "--regime: invalid choice: ''"),
    ([], "task,teacher\nt1\n", "not a KD run row"),
])
def test_bad_input_is_one_usage_line_and_nothing_is_written(tmp_path, capsys, argv, written, match):
    bench = tmp_path / "bench"
    (bench / "superseded").mkdir(parents=True)
    _write(bench / "runs.csv", _rows("t1", "new", 0, [1, 2, 3]))
    superseded = bench / "superseded" / "kd_runs_of_lost_teachers.csv"
    _write(superseded, _rows("t1", "old", 0, [1, 2, 3]))
    if written:
        superseded.write_text(written)
    with pytest.raises(SystemExit) as exit_:
        dass_label_agreement.main(["--bench", str(bench), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and match in err and "Traceback" not in err
    assert sorted(p.name for p in (bench / "superseded").iterdir()) == ["kd_runs_of_lost_teachers.csv"]

"""A mini-benchmark over a whole space: `rdnas bench build --archs-file` and the table spread to every architecture."""

import math
import re

import pytest

from rdnas.cli import main as rdnas_main
from rdnas.minibench import benchmark_table, read_all_runs, sample_architectures
from rdnas.minibench.whole_space import whole_space_table, write_whole_space_table
from rdnas.rank import GroundTruth
from rdnas.spaces import get_space, nb201

SPACE = get_space("nb201")


def _row(arch, acc):
    return {"arch_str": nb201.to_string(arch), "valid_acc": acc, "valid_loss": 1.0 / acc, "valid_acc_std": 0.5,
            "seeds": 6}


def test_every_architecture_of_the_space_gets_the_row_of_its_class(tmp_path):
    archs = sample_architectures(6461, seed=0)  # one representative of every connected isomorphism class
    assert len({nb201.canonical_string(a) for a in archs}) == 6461
    table = {k: _row(arch, 50.0 + (k % 40)) for k, arch in enumerate(archs)}
    rows = whole_space_table(table, "nb201")
    assert sorted(rows) == list(range(nb201.NUM_ARCHS))
    path = tmp_path / "full.csv"
    write_whole_space_table(path, rows)
    truth = GroundTruth.load(path, "nb201")
    everything = SPACE.enumerate()
    accuracy = truth.values(everything, "digits_valid_acc")
    by_class = {nb201.canonical_string(a): row["valid_acc"] for a, row in zip(archs, table.values())}
    connected = nb201.connected(everything)
    for arch, acc, live in zip(everything.tolist(), accuracy, connected.tolist()):
        if live:
            assert acc == pytest.approx(by_class[nb201.canonical_string(tuple(arch))], abs=1e-4)
        else:
            assert acc == pytest.approx(10.0)  # chance, stated in the trained column
    trained = truth.values(everything, "trained")
    assert (trained == connected.numpy()).all()
    loss = truth.values(everything[~connected], "digits_valid_loss")
    assert loss == pytest.approx(math.log(10), abs=1e-6)


def test_a_partial_build_is_refused_unless_allowed():
    archs = sample_architectures(20, seed=0)
    table = {k: _row(arch, 60.0) for k, arch in enumerate(archs)}
    with pytest.raises(ValueError, match="have no trained representative"):
        whole_space_table(table, "nb201")
    rows = whole_space_table(table, "nb201", allow_missing=True)
    classes = {nb201.canonical_string(b) for b in archs}
    everything = [tuple(a) for a in SPACE.enumerate().tolist()]
    members = sum(nb201.is_connected(a) and nb201.canonical_string(a) in classes for a in everything)
    disconnected = sum(not nb201.is_connected(a) for a in everything)
    assert len(rows) == members + disconnected and members >= 20


def test_two_representatives_of_one_class_are_refused():
    arch = (1, 2, 3, 4, 2, 3)
    twin = next(tuple(a) for a in SPACE.enumerate().tolist()
                if tuple(a) != arch and nb201.canonical_string(tuple(a)) == nb201.canonical_string(arch))
    with pytest.raises(ValueError, match="compute the same network"):
        whole_space_table({0: _row(arch, 60.0), 1: _row(twin, 61.0)}, "nb201")


def test_bench_build_trains_the_architectures_of_a_file(tmp_path, capsys):
    chosen = sample_architectures(3, seed=5)
    archs_file = tmp_path / "archs.txt"
    archs_file.write_text("# three cells\n\n" + "".join(nb201.to_string(a) + "\n" for a in chosen))
    out = tmp_path / "bench"
    argv = ["bench", "build", "--archs-file", str(archs_file), "--seeds", "1", "--epochs", "1", "--train-images",
            "64", "--channels", "4", "--out", str(out), "--quiet"]
    assert rdnas_main(argv) == 0
    runs = read_all_runs(out)
    assert sorted(r["arch_str"] for r in runs) == sorted(nb201.to_string(a) for a in chosen)
    assert len(benchmark_table(runs)) == 3
    assert rdnas_main(argv) == 0  # a rerun resumes: nothing trained twice
    assert len(read_all_runs(out)) == 3


@pytest.mark.parametrize("content, message", [
    ("", "archs.txt is empty"),
    ("# only a comment\n\n", "lists no architecture"),
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|\nnot-a-cell\n", "archs.txt:2: not a nb201"),
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|\n" * 2, "archs.txt:2: .* repeats line 1"),
])
def test_bench_build_refuses_a_bad_archs_file_before_any_work(tmp_path, capsys, content, message):
    archs_file = tmp_path / "archs.txt"
    archs_file.write_text(content)
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as stop:
        rdnas_main(["bench", "build", "--archs-file", str(archs_file), "--out", str(out), "--quiet"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "--archs-file" in error and re.search(message, error), error
    assert not out.exists()

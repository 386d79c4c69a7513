"""DaSS's files: the one kinded-file loader behind the teacher, embeddings and model loaders, and the KD benchmark
shipped as package data (written from a finished build folder, read back by rdnas.kd.bench.load_shipped)."""

import fnmatch
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rdnas.cli import main
from rdnas.kd import bench, load_teacher, read_tasks
from rdnas.kd.bench import read_embeddings
from rdnas.kd.files import load_kinded_file
from rdnas.minibench.build import sample_architectures
from rdnas.predictors.dass import load_model


@pytest.mark.parametrize("load,what,written_by", [
    (load_teacher, "a teacher file", "rdnas dass teacher"),
    (read_embeddings, "an embeddings file", "rdnas dass bench"),
    (load_model, "a DaSS model file", "rdnas dass fit"),
])
def test_every_dass_loader_refuses_a_wrong_file_naming_it(tmp_path, load, what, written_by):
    torch.save({"kind": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=rf"other.pt is not {what}: its kind is 'something-else', expected "
                       rf"'rdnas-dass-\w+' \(written by {written_by}\)"):
        load(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=rf"list.pt is not {what}: its kind is None"):
        load(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=rf"junk.pt is not {what} \(cannot be read as a torch file: \w+\)"):
        load(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=rf"{what.split(' ', 1)[1]} .*missing.pt does not exist"):
        load(tmp_path / "missing.pt")


def test_a_kinded_file_is_read_with_weights_only(tmp_path):
    torch.save({"kind": "k", "values": torch.arange(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_kinded_file(tmp_path / "ok.pt", "k", "a k file")["values"], torch.arange(3))
    torch.save({"kind": "k", "object": __import__("argparse").Namespace(a=1)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"pickled.pt is not a k file \(cannot be read as a torch file"):
        load_kinded_file(tmp_path / "pickled.pt", "k", "a k file")


# -- the shipped KD benchmark -------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "benchmarks" / "dass_tasks" / "tiny.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_the_shipped_benchmark_is_package_data_and_its_absence_is_a_clear_error(tmp_path):
    setup = (REPO / "setup.py").read_text()
    patterns = re.search(r'"rdnas\.kd": \[([^\]]*)\]', setup)
    assert patterns, "setup.py lists no package_data of rdnas.kd"
    globs = re.findall(r'"([^"]+)"', patterns.group(1))
    for name in bench.SHIPPED_FILES:  # each shipped file is matched by a package_data pattern of its folder
        assert any(fnmatch.fnmatch(f"shipped/{name}", g) for g in globs), name
    assert bench.SHIPPED_FOLDER == Path(bench.__file__).resolve().parent / "shipped"
    with pytest.raises(ValueError, match=r"the KD benchmark is not shipped in .* yet \(no recipe.json, bench.json, "
                       r"kdbench.csv, runs.csv, embeddings.pt\): build it with bash benchmarks/dass_build.sh"):
        bench.load_shipped(tmp_path)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"Debian's dataset-fashion-mnist is not installed "
                    f"({FASHION_MNIST} is absent); .ci/run installs it")
def test_a_tiny_build_ships_and_the_shipped_folder_is_a_kd_benchmark(tmp_path, capsys):
    out, shipped = tmp_path / "kdbench", tmp_path / "shipped"
    base = ["dass", "bench", "--tasks", str(TINY), "--archs", "2", "--seeds", "2", "--regimes", "kd,ce", "--quiet",
            "--out", str(out)]
    assert main([*base, "--max-runs", "5"]) == 0  # an unfinished build (8 runs) cannot ship
    with pytest.raises(ValueError, match=r"cannot ship an unfinished build: 2 of 2 \(task, student\) rows lack a run"):
        bench.ship(out, read_tasks(TINY), sample_architectures(2, 0, "resnet48"), [0, 1], ["kd", "ce"], shipped)
    with pytest.raises(SystemExit):
        main([*base, "--max-runs", "5", "--ship", str(shipped)])
    assert "--ship writes a finished build" in capsys.readouterr().err
    assert main([*base, "--ship", str(shipped)]) == 0
    assert f"package data -> {shipped}" in capsys.readouterr().out
    data = bench.load_shipped(shipped)
    assert sorted(p.name for p in shipped.iterdir()) == sorted(bench.SHIPPED_FILES)
    assert sum(p.stat().st_size for p in shipped.iterdir()) < bench.MAX_SHIPPED_BYTES
    assert (shipped / "kdbench.csv").read_bytes() == (out / "kdbench.csv").read_bytes()
    recipe = data["recipe"]
    assert recipe["kind"] == "rdnas-dass-kdbench-recipe" and recipe["seeds"] == [0, 1]
    assert recipe["regimes"] == ["kd", "ce"] and len(recipe["archs"]) == 2
    assert recipe["tasks"] == read_tasks(TINY).to_dict()
    assert set(recipe["teachers"]) == {"fmnist-tiny"} and recipe["cost"]["kd"]["runs"] == 4
    assert recipe["cost"]["kd"]["mean_cpu_seconds"] > 0
    assert len(data["runs"]) == 8 and [r["arch_str"] for r in data["table"]] == recipe["archs"]
    assert data["embeddings"]["tasks"]["fmnist-tiny"]["archs"] == recipe["archs"]
    assert data["tasks"].tasks[0].name == "fmnist-tiny"
    # the shipped folder is a KD benchmark folder: fit reads it, and its table is the runs' table again
    rows = bench.kd_table(data["runs"], data["tasks"], [0, 1], ["kd", "ce"])
    assert [r["arch_str"] for r in rows] == recipe["archs"]
    assert main(["dass", "fit", "--bench", str(shipped), "--episodes", "2", "--query", "2", "--width", "8",
                 "--quiet", "--out", str(tmp_path / "dass.pt")]) == 0
    load_model(tmp_path / "dass.pt")


@pytest.mark.skipif(not (bench.SHIPPED_FOLDER / "recipe.json").exists(),
                    reason="the KD benchmark is not shipped in this checkout")
def test_the_shipped_kd_benchmark_is_the_full_build():
    """rdnas/kd/shipped: benchmarks/dass_tasks/tasks.json's 15 tasks x 48 students, kd and ce, 2 seeds on the
    meta-test tasks and 1 elsewhere (1,920 runs); every table row is its runs' mean; kd runs carry their task's
    recorded teacher digest, ce runs none; every task has the students' embeddings."""
    data = bench.load_shipped(bench.SHIPPED_FOLDER)
    recipe, tasks = data["recipe"], data["tasks"]
    assert recipe["tasks"] == read_tasks(REPO / "benchmarks" / "dass_tasks" / "tasks.json").to_dict()
    assert len(tasks.tasks) == 15 and len(recipe["archs"]) == 48 and recipe["train_seeds"] == 1
    assert recipe["seeds"] == [0, 1] and recipe["regimes"] == ["kd", "ce"] and len(data["runs"]) == 1920
    assert len(data["table"]) == 15 * 48
    runs = {(r["task"], r["arch_str"], r["seed"], r["regime"]): r for r in data["runs"]}
    for task in tasks.tasks:
        seeds = bench.task_seeds(task, [0, 1], 1)
        assert seeds == ([0, 1] if task.split == "meta-test" else [0])
        assert data["embeddings"]["tasks"][task.name]["archs"] == recipe["archs"]
        assert data["embeddings"]["tasks"][task.name]["teacher_digest"] == recipe["teachers"][task.name]["digest"]
        for row in (r for r in data["table"] if r["task"] == task.name):
            kd = [runs[(task.name, row["arch_str"], s, "kd")] for s in seeds]
            ce = [runs[(task.name, row["arch_str"], s, "ce")] for s in seeds]
            # the table's accuracies are written with 4 decimals
            assert float(row["kd_valid_acc"]) == pytest.approx(np.mean([r["valid_acc"] for r in kd]), abs=5e-5)
            assert float(row["ce_valid_acc"]) == pytest.approx(np.mean([r["valid_acc"] for r in ce]), abs=5e-5)
            assert {r["teacher"] for r in kd} == {recipe["teachers"][task.name]["digest"]}
            assert {r["teacher"] for r in ce} == {bench.NO_TEACHER}

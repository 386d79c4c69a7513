"""rdnas dass bench under torchrun: 2 ranks (gloo) build the same KD benchmark as one process, each rank its own
teachers and its shard of the runs, rank 0 the table and embeddings; a rerun resumes with nothing to train."""

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from rdnas import distributed
from rdnas.kd import bench, load_teacher

# The processes import the rdnas this test imports (see tests/test_distributed.py) and run outside the checkout.
RDNAS_ROOT = Path(distributed.__file__).resolve().parent.parent
TEACHER = {"options": {"resnet_stem": "small", "width_divisor": 8}, "epochs": 1, "seed": 0, "batch_size": 32}
TASKS = {"kind": "rdnas-dass-tasks", "version": 1, "space": "resnet48", "student": {"epochs": 1, "batch_size": 32},
         "probe_seed": 0,
         "tasks": [{"name": "digits-a", "split": "meta-train", "dataset": "digits", "classes": [0, 1, 2],
                    "image_size": 8, "train": 64, "valid": 30, "seed": 0, "teacher": TEACHER},
                   {"name": "glyphs-a", "split": "meta-test", "dataset": "glyphs", "classes": ["A", "B", "C"],
                    "image_size": 8, "train": 64, "valid": 30, "seed": 1, "teacher": TEACHER}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dass_bench(out: Path, tasks: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{RDNAS_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                 "127.0.0.1", "--master_port", str(_free_port())] if processes > 1 else [sys.executable])
    command = [*launcher, "-m", "rdnas", "dass", "bench", "--tasks", str(tasks), "--archs", "2", "--seeds", "2",
               "--regimes", "kd", "--quiet", "--out", str(out)]
    with tempfile.TemporaryDirectory() as outside:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_torchrun_ranks_build_the_kd_benchmark_of_one_process(tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps(TASKS))
    one, two = tmp_path / "one", tmp_path / "two"
    _dass_bench(one, tasks, 1)
    result = _dass_bench(two, tasks, 2)
    assert result.stdout.count("rdnas dass bench:") == 1  # rank 0 reports
    shards = bench.read_runs(two)  # both ranks' files
    per_rank = [(two / f"runs.{i}of2.csv").read_text().splitlines()[1:] for i in range(2)]
    assert [len(lines) for lines in per_rank] == [4, 4] and not (two / "runs.csv").exists()
    assert len(shards) == 8 and len({(r["task"], r["arch_str"], r["seed"]) for r in shards}) == 8
    # the same teachers (each trained by one rank), runs, table and embeddings as one process: one thread each
    for task in ("digits-a", "glyphs-a"):
        assert (load_teacher(one / "teachers" / f"{task}.pt").digest()
                == load_teacher(two / "teachers" / f"{task}.pt").digest())
    key = lambda r: (r["task"], r["arch_str"], r["seed"])  # noqa: E731
    assert ([(key(r), r["valid_acc"], r["valid_loss"]) for r in sorted(bench.read_runs(one), key=key)]
            == [(key(r), r["valid_acc"], r["valid_loss"]) for r in sorted(shards, key=key)])
    assert (one / "kdbench.csv").read_bytes() == (two / "kdbench.csv").read_bytes()
    first, second = bench.read_embeddings(one / "embeddings.pt"), bench.read_embeddings(two / "embeddings.pt")
    for task, entry in first["tasks"].items():
        for name in ("teacher", "students", "random"):
            assert torch.equal(entry[name], second["tasks"][task][name])
    again = _dass_bench(two, tasks, 2)  # resumed: nothing left to train, nothing repeated
    assert again.stdout.count("4 of 4 (task, student) rows complete") == 1
    assert [len((two / f"runs.{i}of2.csv").read_text().splitlines()) for i in range(2)] == [5, 5]
    assert (one / "kdbench.csv").read_bytes() == (two / "kdbench.csv").read_bytes()

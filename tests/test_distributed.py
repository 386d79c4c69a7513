"""Several processes (gloo on the CPU): training equals one process with the same global batch (SPOS, RD-NAS,
ResNet48; resumed in the middle, also on another number of processes), evaluation and search are identical, the
mini-benchmark build shards into per-rank run files, a failing rank stops the job with its name, and the
helpers of rdnas.distributed.

Two processes are started three times (one torch.multiprocessing spawn, three torchrun launches); keep the runs
tiny: the whole file is meant to stay under a minute on two cores.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rdnas import distributed
from rdnas.data import DeviceBatches, load_data
from rdnas.rank import recalibrated_accuracy_fn, supernet_accuracy
from rdnas.search import evolution_search
from rdnas.spaces import get_space, nb201
from rdnas.train import OneShotTrainer, Teacher, TrainConfig, load_checkpoint

TINY = dict(data="digits", image_size=8, channels=4, cells_per_stage=1, batch_size=128, epochs=2)
RESNET = dict(space="resnet48", resnet_stem="small", width_divisor=8, data="digits", image_size=8, batch_size=256,
              epochs=1)
# Max |w_2 - w_1| over every float tensor of the state dict, 2 processes (global-batch BN) against 1 (measured:
# NB201 4e-7 after 2 epochs = 14 steps; ResNet48 4.5e-5 after 3 steps). The tiny ResNet48 is ill-conditioned
# (a 1e-7 relative change of its initial weights grows to 1e-2 within 7 steps in one process), so it is compared
# after 3 steps only.
NB201_TOLERANCE = 1e-5
RESNET_TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_teacher():
    scores = torch.rand(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores[~nb201.connected(nb201.all_archs())] = float("-inf")
    return Teacher(scores.numpy(), 5, "random")


def config(method, out, **overrides):
    values = {**TINY, "method": method, "out_dir": str(out), **overrides}
    if method == "rdnas":
        values["paths_per_step"] = 3
    return TrainConfig(**values)


def trainer(cfg, evaluate=None):
    return OneShotTrainer(cfg, progress=False, teacher=random_teacher() if cfg.method == "rdnas" else None,
                          evaluate=evaluate)


class Interrupted(Exception):
    pass


def stop_before_epoch_two_is_saved(copy_epoch_one_to=None):
    """An evaluate hook: after epoch 2 is trained, before its checkpoint: the folder holds epoch 1's."""
    def hook(t):
        if t.epoch == 2:
            if copy_epoch_one_to is not None and t.world.is_main:
                shutil.copytree(t.out_dir, copy_epoch_one_to)
            raise Interrupted()
        return {}
    return hook


EVAL_ARCHS = nb201.all_archs()[torch.randperm(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(1))[:40]]


def evaluate_archs(model, data, distributed_flag):
    fitness = recalibrated_accuracy_fn(model, data, "cpu", calibration_batch_size=128, subnets_per_pass=8,
                                       distributed=distributed_flag)
    return fitness(EVAL_ARCHS)


def search(model, data, distributed_flag):
    fitness = recalibrated_accuracy_fn(model, data, "cpu", calibration_batch_size=128, subnets_per_pass=8,
                                       distributed=distributed_flag)
    history = evolution_search(fitness, 24, seed=3, population=8, batch=8)
    return history.archs, history.scores


def resnet_eval(model, data, distributed_flag):
    archs = get_space("resnet48").sample(6, torch.Generator().manual_seed(2))
    batches = data.evaluation_batches("valid", 256, "cpu", limit=256)
    return supernet_accuracy(model, archs, batches, bn="batch", subnets_per_pass=2, distributed=distributed_flag)


def two_process_worker(rank, port, root):
    """Rank ``rank`` of 2: every distributed scenario of the spawn test, results under ``root``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    root = Path(root)
    try:
        for method in ("spos", "rdnas"):
            cfg = config(method, root / f"two_{method}")
            try:  # interrupted after epoch 1, then resumed on two processes
                trainer(cfg, stop_before_epoch_two_is_saved(root / f"two_to_one_{method}")).fit()
            except Interrupted:
                pass
            trainer(cfg).fit(resume=True)
            trainer(config(method, root / f"one_to_two_{method}")).fit(resume=True)  # a 1-process epoch 1
        trainer(TrainConfig(**{**RESNET, "out_dir": str(root / "two_resnet48")})).fit()
        trainer(config("spos", root / "per_rank", epochs=1, bn_statistics="per_rank")).fit()
        try:
            trainer(config("spos", root / "odd", batch_size=127))
        except ValueError as error:
            odd = str(error)
        reference = OneShotTrainer(config("spos", root / "unused"), progress=False)
        reference.model.load_state_dict(load_checkpoint(root / "ref_spos" / "checkpoint.pt")["model"])
        results = {"odd": odd, "eval": evaluate_archs(reference.model, reference.data, True),
                   "search": search(reference.model, reference.data, True)}
        resnet = OneShotTrainer(TrainConfig(**{**RESNET, "out_dir": str(root / "unused")}), progress=False)
        resnet.model.load_state_dict(load_checkpoint(root / "ref_resnet48" / "checkpoint.pt")["model"])
        results["resnet_eval"] = resnet_eval(resnet.model, resnet.data, True)
        if rank == 0:
            torch.save(results, root / "results.pt")
    finally:
        dist.destroy_process_group()


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        if a[name].is_floating_point():
            worst = max(worst, float((a[name] - b[name]).abs().max()))
        else:
            assert torch.equal(a[name], b[name]), name
    return worst


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One-process references, then the two-process scenarios in one spawn (2 ranks, gloo)."""
    root = tmp_path_factory.mktemp("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        refs = {}
        for method in ("spos", "rdnas"):
            def copy_epoch_one(t, m=method):  # at epoch 2's evaluation the folder holds epoch 1's checkpoint
                if t.epoch == 2:
                    shutil.copytree(t.out_dir, root / f"one_to_two_{m}")
                return {}

            ref = trainer(config(method, root / f"ref_{method}"), copy_epoch_one)
            ref.fit()
            refs[method] = ref
        refs["resnet48"] = trainer(TrainConfig(**{**RESNET, "out_dir": str(root / "ref_resnet48")}))
        refs["resnet48"].fit()
        one = {"eval": evaluate_archs(refs["spos"].model, refs["spos"].data, False),
               "search": search(refs["spos"].model, refs["spos"].data, False),
               "resnet_eval": resnet_eval(refs["resnet48"].model, refs["resnet48"].data, False)}
        mp.spawn(two_process_worker, args=(free_port(), str(root)), nprocs=2)
        two = torch.load(root / "results.pt", weights_only=False)
        resumed_on_one = {}
        for method in ("spos", "rdnas"):
            t = trainer(config(method, root / f"two_to_one_{method}"))
            t.fit(resume=True)
            resumed_on_one[method] = t
    finally:
        torch.set_num_threads(threads)
    return root, refs, one, two, resumed_on_one


@pytest.mark.parametrize("method", ["spos", "rdnas"])
def test_two_processes_resumed_in_the_middle_end_with_the_weights_of_one(two_processes, method):
    root, refs, _, _, resumed_on_one = two_processes
    ref = refs[method].model.state_dict()
    for run in (f"two_{method}", f"one_to_two_{method}"):
        state = load_checkpoint(root / run / "checkpoint.pt")
        assert state["epoch"] == 2 and state["world_size"] == 2
        assert max_difference(ref, state["model"]) <= NB201_TOLERANCE, run
        assert [r["train_loss"] for r in state["history"]] == pytest.approx(
            [r["train_loss"] for r in refs[method].history], abs=1e-5)
    assert load_checkpoint(root / f"two_to_one_{method}" / "checkpoint.pt")["world_size"] == 1
    assert max_difference(ref, resumed_on_one[method].model.state_dict()) <= NB201_TOLERANCE
    # rank 0 wrote the files, atomically: nothing else in the run folder
    assert sorted(p.name for p in (root / f"two_{method}").iterdir()) == ["checkpoint.pt", "config.json",
                                                                          "metrics.jsonl"]
    assert len((root / f"two_{method}" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resnet48_on_two_processes_ends_with_the_weights_of_one(two_processes):
    root, refs, _, _, _ = two_processes
    state = load_checkpoint(root / "two_resnet48" / "checkpoint.pt")
    assert max_difference(refs["resnet48"].model.state_dict(), state["model"]) <= RESNET_TOLERANCE


def test_per_rank_batch_norm_statistics_keep_the_replicas_equal(two_processes):
    root, refs, _, _, _ = two_processes
    state = load_checkpoint(root / "per_rank" / "checkpoint.pt")
    assert state["config"]["bn_statistics"] == "per_rank" and state["epoch"] == 1  # check_replicas passed


def test_evaluation_and_search_on_two_processes_are_identical_to_one(two_processes):
    _, _, one, two, _ = two_processes
    assert torch.equal(one["eval"], two["eval"])
    assert one["search"] == two["search"]
    assert torch.equal(one["resnet_eval"], two["resnet_eval"])


def test_a_global_batch_that_does_not_split_evenly_is_a_clear_error(two_processes):
    assert "batch_size 127 (the global batch) does not split into equal shares for WORLD_SIZE=2" in \
        two_processes[3]["odd"]


# ------------------------------------------------------------------------------------------------ torchrun


# The ranks import the rdnas this test imports (the installed package in CI, the checkout with PYTHONPATH in a
# development tree), and run outside the checkout: `python -m rdnas` from the checkout would import its source
# tree, which has no compiled extension after a plain `pip install .`.
RDNAS_ROOT = Path(distributed.__file__).resolve().parent.parent


def torchrun(args, timeout=120, cwd=None):
    env = {**os.environ, "PYTHONPATH": f"{RDNAS_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *args]
    with tempfile.TemporaryDirectory() as outside:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or outside)


TRAIN_ARGS = ["train", "--data", "digits", "--image-size", "8", "--channels", "4", "--cells", "1", "--batch-size",
              "128", "--epochs", "2", "--quiet"]


def test_torchrun_rdnas_train_writes_one_run_from_rank_zero(tmp_path):
    out = tmp_path / "run"
    result = torchrun(["-m", "rdnas", *TRAIN_ARGS, "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("rdnas train: 2 epochs") == 1  # rank 0 reports
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["world_size"] == 2


def test_a_rank_that_raises_stops_the_job_with_its_name(tmp_path):
    start = time.perf_counter()
    result = torchrun([str(REPO / "tests" / "distributed_worker.py"), "fail", "1", "3", "--", *TRAIN_ARGS,
                       "--out", str(tmp_path / "run")], timeout=90)
    assert result.returncode != 0
    assert "rdnas train: rank 1 of 2 failed: RuntimeError: injected failure" in result.stderr
    assert time.perf_counter() - start < 90
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # it failed in epoch 1


def test_torchrun_bench_build_shards_into_per_rank_files_that_merge(tmp_path):
    out = tmp_path / "bench"
    args = ["-m", "rdnas", "bench", "build", "--archs", "4", "--seeds", "2", "--epochs", "1", "--channels", "4",
            "--train-images", "64", "--valid-images", "64", "--batch-size", "32", "--networks-per-stack", "2",
            "--out", str(out), "--quiet"]
    result = torchrun(args)
    assert result.returncode == 0, result.stderr[-3000:]
    from rdnas.minibench import read_all_runs, read_runs

    shards = [read_runs(out / f"runs.{i}of2.csv") for i in range(2)]
    assert [len(s) for s in shards] == [4, 4]
    pairs = [(r["arch_str"], r["seed"]) for s in shards for r in s]
    assert len(set(pairs)) == 8 and len(read_all_runs(out)) == 8
    table = (out / "nb201_digits.csv").read_text().splitlines()
    assert len(table) == 1 + 4 and result.stdout.count("rdnas bench build:") == 1
    again = torchrun(args)  # resumed: nothing left to train, nothing repeated
    assert again.returncode == 0, again.stderr[-3000:]
    assert [len(read_runs(out / f"runs.{i}of2.csv")) for i in range(2)] == [4, 4]


def test_torchrun_bench_build_refuses_a_second_way_of_sharding(tmp_path):
    result = torchrun(["-m", "rdnas", "bench", "build", "--shard", "0/2", "--out", str(tmp_path)], timeout=60)
    assert result.returncode != 0 and "both split the runs; leave --shard out under torchrun" in result.stderr


# ----------------------------------------------------------------------------------------- one process


def test_a_single_process_world_has_no_collectives():
    world = distributed.current()
    assert world == distributed.World() and world.is_main and not world.distributed
    values = torch.arange(3.0)
    assert distributed.global_mean(values, world) is values and distributed.sum_disjoint(values, world) is values
    assert distributed.init("cpu") == (distributed.World(), "cpu")


def test_chunks_cover_every_architecture_once_in_the_single_process_chunks():
    for count, chunk, size in ((40, 8, 2), (41, 8, 3), (5, 8, 2), (0, 4, 2)):
        starts = sorted(s for rank in range(size) for s in distributed.my_chunks(count, chunk,
                                                                                  distributed.World(rank, size)))
        assert starts == list(range(0, count, chunk))


def test_the_ranks_shares_of_a_batch_are_the_batch():
    data = load_data(TrainConfig(**TINY))
    def batches(share):
        return list(data.training_batches(128, "cpu", torch.Generator().manual_seed(5), share=share))
    whole = batches((0, 1))
    parts = [batches((i, 2)) for i in range(2)]
    assert len(whole) == len(parts[0]) == 7
    for (images, labels), (a, la), (b, lb) in zip(whole, *parts):
        assert torch.equal(images, torch.cat([a, b])) and torch.equal(labels, torch.cat([la, lb]))
    with pytest.raises(ValueError, match="batch_size 128 does not split into 3 equal shares"):
        DeviceBatches(data.train, 128, share=(0, 3))
    with pytest.raises(ValueError, match=r"share \(i, n\) needs 0 <= i < n, got \(2, 2\)"):
        DeviceBatches(data.train, 128, share=(2, 2))


def test_parse_shard_and_its_errors(monkeypatch):
    assert distributed.parse_shard("1/4", "x") == (1, 4) and distributed.parse_shard((0, 2), "x") == (0, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed.parse_shard("env", "x") == (1, 3)
    with pytest.raises(ValueError, match=r"x: shard must be \(i, n\), 'i/n' or 'env', got 'a/b'"):
        distributed.parse_shard("a/b", "x")
    with pytest.raises(ValueError, match=r"x: shard \(i, n\) needs 0 <= i < n, got \(3, 3\)"):
        distributed.parse_shard("3/3", "x")
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="x: shard='env' reads RANK and WORLD_SIZE .* RANK is not set"):
        distributed.parse_shard("env", "x")


def test_a_command_that_runs_in_one_process_refuses_torchrun(monkeypatch, capsys, tmp_path):
    from rdnas.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["merge-tables", str(tmp_path / "a.csv"), "--out", str(tmp_path / "b.csv")]) == 2
    assert "rdnas merge-tables: error: this command runs in one process, but WORLD_SIZE=2" in capsys.readouterr().err
    assert not (tmp_path / "b.csv").exists()


def test_a_device_index_under_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="--device cuda:1 names one GPU, but WORLD_SIZE=2 processes share the job"):
        distributed.init("cuda:1")

"""rdnas.shared_memory_sum: the sum over ranks through shared memory (gloo jobs on one machine).

Each test spawns its processes (torch.multiprocessing, gloo, :func:`spawning.spawn`); rank 0 saves what it saw after
its last collective.
"""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rdnas import distributed, shared_memory_sum
from rdnas.train import OneShotTrainer, TrainConfig
from spawning import free_port, spawn

SIZES = (0, 1, 7, 1000, 100_003, 50)  # 100_003 grows the arena past its first slots, 50 uses the grown ones


def join(rank: int, size: int, port: int, env: dict | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **(env or {}))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)


def leftovers() -> set:
    folder = Path(shared_memory_sum.SHM_FOLDER)
    return {p.name for p in folder.glob("rdnas-sum-*")} if folder.is_dir() else set()


def sums_worker(rank: int, size: int, port: int, out: str) -> None:
    """Sums random tensors of every size and dtype both ways; saves rank 0's view and every rank's sums."""
    join(rank, size, port)
    try:
        seen = {"transport": shared_memory_sum.transport(), "sums": []}
        for n in SIZES:
            for dtype in (torch.float32, torch.float64, torch.int64):
                generator = torch.Generator().manual_seed(1000 * rank + n)
                mine = (torch.randn(n, generator=generator, dtype=torch.float64) * 10).to(dtype)
                summed = distributed.sum_over_ranks_(mine.clone())
                through_gloo = mine.clone()
                dist.all_reduce(through_gloo)
                everyone = [torch.empty_like(mine) for _ in range(size)]
                dist.all_gather(everyone, mine)
                reference = torch.stack([t.double() for t in everyone]).sum(0)
                ranks_sums = [torch.empty_like(summed) for _ in range(size)]
                dist.all_gather(ranks_sums, summed)
                seen["sums"].append((n, dtype, summed, through_gloo, reference, ranks_sums))
        strided = torch.arange(24, dtype=torch.float32).view(6, 4)[:, ::2] * (rank + 1)  # not contiguous
        distributed.sum_over_ranks_(strided)
        seen["strided"] = strided.clone()
        state = shared_memory_sum._state()
        seen["through_shared_memory"], seen["stride"] = state.sums, state.arena.stride
        dist.barrier()
        seen["leftovers"] = leftovers()
        if rank == 0:
            torch.save(seen, out)
        dist.barrier()  # nobody tears gloo down while the other still works (see tests/test_distributed.py)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_and_three(tmp_path_factory):
    root = tmp_path_factory.mktemp("sums")
    before = leftovers()
    for size in (2, 3):
        spawn(sums_worker, (size, free_port(), str(root / f"{size}.pt")), size, root / f"{size}.pt")
    return {size: torch.load(root / f"{size}.pt", weights_only=False) for size in (2, 3)}, before


@pytest.mark.skipif(not Path(shared_memory_sum.SHM_FOLDER).is_dir(), reason="no /dev/shm on this machine")
@pytest.mark.parametrize("size", [2, 3])
def test_the_shared_memory_sum_is_the_sum_and_the_same_bits_on_every_rank(two_and_three, size):
    seen = two_and_three[0][size]
    assert seen["transport"] == "shared memory"
    for n, dtype, summed, through_gloo, reference, ranks_sums in seen["sums"]:
        assert summed.dtype == dtype and summed.shape == (n,)
        assert all(torch.equal(other, summed) for other in ranks_sums), (n, dtype)  # bitwise the same everywhere
        if dtype == torch.int64:  # not float32 / float64: through gloo, exact
            assert torch.equal(summed, through_gloo)
        elif size == 2:  # a + b == b + a: exactly gloo's result
            assert torch.equal(summed, through_gloo), (n, dtype)
        else:  # three ranks: another order of additions than gloo's ring, within rounding of the exact sum
            assert torch.allclose(summed.double(), reference, rtol=1e-6 if dtype == torch.float32 else 1e-14,
                                  atol=1e-5 if dtype == torch.float32 else 1e-12), (n, dtype)
    expected = torch.arange(24, dtype=torch.float32).view(6, 4)[:, ::2] * sum(range(1, size + 1))
    assert torch.equal(seen["strided"], expected)
    assert seen["through_shared_memory"] == 2 * len(SIZES) + 1  # float32 and float64 of each size, the strided one
    assert seen["stride"] >= 8 * max(SIZES)  # grown to the largest float64 sum


@pytest.mark.skipif(not Path(shared_memory_sum.SHM_FOLDER).is_dir(), reason="no /dev/shm on this machine")
def test_the_arena_file_is_gone_once_every_rank_has_mapped_it(two_and_three):
    runs, before = two_and_three
    assert all(not (seen["leftovers"] - before) for seen in runs.values())  # while the jobs still ran
    assert not leftovers() - before


def failing_worker(rank: int, size: int, port: int, out: str, case: str) -> None:
    """``case``: "sizes" (rank 1 sums one more element), "late" (rank 1 skips the second sum), "off"
    (RDNAS_SHARED_MEMORY_SUM=off on rank 1 only)."""
    join(rank, size, port, {shared_memory_sum.MODE_VARIABLE: "off"} if case == "off" and rank == 1 else {})
    try:
        outcome = {"transport": shared_memory_sum.transport()}
        try:
            if case == "sizes":
                shared_memory_sum.all_reduce_sum_(torch.ones(10 + rank), timeout_s=60)
            elif case == "late":  # one sum together (which makes the arena), then rank 0 alone
                shared_memory_sum.all_reduce_sum_(torch.ones(10), timeout_s=60)
                if rank == 0:
                    shared_memory_sum.all_reduce_sum_(torch.ones(10), timeout_s=0.5)
            else:
                outcome["sum"] = shared_memory_sum.all_reduce_sum_(torch.ones(3) * (rank + 1), timeout_s=60)
        except (RuntimeError, TimeoutError) as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
        outcomes = [None] * size
        dist.all_gather_object(outcomes, outcome)
        if rank == 0:
            torch.save(outcomes, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_failing(tmp_path, case):
    out = tmp_path / f"{case}.pt"
    spawn(failing_worker, (2, free_port(), str(out), case), 2, out)
    return torch.load(out, weights_only=False)


@pytest.mark.skipif(not Path(shared_memory_sum.SHM_FOLDER).is_dir(), reason="no /dev/shm on this machine")
def test_ranks_summing_different_sizes_both_raise_and_name_the_sizes(tmp_path):
    outcomes = run_failing(tmp_path, "sizes")
    prefix = "RuntimeError: rdnas.shared_memory_sum: "
    assert prefix + "rank 0 sums 40 bytes but rank 1 sums 44 bytes" in outcomes[0]["error"]
    assert prefix + "rank 1 sums 44 bytes but rank 0 sums 40 bytes" in outcomes[1]["error"]


@pytest.mark.skipif(not Path(shared_memory_sum.SHM_FOLDER).is_dir(), reason="no /dev/shm on this machine")
def test_a_rank_that_never_arrives_times_the_others_out_naming_it(tmp_path):
    outcomes = run_failing(tmp_path, "late")
    assert outcomes[0]["error"].startswith("TimeoutError: rdnas.shared_memory_sum: rank 0 waited 0.5 s for rank 1 to "
                                          "reach the same sum (call 2)")
    assert "error" not in outcomes[1]


def test_off_on_any_rank_means_gloo_on_every_rank(tmp_path):
    outcomes = run_failing(tmp_path, "off")
    assert [o["transport"] for o in outcomes] == ["gloo (RDNAS_SHARED_MEMORY_SUM=off)"] * 2
    assert all(o["sum"].tolist() == [3.0, 3.0, 3.0] for o in outcomes)


def test_the_mode_variable_is_checked(monkeypatch):
    monkeypatch.delenv(shared_memory_sum.MODE_VARIABLE, raising=False)
    assert shared_memory_sum.mode() == "auto"
    monkeypatch.setenv(shared_memory_sum.MODE_VARIABLE, "OFF")
    assert shared_memory_sum.mode() == "off"
    monkeypatch.setenv(shared_memory_sum.MODE_VARIABLE, "yes")
    with pytest.raises(ValueError, match="RDNAS_SHARED_MEMORY_SUM must be one of auto, off, got 'yes'"):
        shared_memory_sum.mode()
    assert shared_memory_sum.transport() == "none"  # outside a process group


@pytest.mark.parametrize("value", ["yes", "0", "nan", "-1"])
def test_a_bad_mode_stops_a_launched_job_before_it_joins_or_writes(monkeypatch, tmp_path, capsys, value):
    from rdnas.cli import main

    monkeypatch.setenv(shared_memory_sum.MODE_VARIABLE, value)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=f"RDNAS_SHARED_MEMORY_SUM must be one of auto, off, got '{value}'"):
        distributed.init("cpu")  # raised before any rendezvous: nothing waits for a second rank
    assert not dist.is_initialized()
    monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))  # keep pytest alive
    monkeypatch.setattr("rdnas.run_folder.exit_with_launcher", lambda command: None)  # no watcher thread in pytest
    with pytest.raises(SystemExit) as ended:
        main(["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert ended.value.code == 2 and not (tmp_path / "run").exists()
    error = capsys.readouterr().err.strip()
    assert error == f"rdnas train: rank 0 of 2: error: RDNAS_SHARED_MEMORY_SUM must be one of auto, off, got '{value}'"


TRAINING = dict(data="digits", image_size=8, batch_size=64, epochs=1, channels=4, cells_per_stage=1,
                paths_per_step=4, parallel="subnets")


def training_worker(rank: int, size: int, port: int, root: str, transport: str) -> None:
    """6 subnet-parallel float64 SPOS steps (K = 4, 2 subnets per rank), summing through ``transport``."""
    join(rank, size, port, {shared_memory_sum.MODE_VARIABLE: "off"} if transport == "gloo" else {})
    try:
        trainer = OneShotTrainer(TrainConfig(**TRAINING, out_dir=str(Path(root) / transport)), progress=False,
                                 dtype=torch.float64)
        seen = shared_memory_sum.transport()
        for step, (images, labels) in enumerate(trainer.batches):
            if step == 6:
                break
            trainer.train_step(images, labels)
        if rank == 0:
            torch.save({"transport": seen, "model": trainer.model.state_dict()}, Path(root) / f"{transport}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not Path(shared_memory_sum.SHM_FOLDER).is_dir(), reason="no /dev/shm on this machine")
def test_subnet_parallel_training_through_shared_memory_takes_gloos_steps_bit_for_bit(tmp_path):
    for transport in ("shared memory", "gloo"):
        spawn(training_worker, (2, free_port(), str(tmp_path), transport), 2, tmp_path / f"{transport}.pt")
    fast, slow = (torch.load(tmp_path / f"{t}.pt", weights_only=False) for t in ("shared memory", "gloo"))
    assert fast["transport"] == "shared memory" and slow["transport"] == "gloo (RDNAS_SHARED_MEMORY_SUM=off)"
    assert fast["model"].keys() == slow["model"].keys()
    assert all(torch.equal(fast["model"][k], slow["model"][k]) for k in fast["model"])

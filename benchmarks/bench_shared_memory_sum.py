"""The sum over 2 CPU processes of one subnet-parallel digits step's gradients: shared memory against gloo.

Two processes (torch.multiprocessing spawn, gloo, 1 thread each) sum a float32 tensor of 100,722 elements (the
digits network's gradient buffer in issue 25's benchmark: NB201, C = 8, N = 1) ``RDNAS_BENCH_SUM_CALLS`` times
(default 300) with :func:`rdnas.distributed.sum_over_ranks_`. Before each sum, each rank does about 3 ms of matrix
work (as a training step computes before its gradient sum), so the rank that arrives first waits as it would in
training. Cases: ``shared memory`` (:mod:`rdnas.shared_memory_sum`, the default where every rank is on one
machine) and ``gloo`` (``RDNAS_SHARED_MEMORY_SUM=off``: ``torch.distributed.all_reduce``). ``extra_info``: the
median time of one sum on rank 0 after 20 warm-up sums (the wait for the other rank included), the median time of
work plus sum, and the ratio of gloo's median sum to shared memory's (when both ran in this session).
pytest-benchmark's own time is the whole measurement, process start included: read ``extra_info``.

    PYTHONPATH=. python -m pytest benchmarks/bench_shared_memory_sum.py \
        --benchmark-json=benchmarks/results/bench_shared_memory_sum.json
"""

import os
import statistics
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench_distributed import free_port
from rdnas.machine import environment

ELEMENTS = 100_722
WARMUP = 20
CASES = {"shared memory": "auto", "gloo": "off"}
RESULTS = {}


def measure(rank: int, port: int, mode: str, calls: int, out: str) -> None:
    """Rank ``rank`` of 2: ``calls`` timed sums after the warm-up; rank 0 saves the timings to ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RDNAS_SHARED_MEMORY_SUM=mode)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from rdnas import distributed, shared_memory_sum

        generator = torch.Generator().manual_seed(rank)
        x, w = torch.randn(256, 256, generator=generator), torch.randn(256, 256, generator=generator) / 16
        gradients = torch.randn(ELEMENTS, generator=generator)
        transport = shared_memory_sum.transport()
        sums, steps = [], []
        for _ in range(WARMUP + calls):
            start = time.perf_counter()
            y = x
            for _ in range(6):
                y = torch.tanh(y @ w)
            computed = time.perf_counter()
            distributed.sum_over_ranks_(gradients)
            end = time.perf_counter()
            sums.append(end - computed)
            steps.append(end - start)
        if rank == 0:
            torch.save({"sum_s": sums[WARMUP:], "step_s": steps[WARMUP:], "transport": transport}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", list(CASES))
def test_sum_of_a_digits_steps_gradients(benchmark, case, tmp_path):
    calls = 5 if benchmark.disabled else int(os.environ.get("RDNAS_BENCH_SUM_CALLS", "300"))
    out = str(tmp_path / "timings.pt")

    def run():
        mp.spawn(measure, args=(free_port(), CASES[case], calls, out), nprocs=2)
        return torch.load(out)

    benchmark.group = "shared-memory-sum-2-processes-100722-floats"
    timings = benchmark.pedantic(run, rounds=1, iterations=1)
    median_sum = statistics.median(timings["sum_s"])
    RESULTS[case] = median_sum
    info = benchmark.extra_info
    info.update(environment("cpu"))
    info.update(case=case, transport=timings["transport"], elements=ELEMENTS, calls=calls,
                median_sum_s=median_sum, median_work_and_sum_s=statistics.median(timings["step_s"]))
    if case == "gloo" and "shared memory" in RESULTS:
        info["gloo_over_shared_memory"] = median_sum / RESULTS["shared memory"]
    expected = "shared memory" if case == "shared memory" else "gloo (RDNAS_SHARED_MEMORY_SUM=off)"
    assert timings["transport"] == expected

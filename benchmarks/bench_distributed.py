"""Supernet training on 1 and 2 processes on the CPU (gloo): training steps per second, and their ratio.

One supernet, one global batch (64 digits images, K = 4 subnets per step, SPOS-K; the digits mini-benchmark's
macro network C=8, N=1, 8x8) trained by ``OneShotTrainer.train_step``:

- ``1 process x T threads``: the single-process trainer, T = the machine's cores and T = 1;
- ``2 processes x 1 thread``: torch.multiprocessing spawn, gloo, each rank 32 rows of the batch, with the global
  batch's BN statistics (``bn_statistics="global"``, the default: equal to one process) and with each rank's own
  (``"per_rank"``: DDP without SyncBatchNorm).

Each configuration runs ``RDNAS_BENCH_DIST_STEPS`` timed steps (default 40) after 5 warm-up steps; rank 0 times
every step (the collectives keep the ranks in step). ``extra_info`` holds the median step time, steps per second,
the ratio to ``1 process x T threads`` (the same cores), the median time of the one flat gradient all-reduce
(``rdnas.distributed.sum_gradients``) and its share of the step, and the elements it reduces. pytest-benchmark's own
time is one round of the whole measurement (process start included): read ``extra_info``.
"""

import os
import socket
import statistics
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import environment

CONFIG = dict(data="digits", image_size=8, channels=8, cells_per_stage=1, batch_size=64, method="spos",
              paths_per_step=4, epochs=100)
WARMUP = 5
RESULTS = {}


def measure(rank: int, size: int, port: int, threads: int, steps: int, bn_statistics: str, out: str) -> None:
    """Rank ``rank`` of ``size``: ``steps`` timed training steps; rank 0 saves the timings to ``out``."""
    torch.set_num_threads(threads)
    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                          LOCAL_RANK=str(rank))
        dist.init_process_group("gloo")
    from rdnas import distributed
    from rdnas.train import OneShotTrainer, TrainConfig
    from rdnas.train import trainer as trainer_module

    reduce_times, reduced = [], []
    original = distributed.sum_gradients

    def timed_sum_gradients(parameters, world):
        start = time.perf_counter()
        reduced.append(original(parameters, world))
        reduce_times.append(time.perf_counter() - start)
        return reduced[-1]

    trainer_module.distributed.sum_gradients = timed_sum_gradients
    try:
        trainer = OneShotTrainer(TrainConfig(**CONFIG, out_dir=out + ".run", bn_statistics=bn_statistics),
                                 progress=False)
        batches = list(trainer.batches)
        times = []
        for step in range(WARMUP + steps):
            images, labels = batches[step % len(batches)]
            start = time.perf_counter()
            result = trainer.train_step(images, labels, 0.0)
            float(result["loss"])
            times.append(time.perf_counter() - start)
        if rank == 0:
            torch.save({"step_s": times[WARMUP:], "reduce_s": reduce_times[WARMUP:], "reduced": reduced[WARMUP:]},
                       out)
    finally:
        trainer_module.distributed.sum_gradients = original
        if size > 1:
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {  # name: (processes, threads per process, bn_statistics)
    "1 process x all cores": (1, os.cpu_count() or 1, "global"),
    "1 process x 1 thread": (1, 1, "global"),
    "2 processes x 1 thread, global BN": (2, 1, "global"),
    "2 processes x 1 thread, per-rank BN": (2, 1, "per_rank"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_per_second(benchmark, case, tmp_path):
    size, threads, bn_statistics = CASES[case]
    steps = 3 if benchmark.disabled else int(os.environ.get("RDNAS_BENCH_DIST_STEPS", "40"))
    out = str(tmp_path / "timings.pt")

    def run():
        if size == 1:
            saved = torch.get_num_threads()
            try:
                measure(0, 1, 0, threads, steps, bn_statistics, out)
            finally:
                torch.set_num_threads(saved)
        else:
            mp.spawn(measure, args=(size, free_port(), threads, steps, bn_statistics, out), nprocs=size)
        return torch.load(out)

    benchmark.group = "distributed-cpu-digits-C8-N1-K4-train-step"
    timings = benchmark.pedantic(run, rounds=1, iterations=1)
    median = statistics.median(timings["step_s"])
    RESULTS[case] = median
    info = benchmark.extra_info
    info.update(environment("cpu"))
    info.update(processes=size, threads_per_process=threads, bn_statistics=bn_statistics, steps=steps,
                global_batch=CONFIG["batch_size"], median_step_s=median, steps_per_s=1.0 / median)
    baseline = RESULTS.get("1 process x all cores")
    if baseline is not None:
        info["steps_per_s_ratio_to_1_process_all_cores"] = baseline / median
    if size > 1:
        reduce_median = statistics.median(timings["reduce_s"])
        info.update(median_gradient_allreduce_s=reduce_median, gradient_allreduce_share=reduce_median / median,
                    gradient_elements_reduced=int(statistics.median(timings["reduced"])))

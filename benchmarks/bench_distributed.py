"""Supernet training on 1 and 2 processes on the CPU (gloo): training steps per second, and their ratio.

One supernet, one global batch of 64 digits images at 16 x 16, K = 4 subnets per step (SPOS-K), trained by
``OneShotTrainer.train_step``, on two networks (``NETWORKS``): the digits network of issue 25 (NB201, C=8, N=1:
``rdnas train --data digits --image-size 16 --channels 8 --cells 1 --batch-size 64 --paths 4``) and ResNet48 with
the small stem and every width / 8. Configurations (``CASES``):

- ``1 process x 1 thread`` (the baseline of the ratios) and ``1 process x all cores``;
- ``2 processes x 1 thread``: torch.multiprocessing spawn, gloo, with ``parallel="subnets"`` (each rank 2 of the 4
  subnets on the whole batch, dealt by their estimated costs: ``rdnas.distributed.subnet_costs``), the same with
  the contiguous split (subnets 0, 1 and 2, 3 whatever their costs: what the deal by cost gains),
  ``parallel="batch"`` (each rank 32 rows, every subnet, the global batch's BN statistics: equal to one process)
  and batch with ``bn_statistics="per_rank"`` (DDP without SyncBatchNorm; not equal to one process).

Each configuration runs ``RDNAS_BENCH_DIST_STEPS`` timed steps (default 40) after 5 warm-up steps; rank 0 times
every step (the collectives keep the ranks in step). ``extra_info`` holds the median step time, steps per second,
the ratios to ``1 process x 1 thread`` (issue 25's target: 2 processes x 1 thread at least 1.7x) and to
``1 process x all cores`` (the same cores), the median time of the one flat gradient all-reduce
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

BASE = dict(data="digits", image_size=16, batch_size=64, method="spos", paths_per_step=4, epochs=100)
NETWORKS = {  # name: the TrainConfig fields of its supernet
    "digits-C8-N1": dict(channels=8, cells_per_stage=1),
    "resnet48-small-w8": dict(space="resnet48", resnet_stem="small", width_divisor=8),
}
WARMUP = 5
RESULTS = {}


def measure(rank: int, size: int, port: int, threads: int, steps: int, network: str, parallel: str, bn_statistics: str,
            by_cost: bool, out: str) -> None:
    """Rank ``rank`` of ``size``: ``steps`` timed training steps; rank 0 saves the timings to ``out``. ``by_cost``
    False: subnet-parallel steps keep the contiguous split (no cost estimate)."""
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

    def timed_sum_gradients(parameters, world, **options):
        start = time.perf_counter()
        reduced.append(original(parameters, world, **options))
        reduce_times.append(time.perf_counter() - start)
        return reduced[-1]

    trainer_module.distributed.sum_gradients = timed_sum_gradients
    estimate = distributed.subnet_costs
    if not by_cost:
        distributed.subnet_costs = lambda supernet, space, archs: None
    try:
        config = TrainConfig(**BASE, **NETWORKS[network], out_dir=out + ".run", parallel=parallel,
                             bn_statistics=bn_statistics)
        trainer = OneShotTrainer(config, progress=False)
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
        distributed.subnet_costs = estimate
        if size > 1:
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {  # name: (processes, threads per process, parallel, bn_statistics, subnets dealt by cost)
    "1 process x 1 thread": (1, 1, "auto", "global", True),
    "1 process x all cores": (1, os.cpu_count() or 1, "auto", "global", True),
    "2 processes x 1 thread, subnets": (2, 1, "subnets", "global", True),
    "2 processes x 1 thread, subnets, contiguous split": (2, 1, "subnets", "global", False),
    "2 processes x 1 thread, batch, global BN": (2, 1, "batch", "global", True),
    "2 processes x 1 thread, batch, per-rank BN": (2, 1, "batch", "per_rank", True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("network", list(NETWORKS))
def test_training_steps_per_second(benchmark, network, case, tmp_path):
    size, threads, parallel, bn_statistics, by_cost = CASES[case]
    steps = 3 if benchmark.disabled else int(os.environ.get("RDNAS_BENCH_DIST_STEPS", "40"))
    out = str(tmp_path / "timings.pt")

    def run():
        if size == 1:
            saved = torch.get_num_threads()
            try:
                measure(0, 1, 0, threads, steps, network, parallel, bn_statistics, by_cost, out)
            finally:
                torch.set_num_threads(saved)
        else:
            mp.spawn(measure, args=(size, free_port(), threads, steps, network, parallel, bn_statistics, by_cost,
                                    out), nprocs=size)
        return torch.load(out)

    benchmark.group = f"distributed-cpu-{network}-16px-K4-train-step"
    timings = benchmark.pedantic(run, rounds=1, iterations=1)
    median = statistics.median(timings["step_s"])
    RESULTS[network, case] = median
    info = benchmark.extra_info
    info.update(environment("cpu"))
    info.update(network=network, processes=size, threads_per_process=threads, parallel=parallel,
                bn_statistics=bn_statistics, subnets_dealt_by_cost=by_cost, steps=steps,
                global_batch=BASE["batch_size"], paths_per_step=BASE["paths_per_step"], median_step_s=median,
                steps_per_s=1.0 / median)
    for baseline in ("1 process x 1 thread", "1 process x all cores"):
        if (network, baseline) in RESULTS:
            info[f"steps_per_s_ratio_to_{baseline.replace(' ', '_')}"] = RESULTS[network, baseline] / median
    if size > 1:
        reduce_median = statistics.median(timings["reduce_s"])
        info.update(median_gradient_allreduce_s=reduce_median, gradient_allreduce_share=reduce_median / median,
                    gradient_elements_reduced=int(statistics.median(timings["reduced"])))

"""Where subnet-parallel training loses to its ceiling: how long each rank waits for the other, and why.

Two processes (gloo, 1 thread each) train the digits network of issue 25 subnet-parallel (``benchmarks/
bench_distributed.py``'s configuration: NB201, C = 8, N = 1, 16 x 16 digits, batch 64, SPOS with K = 4, each rank
the 2 subnets the cost estimate deals it). Every rank records, per step, when it started the step and when it
reached the gradient all-reduce (``rdnas.distributed.sum_gradients``; both ranks read the same monotonic clock),
and the estimated cost of its two subnets (``rdnas.distributed.subnet_costs``, as ``StepLayout.balanced`` deals
them). From these:

- ``gap``: how long the first rank to reach the all-reduce waits for the other (median, mean);
- ``compute``: each rank's time from its step start to the all-reduce, fitted as ``a + b x estimated cost``;
  ``deterministic_gap``: the gap the cost estimate alone predicts (|cost difference| x b) and the correlation of
  the predicted and the measured differences between the ranks;
- ``noise``: the residual of the difference the estimate does not explain (its standard deviation) and the median
  gap that noise alone would give (two independent ranks: 0.674 x that deviation);
- ``speed_ratio``: rank 1's time per unit of estimated cost over rank 0's (quartiles) and the autocorrelation of
  its logarithm over 1, 2, 5, 10 and 20 steps: persistent (high at long lags) would mean a deal that learns each
  rank's speed could cancel it; short-lived means nothing that looks at past steps can.

    PYTHONPATH=. python benchmarks/distributed_step_jitter.py [--steps 400] [--out benchmarks/results/distributed_step_jitter.json]

Run it on an otherwise idle machine (stop background builds with ``kill -STOP`` first). It writes the summary
JSON (with the machine) and prints it.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_distributed import BASE, NETWORKS  # noqa: E402

from rdnas.atomic_file import write_text_atomic  # noqa: E402
from rdnas.machine import environment  # noqa: E402

WARMUP = 10
LAGS = (1, 2, 5, 10, 20)


def record(rank: int, size: int, port: int, steps: int, network: str, out: str) -> None:
    """Rank ``rank`` of ``size``: ``steps`` subnet-parallel training steps; saves, per step, its start and its arrival
    at the gradient all-reduce (time.monotonic) and the estimated cost of its own subnets to ``out.<rank>``."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo")
    from rdnas import distributed
    from rdnas.train import OneShotTrainer, TrainConfig
    from rdnas.train import trainer as trainer_module

    arrivals, own_costs = [], []
    sum_gradients, balanced = distributed.sum_gradients, distributed.StepLayout.balanced

    def timed_sum_gradients(parameters, world, **options):
        arrivals.append(time.monotonic())
        return sum_gradients(parameters, world, **options)

    def recorded_deal(layout, costs):  # the step's deal as the trainer makes it; this rank's share of its cost
        dealt = balanced(layout, costs)
        own_costs.append(sum(costs[i] for i in dealt.members))
        return dealt

    trainer_module.distributed.sum_gradients = timed_sum_gradients
    distributed.StepLayout.balanced = recorded_deal
    try:
        config = TrainConfig(**BASE, **NETWORKS[network], out_dir=f"{out}.{rank}.run", parallel="subnets")
        trainer = OneShotTrainer(config, progress=False)
        batches = list(trainer.batches)
        starts = []
        for step in range(steps):
            images, labels = batches[step % len(batches)]
            starts.append(time.monotonic())
            float(trainer.train_step(images, labels, 0.0)["loss"])
        np.savez(f"{out}.{rank}", starts=np.array(starts), arrivals=np.array(arrivals), costs=np.array(own_costs))
    finally:
        trainer_module.distributed.sum_gradients = sum_gradients
        distributed.StepLayout.balanced = balanced
        dist.destroy_process_group()


def analyse(starts: np.ndarray, arrivals: np.ndarray, costs: np.ndarray) -> dict:
    """The summary of two ranks' steps (module docstring). ``starts``, ``arrivals`` (float64 [2, S], seconds, one
    clock) and ``costs`` ([2, S], each rank's estimated cost of its own subnets); times in the result in ms."""
    compute = arrivals - starts
    gap = np.abs(arrivals[0] - arrivals[1])
    design = np.stack([np.ones(compute.size), costs.ravel()], 1)
    (intercept, slope), *_ = np.linalg.lstsq(design, compute.ravel(), rcond=None)
    measured = compute[0] - compute[1]
    predicted = (costs[0] - costs[1]) * slope
    residual = measured - predicted
    speed = compute / costs
    log_ratio = np.log(speed[1] / speed[0])
    centred = log_ratio - log_ratio.mean()

    def autocorrelation(lag: int) -> float:
        return float((centred[:-lag] * centred[lag:]).mean() / centred.var()) if len(centred) > lag else float("nan")

    steps = np.diff(starts[0])
    return {
        "steps": int(starts.shape[1]),
        "step_ms_median": float(np.median(steps) * 1e3),
        "compute_ms_median": [float(np.median(c) * 1e3) for c in compute],
        "gap_ms_median": float(np.median(gap) * 1e3),
        "gap_ms_mean": float(gap.mean() * 1e3),
        "gap_share_of_step": float(np.median(gap) / np.median(steps)),
        "rank1_later_share": float((arrivals[1] > arrivals[0]).mean()),
        "compute_fit_ms": {"intercept": float(intercept * 1e3), "per_cost_unit": float(slope * 1e3)},
        "deterministic_gap_ms_median": float(np.median(np.abs(predicted)) * 1e3),
        "predicted_vs_measured_difference_correlation": float(np.corrcoef(predicted, measured)[0, 1]),
        "difference_ms_std": float(measured.std() * 1e3),
        "noise_ms_std": float(residual.std() * 1e3),
        "noise_only_gap_ms_median": float(0.674 * residual.std() * 1e3),
        "speed_ratio_quartiles": [float(q) for q in np.exp(np.percentile(log_ratio, [25, 50, 75]))],
        "speed_ratio_autocorrelation": {str(lag): autocorrelation(lag) for lag in LAGS},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="training steps after 10 warm-up steps (default 400)")
    parser.add_argument("--network", choices=list(NETWORKS), default="digits-C8-N1")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" /
                                             "distributed_step_jitter.json"))
    args = parser.parse_args(argv)
    if args.steps < 2 * max(LAGS):
        parser.error(f"--steps must be at least {2 * max(LAGS)}, got {args.steps}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        prefix = str(Path(folder) / "jitter")
        mp.spawn(record, args=(2, port, WARMUP + args.steps, args.network, prefix), nprocs=2)
        ranks = [np.load(f"{prefix}.{rank}.npz") for rank in range(2)]
    starts, arrivals, costs = (np.stack([r[name][WARMUP:] for r in ranks]) for name in ("starts", "arrivals", "costs"))
    summary = {"network": args.network, **analyse(starts, arrivals, costs),
               "environment": {**environment("cpu"), "num_threads": 1},  # each rank's threads, not this process's
               "date": time.strftime("%Y-%m-%d %H:%M")}
    text = json.dumps(summary, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

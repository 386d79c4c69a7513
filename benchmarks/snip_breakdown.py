"""Where a snip pass spends its time on this machine, and the floor its convolutions set.

Runs rdnas's snip pass (cross-entropy forward and backward on the channels_last scoring copy, BN in training mode)
over a uniform sample of the 9,444 distinct live NB201 cell plans (the same sampler as ``bench_proxies.py``) with
every ATen call timed (a ``TorchDispatchMode`` around each call), and prints the time per plan by kind of op:

- dense convolutions (forward and backward; the work the public reference runs too, on every edge),
- the 3x3 average pooling (rdnas computes it as a depthwise convolution and a scale),
- batch norm, element-wise ops (ReLU, add, mul, ...), everything else,
- and what no ATen call accounts for (Python, autograd's engine, the timer itself).

The last line projects the dense convolutions alone over the 9,444 plans: a lower bound on any engine that runs
oneDNN's convolutions, whatever it does about the rest. Compare it with the public reference's whole-space
projection in benchmarks/RESULTS.md (``score-snip-cpu-whole-space``) for the best ratio such an engine can reach.

    PYTHONPATH=. python benchmarks/snip_breakdown.py [--plans 64] [--threads N]
"""

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxies import LIVE_PLANS, random_minibatch, sample_live_plans  # noqa: E402

from rdnas.proxies import scoring_supernet  # noqa: E402
from rdnas.proxies.base import scoring_copy_on_cpu  # noqa: E402

ELEMENTWISE = ("relu", "threshold_backward", "add", "mul", "sub", "div", "clamp", "neg", "where", "fill", "zero")
KINDS = ("dense convolutions", "3x3 average pooling", "batch norm", "element-wise", "other ATen calls")


def op_kind(func, args) -> str:
    """The category of one ATen call: a convolution with groups > 1 is the pooling (rdnas's only grouped one)."""
    name = func.__name__.split(".")[0]
    if name in ("convolution", "convolution_backward"):
        groups = args[8] if name == "convolution" else args[9]
        return "3x3 average pooling" if groups > 1 else "dense convolutions"
    if "batch_norm" in name:
        return "batch norm"
    if name.rstrip("_") in ELEMENTWISE:
        scale_by_counts = name == "mul" and isinstance(args[1], torch.Tensor) and args[1].shape[:2] == (1, 1)
        return "3x3 average pooling" if scale_by_counts else "element-wise"  # the pooling's [1, 1, H, W] counts
    return "other ATen calls"


class OpTimer(TorchDispatchMode):
    """Adds each ATen call's wall time to ``seconds[kind]`` (kinds: :data:`KINDS`)."""

    def __init__(self):
        super().__init__()
        self.seconds = defaultdict(float)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds[op_kind(func, args)] += time.perf_counter() - start
        return out


def main(argv=None) -> dict[str, float]:
    """Prints the breakdown; returns the seconds per plan of each of :data:`KINDS`, of "not in an ATen call" and
    the "wall" time per plan."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=64, help="live plans in the uniform sample (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = sample_live_plans(args.plans)
    supernet = scoring_supernet(device="cpu")
    network, batch = scoring_copy_on_cpu(supernet, random_minibatch("cpu"))
    network.train()

    def snip_pass(arch):
        network.zero_grad(set_to_none=True)
        F.cross_entropy(network(batch.inputs, arch), batch.targets).backward()

    snip_pass(archs[0])  # warm-up: oneDNN primitives, allocator
    timer = OpTimer()
    start = time.perf_counter()
    with timer:
        for arch in archs:
            snip_pass(arch)
    wall = (time.perf_counter() - start) / len(archs)
    per_plan = {kind: timer.seconds[kind] / len(archs) for kind in KINDS}
    untimed = wall - sum(per_plan.values())
    print(f"snip pass, batch 64, {len(archs)} of the {LIVE_PLANS:,} distinct live plans, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':28s}{'ms per plan':>12s}{'share':>8s}")
    for kind, seconds in [*per_plan.items(), ("not in an ATen call", untimed)]:
        print(f"{kind:28s}{seconds * 1e3:12.1f}{seconds / wall:8.0%}")
    print(f"{'wall (timer included)':28s}{wall * 1e3:12.1f}")
    floor = per_plan["dense convolutions"] * LIVE_PLANS / 60
    print(f"dense convolutions alone over the {LIVE_PLANS:,} plans: {floor:.1f} min")
    return {**per_plan, "not in an ATen call": untimed, "wall": wall}


if __name__ == "__main__":
    main()

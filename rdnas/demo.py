"""`rdnas demo`: a short demonstration of the fused ranking-loss ops on the embedded default.

It checks the fused ops against their plain-PyTorch references, times the all-pairs loss against the naive
N x N version, and distils a teacher ranking into a student in miniature (what RD-NAS does with a supernet):
student scores trained with the group-distance margin loss, Kendall tau against the teacher before and after.
"""

import json
import time
from dataclasses import asdict, dataclass

import torch
from scipy.stats import kendalltau

from rdnas.ops import _reference, margin_rank_loss, pairwise_margin_rank_loss


@dataclass
class DemoConfig:
    n: int = 2048  # items (architectures) in the all-pairs loss
    groups: int = 5  # teacher groups for the group-distance margins
    margin: float = 0.05  # margin per unit of group distance
    steps: int = 150  # optimisation steps of the distillation
    seed: int = 0
    device: str = "cpu"


def _median_seconds(fn, repeats=5):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _check_against_references(config, generator):
    device = config.device
    x1, x2 = (torch.randn(10_000, generator=generator, dtype=torch.float64).to(device) for _ in range(2))
    target = torch.randn(10_000, generator=generator, dtype=torch.float64).sign().to(device)
    elementwise = (margin_rank_loss(x1, x2, target, 0.1, "none")
                   - torch.nn.functional.margin_ranking_loss(x1, x2, target, 0.1, reduction="none")).abs().max()
    scores = torch.randn(500, generator=generator, dtype=torch.float64).to(device)
    teacher = torch.randn(500, generator=generator, dtype=torch.float64).to(device)
    groups = torch.randint(0, config.groups, (500,), generator=generator).to(device)
    pairwise = (pairwise_margin_rank_loss(scores, teacher, 0.1, groups)
                - _reference.pairwise_margin_rank_loss(scores, teacher, 0.1, groups)).abs()
    return {"margin_rank_loss_vs_F_max_abs_diff": elementwise.item(),
            "pairwise_vs_reference_abs_diff": pairwise.item()}


def _time_pairwise(config, generator):
    scores = torch.randn(config.n, generator=generator).to(config.device).requires_grad_()
    teacher = torch.randn(config.n, generator=generator).to(config.device)

    def fused():
        pairwise_margin_rank_loss(scores, teacher, 0.1).backward()

    def naive():
        _reference.pairwise_margin_rank_loss(scores, teacher, 0.1).backward()

    fused_s, naive_s = _median_seconds(fused), _median_seconds(naive, repeats=3)
    return {"n": config.n, "fused_fwd_bwd_ms": fused_s * 1e3, "naive_fwd_bwd_ms": naive_s * 1e3,
            "speedup": naive_s / fused_s}


def _distil(config, generator):
    """Teacher: a hidden ranking of n items, grouped into G groups by rank (0 = best). Student: free scores."""
    teacher = torch.randn(config.n, generator=generator).to(config.device)
    rank = teacher.argsort(descending=True).argsort()  # 0 = best
    groups = rank * config.groups // config.n
    student = (0.1 * torch.randn(config.n, generator=generator)).to(config.device).requires_grad_()
    optimiser = torch.optim.Adam([student], lr=0.05)
    tau_before = kendalltau(student.detach().cpu(), teacher.cpu()).statistic
    for _ in range(config.steps):
        optimiser.zero_grad()
        loss = pairwise_margin_rank_loss(student, teacher, config.margin, groups)
        loss.backward()
        optimiser.step()
    tau_after = kendalltau(student.detach().cpu(), teacher.cpu()).statistic
    return {"kendall_tau_before": float(tau_before), "kendall_tau_after": float(tau_after),
            "final_loss": loss.item(), "steps": config.steps}


def run_demo(config: DemoConfig) -> dict:
    """Runs the three parts of the demonstration and returns their results (JSON-serialisable)."""
    generator = torch.Generator().manual_seed(config.seed)
    return {"config": asdict(config),
            "correctness": _check_against_references(config, generator),
            "pairwise_speed": _time_pairwise(config, generator),
            "distillation": _distil(config, generator)}


def format_report(report: dict) -> str:
    check, speed, distil = report["correctness"], report["pairwise_speed"], report["distillation"]
    lines = [
        "rdnas demo: fused margin ranking losses",
        f"  margin_rank_loss vs torch.nn.functional.margin_ranking_loss: max |diff| = "
        f"{check['margin_rank_loss_vs_F_max_abs_diff']:.3g}",
        f"  pairwise_margin_rank_loss vs N x N reference:              |diff| = "
        f"{check['pairwise_vs_reference_abs_diff']:.3g}",
        f"  all-pairs loss, N = {speed['n']}, forward + backward: fused {speed['fused_fwd_bwd_ms']:.2f} ms, "
        f"naive {speed['naive_fwd_bwd_ms']:.1f} ms ({speed['speedup']:.0f}x)",
        f"  ranking distillation ({distil['steps']} steps, {report['config']['groups']} groups, group-distance "
        f"margins): Kendall tau {distil['kendall_tau_before']:.3f} -> {distil['kendall_tau_after']:.3f}",
    ]
    return "\n".join(lines)


def main(args) -> int:
    config = DemoConfig(n=args.n, steps=args.steps, seed=args.seed, device=args.device)
    report = run_demo(config)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"  report written to {args.json}")
    return 0

"""rdnas.ops.margin_rank_loss (one fused kernel) against torch.nn.functional.margin_ranking_loss on 1M pairs.

float32, target +-1, margin 0.1; reductions "mean" and "none", forward and forward+backward. One pytest-benchmark
group per (device, reduction, pass), e.g. "margin-cpu-N1M-mean-fwdbwd". Results and gradients are checked against
torch's (rtol 1e-4, atol 1e-5) before timing.

Achieved bandwidth (extra_info["GBps"]) counts the minimal traffic, 4 bytes per float32 element:
  forward:  input1, input2, target read once; the loss written once (N elements for "none", 1 for "mean");
  backward: input1, input2, target (and grad_output for "none") read once; grad_input1 and grad_input2 written once.
Temporaries either implementation creates are not counted, so this is the bandwidth an ideal one-pass kernel would
need for the measured time. extra_info["of_copy"] divides it by the bandwidth of a 256 MiB tensor.copy_ measured
once per session on the same device (read + write counted).
"""

import functools
import time

import pytest
import torch
import torch.nn.functional as F

import rdnas

NUM_PAIRS = 1 << 20
MARGIN = 0.1
REDUCTIONS = ["mean", "none"]
PASSES = ["fwd", "fwdbwd"]
IMPLS = ["rdnas", "torch"]
RTOL, ATOL = 1e-4, 1e-5
COPY_BYTES = 256 << 20

LABELS = {"rdnas": "rdnas.ops.margin_rank_loss", "torch": "F.margin_ranking_loss"}
ROLES = {"rdnas": "candidate", "torch": "baseline"}
FUNCTIONS = {
    "rdnas": lambda x1, x2, y, reduction: rdnas.ops.margin_rank_loss(x1, x2, y, MARGIN, reduction),
    "torch": lambda x1, x2, y, reduction: F.margin_ranking_loss(x1, x2, y, margin=MARGIN, reduction=reduction),
}


@functools.lru_cache(maxsize=None)
def copy_bandwidth(device: str) -> float:
    """Bytes per second of dst.copy_(src) for a 256 MiB float32 tensor (read + write), median of 10 copies."""
    src = torch.rand(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src).fill_(0)
    cuda = torch.device(device).type == "cuda"
    times = []
    for k in range(13):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        if cuda:
            torch.cuda.synchronize(device)
        if k >= 3:
            times.append(time.perf_counter() - start)
    return 2 * COPY_BYTES / sorted(times)[len(times) // 2]


def bytes_moved(reduction: str, pass_kind: str) -> int:
    """Minimal traffic of one call, as the module docstring counts it."""
    n, element = NUM_PAIRS, 4
    loss_elements = n if reduction == "none" else 1
    forward = (3 * n + loss_elements) * element
    if pass_kind == "fwd":
        return forward
    backward = (3 * n + loss_elements + 2 * n) * element
    return forward + backward


@functools.lru_cache(maxsize=None)
def case_inputs(device: str):
    generator = torch.Generator().manual_seed(1)
    input1 = torch.randn(NUM_PAIRS, generator=generator)
    input2 = torch.randn(NUM_PAIRS, generator=generator)
    target = torch.randint(0, 2, (NUM_PAIRS,), generator=generator).float() * 2 - 1
    return input1.to(device), input2.to(device), target.to(device)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_kind", PASSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_rank_loss(device_benchmark, device, reduction, pass_kind, impl):
    bench = device_benchmark
    bench.group = f"margin-{device}-N1M-{reduction}-{pass_kind}"
    bench.extra_info.update(
        impl=impl, label=LABELS[impl], role=ROLES[impl], n=NUM_PAIRS, pass_kind=pass_kind, reduction=reduction,
        margin=MARGIN, dtype="float32",
    )
    input1, input2, target = case_inputs(device)
    fn = FUNCTIONS[impl]
    if pass_kind == "fwd":
        def call():
            return fn(input1, input2, target, reduction)
    else:
        x1, x2 = input1.clone().requires_grad_(), input2.clone().requires_grad_()
        grad_output = torch.ones(NUM_PAIRS, device=device) if reduction == "none" else None

        def call():
            loss = fn(x1, x2, target, reduction)
            return (loss, *torch.autograd.grad(loss, (x1, x2), grad_outputs=grad_output))

    if impl != "torch":
        # Checked against torch once, before timing.
        out = call()
        x1_ref, x2_ref = input1.clone().requires_grad_(), input2.clone().requires_grad_()
        expected = FUNCTIONS["torch"](x1_ref, x2_ref, target, reduction)
        results = [("loss", out if pass_kind == "fwd" else out[0], expected.detach())]
        if pass_kind == "fwdbwd":
            ones = torch.ones_like(expected) if reduction == "none" else None
            g1, g2 = torch.autograd.grad(expected, (x1_ref, x2_ref), grad_outputs=ones)
            results += [("grad_input1", out[1], g1), ("grad_input2", out[2], g2)]
        for what, actual, wanted in results:
            torch.testing.assert_close(actual.detach(), wanted, rtol=RTOL, atol=ATOL,
                                       msg=lambda m, what=what: f"{impl}: {what} differs from torch's: {m}")
        bench.extra_info["checked_against"] = "F.margin_ranking_loss"
        del out

    bench.record_peak_memory(call)
    moved = bytes_moved(reduction, pass_kind)
    bench.extra_info["bytes"] = moved
    bench.extra_info["bytes_counted"] = (
        "minimal traffic, 4 B per element: fwd reads input1, input2, target and writes the loss; bwd reads input1, "
        "input2, target (+ grad_output for 'none') and writes grad_input1, grad_input2"
    )
    median = bench(call)
    if median:
        bench.extra_info["GBps"] = moved / median / 1e9
        copy = copy_bandwidth(device)
        bench.extra_info["copy_GBps"] = copy / 1e9
        bench.extra_info["of_copy"] = moved / median / copy

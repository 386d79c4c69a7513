"""rdnas.ops.pairwise_margin_rank_loss (fused, O(N) memory) against the naive all-pairs PyTorch version
(rdnas.ops._reference, N x N broadcasting) and torch.compile of that naive version.

Hinge loss, reduction "mean", margin 0.1, float32; teacher and scores random. One pytest-benchmark group per
(device, N, pass), e.g. "pairwise-cpu-N4096-fwdbwd", plus "pairwise-groups-<device>-N4096-fwdbwd" with 8 groups
(margin 0.1 per unit of group distance). Before timing, each implementation's loss (and gradient for fwd+bwd) is
checked against the naive one (rtol 1e-4, atol 1e-5), or, where the naive one is skipped, against a row-blocked
float64 evaluation of the same formula.
"""

import functools
import time

import pytest
import torch

import rdnas
from rdnas.ops import _reference

SIZES = [256, 1024, 4096, 16384]
PASSES = ["fwd", "fwdbwd"]
IMPLS = ["fused", "compiled", "naive"]
MARGIN = 0.1
NUM_GROUPS = 8
GROUPS_N = 4096
RTOL, ATOL = 1e-4, 1e-5

LABELS = {"fused": "rdnas (fused)", "compiled": "torch.compile", "naive": "naive"}
ROLES = {"fused": "candidate", "compiled": "baseline", "naive": "baseline"}
# The naive forward + backward holds about 7 float32 N x N temporaries at its peak (measured: 29 MB at N = 1024).
NAIVE_PEAK_TEMPORARIES = 8


def naive_skip_reason(device: str, n: int) -> str | None:
    """Why the naive and compiled versions do not run at this size, from memory alone (None: they run)."""
    square = n * n * 4
    if torch.device(device).type == "cpu" and square >= 2**30:
        return (
            f"naive and torch.compile versions skipped on CPU at N={n}: every N x N float32 temporary is "
            f"{square / 2**30:.0f} GiB (about {NAIVE_PEAK_TEMPORARIES} live at once) and one call would take minutes"
        )
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if NAIVE_PEAK_TEMPORARIES * square > 0.8 * free:
            return (
                f"naive and torch.compile versions skipped at N={n}: about {NAIVE_PEAK_TEMPORARIES} N x N float32 "
                f"temporaries ({NAIVE_PEAK_TEMPORARIES * square / 2**30:.1f} GiB) exceed 80% of the "
                f"{free / 2**30:.1f} GiB free on the GPU"
            )
    return None


@functools.lru_cache(maxsize=None)
def case_inputs(device: str, n: int, num_groups: int):
    """scores ~ N(0, 1), teacher ~ U(0, 1) and, with num_groups, group ids by teacher rank (0 = the best group),
    as RD-NAS buckets architectures; seeded, identical for every implementation."""
    generator = torch.Generator().manual_seed(n + 7919 * num_groups)
    scores = torch.randn(n, generator=generator)
    teacher = torch.rand(n, generator=generator)
    groups = None
    if num_groups:
        order = teacher.argsort(descending=True)
        groups = torch.empty(n, dtype=torch.long)
        groups[order] = torch.arange(n) * num_groups // n
        groups = groups.to(device)
    return scores.to(device), teacher.to(device), groups


def blocked_reference(scores, teacher, margin, groups, rows=512):
    """Mean hinge loss and its gradient in float64, rows at a time: the naive formula without an N x N tensor.

    Sweeping all j for every i sees each unordered pair twice, so the loss sum and pair count are halved; the
    gradient w.r.t. s_i is sum_j valid * [z_ij >= 0] * (-sign_ij), z_ij = m_ij - sign_ij * (s_i - s_j).
    """
    s, t = scores.double(), teacher.double()
    n = s.numel()
    total = torch.zeros((), dtype=torch.float64, device=s.device)
    count = torch.zeros((), dtype=torch.float64, device=s.device)
    grad = torch.zeros_like(s)
    for begin in range(0, n, rows):
        end = min(n, begin + rows)
        sign = torch.sign(t[begin:end, None] - t[None, :])
        valid = sign != 0
        if groups is not None:
            distance = (groups[begin:end, None] - groups[None, :]).abs()
            valid &= distance != 0
            pair_margin = margin * distance.double()
        else:
            pair_margin = margin
        z = pair_margin - sign * (s[begin:end, None] - s[None, :])
        valid_f = valid.double()
        total += (z.clamp_min(0) * valid_f).sum()
        count += valid_f.sum()
        grad[begin:end] = (valid_f * (z >= 0).double() * -sign).sum(1)
    count = (count / 2).clamp_min(1)
    return (total / 2) / count, grad / count


@functools.lru_cache(maxsize=None)
def reference(device: str, n: int, num_groups: int):
    """(loss, grad, seconds of one naive fwd+bwd call or None, description): the values every implementation is
    checked against."""
    scores, teacher, groups = case_inputs(device, n, num_groups)
    if naive_skip_reason(device, n) is None:
        x = scores.clone().requires_grad_()
        start = time.perf_counter()
        loss = _reference.pairwise_margin_rank_loss(x, teacher, MARGIN, groups)
        (grad,) = torch.autograd.grad(loss, x)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        return loss.detach(), grad, time.perf_counter() - start, "naive (rdnas.ops._reference), float32"
    loss, grad = blocked_reference(scores, teacher, MARGIN, groups)
    return loss.float(), grad.float(), None, "row-blocked float64 evaluation of the naive formula"


def implementation(impl: str, pass_kind: str):
    """The function to time, (scores, teacher, groups) -> loss; compiled ones are compiled and warmed up by the
    caller."""
    if impl == "fused":
        return lambda s, t, g: rdnas.ops.pairwise_margin_rank_loss(s, t, MARGIN, g)
    naive = lambda s, t, g: _reference.pairwise_margin_rank_loss(s, t, MARGIN, g)  # noqa: E731
    if impl == "naive":
        return naive
    torch._dynamo.reset()  # a fresh cache per case: no recompilation limit, shapes specialised as a user's would be
    return torch.compile(naive, dynamic=False)


def run_case(bench, device: str, n: int, pass_kind: str, impl: str, num_groups: int = 0):
    prefix = "pairwise-groups" if num_groups else "pairwise"
    bench.group = f"{prefix}-{device}-N{n}-{pass_kind}"
    bench.extra_info.update(
        impl=impl, label=LABELS[impl], role=ROLES[impl], n=n, pass_kind=pass_kind, num_groups=num_groups,
        margin=MARGIN, loss="hinge", reduction="mean", dtype="float32", pairs=n * (n - 1) // 2,
    )
    if impl != "fused":
        reason = naive_skip_reason(device, n)
        if reason:
            pytest.skip(reason)
    scores, teacher, groups = case_inputs(device, n, num_groups)
    ref_loss, ref_grad, naive_seconds, ref_description = reference(device, n, num_groups)
    if impl == "naive" and naive_seconds is not None and naive_seconds > bench.max_call_s:
        pytest.skip(f"naive version skipped: one fwd+bwd call took {naive_seconds:.1f} s (> RDNAS_BENCH_MAX_CALL_S)")

    fn = implementation(impl, pass_kind)
    x = scores.clone().requires_grad_(pass_kind == "fwdbwd")
    if pass_kind == "fwd":
        def call():
            return fn(x, teacher, groups)
    else:
        def call():
            loss = fn(x, teacher, groups)
            return loss, torch.autograd.grad(loss, x)[0]

    try:
        out = call()  # compiles torch.compile's version, outside the timed region
    except Exception as error:  # noqa: BLE001 - any failure of torch.compile here is a skip, not a benchmark error
        if impl != "compiled":
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        pytest.skip(f"torch.compile fails in this environment: {type(error).__name__}: {first_line}"[:300])

    if impl != "naive":
        loss = out if pass_kind == "fwd" else out[0]
        torch.testing.assert_close(loss.detach(), ref_loss, rtol=RTOL, atol=ATOL,
                                   msg=lambda m: f"{impl} loss differs from the {ref_description}: {m}")
        if pass_kind == "fwdbwd":
            torch.testing.assert_close(out[1], ref_grad, rtol=RTOL, atol=ATOL,
                                       msg=lambda m: f"{impl} gradient differs from the {ref_description}: {m}")
        bench.extra_info["checked_against"] = ref_description
    del out
    if impl == "fused":
        skipped = naive_skip_reason(device, n)
        if skipped:
            bench.extra_info["note"] = skipped

    bench.record_peak_memory(call)
    median = bench(call, warmup=2)
    if median:
        bench.extra_info["pairs_per_s"] = n * (n - 1) / 2 / median


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_kind", PASSES)
@pytest.mark.parametrize("n", SIZES)
def test_pairwise_margin_rank_loss(device_benchmark, device, n, pass_kind, impl):
    run_case(device_benchmark, device, n, pass_kind, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_pairwise_margin_rank_loss_groups(device_benchmark, device, impl):
    run_case(device_benchmark, device, GROUPS_N, "fwdbwd", impl, num_groups=NUM_GROUPS)

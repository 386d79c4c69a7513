"""rdnas.ops.pairwise_margin_rank_loss (fused, O(N) memory) against the naive all-pairs PyTorch version
(rdnas.ops._reference, N x N broadcasting) and torch.compile of that naive version.

Hinge loss, reduction "mean", margin 0.1, float32; teacher and scores random. One pytest-benchmark group per
(device, N, pass), e.g. "pairwise-cpu-N4096-fwdbwd", plus "pairwise-groups-<device>-N4096-fwdbwd" with 8 groups
(margin 0.1 per unit of group distance). Before timing, each implementation's loss (and gradient for fwd+bwd) is
checked against the naive one (rtol 1e-4, atol 1e-5); where the naive one is skipped, the fused kernel is
checked on 256 random items against the naive formula in float64.
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
# The naive forward + backward holds about 7 float32 N x N temporaries at its peak (measured: 448 MiB at N = 4096).
NAIVE_PEAK_TEMPORARIES = 8


def naive_skip_reason(device: str, n: int) -> str | None:
    """Why the naive and compiled versions do not run at this size, from memory alone (None: they run)."""
    square = n * n * 4
    if torch.device(device).type == "cpu" and square >= 2**30:
        return (
            f"naive and torch.compile versions skipped on CPU at N={n}: every N x N float32 temporary is "
            f"{square / 2**30:.0f} GiB and the naive fwd+bwd holds about {NAIVE_PEAK_TEMPORARIES} of them at once"
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


def sampled_rows_reference(scores, teacher, margin, groups, rows):
    """For the items `rows`: their per-item loss share (half the summed loss of their pairs) and the gradient of the
    summed loss, in float64 by the naive formula over all j; and the exact number of counted pairs.

    Row i's sweep over every j gives its share and d(sum)/d(s_i) = sum_j valid * [z_ij >= 0] * (-sign_ij), with
    z_ij = m_ij - sign_ij * (s_i - s_j). Pairs are counted unless tied in the teacher or (with groups) in one group.
    """
    s, t = scores.double(), teacher.double()
    sign = torch.sign(t[rows, None] - t[None, :])
    valid = sign != 0
    if groups is not None:
        distance = (groups[rows, None] - groups[None, :]).abs()
        valid &= distance != 0
        pair_margin = margin * distance.double()
    else:
        pair_margin = margin
    z = pair_margin - sign * (s[rows, None] - s[None, :])
    share = 0.5 * torch.where(valid, z.clamp_min(0), 0.0).sum(1)
    grad_of_sum = torch.where(valid & (z >= 0), -sign, 0.0).sum(1)

    def tied_pairs(keys):
        counts = torch.unique(keys, dim=0, return_counts=True)[1].double()
        return (counts * (counts - 1) / 2).sum()

    n = s.numel()
    skipped = tied_pairs(t[:, None])
    if groups is not None:
        skipped += tied_pairs(groups[:, None]) - tied_pairs(torch.stack([t, groups.double()], 1))
    return share, grad_of_sum, n * (n - 1) / 2 - skipped


@functools.lru_cache(maxsize=None)
def reference(device: str, n: int, num_groups: int):
    """The naive version's (loss, gradient) in float32 and the seconds its fwd+bwd call took, or None where
    naive_skip_reason rules it out."""
    if naive_skip_reason(device, n) is not None:
        return None
    scores, teacher, groups = case_inputs(device, n, num_groups)
    x = scores.clone().requires_grad_()
    start = time.perf_counter()
    loss = _reference.pairwise_margin_rank_loss(x, teacher, MARGIN, groups)
    (grad,) = torch.autograd.grad(loss, x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return loss.detach(), grad, time.perf_counter() - start


def check_correctness(bench, impl, pass_kind, out, device, n, num_groups):
    """Fused / compiled output against the naive one; where the naive one does not run, the fused kernel on 256
    random items against sampled_rows_reference. Records what was checked and the largest errors."""
    scores, teacher, groups = case_inputs(device, n, num_groups)
    loss = (out if pass_kind == "fwd" else out[0]).detach()
    grad = None if pass_kind == "fwd" else out[1]
    naive = reference(device, n, num_groups)
    if naive is not None:
        checks = [("loss", "loss", loss, naive[0])]
        if grad is not None:
            checks.append(("grad", "gradient", grad, naive[1]))
        bench.extra_info["checked_against"] = "naive (rdnas.ops._reference), float32"
    else:
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:256].to(device)
        share, grad_of_sum, count = sampled_rows_reference(scores, teacher, MARGIN, groups, rows)
        shares = rdnas.ops.pairwise_margin_rank_loss(scores, teacher, MARGIN, groups, reduction="none")
        checks = [
            ("share", "per-item share (reduction='none') of 256 random items", shares[rows], share.float()),
            ("loss", "mean loss vs sum of shares / exact pair count", loss, (shares.double().sum() / count).float()),
        ]
        if grad is not None:
            checks.append(("grad", "gradient of 256 random items", grad[rows], (grad_of_sum / count).float()))
        bench.extra_info["checked_against"] = (
            "naive formula in float64 on 256 random items (share and gradient), exact pair count; naive version skipped"
        )
    for key, what, actual, expected in checks:
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL,
                                   msg=lambda m, what=what: f"{impl}: {what} differs from the reference: {m}")
        error = (actual.double() - expected.double()).abs().max().item()
        bench.extra_info[f"max_abs_err_{key}"] = error


def implementation(impl: str):
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
    naive = reference(device, n, num_groups)
    if impl == "naive" and naive is not None and naive[2] > bench.max_call_s:
        pytest.skip(f"naive version skipped: one fwd+bwd call took {naive[2]:.1f} s (> RDNAS_BENCH_MAX_CALL_S)")

    fn = implementation(impl)
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
        check_correctness(bench, impl, pass_kind, out, device, n, num_groups)
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

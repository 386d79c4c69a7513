"""rdnas.ops.pairwise_margin_rank_loss against the float64 N x N reference."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import rdnas
from rdnas.ops import _reference, pairwise_margin_rank_loss
from tolerances import FLOAT_DTYPES, assert_within_reference_error

REDUCTIONS = ["none", "mean", "sum"]
LOSSES = ["hinge", "logistic"]


def make_problem(n, batch, device, seed, dtype=torch.float64, ties=True, num_groups=None, shared_teacher=False):
    generator = torch.Generator().manual_seed(seed)
    shape = (n,) if batch is None else (batch, n)
    teacher_shape = (n,) if (batch is None or shared_teacher) else shape
    scores = torch.randn(shape, generator=generator, dtype=torch.float64)
    if ties:  # few distinct values: many teacher ties
        teacher = torch.randint(0, max(2, n // 3), teacher_shape, generator=generator).to(torch.float64)
    else:
        teacher = torch.randn(teacher_shape, generator=generator, dtype=torch.float64)
    groups = None
    if num_groups is not None:
        groups = torch.randint(0, num_groups, teacher_shape, generator=generator).to(device)
    return scores.to(device=device, dtype=dtype), teacher.to(device=device, dtype=dtype), groups


def check_against_reference(scores, teacher, margin, groups, reduction, loss, *, rtol=1e-9, atol=1e-9):
    scores = scores.detach().requires_grad_()
    ours = pairwise_margin_rank_loss(scores, teacher, margin, groups, reduction, loss)
    reference_scores = scores.detach().double().requires_grad_()
    expected = _reference.pairwise_margin_rank_loss(reference_scores, teacher.double(), margin, groups, reduction, loss)
    assert ours.shape == expected.shape and ours.dtype == scores.dtype
    torch.testing.assert_close(ours.double(), expected, rtol=rtol, atol=atol, equal_nan=True)
    weight = torch.randn(ours.shape, dtype=torch.float64, device=scores.device)
    (ours_grad,) = torch.autograd.grad((ours * weight.to(ours.dtype)).sum(), scores)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), reference_scores)
    torch.testing.assert_close(ours_grad.double(), expected_grad, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 9, 40, 131])
@pytest.mark.parametrize("batch", [None, 1, 3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_matches_reference_float64(device, n, batch, reduction, loss):
    for seed in (0, 1):
        scores, teacher, _ = make_problem(n, batch, device, seed, ties=seed == 0)
        check_against_reference(scores, teacher, 0.25 * seed, None, reduction, loss)


@pytest.mark.parametrize("n", [2, 17, 100])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shared_teacher", [False, True])
def test_group_distance_margins(device, n, reduction, loss, shared_teacher):
    for seed, num_groups in ((0, 2), (1, 5), (2, 10)):
        scores, teacher, groups = make_problem(n, 4, device, seed, ties=False, num_groups=num_groups,
                                               shared_teacher=shared_teacher)
        check_against_reference(scores, teacher, 0.1, groups, reduction, loss)


def test_group_margins_are_margin_times_group_distance(device):
    # Two items, teacher says item 0 is better, three groups apart: loss = max(0, 3 * 0.5 - (s0 - s1)).
    scores = torch.tensor([1.0, 0.8], dtype=torch.float64, device=device)
    teacher = torch.tensor([2.0, 1.0], dtype=torch.float64, device=device)
    groups = torch.tensor([0, 3], device=device)
    assert pairwise_margin_rank_loss(scores, teacher, 0.5, groups, "sum").item() == pytest.approx(1.5 - 0.2)
    same_group = torch.tensor([2, 2], device=device)
    assert pairwise_margin_rank_loss(scores, teacher, 0.5, same_group, "sum").item() == 0.0


def test_mean_divides_by_counted_pairs_and_is_zero_without_pairs(device):
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64, device=device, requires_grad=True)
    teacher = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64, device=device)  # 4 of 6 pairs differ
    total = pairwise_margin_rank_loss(scores, teacher, 0.0, reduction="sum")
    mean = pairwise_margin_rank_loss(scores, teacher, 0.0, reduction="mean")
    assert mean.item() == pytest.approx(total.item() / 4)
    _, num_pairs, _ = torch.ops.rdnas.pairwise_margin_rank_loss(scores, teacher, None, 0.0, 1, 0, False)
    assert num_pairs.item() == 4 and num_pairs.dtype == torch.int64
    all_tied = torch.ones(4, dtype=torch.float64, device=device)
    loss = pairwise_margin_rank_loss(scores, all_tied, 1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(scores.grad, torch.zeros_like(scores))


def test_none_shares_add_up_to_sum(device):
    scores, teacher, groups = make_problem(50, 2, device, 3, num_groups=4)
    shares = pairwise_margin_rank_loss(scores, teacher, 0.2, groups, "none")
    total = pairwise_margin_rank_loss(scores, teacher, 0.2, groups, "sum")
    torch.testing.assert_close(shares.sum(), total)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reduced_precision_within_twice_torch_error(device, dtype, reduction):
    scores, teacher, groups = make_problem(300, 2, device, 4, dtype=dtype, ties=False, num_groups=6)
    ours = pairwise_margin_rank_loss(scores, teacher, 0.1, groups, reduction)
    same_precision = _reference.pairwise_margin_rank_loss(scores, teacher, 0.1, groups, reduction)
    reference = _reference.pairwise_margin_rank_loss(scores.double(), teacher.double(), 0.1, groups, reduction)
    floor = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6}[dtype] * reference.abs().max().item()
    assert_within_reference_error(ours, reference, same_precision, floor=floor)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gradients_in_every_dtype(device, dtype):
    scores, teacher, _ = make_problem(64, None, device, 5, dtype=dtype, ties=False)
    scores.requires_grad_()
    pairwise_margin_rank_loss(scores, teacher, 0.1).backward()
    expected_scores = scores.detach().double().requires_grad_()
    _reference.pairwise_margin_rank_loss(expected_scores, teacher.double(), 0.1).backward()
    assert scores.grad.dtype == dtype
    # The hinge's gradient is a count of active pairs over the pair count; in half precision only the pairs
    # whose z rounds across 0 can differ.
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(scores.grad.double(), expected_scores.grad, rtol=0, atol=tolerance)


def test_non_contiguous_inputs(device):
    base = torch.randn(3, 40, 2, dtype=torch.float64, device=device)
    scores = base[..., 0]
    teacher = torch.randn(40, 6, dtype=torch.float64, device=device)[:, 1]
    groups = torch.randint(0, 5, (40, 2), device=device)[:, 0]
    assert not scores.is_contiguous() and not teacher.is_contiguous() and not groups.is_contiguous()
    for reduction in REDUCTIONS:
        check_against_reference(scores, teacher, 0.3, groups, reduction, "hinge")


def test_nan_and_inf(device):
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([0.0, nan, 1.0, 2.0, inf, 3.0], dtype=torch.float64, device=device)
    teacher = torch.tensor([1.0, 2.0, nan, 0.0, 5.0, inf], dtype=torch.float64, device=device)
    for reduction in REDUCTIONS:
        for loss in LOSSES:
            check_against_reference(scores, teacher, 0.1, None, reduction, loss)
    # A NaN teacher difference is skipped like a tie (torch.sign(nan) == 0): finite scores give a finite loss.
    finite_scores = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, device=device)
    nan_teacher = torch.tensor([nan, 1.0, 0.0], dtype=torch.float64, device=device)
    assert pairwise_margin_rank_loss(finite_scores, nan_teacher, 0.1, reduction="sum").isfinite()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_float64(device, seed, reduction, loss):
    scores, teacher, groups = make_problem(7, 2, device, seed, ties=True, num_groups=3)
    if loss == "hinge":  # spread the scores so that no pair sits on the hinge's kink
        scores = torch.arange(14, dtype=torch.float64, device=device).reshape(2, 7)[:, torch.randperm(7)] * 0.37
    assert torch.autograd.gradcheck(
        lambda s: pairwise_margin_rank_loss(s, teacher, 0.1, groups, reduction, loss),
        (scores.clone().requires_grad_(),),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_second_order_matches_reference(device, reduction, loss):
    """Hessian, gradgradcheck and a gradient penalty through the op equal the N x N reference's (second order
    was missing: the logistic loss's gradient had no graph, so a gradient penalty raised or lost its curvature)."""
    scores, teacher, groups = make_problem(7, 2, device, 3, ties=True, num_groups=3)
    if loss == "hinge":  # away from the kink
        scores = torch.arange(14, dtype=torch.float64, device=device).reshape(2, 7)[:, torch.randperm(7)] * 0.37

    def ours(s):
        return pairwise_margin_rank_loss(s, teacher, 0.1, groups, reduction, loss)

    def reference(s):
        return _reference.pairwise_margin_rank_loss(s, teacher, 0.1, groups, reduction, loss)

    scores = scores.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(ours, (scores,))

    def gradient_penalty(objective):
        s = scores.detach().clone().requires_grad_()
        (gradient,) = torch.autograd.grad(objective(s).sum(), s, create_graph=True)
        gradient.square().sum().backward()
        return s.grad

    hessian = torch.autograd.functional.hessian(lambda s: ours(s).sum(), scores)
    if loss == "hinge":  # zero almost everywhere; torch's clamp gives the reference's gradient no graph at all
        assert torch.count_nonzero(hessian) == 0 and torch.count_nonzero(gradient_penalty(ours)) == 0
        return
    expected = torch.autograd.functional.hessian(lambda s: reference(s).sum(), scores)
    torch.testing.assert_close(hessian, expected, rtol=1e-10, atol=1e-12)
    assert hessian.abs().max() > 0.01  # the curvature the fused first order alone would drop
    torch.testing.assert_close(gradient_penalty(ours), gradient_penalty(reference), rtol=1e-10, atol=1e-12)


def test_second_order_in_float32_and_third_order_raises(device):
    scores, teacher, _ = make_problem(9, None, device, 4, ties=False)
    scores = scores.float().requires_grad_()
    (gradient,) = torch.autograd.grad(pairwise_margin_rank_loss(scores, teacher.float(), 0.1, loss="logistic"),
                                      scores, create_graph=True)
    (second,) = torch.autograd.grad(gradient.square().sum(), scores, create_graph=True)
    reference_scores = scores.detach().double().requires_grad_()
    (reference_gradient,) = torch.autograd.grad(
        _reference.pairwise_margin_rank_loss(reference_scores, teacher, 0.1, loss="logistic"), reference_scores,
        create_graph=True)
    (expected,) = torch.autograd.grad(reference_gradient.square().sum(), reference_scores)
    assert second.dtype == torch.float32
    torch.testing.assert_close(second.double(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        second.sum().backward()


@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("loss_kind", [0, 1])
@pytest.mark.parametrize("with_groups", [False, True])
def test_opcheck(device, reduction, loss_kind, with_groups):
    for n, batch in ((6, None), (5, 3), (0, None), (1, 2)):
        scores, teacher, groups = make_problem(n, batch, device, 6, num_groups=3 if with_groups else None)
        for compute_grad in (False, True):
            torch.library.opcheck(
                torch.ops.rdnas.pairwise_margin_rank_loss.default,
                (scores.clone().requires_grad_(), teacher, groups, 0.2, reduction, loss_kind, compute_grad),
            )
        torch.library.opcheck(
            torch.ops.rdnas.pairwise_margin_rank_loss_backward.default,
            (torch.randn_like(scores), scores, teacher, groups, 0.2, loss_kind),
        )
        torch.library.opcheck(  # with its second order
            torch.ops.rdnas.pairwise_margin_rank_loss_backward.default,
            (torch.randn_like(scores).requires_grad_(), scores.clone().requires_grad_(), teacher, groups, 0.2,
             loss_kind),
        )


def test_torch_compile_fullgraph(device):
    scores, teacher, groups = make_problem(50, 2, device, 7, dtype=torch.float32, num_groups=5)

    def objective(s):
        return pairwise_margin_rank_loss(s, teacher, 0.1, groups) + 0.5 * pairwise_margin_rank_loss(
            s, teacher, reduction="none", loss="logistic").sum()

    compiled = torch.compile(objective, fullgraph=True)
    a = scores.clone().requires_grad_()
    b = scores.clone().requires_grad_()
    loss_compiled = compiled(a)
    loss_compiled.backward()
    loss_eager = objective(b)
    loss_eager.backward()
    torch.testing.assert_close(loss_compiled, loss_eager)
    torch.testing.assert_close(a.grad, b.grad)


def test_deterministic_across_runs_and_threads():
    scores, teacher, groups = make_problem(3000, None, "cpu", 8, dtype=torch.float32, ties=False, num_groups=7)
    threads = torch.get_num_threads()
    try:
        first = pairwise_margin_rank_loss(scores, teacher, 0.1, groups, "sum")
        torch.set_num_threads(1)
        single = pairwise_margin_rank_loss(scores, teacher, 0.1, groups, "sum")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, single)
    assert torch.equal(first, pairwise_margin_rank_loss(scores, teacher, 0.1, groups, "sum"))


def _run_python(code, env=None):
    # Run from the tests' folder so that the installed rdnas is imported, not the source checkout.
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=300, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_baseline_instruction_set_path_matches_reference():
    # The CPU kernel picks AVX2 when it can; RDNAS_CPU_ISA=baseline forces the SSE2 build of the sweeps.
    out = _run_python(
        """
        import torch, rdnas
        from rdnas.ops import _reference
        torch.manual_seed(0)
        for groups in (None, torch.randint(0, 4, (3, 77))):
            s = torch.randn(3, 77, dtype=torch.float64, requires_grad=True)
            t = torch.randn(3, 77, dtype=torch.float64).round()
            for red in ("none", "mean", "sum"):
                a = rdnas.ops.pairwise_margin_rank_loss(s, t, 0.2, groups, red)
                b = _reference.pairwise_margin_rank_loss(s, t, 0.2, groups, red)
                ga, = torch.autograd.grad(a.sum(), s)
                gb, = torch.autograd.grad(b.sum(), s)
                torch.testing.assert_close(a, b)
                torch.testing.assert_close(ga, gb)
        print("ok")
        """,
        env={"RDNAS_CPU_ISA": "baseline"},
    )
    assert out.strip() == "ok"


def test_extra_memory_is_linear_in_n():
    # N = 30000 would need 3.6 GB for one N x N float32 tensor; the fused op must stay within a few MB.
    out = _run_python(
        """
        import resource, torch, rdnas
        n = 30000
        s = torch.randn(n, requires_grad=True)
        t = torch.randn(n)
        rdnas.ops.pairwise_margin_rank_loss(s[:10], t[:10])  # load everything first
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rdnas.ops.pairwise_margin_rank_loss(s, t, 0.1).backward()
        rdnas.ops.pairwise_margin_rank_loss(s, t, 0.1, reduction="none").sum().backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
        """
    )
    assert float(out) < 64, f"peak resident memory grew by {out} MB"


class TestErrors:
    def test_scores_rank(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: scores must have shape \[N\] or \[B, N\], got \[2, 3, 4\]"):
            pairwise_margin_rank_loss(torch.randn(2, 3, 4), torch.randn(4))

    def test_teacher_shape(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: teacher must have the shape of scores \[2, 5\] or \[5\], got \[4\]"):
            pairwise_margin_rank_loss(torch.randn(2, 5), torch.randn(4))

    def test_non_floating_teacher(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: teacher \(the target ranking\) must be a floating-point tensor, got Long"):
            pairwise_margin_rank_loss(torch.randn(5), torch.arange(5))

    def test_teacher_dtype(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: scores and teacher must have the same dtype, got Float and Double"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5, dtype=torch.float64))

    def test_integer_scores(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: scores must be a floating-point tensor .* got Long"):
            pairwise_margin_rank_loss(torch.arange(5), torch.randn(5))

    def test_float_groups(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: groups must be an integer tensor of group ids, got Float"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5), groups=torch.zeros(5))

    def test_groups_shape(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: groups must have the shape of scores \[5\] or \[5\], got \[3\]"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5), groups=torch.zeros(3, dtype=torch.long))

    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match=r"rdnas.ops.pairwise_margin_rank_loss: scores and teacher must be on the same device, got cpu and meta"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5, device="meta"))

    def test_bad_reduction(self):
        with pytest.raises(ValueError, match=r"rdnas.ops.pairwise_margin_rank_loss: 'max' is not a valid value for reduction"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5), reduction="max")

    def test_bad_loss(self):
        with pytest.raises(ValueError, match=r"rdnas.ops.pairwise_margin_rank_loss: loss must be 'hinge' or 'logistic', got 'square'"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5), loss="square")

    def test_tensor_margin(self):
        with pytest.raises(TypeError, match=r"rdnas.ops.pairwise_margin_rank_loss: margin must be a number"):
            pairwise_margin_rank_loss(torch.randn(5), torch.randn(5), margin=torch.ones(5))

    def test_native_loss_kind(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: loss_kind must be 0 \(hinge\) or 1 \(logistic\), got 5"):
            torch.ops.rdnas.pairwise_margin_rank_loss(torch.randn(5), torch.randn(5), None, 0.0, 1, 5, False)

    def test_group_ids_too_large_for_float32(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: groups must lie in"):
            pairwise_margin_rank_loss(torch.randn(3), torch.randn(3), groups=torch.tensor([0, 1, 2**40]))

    def test_backward_grad_shape(self):
        with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss_backward: scores and grad must have the same shape, got \[5\] and \[4\]"):
            torch.ops.rdnas.pairwise_margin_rank_loss_backward(torch.randn(4), torch.randn(5), torch.randn(5), None, 0.0, 0)


def test_module():
    scores, teacher, groups = make_problem(20, 2, "cpu", 9, dtype=torch.float32, num_groups=3)
    module = rdnas.nn.PairwiseMarginRankLoss(margin=0.2, reduction="sum", loss="logistic")
    torch.testing.assert_close(
        module(scores, teacher, groups),
        pairwise_margin_rank_loss(scores, teacher, 0.2, groups, "sum", "logistic"),
    )
    assert "loss='logistic'" in repr(module)

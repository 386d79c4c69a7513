"""rdnas.ops.margin_rank_loss against torch.nn.functional.margin_ranking_loss and the float64 reference."""

import pytest
import torch
import torch.nn.functional as F

import rdnas
from rdnas.ops import _reference, margin_rank_loss
from tolerances import FLOAT_DTYPES, assert_within_reference_error

REDUCTIONS = ["none", "mean", "sum"]

# (input1 shape, input2 shape, target shape): same shapes, broadcasting, scalars and empties (torch requires the
# three to have the same number of dimensions).
SHAPES = [
    ((), (), ()),
    ((0,), (0,), (0,)),
    ((1,), (1,), (1,)),
    ((2,), (2,), (2,)),
    ((37,), (37,), (37,)),
    ((5000,), (5000,), (5000,)),
    ((3, 5), (3, 5), (3, 5)),
    ((4, 1), (1, 6), (4, 6)),
    ((7, 3), (7, 3), (1, 1)),
    ((2, 0, 3), (2, 0, 3), (2, 0, 3)),
]


def make_inputs(shapes, dtype, device, seed, target_kind="sign"):
    generator = torch.Generator().manual_seed(seed)
    s1, s2, st = shapes
    input1 = torch.randn(s1, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    input2 = torch.randn(s2, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    if target_kind == "sign":
        target = torch.randint(0, 2, st, generator=generator).mul(2).sub(1)
    else:
        target = torch.randn(st, generator=generator, dtype=torch.float64)
    return input1, input2, target.to(device=device, dtype=dtype)


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.5, -0.25])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_torch_float32_float64(device, shapes, reduction, margin, seed):
    for dtype in (torch.float32, torch.float64):
        input1, input2, target = make_inputs(shapes, dtype, device, seed, "sign" if seed == 0 else "real")
        input1.requires_grad_()
        input2.requires_grad_()
        ours = margin_rank_loss(input1, input2, target, margin, reduction)
        theirs = F.margin_ranking_loss(input1, input2, target, margin, reduction=reduction)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        if reduction == "none":
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)  # same rounding, bit for bit
        else:  # our sum runs in float64 partial sums: at least as accurate, not the same bits
            torch.testing.assert_close(ours, theirs, equal_nan=True)
        if ours.numel() and not ours.isnan().any():
            weight = torch.randn_like(ours)
            ours_grads = torch.autograd.grad((ours * weight).sum(), (input1, input2))
            theirs_grads = torch.autograd.grad((theirs * weight).sum(), (input1, input2))
            for a, b in zip(ours_grads, theirs_grads):
                torch.testing.assert_close(a, b, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_half_types_within_twice_torch_error(device, dtype, reduction):
    shapes = ((4096,), (4096,), (4096,))
    input1, input2, target = make_inputs(shapes, dtype, device, 3)
    ours = margin_rank_loss(input1, input2, target, 0.1, reduction)
    theirs = F.margin_ranking_loss(input1, input2, target, 0.1, reduction=reduction)
    reference = _reference.margin_rank_loss(input1.double(), input2.double(), target.double(), 0.1, reduction)
    assert ours.dtype == dtype
    assert_within_reference_error(ours, reference, theirs, floor=1e-3)


def test_per_element_margin_tensor(device):
    input1, input2, target = make_inputs(((6, 5),) * 3, torch.float64, device, 4)
    for margin in (torch.rand(6, 5, dtype=torch.float64), torch.rand(5, dtype=torch.float64),
                   torch.rand(6, 1, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)):
        margin = margin.to(device)
        for reduction in REDUCTIONS:
            ours = margin_rank_loss(input1, input2, target, margin, reduction)
            expected = _reference.margin_rank_loss(input1, input2, target, margin, reduction)
            torch.testing.assert_close(ours, expected)


def test_margin_tensor_is_cast_to_the_input_dtype(device):
    input1, input2, target = make_inputs(((8,),) * 3, torch.float32, device, 5)
    ours = margin_rank_loss(input1, input2, target, torch.full((8,), 0.2, dtype=torch.float64, device=device))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, F.margin_ranking_loss(input1, input2, target, 0.2))


def test_non_contiguous_inputs(device):
    base = torch.randn(6, 8, 2, dtype=torch.float64, device=device)
    input1 = base[..., 0].t()  # [8, 6], strided
    input2 = base[::1, ::1, 1].t()
    target = torch.randn(12, 8, dtype=torch.float64, device=device)[::2].sign().t()
    assert not input1.is_contiguous() and not target.is_contiguous()
    for reduction in REDUCTIONS:
        torch.testing.assert_close(
            margin_rank_loss(input1, input2, target, 0.1, reduction),
            F.margin_ranking_loss(input1, input2, target, 0.1, reduction=reduction),
        )


def test_type_promotion_like_torch(device):
    input1 = torch.randn(10, device=device)
    input2 = torch.randn(10, dtype=torch.float64, device=device)
    integer_target = torch.tensor([1, -1] * 5, device=device)
    ours = margin_rank_loss(input1, input2, integer_target)
    theirs = F.margin_ranking_loss(input1, input2, integer_target)
    assert ours.dtype == theirs.dtype == torch.float64
    torch.testing.assert_close(ours, theirs)


def test_broadcast_gradients_are_summed(device):
    input1 = torch.randn(4, 1, dtype=torch.float64, device=device, requires_grad=True)
    input2 = torch.randn(1, 6, dtype=torch.float64, device=device, requires_grad=True)
    target = torch.randn(4, 6, dtype=torch.float64, device=device).sign()
    ours = torch.autograd.grad(margin_rank_loss(input1, input2, target, 0.2), (input1, input2))
    theirs = torch.autograd.grad(F.margin_ranking_loss(input1, input2, target, 0.2), (input1, input2))
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)


def test_nan_and_inf_behave_like_torch(device):
    nan, inf = float("nan"), float("inf")
    input1 = torch.tensor([nan, 1.0, inf, 1.0, -inf, 2.0], dtype=torch.float64, device=device, requires_grad=True)
    input2 = torch.tensor([0.0, inf, inf, 0.0, 0.0, nan], dtype=torch.float64, device=device, requires_grad=True)
    target = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -1.0], dtype=torch.float64, device=device)
    for reduction in REDUCTIONS:
        ours = margin_rank_loss(input1, input2, target, 0.5, reduction)
        theirs = F.margin_ranking_loss(input1, input2, target, 0.5, reduction=reduction)
        torch.testing.assert_close(ours, theirs, equal_nan=True)
        ours_grads = torch.autograd.grad(ours.sum(), (input1, input2))
        theirs_grads = torch.autograd.grad(theirs.sum(), (input1, input2))
        for a, b in zip(ours_grads, theirs_grads):
            torch.testing.assert_close(a, b, equal_nan=True)


def test_empty_input_reductions_match_torch(device):
    empty = torch.empty(0, device=device)
    assert margin_rank_loss(empty, empty, empty, reduction="mean").isnan()  # torch's mean of nothing
    assert margin_rank_loss(empty, empty, empty, reduction="sum").item() == 0.0
    assert margin_rank_loss(empty, empty, empty, reduction="none").shape == (0,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck_float64(device, seed):
    input1, input2, target = make_inputs(((3, 4), (1, 4), (3, 4)), torch.float64, device, seed, "real")
    margin = torch.rand(3, 1, dtype=torch.float64, device=device)
    # Keep z away from the hinge's kink, where finite differences are meaningless.
    input1 = input1 + torch.where((-target * (input1 - input2) + margin).abs() < 0.05, 0.2, 0.0)
    for reduction in REDUCTIONS:
        inputs = (input1.clone().requires_grad_(), input2.clone().requires_grad_())
        loss = lambda a, b: margin_rank_loss(a, b, target, margin, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(loss, inputs)
        # Second order (a gradient penalty, a JVP by double backward) flows through the backward op's own autograd;
        # without it the path through grad_output was dropped and the JVP came out 0.
        assert torch.autograd.gradgradcheck(loss, inputs)
        direction = torch.randn_like(input1)
        ours = torch.autograd.functional.jvp(lambda a: loss(a, input2), input1, direction)[1]
        theirs = torch.autograd.functional.jvp(  # the float64 reference, plain torch ops (F's margin is a float)
            lambda a: _reference.margin_rank_loss(a, input2, target, margin, reduction), input1, direction)[1]
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("with_margin_tensor", [False, True])
def test_opcheck(device, reduction, with_margin_tensor):
    for shapes in (((5, 3),) * 3, ((4, 1), (1, 3), (4, 3)), ((0,),) * 3):
        if shapes[0] == (0,) and reduction == 1:
            continue  # the mean of nothing is NaN, and opcheck compares outputs without equal_nan
        input1, input2, target = make_inputs(shapes, torch.float64, device, 7)
        margin_tensor = torch.rand(shapes[0][-1:], dtype=torch.float64, device=device) if with_margin_tensor else None
        torch.library.opcheck(
            torch.ops.rdnas.margin_rank_loss.default,
            (input1.requires_grad_(), input2, target, margin_tensor, 0.1, reduction),
        )
        grad = torch.randn(torch.broadcast_shapes(*shapes) if reduction == 0 else (), dtype=torch.float64,
                           device=device)
        torch.library.opcheck(
            torch.ops.rdnas.margin_rank_loss_backward.default,
            (grad.requires_grad_(), input1.detach(), input2, target, margin_tensor, 0.1, reduction),
        )


def test_torch_compile_fullgraph(device):
    input1, input2, target = make_inputs(((64,),) * 3, torch.float32, device, 8)
    compiled = torch.compile(lambda a, b, y: margin_rank_loss(a, b, y, 0.1) * 2.0, fullgraph=True)
    a = input1.clone().requires_grad_()
    loss = compiled(a, input2, target)
    loss.backward()
    b = input1.clone().requires_grad_()
    expected = F.margin_ranking_loss(b, input2, target, 0.1) * 2.0
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(a.grad, b.grad)


def test_deterministic_across_runs_and_threads():
    input1, input2, target = make_inputs(((300_000,),) * 3, torch.float32, "cpu", 9)
    threads = torch.get_num_threads()
    try:
        first = margin_rank_loss(input1, input2, target, 0.1, "sum")
        torch.set_num_threads(1)
        single = margin_rank_loss(input1, input2, target, 0.1, "sum")
    finally:
        torch.set_num_threads(threads)
    again = margin_rank_loss(input1, input2, target, 0.1, "sum")
    assert torch.equal(first, single) and torch.equal(first, again)


class TestErrors:
    def test_shape_mismatch(self):
        with pytest.raises(RuntimeError, match=r"rdnas::margin_rank_loss: input1 \[5\] and input2 \[4\] cannot be broadcast"):
            margin_rank_loss(torch.randn(5), torch.randn(4), torch.ones(5))

    def test_margin_shape_mismatch(self):
        with pytest.raises(RuntimeError, match=r"rdnas::margin_rank_loss: the inputs \[5\] and margin \[3\] cannot be broadcast"):
            margin_rank_loss(torch.randn(5), torch.randn(5), torch.ones(5), torch.rand(3))

    def test_different_number_of_dimensions(self):
        with pytest.raises(RuntimeError, match=r"rdnas.ops.margin_rank_loss: all input tensors should have the same number of dimensions"):
            margin_rank_loss(torch.randn(5), torch.randn(1, 5), torch.ones(5))

    def test_integer_inputs(self):
        with pytest.raises(RuntimeError, match=r"rdnas.ops.margin_rank_loss: input1 and input2 must be floating-point tensors, got torch.int64"):
            margin_rank_loss(torch.arange(5), torch.arange(5), torch.ones(5, dtype=torch.long))

    def test_bool_target(self):
        with pytest.raises(RuntimeError, match=r"rdnas.ops.margin_rank_loss: target must hold real numbers .* got dtype torch.bool"):
            margin_rank_loss(torch.randn(5), torch.randn(5), torch.ones(5, dtype=torch.bool))

    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match=r"rdnas.ops.margin_rank_loss: input1 and target must be on the same device, got cpu and meta"):
            margin_rank_loss(torch.randn(5), torch.randn(5), torch.ones(5, device="meta"))

    def test_bad_reduction(self):
        with pytest.raises(ValueError, match=r"rdnas.ops.margin_rank_loss: 'avg' is not a valid value for reduction"):
            margin_rank_loss(torch.randn(5), torch.randn(5), torch.ones(5), reduction="avg")

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match=r"rdnas.ops.margin_rank_loss: target must be a Tensor, got list"):
            margin_rank_loss(torch.randn(2), torch.randn(2), [1, -1])

    def test_native_op_checks_dtypes(self):
        with pytest.raises(RuntimeError, match=r"rdnas::margin_rank_loss: input1 and input2 must have the same dtype, got Float and Double"):
            torch.ops.rdnas.margin_rank_loss(torch.randn(3), torch.randn(3, dtype=torch.float64), torch.ones(3), None, 0.0, 1)

    def test_native_op_checks_reduction(self):
        with pytest.raises(RuntimeError, match=r"rdnas::margin_rank_loss: reduction must be 0 \(none\), 1 \(mean\) or 2 \(sum\), got 7"):
            torch.ops.rdnas.margin_rank_loss(torch.randn(3), torch.randn(3), torch.ones(3), None, 0.0, 7)

    def test_native_backward_checks_grad_shape(self):
        with pytest.raises(RuntimeError, match=r"rdnas::margin_rank_loss_backward: grad must have the broadcast shape \[3\] of the inputs, got \[2\]"):
            torch.ops.rdnas.margin_rank_loss_backward(torch.randn(2), torch.randn(3), torch.randn(3), torch.ones(3), None, 0.0, 0)


def test_module_matches_torch_module():
    input1, input2, target = make_inputs(((20,),) * 3, torch.float32, "cpu", 10)
    for reduction in REDUCTIONS:
        ours = rdnas.nn.MarginRankLoss(margin=0.3, reduction=reduction)
        theirs = torch.nn.MarginRankingLoss(margin=0.3, reduction=reduction)
        torch.testing.assert_close(ours(input1, input2, target), theirs(input1, input2, target))
    per_element = torch.rand(20)
    torch.testing.assert_close(
        rdnas.nn.MarginRankLoss()(input1, input2, target, margin=per_element),
        _reference.margin_rank_loss(input1, input2, target, per_element),
    )
    assert "margin=0.3" in repr(rdnas.nn.MarginRankLoss(margin=0.3))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_every_dtype_runs_backward(device, dtype):
    input1, input2, target = make_inputs(((33,),) * 3, dtype, device, 11)
    input1.requires_grad_()
    loss = margin_rank_loss(input1, input2, target, 0.1)
    loss.backward()
    assert input1.grad.dtype == dtype and input1.grad.shape == input1.shape

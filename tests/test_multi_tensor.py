"""Multi-tensor proxy reductions against float64 per-tensor references."""

import pytest
import torch

from rdnas.ops import linearize_, restore_signs_, sum_abs_product, sum_product, sum_squares
from tolerances import FLOAT_DTYPES

SHAPES = [(3, 4), (10,), (0,), (70000,), (16, 3, 3, 3), (1,), (2, 65536 + 5)]


def make_lists(dtype, device, seed, shapes=SHAPES):
    generator = torch.Generator().manual_seed(seed)
    first = [torch.randn(s, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]
    second = [torch.randn(s, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]
    return first, second


def reference(kind, first, second):
    if kind == "abs":
        return torch.stack([(a.double() * b.double()).abs().sum() for a, b in zip(first, second)]).cpu()
    if kind == "product":
        return torch.stack([(a.double() * b.double()).sum() for a, b in zip(first, second)]).cpu()
    return torch.stack([a.double().square().sum() for a in first]).cpu()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_reductions_match_float64_reference(device, dtype, seed):
    first, second = make_lists(dtype, device, seed)
    # Products of half-precision inputs are exact in float32, so only the accumulation order differs.
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype != torch.float64 else dict(rtol=1e-12, atol=1e-12)
    for kind, result in (("abs", sum_abs_product(first, second)), ("product", sum_product(first, second)),
                         ("squares", sum_squares(first))):
        assert result.dtype == torch.float64 and result.shape == (len(SHAPES),)
        torch.testing.assert_close(result.cpu(), reference(kind, first, second), **tolerance)


def test_non_contiguous_inputs(device):
    generator = torch.Generator().manual_seed(5)
    first = [torch.randn(8, 6, generator=generator).t(), torch.randn(5, 4, generator=generator)[:, ::2]]
    second = [torch.randn(6, 8, generator=generator), torch.randn(5, 2, generator=generator)]
    first = [t.to(device) for t in first]
    second = [t.to(device) for t in second]
    assert not first[0].is_contiguous() and not first[1].is_contiguous()
    # float32 inputs: the same tolerance as the float32 case of the reference test.
    tolerance = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum_abs_product(first, second).cpu(), reference("abs", first, second), **tolerance)
    torch.testing.assert_close(sum_squares(first).cpu(), reference("squares", first, None), **tolerance)


def test_empty_list(device):
    assert sum_squares([]).shape == (0,)
    assert linearize_([]) == []


def test_deterministic_across_threads():
    first, second = make_lists(torch.float32, "cpu", 3, [(300_000,), (5, 70000)])
    threads = torch.get_num_threads()
    try:
        a = sum_product(first, second)
        torch.set_num_threads(1)
        b = sum_product(first, second)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_linearize_and_restore(device, dtype):
    tensors, _ = make_lists(dtype, device, 4)
    tensors[0].view(-1)[0] = 0.0
    original = [t.clone() for t in tensors]
    signs = linearize_(tensors)
    for t, o, s in zip(tensors, original, signs):
        assert s.dtype == torch.int8 and s.shape == o.shape
        assert torch.equal(t, o.abs())
        assert torch.equal(s, torch.sign(o).to(torch.int8))
    restore_signs_(tensors, signs)
    for t, o in zip(tensors, original):
        assert torch.equal(t, o)


def test_synflow_score_of_a_network_equals_the_python_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10)).double()
    params = [p for p in model.parameters()]
    signs = linearize_([p.data for p in params])
    model(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    fused = sum_product([p.data for p in params], [p.grad for p in params]).sum()
    loop = sum(float((p.data * p.grad).sum()) for p in params)
    restore_signs_([p.data for p in params], signs)
    assert fused.item() == pytest.approx(loop, rel=1e-12)


def test_opcheck(device):
    first, second = make_lists(torch.float32, device, 5, [(4, 3), (7,), (0,)])
    for kind, other in ((0, second), (1, second), (2, [])):
        torch.library.opcheck(torch.ops.rdnas.multi_tensor_reduce.default, (first, other, kind))
    signs = [torch.sign(t).to(torch.int8) for t in first]
    torch.library.opcheck(torch.ops.rdnas.multi_tensor_abs_.default, ([t.clone() for t in first], [s.clone() for s in signs]))
    torch.library.opcheck(torch.ops.rdnas.multi_tensor_mul_signs_.default, ([t.clone() for t in first], signs))


class TestErrors:
    def test_lengths(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_reduce: the two tensor lists must have the same length, got 2 and 1"):
            sum_product([torch.ones(2), torch.ones(3)], [torch.ones(2)])

    def test_shapes(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_reduce: tensors\[1\] and second\[1\] must have the same shape, got \[3\] and \[4\]"):
            sum_abs_product([torch.ones(2), torch.ones(3)], [torch.ones(2), torch.ones(4)])

    def test_dtype(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_reduce: tensors\[0\] and tensors\[1\] must have the same dtype, got Float and Double"):
            sum_squares([torch.ones(2), torch.ones(2, dtype=torch.float64)])

    def test_integer(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_reduce: tensors\[0\] must be a floating-point tensor"):
            sum_squares([torch.ones(2, dtype=torch.long)])

    def test_second_list_for_squares(self):
        with pytest.raises(RuntimeError, match=r"this reduction takes one tensor list; the second must be empty, got 1 tensors"):
            torch.ops.rdnas.multi_tensor_reduce([torch.ones(2)], [torch.ones(2)], 2)

    def test_kind(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_reduce: kind must be 0 \(sum \|a\*b\|\), 1 \(sum a\*b\) or 2 \(sum a\*a\), got 4"):
            torch.ops.rdnas.multi_tensor_reduce([torch.ones(2)], [torch.ones(2)], 4)

    def test_non_contiguous_in_place(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_abs_: tensors are modified in place and must be contiguous"):
            linearize_([torch.ones(4, 4).t()])

    def test_wrong_signs(self):
        with pytest.raises(RuntimeError, match=r"rdnas::multi_tensor_mul_signs_: signs\[0\] must be a contiguous int8 tensor of the shape and device of tensors\[0\]"):
            restore_signs_([torch.ones(3)], [torch.ones(3)])

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match=r"rdnas.ops.sum_squares: element 1 is a list, not a Tensor"):
            sum_squares([torch.ones(2), [1.0]])


def test_linearize_and_restore_bump_the_version_like_torch_in_place_ops():
    """A backward through a graph that saved the old values must fail loudly, as after torch's own abs_ (the
    native ops wrote behind autograd's back and the gradient silently used |w|)."""
    weight = torch.nn.Parameter(torch.tensor([-1.0, 2.0, -3.0]))
    loss = (weight * weight).sum()
    with torch.no_grad():
        signs = linearize_([weight])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    version = weight._version
    with torch.no_grad():
        restore_signs_([weight], signs)
    assert weight._version > version and torch.equal(weight.detach(), torch.tensor([-1.0, 2.0, -3.0]))
    with torch.inference_mode():
        frozen = torch.tensor([-0.0, float("nan"), -2.0])
        restore_signs_([frozen], linearize_([frozen]))  # no version counter to bump: still works
    assert torch.signbit(frozen[0]) and frozen[1].isnan() and frozen[2] == -2.0

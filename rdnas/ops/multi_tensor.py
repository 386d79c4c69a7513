"""Multi-tensor reductions for zero-cost proxies: one pass over every parameter tensor of a network.

Each function takes lists of tensors (typically ``[p for p in model.parameters()]`` and their ``.grad``) and runs
one parallel region (CPU) or one launch (CUDA) over all of them, instead of a Python loop over parameters.
"""

import torch
from torch import Tensor

_SUM_ABS_PRODUCT, _SUM_PRODUCT, _SUM_SQUARES = 0, 1, 2


def _as_list(name, tensors) -> list:
    tensors = list(tensors)
    for k, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"rdnas.ops.{name}: element {k} is a {type(t).__name__}, not a Tensor")
    return tensors


def _reduce(name, first, second, kind) -> Tensor:
    first, second = _as_list(name, first), _as_list(name, second)
    if not first and not second:  # the dispatcher needs a tensor to pick a kernel
        return torch.empty(0, dtype=torch.float64)
    return torch.ops.rdnas.multi_tensor_reduce(first, second, kind)


def sum_abs_product(first, second) -> Tensor:
    """Per pair (a_k, b_k): sum |a_k * b_k| (snip's saliency with a = weights, b = gradients).

    Args:
        first, second (sequences of T tensors): pairwise the same shape, one floating dtype and device.

    Returns:
        Tensor[T], float64, on their device (sum it for the network's score).
    """
    return _reduce("sum_abs_product", first, second, _SUM_ABS_PRODUCT)


def sum_product(first, second) -> Tensor:
    """Per pair: sum a_k * b_k (synflow's score with a = |weights|, b = gradients). Tensor[T], float64."""
    return _reduce("sum_product", first, second, _SUM_PRODUCT)


def sum_squares(tensors) -> Tensor:
    """Per tensor: sum t_k^2 (grad_norm with gradients, l2_norm with weights). Tensor[T], float64."""
    return _reduce("sum_squares", tensors, [], _SUM_SQUARES)


def linearize_(tensors) -> list:
    """Synflow's linearisation: replaces every tensor by its absolute value, in place (a zero, -0.0 included, and
    NaN stay as they are), and returns the signs (int8 tensors of -1 / 0 / +1) that :func:`restore_signs_` puts
    back. Tensors must be contiguous. Bumps each tensor's version counter, as torch's in-place ops do, so that
    autograd refuses a backward through a graph that saved the old values."""
    tensors = _as_list("linearize_", tensors)
    signs = [torch.empty_like(t, dtype=torch.int8, memory_format=torch.contiguous_format) for t in tensors]
    if tensors:
        torch.ops.rdnas.multi_tensor_abs_(tensors, signs)
        _written_in_place(tensors)
    return signs


def restore_signs_(tensors, signs) -> None:
    """Multiplies every tensor by its saved sign, in place: undoes :func:`linearize_` bit for bit (-0.0 and NaN
    included). Bumps each tensor's version counter, as torch's in-place ops do."""
    tensors, signs = _as_list("restore_signs_", tensors), _as_list("restore_signs_", signs)
    if tensors or signs:
        torch.ops.rdnas.multi_tensor_mul_signs_(tensors, signs)
        _written_in_place(tensors)


def _written_in_place(tensors) -> None:
    # The native ops write through the data pointer; autograd learns of the write only from the version counter.
    for tensor in tensors:
        if not tensor.is_inference():  # inference tensors have no version counter
            torch.autograd.graph.increment_version(tensor)


@torch.library.register_fake("rdnas::multi_tensor_reduce")
def _reduce_fake(first, second, kind):
    device = first[0].device if len(first) else torch.device("cpu")
    return torch.empty(len(first), dtype=torch.float64, device=device)


@torch.library.register_fake("rdnas::multi_tensor_abs_")
def _abs_fake(tensors, signs):
    return None


@torch.library.register_fake("rdnas::multi_tensor_mul_signs_")
def _mul_signs_fake(tensors, signs):
    return None

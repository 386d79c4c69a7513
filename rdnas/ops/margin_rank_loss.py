"""rdnas.ops.margin_rank_loss: a fused drop-in for torch.nn.functional.margin_ranking_loss."""

import torch
from torch import Tensor

from rdnas.ops._arguments import check_tensors_on_one_device, reduction_enum

_OP = "margin_rank_loss"


def margin_rank_loss(
    input1: Tensor, input2: Tensor, target: Tensor, margin: float | Tensor = 0.0, reduction: str = "mean"
) -> Tensor:
    """Margin ranking loss ``max(0, -target * (input1 - input2) + margin)``, fused into one kernel.

    A drop-in for :func:`torch.nn.functional.margin_ranking_loss`: same results, broadcasting, reductions,
    dtypes, gradients and errors; in addition ``margin`` may be a tensor of per-element margins.

    Args:
        input1 (Tensor[*]): scores of the first items of each pair (float16, bfloat16, float32 or float64).
        input2 (Tensor[*]): scores of the second items; broadcastable with ``input1``.
        target (Tensor[*]): +1 where ``input1`` should rank higher, -1 where ``input2`` should. Integer targets are
            promoted as torch promotes them; a bool target is an error, as in torch.
        margin (float or Tensor[*]): the margin, a number or a tensor broadcastable to the inputs (cast to their
            dtype). Default 0.
        reduction (str): ``"none"`` (the broadcast shape), ``"mean"`` or ``"sum"`` (scalars). The mean of an
            empty input is NaN, as in torch.

    Returns:
        Tensor: the loss, of the promoted dtype of ``input1``, ``input2`` and ``target``.

    Gradients flow to ``input1`` and ``input2``; ``target`` and ``margin`` are treated as constants. Like torch,
    ``input1``, ``input2`` and ``target`` must have the same number of dimensions; NaN and inf propagate as in
    torch (a NaN element's loss is NaN and its gradient 0).
    """
    reduction_code = reduction_enum(_OP, reduction)
    check_tensors_on_one_device(
        _OP, input1=input1, input2=input2, target=target, margin=margin if isinstance(margin, Tensor) else None
    )
    if input1.dim() != input2.dim() or input1.dim() != target.dim():
        raise RuntimeError(
            f"rdnas.ops.{_OP}: all input tensors should have the same number of dimensions (as "
            f"torch.nn.functional.margin_ranking_loss requires), got input1 {list(input1.shape)}, "
            f"input2 {list(input2.shape)}, target {list(target.shape)}"
        )
    if target.dtype == torch.bool or target.is_complex():
        raise RuntimeError(f"rdnas.ops.{_OP}: target must hold real numbers (+1 / -1), got dtype {target.dtype}")
    dtype = torch.promote_types(torch.promote_types(input1.dtype, input2.dtype), target.dtype)
    if not dtype.is_floating_point:
        raise RuntimeError(
            f"rdnas.ops.{_OP}: input1 and input2 must be floating-point tensors, got {input1.dtype} and {input2.dtype}"
        )
    input1, input2, target = input1.to(dtype), input2.to(dtype), target.to(dtype)
    if isinstance(margin, Tensor):
        return torch.ops.rdnas.margin_rank_loss(input1, input2, target, margin.to(dtype), 0.0, reduction_code)
    return torch.ops.rdnas.margin_rank_loss(input1, input2, target, None, float(margin), reduction_code)


@torch.library.register_fake("rdnas::margin_rank_loss")
def _margin_rank_loss_fake(input1, input2, target, margin_tensor, margin, reduction):
    if reduction != 0:
        return input1.new_empty(())
    shapes = [input1.shape, input2.shape, target.shape]
    if margin_tensor is not None:
        shapes.append(margin_tensor.shape)
    return input1.new_empty(torch.broadcast_shapes(*shapes))


@torch.library.register_fake("rdnas::margin_rank_loss_backward")
def _margin_rank_loss_backward_fake(grad, input1, input2, target, margin_tensor, margin, reduction):
    shapes = [input1.shape, input2.shape, target.shape]
    if margin_tensor is not None:
        shapes.append(margin_tensor.shape)
    shape = torch.broadcast_shapes(*shapes)
    return input1.new_empty(shape), input1.new_empty(shape)


def _setup_context(ctx, inputs, output):
    input1, input2, target, margin_tensor, margin, reduction = inputs
    ctx.save_for_backward(input1, input2, target, margin_tensor)
    ctx.margin = margin
    ctx.reduction = reduction


def _backward(ctx, grad):
    input1, input2, target, margin_tensor = ctx.saved_tensors
    grad_input1 = grad_input2 = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_input1, grad_input2 = torch.ops.rdnas.margin_rank_loss_backward(
            grad, input1, input2, target, margin_tensor, ctx.margin, ctx.reduction
        )
        # The kernel writes the broadcast shape; a broadcast input gets the sum over its broadcast dimensions.
        if grad_input1.shape != input1.shape:
            grad_input1 = grad_input1.sum_to_size(input1.shape)
        if grad_input2.shape != input2.shape:
            grad_input2 = grad_input2.sum_to_size(input2.shape)
    return grad_input1, grad_input2, None, None, None, None


torch.library.register_autograd("rdnas::margin_rank_loss", _backward, setup_context=_setup_context)


# Second order. The backward's outputs are linear in ``grad``: grad_input1 = L(grad), grad_input2 = -L(grad), with
# L elementwise multiplication by -target * [the hinge is active] (0 where the loss is NaN) after broadcasting a
# reduced ``grad`` (times 1/N for "mean"). So d/d(grad) of <gg1, grad_input1> + <gg2, grad_input2> is
# L^T(gg1 - gg2): the same kernel with reduction "none" applied to gg1 - gg2, summed for "sum" and "mean" (the 1/N
# is inside the kernel's "mean" scaling, so it is applied here). The hinge's indicator has zero derivative almost
# everywhere, so input1, input2 and target get none (torch's own double backward agrees).


def _backward_setup_context(ctx, inputs, output):
    grad, input1, input2, target, margin_tensor, margin, reduction = inputs
    ctx.save_for_backward(input1, input2, target, margin_tensor)
    ctx.margin = margin
    ctx.reduction = reduction


def _backward_backward(ctx, grad_grad_input1, grad_grad_input2):
    input1, input2, target, margin_tensor = ctx.saved_tensors
    grad_grad = None
    if ctx.needs_input_grad[0]:
        shape = torch.broadcast_shapes(*[t.shape for t in (input1, input2, target, margin_tensor) if t is not None])
        direction = torch.zeros(shape, dtype=input1.dtype, device=input1.device)
        if grad_grad_input1 is not None:
            direction = direction + grad_grad_input1
        if grad_grad_input2 is not None:
            direction = direction - grad_grad_input2
        per_element, _ = torch.ops.rdnas.margin_rank_loss_backward(
            direction, input1, input2, target, margin_tensor, ctx.margin, 0
        )
        if ctx.reduction == 0:
            grad_grad = per_element
        else:
            grad_grad = per_element.sum()
            if ctx.reduction == 1:
                grad_grad = grad_grad / per_element.numel()  # an empty input: 0 / 0 = NaN, as its mean loss
    return grad_grad, None, None, None, None, None, None


torch.library.register_autograd("rdnas::margin_rank_loss_backward", _backward_backward,
                                setup_context=_backward_setup_context)

"""rdnas.ops.pairwise_margin_rank_loss: the all-pairs margin ranking loss without an N x N tensor."""

import torch
from torch import Tensor

from rdnas.ops._arguments import check_tensors_on_one_device, reduction_enum

_OP = "pairwise_margin_rank_loss"
LOSS_KINDS = {"hinge": 0, "logistic": 1}


def pairwise_margin_rank_loss(
    scores: Tensor,
    teacher: Tensor,
    margin: float = 0.0,
    groups: Tensor | None = None,
    reduction: str = "mean",
    loss: str = "hinge",
) -> Tensor:
    """Margin ranking loss over every pair of a batch, fused: O(N^2) work, O(N) extra memory.

    For every unordered pair i != j whose teacher values differ, the item the teacher ranks higher must score
    higher by at least the margin. With ``sigma = sign(teacher[i] - teacher[j])`` and
    ``z = m_ij - sigma * (scores[i] - scores[j])`` the pair's loss is ``max(0, z)`` (``loss="hinge"``) or
    ``log(1 + exp(z))`` (``loss="logistic"``, RankNet with a margin). Ties in the teacher are skipped.

    With ``groups`` (integer group ids, 0 = best group; see RD-NAS's group distance), the margin is
    ``m_ij = margin * |groups[i] - groups[j]|`` and pairs in the same group are skipped; the direction of a pair
    still comes from ``teacher`` (pass ``teacher = -groups`` to rank by group alone).

    "Higher is better" holds for both arguments: to ask lower supernet losses for better architectures, pass
    ``scores = -losses`` (or a teacher where larger means worse, consistently).

    Args:
        scores (Tensor[N] or Tensor[B, N]): the student's scores (differentiable).
        teacher (Tensor[N] or Tensor[B, N]): the target ranking, same dtype as ``scores`` (a constant); a
            ``[N]`` teacher serves every row of a ``[B, N]`` batch.
        margin (float): the margin, or the margin per unit of group distance with ``groups``. Default 0.
        groups (Tensor[N] or Tensor[B, N], optional): integer group ids.
        reduction (str): ``"mean"`` (sum over counted pairs divided by their number, over the whole batch; 0 when
            no pair is counted, so a step whose sample falls in one group contributes nothing), ``"sum"``, or
            ``"none"`` (shape of ``scores``: each item's share, half the summed loss of its pairs, so the shares
            add up to ``"sum"``).
        loss (str): ``"hinge"`` (default) or ``"logistic"``.

    Returns:
        Tensor: a scalar, or ``Tensor[N]`` / ``Tensor[B, N]`` for ``"none"``; dtype of ``scores``.

    NaN follows what the plain PyTorch formulation (``rdnas.ops._reference``) does: a pair whose teacher difference
    is NaN is skipped like a tie (``torch.sign(nan) == 0``), and a NaN score makes its pairs' losses NaN.
    """
    reduction_code = reduction_enum(_OP, reduction)
    try:
        loss_code = LOSS_KINDS[loss]
    except (KeyError, TypeError):
        raise ValueError(f"rdnas.ops.{_OP}: loss must be 'hinge' or 'logistic', got {loss!r}") from None
    check_tensors_on_one_device(_OP, scores=scores, teacher=teacher, groups=groups)
    if isinstance(margin, Tensor):
        raise TypeError(f"rdnas.ops.{_OP}: margin must be a number (use groups for per-pair margins)")
    compute_grad = torch.is_grad_enabled() and scores.requires_grad
    loss_value, _, _ = torch.ops.rdnas.pairwise_margin_rank_loss(
        scores, teacher, groups, float(margin), reduction_code, loss_code, compute_grad
    )
    return loss_value


def _coef_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("rdnas::pairwise_margin_rank_loss")
def _pairwise_fake(scores, teacher, groups, margin, reduction, loss_kind, compute_grad):
    loss_value = scores.new_empty(() if reduction != 0 else scores.shape)
    num_pairs = scores.new_empty((), dtype=torch.long)
    dsum_shape = scores.shape if (compute_grad and reduction != 0) else (0,)
    dsum = scores.new_empty(dsum_shape, dtype=_coef_dtype(scores.dtype))
    return loss_value, num_pairs, dsum


@torch.library.register_fake("rdnas::pairwise_margin_rank_loss_backward")
def _pairwise_backward_fake(grad, scores, teacher, groups, margin, loss_kind):
    return scores.new_empty(scores.shape)


def _setup_context(ctx, inputs, output):
    scores, teacher, groups, margin, reduction, loss_kind, compute_grad = inputs
    _, num_pairs, dsum = output
    ctx.mark_non_differentiable(num_pairs, dsum)
    ctx.save_for_backward(scores, teacher, groups, num_pairs, dsum)
    ctx.margin, ctx.reduction, ctx.loss_kind = margin, reduction, loss_kind


def _backward(ctx, grad_loss, _grad_num_pairs, _grad_dsum):
    scores, teacher, groups, num_pairs, dsum = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return (None,) * 7
    if ctx.reduction == 0:
        grad_scores = torch.ops.rdnas.pairwise_margin_rank_loss_backward(
            grad_loss, scores, teacher, groups, ctx.margin, ctx.loss_kind
        )
        return grad_scores, None, None, None, None, None, None
    scale = grad_loss.to(_coef_dtype(scores.dtype))  # d(loss)/d(pair sum): grad_loss, over the pairs for "mean"
    if ctx.reduction == 1:
        scale = scale / num_pairs.clamp_min(1).to(scale.dtype)
    if torch.is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable (in scores and in grad_loss), so it goes
        # through the backward op, which has a second order (below): "sum" and "mean" are "none" with every item's
        # grad equal to the scale.
        grad_scores = torch.ops.rdnas.pairwise_margin_rank_loss_backward(
            scale.to(scores.dtype).expand(scores.shape), scores, teacher, groups, ctx.margin, ctx.loss_kind
        )
        return grad_scores, None, None, None, None, None, None
    if dsum.numel() != scores.numel():
        # The forward was called with compute_grad=False (directly, not through the wrapper): recompute.
        _, _, dsum = torch.ops.rdnas.pairwise_margin_rank_loss(
            scores, teacher, groups, ctx.margin, ctx.reduction, ctx.loss_kind, True
        )
    grad_scores = (dsum * scale).to(scores.dtype)
    return grad_scores, None, None, None, None, None, None


torch.library.register_autograd("rdnas::pairwise_margin_rank_loss", _backward, setup_context=_setup_context)


# Second order. The backward op computes G(grad, s) = J(s)^T grad, with J the Jacobian of the per-item shares
# (reduction "none") in the scores. Its vector-Jacobian products are d<gg, G>/d(grad) = J(s) gg and
# d<gg, G>/ds = sum_i grad_i * H_i(s) gg (H_i: the Hessian of share i; zero almost everywhere for the hinge, the
# logistic loss's sigmoid'(z) terms otherwise). Second derivatives are rare (gradient penalties, Hessian-vector
# products), so they are taken by autograd through the plain N x N formulation (rdnas.ops._reference) in float64
# and cast back to the inputs' dtypes: O(N^2) memory, like the naive loss, while the first order stays fused. The
# hinge's second derivative is zero (torch's clamp agrees). Third order is not supported (it raises).


def _backward_setup_context(ctx, inputs, output):
    grad, scores, teacher, groups, margin, loss_kind = inputs
    ctx.save_for_backward(grad, scores, teacher, groups)
    ctx.margin, ctx.loss_kind = margin, loss_kind


@torch.autograd.function.once_differentiable
def _backward_backward(ctx, grad_grad_scores):
    from rdnas.ops._reference import pairwise_margin_rank_loss as reference

    grad, scores, teacher, groups = ctx.saved_tensors
    needs_grad, needs_scores = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad_grad_scores is None or not (needs_grad or needs_scores):
        return (None,) * 6
    loss_name = next(name for name, code in LOSS_KINDS.items() if code == ctx.loss_kind)
    with torch.enable_grad():
        scores64 = scores.detach().to(torch.float64).requires_grad_()
        grad64 = grad.detach().to(torch.float64).requires_grad_()
        shares = reference(scores64, teacher.to(torch.float64), ctx.margin, groups, "none", loss_name)
        (first,) = torch.autograd.grad(shares, scores64, grad64, create_graph=True)
        wrt_grad, wrt_scores = torch.autograd.grad(first, (grad64, scores64), grad_grad_scores.to(torch.float64),
                                                   allow_unused=True)
    wrt_grad = torch.zeros_like(grad) if wrt_grad is None else wrt_grad.to(grad.dtype)
    wrt_scores = torch.zeros_like(scores) if wrt_scores is None else wrt_scores.to(scores.dtype)
    return (wrt_grad if needs_grad else None), (wrt_scores if needs_scores else None), None, None, None, None


torch.library.register_autograd("rdnas::pairwise_margin_rank_loss_backward", _backward_backward,
                                setup_context=_backward_setup_context)

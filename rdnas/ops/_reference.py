"""Plain-PyTorch references of the native ops: the float64 ground truth of the tests, the baselines of the
benchmarks, and a readable statement of what each op computes.

These materialise what the kernels avoid (the pairwise one builds [.., N, N] tensors), so they are for testing
and comparison, not for large inputs.
"""

import torch
from torch import Tensor

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"{reduction} is not a valid value for reduction")


def margin_rank_loss(input1: Tensor, input2: Tensor, target: Tensor, margin=0.0, reduction: str = "mean") -> Tensor:
    """max(0, -target * (input1 - input2) + margin), broadcast over all arguments (margin may be a tensor)."""
    loss = (-target * (input1 - input2) + margin).clamp_min(0)
    return _reduce(loss, reduction)


def pairwise_margin_rank_loss(
    scores: Tensor,
    teacher: Tensor,
    margin: float = 0.0,
    groups: Tensor | None = None,
    reduction: str = "mean",
    loss: str = "hinge",
) -> Tensor:
    """All-pairs margin ranking loss by N x N broadcasting (the naive implementation).

    For items i != j with sigma = sign(t_i - t_j) != 0 (and g_i != g_j with groups), z = m_ij - sigma * (s_i - s_j)
    with m_ij = margin * |g_i - g_j| (groups) or margin; the pair loss is max(0, z) (hinge) or log(1 + exp(z))
    (logistic). Each unordered pair counts once. "mean" divides the sum by the number of counted pairs (0 when no
    pair counts), "none" returns each item's share, half the sum of its pairs' losses, so that it sums to "sum".
    A pair whose teacher difference is NaN has sign 0 (torch.sign(nan) == 0) and is skipped like a tie.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    n = scores.shape[-1]
    score_diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)  # s_i - s_j
    sign = torch.sign(teacher.unsqueeze(-1) - teacher.unsqueeze(-2))
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    valid = ((sign != 0) & off_diagonal).expand(score_diff.shape)
    if groups is not None:
        group_distance = (groups.unsqueeze(-1) - groups.unsqueeze(-2)).abs()
        valid = valid & (group_distance != 0)
        pair_margin = margin * group_distance.to(scores.dtype)
    else:
        pair_margin = margin
    # Masking z itself (not only the pair loss) keeps a NaN in a skipped pair out of the gradient.
    z = torch.where(valid, pair_margin - sign * score_diff, torch.zeros_like(score_diff))
    if loss == "hinge":
        pair_loss = z.clamp_min(0)
    elif loss == "logistic":
        pair_loss = torch.logaddexp(z, torch.zeros_like(z))
    else:
        raise ValueError(f"loss must be 'hinge' or 'logistic', got {loss!r}")
    pair_loss = torch.where(valid, pair_loss, torch.zeros_like(pair_loss))
    if reduction == "none":
        return 0.5 * pair_loss.sum(-1)
    upper = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
    total = torch.where(upper, pair_loss, torch.zeros_like(pair_loss)).sum()
    if reduction == "sum":
        return total
    count = (valid & upper).sum()
    return total / count.clamp_min(1)

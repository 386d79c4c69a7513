"""Module forms of the margin ranking losses."""

from torch import Tensor, nn

from rdnas.ops import margin_rank_loss, pairwise_margin_rank_loss


class MarginRankLoss(nn.Module):
    """Drop-in for :class:`torch.nn.MarginRankingLoss` backed by :func:`rdnas.ops.margin_rank_loss`.

    Args:
        margin (float): default margin. Default 0.
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``. Default ``"mean"``.

    Shape:
        input1, input2, target: ``(*)``, broadcastable; ``margin`` in ``forward`` may override the default with a
        number or a per-element tensor. Output: scalar, or the broadcast shape with ``reduction="none"``.
    """

    def __init__(self, margin: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = margin
        self.reduction = reduction

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor, margin: float | Tensor | None = None) -> Tensor:
        return margin_rank_loss(
            input1, input2, target, self.margin if margin is None else margin, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class PairwiseMarginRankLoss(nn.Module):
    """All-pairs margin ranking loss, :func:`rdnas.ops.pairwise_margin_rank_loss` as a module.

    Args:
        margin (float): margin, or margin per unit of group distance when ``groups`` are given. Default 0.
        reduction (str): ``"mean"`` (over counted pairs), ``"sum"`` or ``"none"`` (per-item shares).
        loss (str): ``"hinge"`` or ``"logistic"``.

    Shape:
        scores, teacher, groups: ``(N)`` or ``(B, N)`` (teacher and groups may be ``(N)`` for a ``(B, N)`` batch).
        Output: scalar, or the shape of ``scores`` with ``reduction="none"``.
    """

    def __init__(self, margin: float = 0.0, reduction: str = "mean", loss: str = "hinge") -> None:
        super().__init__()
        self.margin = margin
        self.reduction = reduction
        self.loss = loss

    def forward(self, scores: Tensor, teacher: Tensor, groups: Tensor | None = None) -> Tensor:
        return pairwise_margin_rank_loss(
            scores, teacher, margin=self.margin, groups=groups, reduction=self.reduction, loss=self.loss
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}, loss={self.loss!r}"

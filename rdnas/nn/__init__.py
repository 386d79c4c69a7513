"""Loss modules over rdnas.ops, mirroring torch.nn.MarginRankingLoss."""

from rdnas.nn.losses import MarginRankLoss, PairwiseMarginRankLoss

__all__ = ["MarginRankLoss", "PairwiseMarginRankLoss"]

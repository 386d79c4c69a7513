"""Native ops of rdnas (``torch.ops.rdnas.*``) with their Python wrappers, fake kernels and autograd.

``rdnas.ops._reference`` holds plain-PyTorch references of every op.
"""

from rdnas import _extension  # noqa: F401  (loads rdnas._C before the registrations below)
from rdnas.ops.margin_rank_loss import margin_rank_loss
from rdnas.ops.multi_tensor import linearize_, restore_signs_, sum_abs_product, sum_product, sum_squares
from rdnas.ops.pairwise_margin_rank_loss import pairwise_margin_rank_loss

__all__ = [
    "linearize_", "margin_rank_loss", "pairwise_margin_rank_loss", "restore_signs_", "sum_abs_product", "sum_product",
    "sum_squares",
]

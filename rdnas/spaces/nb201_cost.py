"""The cost model of NAS-Bench-201's network, computed from the cell alone (no network is built).

The benchmark's network for a cell (:class:`rdnas.supernet.NB201Network` builds it): a 3x3 stem convolution (no
bias) and BN; three stages of ``cells_per_stage`` cells of width C, 2C, 4C, the stages joined by a reduction block
(ReLU-conv3x3-BN with stride 2, ReLU-conv3x3-BN, and a 2x2 average pool + 1x1 convolution shortcut); BN, ReLU,
global average pool and a linear classifier. Every cell of the network is the same cell, and every non-``none``
edge holds its op's weights (dead edges included, as the benchmark counts them): ``nor_conv_1x1`` and
``nor_conv_3x3`` are ReLU-conv-BN (a bias-free convolution of the cell's width, BN affine when ``bn_affine``),
``skip_connect``, ``avg_pool_3x3`` and ``none`` hold no weights.

The counts follow the benchmark's counter (``params_M`` and ``flops_M`` of its tables times 1e6):

- params: every learnable parameter (BN running statistics not included, so ``params == trainable_params``);
- FLOPs per image: Conv2d output elements x (input channels / groups) x kernel area, Linear in x out + out;
  pooling, BN and ReLU count 0.

They equal what the ``params`` and ``flops`` proxies (:mod:`rdnas.proxies.cost`) measure on the supernet of the
same options, which tests check. The model needs only how many of a cell's edges hold each weighted op, so this
module imports nothing of the space's encoding (:meth:`rdnas.spaces.nb201.NB201Space.cost` counts and calls it).
"""

import torch
from torch import Tensor

NUM_STAGES = 3


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rdnas.spaces.nb201_cost.network_cost: {name} must be a positive int, got {value!r}")


def network_cost(conv1x1: Tensor, conv3x3: Tensor, channels: int = 16, cells_per_stage: int = 5,
                 num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 bn_affine: bool = True) -> dict[str, Tensor]:
    """Parameters and FLOPs of the networks of K cells (module docstring), vectorised over the cells.

    With the defaults (the benchmark's CIFAR-10 network: C = 16, N = 5, 3 x 32 x 32 inputs, 10 classes) they are
    the table's ``params_M`` and ``flops_M`` times 1e6.

    Args:
        conv1x1, conv3x3 (Tensor[K] of ints in 0..6): how many of each cell's six edges hold ``nor_conv_1x1``,
            ``nor_conv_3x3``.
        channels (int): C, the first stage's width.
        cells_per_stage (int): N.
        num_classes, in_channels (int): classifier outputs and input channels.
        image_size (int): side of the square input, a multiple of 4 (the two reductions halve it).
        bn_affine (bool): whether the cells' BN layers have a weight and bias (the supernet option of that name).

    Returns:
        dict of float64 Tensor[K]: ``params``, ``trainable_params`` (equal), ``flops``.
    """
    for name, value in (("channels", channels), ("cells_per_stage", cells_per_stage),
                        ("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        _check_positive(name, value)
    if image_size % 4:
        raise ValueError(f"rdnas.spaces.nb201_cost.network_cost: image_size must be a multiple of 4 (the network "
                         f"halves it twice), got {image_size}")
    conv1x1, conv3x3 = torch.as_tensor(conv1x1).double(), torch.as_tensor(conv3x3).double()
    if conv1x1.shape != conv3x3.shape or conv1x1.dim() != 1:
        raise ValueError(f"rdnas.spaces.nb201_cost.network_cost: conv1x1 and conv3x3 must be Tensor[K] of the same "
                         f"K, got shapes {list(conv1x1.shape)} and {list(conv3x3.shape)}")
    cell_bn = 2 if bn_affine else 0

    params = float(9 * in_channels * channels + 2 * channels)  # stem conv + BN
    flops = float(image_size**2 * 9 * in_channels * channels)
    params_per_op = torch.zeros_like(conv1x1)
    flops_per_op = torch.zeros_like(conv1x1)
    width, side = channels, image_size
    for stage in range(NUM_STAGES):
        if stage > 0:  # reduction block: conv_a (stride 2), conv_b, and the pooled 1x1 shortcut, BN affine
            half, width, side = width, 2 * width, side // 2
            params += 9 * half * width + 2 * width + 9 * width * width + 2 * width + half * width
            flops += side**2 * (9 * half * width + 9 * width * width + half * width)
        params_per_op += cells_per_stage * (conv1x1 * (width * width + cell_bn * width)
                                            + conv3x3 * (9 * width * width + cell_bn * width))
        flops_per_op += cells_per_stage * side**2 * (conv1x1 + 9 * conv3x3) * width * width
    params += 2 * width + width * num_classes + num_classes  # head BN + classifier
    flops += width * num_classes + num_classes
    total = params + params_per_op
    return {"params": total, "trainable_params": total.clone(), "flops": flops + flops_per_op}

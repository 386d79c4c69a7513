"""The cost model of the ResNet48 space's networks: parameters and FLOPs from the 52-digit code alone, vectorised.

Networks (:func:`cost` models them, :mod:`rdnas.supernet.resnet48` builds them). ImageNet (the competition's,
``resnet_stem="imagenet"``): stem 7x7 conv stride 2 pad 3 (no bias), BN, ReLU, 3x3 max-pool stride 2 pad 1; four
stages of BasicBlocks (3x3 conv carrying the stride, BN, ReLU, 3x3 conv, BN, add shortcut, ReLU) with strides
1, 2, 2, 2; a 1x1 conv (stride) + BN projection shortcut where the stride or the width changes (the first block
of stages 2-4; the ties make every other shortcut an identity), otherwise identity; global average pool; FC with
bias. Small-input configuration for CPU training: ``resnet_stem="small"`` is a 3x3 stem conv stride 1 pad 1 with
no max-pool (CIFAR-style: a 32 x 32 input reaches the last stage at 4 x 4); ``width_divisor`` in 1, 2, 4, 8
divides every channel count of the table (each is a multiple of 8, so distinct codes stay distinct or tie as in
the table; the architecture and its code are unchanged).
"""

import torch

from rdnas.spaces.resnet48_codes import (
    _CHANNELS, _CONV1, _CONV2, _SLOT_BLOCK, _SLOT_STAGE, _STEM_CHANNELS, BLOCK_OF_SLOT, NUM_STAGES, POS_DEPTH,
    POS_STEM, SLOT_START, STAGE_OF_SLOT, STRIDES, ResNet48Options, validate)


def _spatial_sides(image_size: int, resnet_stem: str) -> tuple:
    """(stem conv output side, side of each stage's output) for square inputs; every stride-2 layer here (7x7
    pad 3, 3x3 pad 1, 3x3 max-pool pad 1, 1x1 pad 0) maps a side h to ceil(h / 2)."""
    stem = -(-image_size // 2) if resnet_stem == "imagenet" else image_size
    side = -(-stem // 2) if resnet_stem == "imagenet" else stem
    sides = []
    for stride in STRIDES:
        side = -(-side // stride)
        sides.append(side)
    return stem, tuple(sides)


def cost(archs, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3,
         resnet_stem: str = "imagenet", width_divisor: int = 1) -> dict:
    """Parameters and FLOPs of each architecture's network, analytically (vectorised: 45,000 codes take a
    fraction of a second).

    Conventions: those of the competition (PaddlePaddle ``paddle.flops`` and its parameter count on the ImageNet
    network, batch 1); with the defaults they give exactly 34,067,880 params (34,043,688 trainable) and
    5,292,349,440 FLOPs for :meth:`rdnas.spaces.resnet48.ResNet48Space.largest`, 5,839,800 (5,833,080) and
    946,450,400 for :meth:`rdnas.spaces.resnet48.ResNet48Space.smallest`.

    - conv: multiply-accumulates k*k*C_in*C_out*H_out*W_out (no bias);
    - BatchNorm: FLOPs 2 x output elements; 4 parameters per channel (weight, bias, running mean and variance),
      of which 2 are trainable;
    - ReLU and max-pool: 0 FLOPs;
    - global average pool: (H*W + 1) x C (Paddle's adaptive-pool rule: H*W additions and one division per output);
    - FC: in x out FLOPs (the bias is not counted), in x out + out parameters (the FC has a bias);
    - shortcuts: a 1x1 conv + BN projection only where the stride or the width changes (the first block of
      stages 2-4; stage 1's first block keeps an identity since its width is tied to the stem's).

    Args:
        archs: LongTensor[K, 52] or anything :func:`validate` takes.
        image_size (int): side of the square input (224 in the competition).
        num_classes, in_channels (int): classifier outputs and input channels.
        resnet_stem (str): "imagenet" (7x7 stride 2 + max-pool) or "small" (3x3 stride 1, no pool).
        width_divisor (int): 1, 2, 4 or 8: every channel count divided by it.

    Returns:
        dict of float64 Tensor[K]: ``params`` (BN running statistics included), ``trainable_params`` (what PyTorch's
        ``requires_grad`` parameters count), ``flops``.
    """
    ResNet48Options(resnet_stem=resnet_stem, width_divisor=width_divisor).check("rdnas.spaces.resnet48.cost")
    if int(image_size) < 1:
        raise ValueError(f"rdnas.spaces.resnet48.cost: image_size must be a positive int, got {image_size!r}")
    rows = validate(archs)
    f64 = torch.float64
    depths = rows[:, POS_DEPTH:POS_DEPTH + NUM_STAGES]
    active = (_SLOT_BLOCK < depths[:, _SLOT_STAGE]).to(f64)  # [K, 23]
    mids = _CHANNELS[_SLOT_STAGE, rows[:, _CONV1]].to(f64) / width_divisor  # [K, 23], 0 where inactive
    outs = _CHANNELS[_SLOT_STAGE, rows[:, _CONV2[torch.tensor(SLOT_START)][_SLOT_STAGE]]].to(f64) / width_divisor
    stem = _STEM_CHANNELS[rows[:, POS_STEM]].to(f64) / width_divisor  # [K]
    stem_side, sides = _spatial_sides(int(image_size), resnet_stem)
    kernel = 7 if resnet_stem == "imagenet" else 3

    trainable = kernel * kernel * in_channels * stem + 2 * stem
    bn_channels = stem.clone()
    flops = (kernel * kernel * in_channels * stem + 2 * stem) * stem_side**2
    # Block inputs: the previous slot's output, the stem for the first slot, the previous stage's for a first block.
    first = _SLOT_BLOCK == 0
    previous_stage_out = torch.cat([stem.unsqueeze(1), outs[:, torch.tensor(SLOT_START[:-1])]], 1)  # [K, 4]
    inputs = torch.where(first, previous_stage_out[:, _SLOT_STAGE], outs)
    stride = torch.tensor([STRIDES[s] if b == 0 else 1 for s, b in zip(STAGE_OF_SLOT, BLOCK_OF_SLOT)])
    projection = ((stride != 1) | (inputs != outs)).to(f64) * active
    area = torch.tensor([sides[s] ** 2 for s in STAGE_OF_SLOT], dtype=f64)
    conv_weights = 9 * inputs * mids + 9 * mids * outs * active + projection * inputs * outs
    block_bn = mids + outs * active + projection * outs
    trainable = trainable + (conv_weights + 2 * block_bn).sum(1)
    bn_channels = bn_channels + block_bn.sum(1)
    flops = flops + ((conv_weights + 2 * block_bn) * area).sum(1)
    last = outs[:, SLOT_START[-1]]
    trainable = trainable + last * num_classes + num_classes
    flops = flops + (sides[-1] ** 2 + 1) * last + last * num_classes
    return {"params": trainable + 2 * bn_channels, "trainable_params": trainable, "flops": flops}

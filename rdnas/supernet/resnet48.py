"""The ResNet48 elastic supernet (CVPR 2022 NAS Track 1) and the stand-alone networks it exports.

The supernet holds every layer at full width: the stem, 5 + 5 + 8 + 5 BasicBlocks, the classifier. A subnet
(:mod:`rdnas.spaces.resnet48` code) runs the first d blocks of each stage with the first-k channel slices of the
convolutions, of the batch norms' affine parameters and running statistics, and of the classifier's input
(:mod:`rdnas.supernet.elastic_ops`). The first block of stages 2-4 carries the stride and a 1x1 conv + BN
projection shortcut; every other block keeps an identity, since the space's ties give a block the width of its
input there (stage 1's output width is the stem's, a stage's blocks share their output width).

Batch norm in a subnet: ``forward(x, arch)`` behaves as ``nn.BatchNorm2d`` on the slices (training: batch
statistics and an update of the running statistics' slice, shared by every subnet; eval: the sliced running
statistics). ``forward_subnets`` can instead give each subnet its own statistics: "batch" (training-mode
statistics, buffers untouched), "running" (the shared sliced running statistics), "calibrate" then "calibrated"
(per-subnet recalibration on training batches, the usual remedy when shared running statistics do not fit a
subnet; see :class:`rdnas.supernet.BNStatistics`).
"""

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.spaces import resnet48
from rdnas.supernet.batchnorm import BNStatistics
from rdnas.supernet.elastic_ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, sliced_state

_WHERE = "rdnas.supernet.ResNet48Supernet"


def _stem_layout(resnet_stem: str) -> tuple:
    """(kernel, stride, padding, max-pool?) of the stem."""
    return (7, 2, 3, True) if resnet_stem == "imagenet" else (3, 1, 1, False)


def _arch_tuple(arch, where: str) -> tuple:
    if isinstance(arch, str):
        return tuple(int(c) if c.isdigit() else c for c in arch)
    if isinstance(arch, Tensor):
        if arch.device.type != "cpu":
            raise ValueError(f"{where}: pass architectures as CPU tensors, strings or tuples (reading a GPU tensor "
                             "would synchronise the device every step)")
        if arch.dim() != 1:
            raise ValueError(f"{where}: expected one architecture, LongTensor[52], got shape {list(arch.shape)}")
        arch = arch.tolist()
    return tuple(arch)


@functools.lru_cache(maxsize=8192)
def _plan(arch: tuple, width_divisor: int) -> resnet48.ResNet48Arch:
    return resnet48.decode(torch.tensor([arch]) if all(type(d) is int for d in arch) else "".join(map(str, arch)),
                           width_divisor)


def subnet_plan(arch, width_divisor: int = 1) -> resnet48.ResNet48Arch:
    """The decoded architecture (depths, channel widths) a forward runs, validated and cached by code."""
    return _plan(_arch_tuple(arch, "rdnas.supernet.resnet48.subnet_plan"), width_divisor)


class ElasticBasicBlock(nn.Module):
    """A BasicBlock at full width (3x3 conv with the stride, BN, ReLU, 3x3 conv, BN, add shortcut, ReLU) with an
    optional 1x1 conv + BN projection shortcut.

    ``forward(x, mid, out, stats=None, subnet=None)``: x [B, C_in, H, W] -> [B, out, H / stride, W / stride];
    conv1 runs ``mid`` filters; the projection runs where the stride is not 1 or C_in differs from ``out``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, projection: bool,
                 track_running_stats: bool = True):
        super().__init__()
        self.stride = stride
        self.conv1 = ElasticConv2d(in_channels, mid_channels, 3, stride, 1)
        self.bn1 = ElasticBatchNorm2d(mid_channels, track_running_stats=track_running_stats)
        self.conv2 = ElasticConv2d(mid_channels, out_channels, 3, 1, 1)
        self.bn2 = ElasticBatchNorm2d(out_channels, track_running_stats=track_running_stats)
        if projection:
            self.shortcut_conv = ElasticConv2d(in_channels, out_channels, 1, stride, 0)
            self.shortcut_bn = ElasticBatchNorm2d(out_channels, track_running_stats=track_running_stats)
        else:
            self.shortcut_conv = self.shortcut_bn = None

    def forward(self, x: Tensor, mid: int, out: int, stats: BNStatistics | None = None,
                subnet: int | None = None) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x, mid), stats, subnet))
        y = self.bn2(self.conv2(y, out), stats, subnet)
        if self.stride != 1 or x.shape[1] != out:
            if self.shortcut_conv is None:
                raise RuntimeError(f"{_WHERE}: a block without a projection shortcut got {x.shape[1]} input and "
                                   f"{out} output channels")
            shortcut = self.shortcut_bn(self.shortcut_conv(x, out), stats, subnet)
        else:
            shortcut = x
        return F.relu(y + shortcut)


class ResNet48Supernet(nn.Module):
    """The ResNet48 elastic supernet (see the module docstring).

    Args:
        num_classes (int): classifier outputs (1000 for ImageNet).
        in_channels (int): input image channels.
        resnet_stem (str): "imagenet" (7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2; the competition's) or
            "small" (3x3 conv stride 1, BN, ReLU; no pooling: for 16-32 pixel inputs on the CPU).
        width_divisor (int): 1, 2, 4 or 8: every channel count of the width table divided by it (1 = the
            competition's widths).
        bn_track_running_stats (bool): keep running BN statistics (shared by the subnets, sliced). With False, BN
            always uses batch statistics.

    ``forward(x, arch)``: logits [B, num_classes] of one subnet (x [B, in_channels, H, W]; ``arch`` a 52-digit
    code: LongTensor[52] on the CPU, a string or a tuple). ``forward_subnets(x, archs, bn)``: [K, B, num_classes].
    ``export(arch)``: a :class:`ResNet48Network` with copies of the subnet's weights.
    """

    space = resnet48.SPACE

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, resnet_stem: str = "imagenet",
                 width_divisor: int = 1, bn_track_running_stats: bool = True):
        super().__init__()
        resnet48.ResNet48Options(resnet_stem, width_divisor, bn_track_running_stats).check(_WHERE)
        self.config = dict(num_classes=num_classes, in_channels=in_channels, resnet_stem=resnet_stem,
                           width_divisor=width_divisor, bn_track_running_stats=bn_track_running_stats)
        kernel, stride, padding, pool = _stem_layout(resnet_stem)
        width = resnet48.WIDTH_TABLE[resnet48.STEM_BASE][0] // width_divisor
        self.stem_conv = ElasticConv2d(in_channels, width, kernel, stride, padding)
        self.stem_bn = ElasticBatchNorm2d(width, track_running_stats=bn_track_running_stats)
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if pool else nn.Identity()
        self.stages = nn.ModuleList()
        for stage, base in enumerate(resnet48.STAGE_BASES):
            out = resnet48.WIDTH_TABLE[base][0] // width_divisor
            blocks = nn.ModuleList()
            for block in range(resnet48.MAX_DEPTHS[stage]):
                block_stride = resnet48.STRIDES[stage] if block == 0 else 1
                # The ties keep every stride-1 block's input at its output width: only strided blocks project.
                blocks.append(ElasticBasicBlock(width, out, out, block_stride, block_stride != 1, bn_track_running_stats))
                width = out
            self.stages.append(blocks)
        self.classifier = ElasticLinear(width, num_classes)

    def plan_key(self, arch) -> str:
        """The subnet's identity: its 52-digit code (every code computes something)."""
        return subnet_plan(arch, self.config["width_divisor"]).code

    def _run(self, x: Tensor, plan: resnet48.ResNet48Arch, stats=None, subnet=None) -> Tensor:
        out = F.relu(self.stem_bn(self.stem_conv(x, plan.stem), stats, subnet))
        out = self.stem_pool(out)
        for blocks, widths in zip(self.stages, plan.blocks):
            for block, (mid, width) in zip(blocks, widths):
                out = block(out, mid, width, stats, subnet)
        return self.classifier(out.mean(dim=(2, 3)))

    def forward(self, x: Tensor, arch) -> Tensor:
        """Logits [B, num_classes] of one subnet (x: [B, in_channels, H, W]); BN as ``nn.BatchNorm2d`` on the
        slices (see the module docstring)."""
        return self._run(x, subnet_plan(arch, self.config["width_divisor"]))

    def forward_subnets(self, x: Tensor, archs, bn: str | BNStatistics = "batch") -> Tensor:
        """Logits [K, B, num_classes] of K subnets on one minibatch, each subnet's BN with its own statistics.

        The subnets differ in widths and depths, so they run one after another (each on the whole minibatch);
        the result equals K separate ``forward`` calls in training mode (in "batch" mode; no buffer changes).

        Args:
            x (Tensor[B, in_channels, H, W]): the minibatch.
            archs (LongTensor[K, 52] on the CPU, or a list of K codes).
            bn (str or BNStatistics): "batch" (default), "running", "calibrate" or "calibrated" (see
                :class:`rdnas.supernet.BNStatistics`; pass the same object through "calibrate" and "calibrated").
        """
        plans = [subnet_plan(a, self.config["width_divisor"]) for a in archs]
        stats = bn if isinstance(bn, BNStatistics) else BNStatistics(bn, len(plans))
        if stats.num_subnets != len(plans):
            raise ValueError(f"{_WHERE}.forward_subnets: the BNStatistics is for {stats.num_subnets} subnets, got "
                             f"{len(plans)} architectures")
        if not plans:
            return x.new_zeros(0, x.shape[0], self.config["num_classes"])
        return torch.stack([self._run(x, plan, stats, k) for k, plan in enumerate(plans)])

    def cost(self, archs, image_size: int) -> dict:
        """The competition's cost model (:func:`rdnas.spaces.resnet48.cost`) of this supernet's subnets on square
        inputs of ``image_size`` pixels, with its classes, input channels, stem and width divisor: dict of float64
        Tensor[K] ``params`` (BN running statistics included), ``trainable_params``, ``flops``."""
        return resnet48.cost(archs, image_size=image_size, num_classes=self.config["num_classes"],
                             in_channels=self.config["in_channels"], resnet_stem=self.config["resnet_stem"],
                             width_divisor=self.config["width_divisor"])

    def forward_stacked(self, x: Tensor, archs, return_features: bool = False, max_rows: int = 4096):
        """Logits [K, B, num_classes] of K subnets in one batched pass, eval mode only (running BN statistics);
        equal to K ``forward`` calls up to float rounding, many times faster for many small subnets. With
        ``return_features``: also the last stage's outputs [K, B, C, H', W'] (zero past each subnet's width) and
        those widths LongTensor[K]. See :mod:`rdnas.supernet.resnet48_stacked`."""
        from rdnas.supernet.resnet48_stacked import forward_stacked

        return forward_stacked(self, x, archs, return_features, max_rows)

    def export(self, arch) -> "ResNet48Network":
        """A stand-alone :class:`ResNet48Network` of ``arch`` holding copies of the sliced weights and BN buffers,
        on the supernet's device and dtype and in its train/eval mode: ``export(arch)(x) == self(x, arch)``."""
        network = ResNet48Network(arch, **self.config)
        weight = self.stem_conv.weight
        network.to(device=weight.device, dtype=weight.dtype)
        network.load_state_dict(sliced_state(self.state_dict(), network.state_dict(), f"{_WHERE}.export",
                                             "supernet", "subnet"))
        return network.train(self.training)


class BasicBlock(nn.Module):
    """A static BasicBlock of plain layers: 3x3 conv (stride), BN, ReLU, 3x3 conv, BN, + shortcut (1x1 conv + BN
    where the stride or the width changes, else identity), ReLU. [B, C_in, H, W] -> [B, out, H', W']."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int,
                 track_running_stats: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels, track_running_stats=track_running_stats)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats)
        if stride != 1 or in_channels != out_channels:
            self.shortcut_conv = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats)
        else:
            self.shortcut_conv = self.shortcut_bn = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
        return F.relu(y + shortcut)


class ResNet48Network(nn.Module):
    """One ResNet48 architecture as a stand-alone network of plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` /
    ``nn.Linear`` layers of its exact widths (the module names are the supernet's, so its state dict is a slice of
    the supernet's). Built directly it is freshly initialised; :meth:`ResNet48Supernet.export` fills it with the
    supernet's weights. With the ImageNet settings its trainable parameter count is
    :func:`rdnas.spaces.resnet48.cost`'s ``trainable_params``.

    Args:
        arch: the 52-digit code (string, LongTensor[52] or a tuple of digits).
        num_classes, in_channels, resnet_stem, width_divisor, bn_track_running_stats: as
            :class:`ResNet48Supernet`.

    ``forward(x)``: [B, in_channels, H, W] -> logits [B, num_classes].
    """

    def __init__(self, arch, num_classes: int = 1000, in_channels: int = 3, resnet_stem: str = "imagenet",
                 width_divisor: int = 1, bn_track_running_stats: bool = True):
        super().__init__()
        resnet48.ResNet48Options(resnet_stem, width_divisor, bn_track_running_stats).check(
            "rdnas.supernet.ResNet48Network")
        plan = subnet_plan(arch, width_divisor)
        self.arch = plan.code
        self.config = dict(num_classes=num_classes, in_channels=in_channels, resnet_stem=resnet_stem,
                           width_divisor=width_divisor, bn_track_running_stats=bn_track_running_stats)
        kernel, stride, padding, pool = _stem_layout(resnet_stem)
        self.stem_conv = nn.Conv2d(in_channels, plan.stem, kernel, stride, padding, bias=False)
        self.stem_bn = nn.BatchNorm2d(plan.stem, track_running_stats=bn_track_running_stats)
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if pool else nn.Identity()
        self.stages = nn.ModuleList()
        width = plan.stem
        for stage, widths in enumerate(plan.blocks):
            blocks = nn.ModuleList()
            for block, (mid, out) in enumerate(widths):
                block_stride = resnet48.STRIDES[stage] if block == 0 else 1
                blocks.append(BasicBlock(width, mid, out, block_stride, bn_track_running_stats))
                width = out
            self.stages.append(blocks)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, arch=None) -> Tensor:
        """Logits [B, num_classes]; ``arch``, if given, must be this network's code."""
        if arch is not None and subnet_plan(arch, self.config["width_divisor"]).code != self.arch:
            raise ValueError(f"rdnas.supernet.ResNet48Network: this network is {self.arch}")
        out = self.stem_pool(F.relu(self.stem_bn(self.stem_conv(x))))
        for blocks in self.stages:
            for block in blocks:
                out = block(out)
        return self.classifier(out.mean(dim=(2, 3)))


def check_image_size(side: int, options: dict | None = None) -> None:
    """Any positive side fits the ResNet48 network (every stride-2 layer maps a side h to ceil(h / 2)); with the
    ImageNet stem, inputs under 32 pixels reach the last stage at 1 x 1, so small images want
    ``resnet_stem="small"``."""
    if side < 1:
        raise ValueError(f"rdnas: image_size {side} does not fit the ResNet48 network: it must be positive")

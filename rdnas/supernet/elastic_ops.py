"""Elastic (width-sliced) layers for supernets whose subnets differ in channel counts (the ResNet48 space).

Each layer holds its weights at the largest width; a subnet uses the first-k slices: the first ``out_channels``
filters of a convolution over the input's channels, the first C entries of a batch norm's affine parameters and
running statistics, the first ``in_features`` columns of a linear layer. Slices are views (no copy per step
beyond what ``F.conv2d`` makes of a non-contiguous weight), and gradients and running-statistic updates land in
the full-width tensors.

:func:`sliced_state` is the same rule for whole state dicts: a narrower (or shallower) network's weights taken from
a wider one's, as ``ResNet48Supernet.export`` and parameter remapping (:func:`rdnas.kd.remap`) take them.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.supernet.batchnorm import BNStatistics


def sliced_state(source_state: dict, target_state: dict, where: str, source: str = "source",
                 target: str = "target") -> dict:
    """The state dict of a network of narrower layers filled from a wider one's by the elastic layers' rule: for
    every entry of ``target_state``, the ``source_state`` entry of the same name sliced to the target's shape
    (``source[:n_0, :n_1, ...]``: a convolution's first filters over its first input channels, a batch norm's
    first C affine parameters and running statistics, a linear layer's first input columns), cloned and in the
    target entry's dtype. Blocks match by name, so a shallower target takes the source's first blocks.

    Args:
        source_state (dict of name -> Tensor): the wider network's ``state_dict()`` (e.g. a supernet's).
        target_state (dict of name -> Tensor): the narrower network's ``state_dict()`` (only names, shapes and
            dtypes are used).
        where (str): the caller, first in messages (``"rdnas.kd.remap"``).
        source, target (str): what messages call the two networks (``"teacher"``, ``"student"``).

    Returns {name: Tensor} with ``target_state``'s names and shapes, on the source's device.
    Raises ValueError naming the entry when the source lacks it, its number of dimensions differs, or one of
    its dimensions is smaller than the target's.
    """
    sliced = {}
    for name, wanted in target_state.items():
        if name not in source_state:
            raise ValueError(f"{where}: the {source} has no parameter or buffer {name!r}: a {target} can only be "
                             "taken from a network that holds all of its blocks (the space's largest)")
        value = source_state[name]
        if value.dim() != wanted.dim() or any(s < t for s, t in zip(value.shape, wanted.shape)):
            raise ValueError(f"{where}: {name!r} of the {target} has shape {list(wanted.shape)}, the {source}'s "
                             f"{list(value.shape)}: the {source} must be at least as wide in every dimension")
        sliced[name] = value[tuple(slice(0, n) for n in wanted.shape)].clone().to(wanted.dtype)
    return sliced


class ElasticConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` of the largest width whose forward runs its first ``out_channels`` filters over the
    input's first channels.

    ``forward(x, out_channels)``: x is [B, C_in, H, W] with C_in <= ``in_channels``; returns [B, out_channels, H',
    W'] computed with ``weight[:out_channels, :C_in]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=False)

    def forward(self, x: Tensor, out_channels: int | None = None) -> Tensor:
        out_channels = self.out_channels if out_channels is None else out_channels
        if x.shape[1] > self.in_channels or not 0 < out_channels <= self.out_channels:
            raise ValueError(f"rdnas.supernet.ElasticConv2d: this layer takes at most {self.in_channels} input and "
                             f"{self.out_channels} output channels, got {x.shape[1]} and {out_channels}")
        weight = self.weight
        if out_channels != self.out_channels or x.shape[1] != self.in_channels:  # full width: no slice, no copy
            weight = weight[:out_channels, :x.shape[1]]
        return F.conv2d(x, weight, None, self.stride, self.padding)


class ElasticLinear(nn.Linear):
    """An ``nn.Linear`` of the largest input width whose forward uses the input's first ``in_features`` columns:
    x [B, F] with F <= ``in_features`` -> [B, out_features]."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] > self.in_features:
            raise ValueError(f"rdnas.supernet.ElasticLinear: this layer takes at most {self.in_features} input "
                             f"features, got {x.shape[-1]}")
        weight = self.weight if x.shape[-1] == self.in_features else self.weight[:, :x.shape[-1]]
        return F.linear(x, weight, self.bias)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """An ``nn.BatchNorm2d`` of the largest width that normalises an input of C <= ``num_features`` channels with
    the first C entries of its affine parameters and running statistics.

    ``forward(x)`` is BatchNorm2d's behaviour on the slice: in training mode batch statistics, and the slice of the
    running statistics updated in place (the other channels untouched; ``num_batches_tracked`` counts every call);
    in eval mode the sliced running statistics.

    ``forward(x, stats, subnet)`` takes the statistics from ``stats`` (a :class:`BNStatistics` of a K-subnet
    forward whose subnets run one at a time; ``subnet`` is this input's subnet index in 0..K-1) and never changes
    the layer's buffers: "batch" batch statistics; "running" the sliced running statistics; "calibrate" batch
    statistics, recorded per subnet; "calibrated" what "calibrate" recorded. Records are kept at full width,
    [K, num_features] per layer (channels a subnet does not use are zero), so subnets of different widths share
    one BNStatistics.
    """

    def forward(self, x: Tensor, stats: BNStatistics | None = None, subnet: int | None = None) -> Tensor:
        channels = x.shape[1]
        if channels > self.num_features:
            raise ValueError(f"rdnas.supernet.ElasticBatchNorm2d: this layer takes at most {self.num_features} "
                             f"channels, got {channels}")
        full = channels == self.num_features  # full width: the parameters themselves, no slice
        weight = None if self.weight is None else self.weight if full else self.weight[:channels]
        bias = None if self.bias is None else self.bias if full else self.bias[:channels]
        if stats is None:
            return self._plain(x, weight, bias)
        mode = stats.mode
        if mode == "batch":
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        if mode == "running":
            if self.running_mean is None:
                raise RuntimeError("rdnas.supernet: BN statistics mode 'running' needs bn_track_running_stats=True")
            return F.batch_norm(x, self.running_mean[:channels], self.running_var[:channels], weight, bias, False,
                                0.0, self.eps)
        if subnet is None:
            raise ValueError(f"rdnas.supernet.ElasticBatchNorm2d: BN statistics mode {mode!r} needs the subnet index")
        index = torch.tensor([subnet], device=x.device)
        stat_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        if mode == "calibrated":
            mean, var = stats.calibrated(self, index)
            mean, var = mean[0, :channels].to(stat_dtype), var[0, :channels].to(stat_dtype)
            # Half / bfloat16 activations with float32 statistics: the CPU batch norm wants the affine parameters in
            # the statistics' dtype.
            weight = None if weight is None else weight.to(stat_dtype)
            bias = None if bias is None else bias.to(stat_dtype)
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        # "calibrate": the batch statistics, recorded at full width.
        var, mean = torch.var_mean(x.detach().to(stat_dtype), dim=(0, 2, 3), unbiased=False)
        full_mean = torch.zeros(1, self.num_features, device=x.device, dtype=stat_dtype)
        full_square = torch.zeros_like(full_mean)
        full_mean[0, :channels] = mean
        full_square[0, :channels] = var + mean.square()
        stats.record(self, index, full_mean, full_square)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    def _plain(self, x: Tensor, weight, bias) -> Tensor:
        """BatchNorm2d's own forward on the first channels."""
        channels = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        mean = self.running_mean[:channels] if track and self.running_mean is not None else None
        var = self.running_var[:channels] if track and self.running_var is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch, factor, self.eps)

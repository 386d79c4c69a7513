"""Operations of the NAS-Bench-201 network, with batch normalisation that can keep statistics per subnet.

When K subnets share one forward pass (their activations stacked subnet-major, [K * B, C, H, W]), a batch-norm
layer must normalise each subnet's slice with that subnet's own statistics, exactly as K separate passes would.
``SubnetBatchNorm`` does this; with K = 1 it is a plain ``nn.BatchNorm2d``.
"""

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BNStatistics:
    """Where a K-subnet forward takes its batch-norm statistics from.

    Modes:
        "batch": each subnet's own batch statistics (the supernet's training-mode behaviour; no buffer changes).
        "running": the layer's shared running statistics (what ``model.eval()`` uses).
        "calibrate": each subnet's batch statistics, also accumulated per subnet (call on training batches).
        "calibrated": the per-subnet statistics accumulated by "calibrate" (BN recalibration per subnet).
    """

    MODES = ("batch", "running", "calibrate", "calibrated")

    def __init__(self, mode: str, num_subnets: int):
        if mode not in self.MODES:
            raise ValueError(f"rdnas.supernet.BNStatistics: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.num_subnets = num_subnets
        self._sums = {}  # layer -> (count, sum of means [K, C], sum of E[x^2] [K, C])

    def record(self, layer, subnets: Tensor, mean: Tensor, mean_square: Tensor) -> None:
        if layer not in self._sums:
            means = torch.zeros(self.num_subnets, mean.shape[1], device=mean.device, dtype=mean.dtype)
            self._sums[layer] = (torch.zeros(self.num_subnets, device=mean.device), means, torch.zeros_like(means))
        count, means, squares = self._sums[layer]
        count = count.index_add(0, subnets, torch.ones(len(subnets), device=mean.device))
        self._sums[layer] = (count, means.index_add(0, subnets, mean), squares.index_add(0, subnets, mean_square))

    def recorded(self, layer) -> tuple[Tensor, Tensor, Tensor] | None:
        """What "calibrate" recorded for ``layer``: (calls per subnet [K], mean [K, C], biased variance [K, C]),
        averaged over the calls (zeros for a subnet that never ran the layer); None if no subnet ran it."""
        if layer not in self._sums:
            return None
        count, means, squares = self._sums[layer]
        per_call = count.clamp_min(1).unsqueeze(1)
        mean = means / per_call
        return count, mean, (squares / per_call - mean.square()).clamp_min(0)

    def calibrated(self, layer, subnets: Tensor) -> tuple[Tensor, Tensor]:
        recorded = self.recorded(layer)
        if recorded is None:
            raise RuntimeError("rdnas.supernet.BNStatistics: no calibrated statistics for this layer; run the "
                               "subnets in mode 'calibrate' on training batches first")
        _, mean, var = recorded
        return mean[subnets], var[subnets]

    def freeze(self) -> "BNStatistics":
        """Switches from "calibrate" to "calibrated" (returns self)."""
        self.mode = "calibrated"
        return self


class SubnetBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over [groups * B, C, H, W] with statistics per group of B rows (one group per subnet).

    ``forward(x)`` is plain BatchNorm2d. ``forward(x, subnets=..., stats=...)`` treats x as ``len(subnets)``
    equal slices and takes each slice's statistics from ``stats`` (see BNStatistics).
    """

    def forward(self, x: Tensor, subnets: Tensor | None = None, stats: BNStatistics | None = None) -> Tensor:
        if subnets is None or stats is None:
            return super().forward(x)
        if stats.mode == "running":
            if self.running_mean is None:
                raise RuntimeError("rdnas.supernet: BN statistics mode 'running' needs track_running_stats=True")
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        # Subnet-major [G * B, C, H, W] -> [B, G * C, H, W]: channel (g, c) is channel c of subnet g, so the native
        # batch norm computes each subnet's statistics in one fused pass.
        groups, channels = len(subnets), x.shape[1]
        wide = x.view(groups, -1, *x.shape[1:]).transpose(0, 1).reshape(-1, groups * channels, *x.shape[2:])
        # Statistics of half / bfloat16 activations are kept in float32; the affine parameters then go float32 too
        # (the mixed-precision batch norm wants them in one dtype on the CPU: a bf16 network failed there).
        stat_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        weight = None if self.weight is None else self.weight.to(stat_dtype).repeat(groups)
        bias = None if self.bias is None else self.bias.to(stat_dtype).repeat(groups)
        if stats.mode == "calibrated":
            mean, var = stats.calibrated(self, subnets)
            out = F.batch_norm(wide, mean.flatten(), var.flatten(), weight, bias, False, 0.0, self.eps)
        elif stats.mode == "calibrate":
            # With momentum 1 the fused batch norm hands back its own batch statistics through the "running"
            # buffers (the variance unbiased); a separate var_mean over dims (0, 2, 3) costs 2.5x the batch norm.
            mean = torch.zeros(groups * channels, device=x.device, dtype=stat_dtype)
            var = torch.ones_like(mean)
            out = F.batch_norm(wide, mean, var, weight, bias, True, 1.0, self.eps)
            count = wide.numel() // wide.shape[1]
            mean, var = mean.view(groups, channels), var.view(groups, channels) * ((count - 1) / count)
            stats.record(self, subnets, mean, var + mean.square())
        else:
            out = F.batch_norm(wide, None, None, weight, bias, True, 0.0, self.eps)
        return out.view(-1, groups, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


class ReLUConvBN(nn.Module):
    """ReLU -> Conv2d(kernel, stride, padding = kernel // 2 with dilation 1, no bias) -> BN."""

    def __init__(self, c_in, c_out, kernel, stride, affine=True, track_running_stats=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = SubnetBatchNorm(c_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: Tensor, subnets: Tensor | None = None, stats: BNStatistics | None = None) -> Tensor:
        return self.bn(self.conv(self.relu(x)), subnets, stats)


class ResNetBasicBlock(nn.Module):
    """NB201's reduction block: ReLUConvBN(3x3, stride 2) -> ReLUConvBN(3x3), plus AvgPool2x2 + Conv1x1 shortcut."""

    def __init__(self, c_in, c_out, affine=True, track_running_stats=True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, affine, track_running_stats)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, affine, track_running_stats)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False))

    def forward(self, x: Tensor, subnets: Tensor | None = None, stats: BNStatistics | None = None) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x, subnets, stats), subnets, stats)


@functools.lru_cache(maxsize=64)
def _pool_tensors(channels: int, height: int, width: int, device: torch.device, dtype: torch.dtype):
    """The depthwise ones kernel [C, 1, 3, 3] and each pixel's 1 / (pixels its window covers) [1, 1, H, W], in
    ``dtype``. Built with autocast and inference mode off: the cache is keyed by dtype, and a first call under
    autocast would otherwise store bfloat16 counts under a float32 key for every later pass, and one under
    inference mode inference tensors that a later recorded backward (GraSP's) cannot save."""
    with torch.inference_mode(False), torch.autocast(torch.device(device).type, enabled=False):
        kernel = torch.ones(channels, 1, 3, 3, device=device, dtype=dtype)
        ones = torch.ones(1, 1, height, width, device=device, dtype=dtype)
        inverse_count = 1.0 / F.conv2d(ones, torch.ones(1, 1, 3, 3, device=device, dtype=dtype), padding=1)
    return kernel, inverse_count


def _pool_sums_scaled(x: Tensor) -> Tensor:
    """Each pixel's 3x3 window sum (zero padding) divided by the number of pixels the window covers."""
    channels, height, width = x.shape[1:]
    kernel, inverse_count = _pool_tensors(channels, height, width, x.device, x.dtype)
    out = F.conv2d(x, kernel, None, 1, 1, 1, channels)
    return out * inverse_count.to(out.dtype)


def _pool_adjoint(grad: Tensor, x: Tensor) -> Tensor:
    """The backward of :func:`_pool_sums_scaled` at input ``x``: scale by the inverse counts, then the depthwise
    convolution's input gradient. A first-order backward makes the same call as autograd would (so results stay
    bit for bit those of autograd's own backward); when autograd records the backward (create_graph), it is
    written as a forward convolution instead (the ones kernel is symmetric, so the convolution is its own
    adjoint), which a double backward differentiates as a first derivative, in ``x``'s memory format (a
    channels_last network fed a contiguous gradient would pay for mixed-layout element-wise ops downstream)."""
    channels, height, width = grad.shape[1:]
    kernel, inverse_count = _pool_tensors(channels, height, width, grad.device, grad.dtype)
    scaled = grad * inverse_count.to(grad.dtype)
    if torch.is_grad_enabled():
        layout = (torch.channels_last if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        if not scaled.is_contiguous(memory_format=layout):
            scaled = scaled.contiguous(memory_format=layout)
        return F.conv2d(scaled, kernel, None, 1, 1, 1, channels)
    return torch.ops.aten.convolution_backward(scaled, x.to(scaled.dtype), kernel, None, [1, 1], [1, 1], [1, 1],
                                               False, [0, 0], channels, [True, False, False])[0]


class _AvgPool3x3(torch.autograd.Function):
    # The backward is written with differentiable ops, so a double backward (GraSP's Hessian-gradient product)
    # differentiates a plain convolution. Autograd's own double backward of a grouped convolution computes the
    # (unneeded) kernel gradient with one small convolution per channel and image batch.

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _pool_sums_scaled(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return _pool_adjoint(grad, x).to(x.dtype)


def avg_pool_3x3(x: Tensor) -> Tensor:
    """NB201's avg_pool_3x3 inside a cell: AvgPool2d(3, stride 1, padding 1, count_include_pad=False).

    Computed as a depthwise convolution with a ones kernel, divided by the number of pixels each window covers:
    the same values up to float rounding (1e-7 relative in float32), and on the CPU about 20x faster forward and
    backward than ATen's ``avg_pool2d`` with ``count_include_pad=False`` (1.1 ms against 23 ms on a
    [64, 104, 8, 8] float32 batch, one thread). The backward is the same kind of convolution (the pooling's
    adjoint), itself differentiable, so second derivatives stay cheap.

    Args:
        x (Tensor [B, C, H, W]): float input.
    Returns:
        Tensor [B, C, H, W].
    """
    return _AvgPool3x3.apply(x)

"""Operations of the NAS-Bench-201 network (their batch norm keeps statistics per subnet: rdnas.supernet.batchnorm)."""

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.supernet.batchnorm import BNStatistics, SubnetBatchNorm


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

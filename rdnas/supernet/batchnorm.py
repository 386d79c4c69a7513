"""Batch normalisation that keeps statistics per subnet, for any space's K-subnet forward.

When K subnets share one forward pass (their activations stacked subnet-major, [K * B, C, H, W]), a batch-norm
layer must normalise each subnet's slice with that subnet's own statistics, exactly as K separate passes would.
``SubnetBatchNorm`` does this; with K = 1 it is a plain ``nn.BatchNorm2d``.
"""

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

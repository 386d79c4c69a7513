"""Proxies read from activations or input gradients: naswot, zen, jacov (NAS-Bench-Suite-Zero definitions).

naswot and zen need no weight gradient, so K architectures can share one ``forward_subnets`` pass (on a GPU; on
the CPU one cell per pass in channels_last is faster) and
:class:`~rdnas.proxies.probes.SubnetRows` tells each hook which subnet a row belongs to. BN uses each subnet's
batch statistics (training-mode BN, as the reference code runs the network). Both read activations, so they run
every non-``none`` edge, dead ones included, as the benchmark's network does (``edges="all"``): on 200 sampled
architectures that lifts naswot's Spearman rho against the published table from 0.96 to 0.996.
"""

import copy

import numpy as np
import torch
from torch import Tensor, nn

from rdnas.proxies.base import (Minibatch, chunks, default_archs_per_pass, derived_copy, network_state_restored,
                                parameter_state, plan_cache, register, scores_with_disconnected_last,
                                scoring_copy_on_cpu)
from rdnas.proxies.probes import SubnetRows, hooks_removed
from rdnas.supernet import BNStatistics, NB201Supernet


def relu_code_agreement(x: Tensor, images: int) -> Tensor:
    """NASWOT's kernel term of one ReLU: C C^T + (1 - C)(1 - C)^T, C the binary codes (x > 0) of each image's
    features. ``x``: Tensor[G * images, ...], the ReLU's input for G groups of ``images`` rows (G subnets, or 1 for
    a plain network). Returns Tensor[G, images, images] in x's float type (exact integers: the number of
    features on which two images agree)."""
    signs = torch.where(x > 0, 1.0, -1.0).reshape(-1, images, x[0].numel())  # [G, B, F]
    return torch.baddbmm(torch.full((), float(signs.shape[2]), device=x.device), signs,
                         signs.transpose(1, 2)).mul_(0.5)  # = (S S^T + F) / 2 = C C^T + (1-C)(1-C)^T


@torch.no_grad()
def naswot_kernels(supernet: NB201Supernet, archs: list[tuple], inputs: Tensor) -> Tensor:
    """NASWOT's kernel per architecture: K = sum over ReLU layers of C C^T + (1 - C)(1 - C)^T, C the binary
    codes (input > 0) of the B images at that ReLU. Returns Tensor[K, B, B] float64."""
    k, b = len(archs), inputs.shape[0]
    kernels = torch.zeros(k, b, b, dtype=torch.float64, device=inputs.device)
    with SubnetRows(supernet, k, b) as subnet_rows:
        def on_relu(module, args):
            x = args[0]
            kernels.index_add_(0, subnet_rows.subnets(x.device), relu_code_agreement(x, b).double())

        with hooks_removed([m.register_forward_pre_hook(on_relu) for m in supernet.modules()
                            if isinstance(m, nn.ReLU)]):
            supernet.forward_subnets(inputs, archs, bn="batch", edges="all")
    return kernels


@register("naswot", needs_data=True, batched=True,
          summary="NASWOT: log|det K| of the ReLU-code Hamming kernel of the minibatch (Mellor et al. 2021)")
def naswot(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch,
           archs_per_pass: int | None = None) -> Tensor:
    """NASWOT (v2): ``log|det K|`` with K summed over every ReLU of the network (:func:`naswot_kernels`).
    A singular K gives -inf, as in the published table; disconnected architectures: -inf. Tensor[K] float64.
    ``archs_per_pass``: cells per forward pass (default 1 on the CPU, where a channels_last copy of the supernet
    runs one cell per pass: 2.1 s per 8 cells against 3.5-4.0 s for 8 per pass, one thread; 64 on a GPU)."""
    archs_per_pass = default_archs_per_pass(archs_per_pass, minibatch.inputs.device, 1, 64)
    network, batch = scoring_copy_on_cpu(supernet, minibatch)

    def connected(kept):
        parts = []
        for chunk in chunks(kept, archs_per_pass):
            sign, logabsdet = torch.linalg.slogdet(naswot_kernels(network, chunk, batch.inputs))
            parts.append(torch.where(sign == 0, float("-inf"), logabsdet).cpu())
        return torch.cat(parts)

    return scores_with_disconnected_last(archs, connected)


def gaussian_copy(supernet: nn.Module, seed: int) -> nn.Module:
    """Zen-NAS's network_weight_gaussian_init on a copy: Conv2d/Linear weights N(0, 1), biases 0, BN 1 / 0
    (made once per supernet state and seed)."""
    return derived_copy(supernet, ("gaussian", seed), lambda source: gaussian_initialised(source, seed))


def gaussian_initialised(supernet: nn.Module, seed: int) -> nn.Module:
    """A copy of ``supernet`` (any module) re-initialised as :func:`gaussian_copy` says, with its parameters not
    requiring gradients (channels_last on the CPU)."""
    net = copy.deepcopy(supernet)
    if next(net.parameters()).device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # see scoring_copy_on_cpu: oneDNN's faster layout
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d) and module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
    return net.requires_grad_(False)


def zen_inputs(shape: tuple, mixup_gamma: float, seed: int, device, dtype) -> tuple[Tensor, Tensor]:
    """Zen-score's two inputs of ``shape`` (B, C, H, W): x ~ N(0, 1) and x + mixup_gamma * x2, x2 ~ N(0, 1), drawn
    in float32 on the CPU from a generator seeded with ``seed + 1`` (the same for every architecture and dtype),
    then moved to ``device`` and ``dtype``."""
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)  # drawn in float32 whatever the network's dtype
    first = torch.randn(shape, generator=generator).to(device, dtype)
    mixed = first + mixup_gamma * torch.randn(shape, generator=generator).to(device, dtype)
    return first, mixed


def zen_running_variance(first: Tensor, mixed: Tensor, unbiased: float = 1.0) -> Tensor:
    """The running variance [..., C] float64 a BN layer holds after Zen-score's two training-mode passes (momentum
    0.1, starting from 1), given each pass's batch variance [..., C] times ``unbiased`` (n / (n - 1) for biased
    variances of n values per channel; 1 for unbiased ones)."""
    return 0.9 * (0.9 + 0.1 * first.double() * unbiased) + 0.1 * mixed.double() * unbiased


@torch.no_grad()
def _zen_pass(net: NB201Supernet, archs: list[tuple], inputs: Tensor) -> tuple[Tensor, BNStatistics, dict]:
    """Features before global pooling (after the head's BN + ReLU), [K, B, C, h, w]; each subnet's BN batch
    statistics; and per BN layer the number of values per channel a subnet contributes (B * H * W)."""
    captured, sizes = [], {}
    hooks = [net.head_relu.register_forward_hook(lambda m, args, out: captured.append(out))]
    hooks += [m.register_forward_pre_hook(lambda m, args: sizes.__setitem__(m, inputs.shape[0] * args[0][0, 0].numel()))
              for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = BNStatistics("calibrate", len(archs))
    with hooks_removed(hooks):
        net.forward_subnets(inputs, archs, bn=stats, edges="all")
    return captured[0].view(len(archs), inputs.shape[0], *captured[0].shape[1:]), stats, sizes


@register("zen", needs_data=False, batched=True,
          summary="Zen-NAS score: log of the mixup feature change plus BN scaling, Gaussian init (Lin et al. 2021)")
def zen(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch | None = None, mixup_gamma: float = 1e-2,
        seed: int = 0, archs_per_pass: int | None = None) -> Tensor:
    """Zen-score as NAS-Bench-Suite-Zero computes it: weights re-drawn N(0, 1) (on a copy), two Gaussian inputs
    x and x + gamma * x2 of the minibatch's shape, score = log(mean over images of sum |f(x) - f(x')|) + sum over
    BN layers of log sqrt(mean running variance), where f is the output before global pooling and the running
    variances are those the two training-mode passes leave (momentum 0.1, from 1). Disconnected: -inf.

    Args:
        mixup_gamma (float): the perturbation scale (1e-2).
        seed (int): seeds the Gaussian weights and inputs (the same for every architecture).
        archs_per_pass (int, optional): cells per pass (default 1 on the CPU, 64 on a GPU). On the CPU one cell
            per pass in channels_last is fastest: 2.5 s per 8 cells against 6.3 s for 8 cells per pass (one
            thread; the per-subnet BN of a K-cell pass reorders every activation).
    """
    net = gaussian_copy(supernet, seed)
    shape = minibatch.inputs.shape if minibatch is not None else (64, supernet.config["in_channels"], 32, 32)
    parameter = next(net.parameters())
    device, dtype = parameter.device, parameter.dtype
    archs_per_pass = default_archs_per_pass(archs_per_pass, device, 1, 64)
    first, mixed = zen_inputs(shape, mixup_gamma, seed, device, dtype)
    bn_layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]

    def connected(kept):
        parts = []
        for chunk in chunks(kept, archs_per_pass):
            features, stats_first, sizes = _zen_pass(net, chunk, first)
            features_mixed, stats_mixed, _ = _zen_pass(net, chunk, mixed)
            change = (features - features_mixed).abs().flatten(2).sum(2).mean(1).double()
            log_bn = torch.zeros(len(chunk), dtype=torch.float64, device=device)
            for layer in bn_layers:
                recorded = stats_first.recorded(layer)
                if recorded is None:
                    continue
                count, _, var_first = recorded
                _, _, var_mixed = stats_mixed.recorded(layer)
                unbiased = sizes[layer] / (sizes[layer] - 1)
                running = zen_running_variance(var_first, var_mixed, unbiased)
                log_bn += torch.where(count > 0, 0.5 * running.mean(1).log(), 0.0)
            parts.append((change.log() + log_bn).cpu())
        return torch.cat(parts)

    return scores_with_disconnected_last(archs, connected)


@register("jacov", needs_data=True, batched=False,
          summary="Jacobian covariance: -sum(log(v + k) + 1/(v + k)) over eigenvalues of corrcoef(dy/dx) (NASWOT v1)")
def jacov(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch, epsilon: float = 1e-5) -> Tensor:
    """jacob_cov of NAS-Bench-Suite-Zero: J = d(sum of logits)/d(input) per image, v the eigenvalues of the
    correlation matrix of J's rows, score = -sum(log(v + epsilon) + 1 / (v + epsilon)). One forward/backward per
    architecture (training-mode BN). A correlation matrix that is not finite gives -inf; disconnected: -inf."""

    network, batch = scoring_copy_on_cpu(supernet, minibatch)

    def one(arch):
        return jacov_of_logits(lambda x: network(x, arch), batch.inputs, epsilon)

    cache = plan_cache("jacov", supernet, parameter_state(supernet), minibatch, epsilon)
    with network_state_restored(network, training=True):
        return scores_with_disconnected_last(
            archs, lambda kept: torch.tensor([one(a) for a in kept], dtype=torch.float64), cache)


def jacov_of_logits(logits_of, inputs: Tensor, epsilon: float = 1e-5) -> float:
    """jacob_cov of one network: ``logits_of(x Tensor[B, C, H, W]) -> Tensor[B, classes]`` runs it on a copy of
    ``inputs`` that requires grad; J = d(sum of logits)/dx, one row per image; -sum(log(v + epsilon) +
    1 / (v + epsilon)) over the eigenvalues v of corrcoef(J), or -inf where that matrix is not finite."""
    x = inputs.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    (grad,) = torch.autograd.grad(logits_of(x).sum(), x)
    jacobian = grad.reshape(len(x), -1).double().cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        correlations = np.corrcoef(jacobian)
    if not np.isfinite(correlations).all():
        return float("-inf")
    eigenvalues = np.linalg.eigvalsh(correlations)
    return float(-np.sum(np.log(eigenvalues + epsilon) + 1.0 / (eigenvalues + epsilon)))

"""Proxies from the gradient of the cross-entropy on one minibatch: snip, grad_norm, plain, fisher, grasp.

Definitions are NAS-Bench-Suite-Zero's (Abdelfattah et al. 2021 code), over the Conv2d and Linear layers, with
training-mode BN. snip, grad_norm, plain and fisher come from the same forward/backward pass: scoring several of
them together (:func:`loss_gradient_proxies` with their names, as ``score_space`` does) runs that pass once per
live cell plan (see ``plan_cache``), and a pass computes only what its members need (fisher's activation hooks
cost about 12 % of a snip pass). Per-layer reductions use the fused multi-tensor ops (one call over every
layer), not a Python loop. On the CPU the passes run on a copy of the supernet
(:func:`~rdnas.proxies.base.scoring_copy_on_cpu`; channels_last, but contiguous for GraSP's double backward), on a
GPU on the supernet itself; either way :func:`~rdnas.proxies.base.network_state_restored` puts back its mode, BN
running statistics and parameter gradients, so scoring leaves the supernet untouched.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.ops import sum_abs_product, sum_product, sum_squares
from rdnas.proxies.base import (Minibatch, conv_and_linear_layers, fused_path, network_state_restored,
                                parameter_state, plan_cache, register, scores_with_disconnected_last,
                                scoring_copy_on_cpu)
from rdnas.proxies.probes import hooks_removed
from rdnas.supernet import NB201Supernet

LOSS_GRADIENT_PROXIES = ("snip", "grad_norm", "plain", "fisher")


def _one_architecture(supernet: nn.Module, arch: tuple | None, minibatch: Minibatch, layers: list,
                      names: tuple = LOSS_GRADIENT_PROXIES) -> dict:
    """One forward/backward of the cross-entropy on the minibatch; returns the named proxies of this pass.
    ``supernet(inputs, arch)`` runs the architecture; with ``arch=None``, ``supernet`` is a plain network run as
    ``supernet(inputs)``. ``layers``: its Conv2d/Linear layers."""
    fisher = torch.zeros((), dtype=torch.float64, device=minibatch.inputs.device)

    def on_output(module, args, out):
        fan_in = module.weight[0].numel()  # the reference broadcasts each channel's value over its weights

        activation = out.detach()  # the hook must not hold `out` itself: tensor -> hook -> tensor is a cycle
                                   # through C++ that Python's collector cannot free (a leak per pass)

        def on_grad(grad):
            nonlocal fisher
            act_grad = activation * grad
            per_channel = act_grad.flatten(2).sum(2) if act_grad.dim() > 2 else act_grad  # [B, channels]
            fisher = fisher + per_channel.double().square().mean(0).mul(0.5).sum() * fan_in
        out.register_hook(on_grad)

    with hooks_removed([m.register_forward_hook(on_output) for m in layers] if "fisher" in names else []):
        supernet.zero_grad(set_to_none=True)
        logits = supernet(minibatch.inputs) if arch is None else supernet(minibatch.inputs, arch)
        loss = F.cross_entropy(logits, minibatch.targets)
        loss.backward()
    weights = [m.weight.detach() for m in layers if m.weight.grad is not None]
    grads = [m.weight.grad for m in layers if m.weight.grad is not None]
    reductions = {
        "snip": lambda: sum_abs_product(weights, grads).sum(),
        "grad_norm": lambda: sum_squares(grads).sqrt().sum(),
        "plain": lambda: sum_product(weights, grads).sum(),
        "fisher": lambda: fisher,
    }
    scores = {name: float(reductions[name]()) for name in names}
    supernet.zero_grad(set_to_none=True)
    return scores


def checked_loss_gradient_names(where: str, names) -> tuple:
    """``names`` as a tuple, checked to be a non-empty subset of :data:`LOSS_GRADIENT_PROXIES`."""
    names = tuple(names)
    unknown = [name for name in names if name not in LOSS_GRADIENT_PROXIES]
    if unknown or not names:
        raise ValueError(f"rdnas.proxies.{where}: names must be a non-empty subset of {LOSS_GRADIENT_PROXIES}, "
                         f"got {names!r}")
    return names


def loss_gradient_proxies(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch,
                          names=LOSS_GRADIENT_PROXIES) -> dict[str, Tensor]:
    """snip, grad_norm, plain and fisher (or the ``names`` among them) of each architecture from one
    forward/backward pass each.

    - snip: sum |w * dL/dw| (connection sensitivity; Lee et al. 2019)
    - grad_norm: sum over layers of ||dL/dw||_2
    - plain: sum w * dL/dw
    - fisher: sum over layers and output channels of fan_in * 0.5 * mean over images of (sum over positions of
      a * dL/da)^2, with a the layer's output (Turner et al. 2020). The fan_in factor (C_in * kh * kw; in_features)
      is NAS-Bench-Suite-Zero's: its code broadcasts each channel's value over that channel's weights before
      summing.

    Returns {name: Tensor[K] float64} for the requested names; disconnected architectures get -inf. A supernet
    without a fused path (:func:`~rdnas.proxies.base.fused_path`) is scored on each exported architecture
    (:func:`rdnas.proxies.network.loss_gradient_exported`; ``archs``: LongTensor[K, space.width]).
    """
    names = checked_loss_gradient_names("loss_gradient_proxies", names)
    if not fused_path(supernet):
        from rdnas.proxies.network import loss_gradient_exported

        return loss_gradient_exported(supernet, archs, minibatch, names)
    cache = plan_cache("loss_gradient", supernet, parameter_state(supernet), minibatch)
    network, batch = scoring_copy_on_cpu(supernet, minibatch)
    layers = conv_and_linear_layers(network)
    passes = {}  # arch -> the requested values of its pass (run once, read by every requested column)

    def column(name, kept):
        for arch in kept:
            if arch not in passes:
                passes[arch] = _one_architecture(network, arch, batch, layers, names)
        return torch.tensor([passes[arch][name] for arch in kept], dtype=torch.float64)

    with network_state_restored(network, training=True):
        return {name: scores_with_disconnected_last(archs, lambda kept, n=name: column(n, kept),
                                                    cache.setdefault(name, {}))
                for name in names}


def _member(name: str, summary: str):
    def score(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch) -> Tensor:
        return loss_gradient_proxies(supernet, archs, minibatch, (name,))[name]

    score.__name__ = name
    score.__doc__ = (f"{summary}. One forward/backward per architecture (per live cell plan); score several "
                     "loss-gradient proxies in one pass with :func:`loss_gradient_proxies` or ``score_space``. "
                     "Tensor[K] float64; disconnected: -inf.")
    return register(name, needs_data=True, batched=False, summary=summary, family=loss_gradient_proxies)(score)


snip = _member("snip", "SNIP: sum |w * dL/dw| over Conv2d/Linear weights (Lee et al. 2019)")
grad_norm = _member("grad_norm", "grad_norm: sum over Conv2d/Linear layers of ||dL/dw||_2")
plain = _member("plain", "plain: sum w * dL/dw over Conv2d/Linear weights")
fisher = _member("fisher", "Fisher: per channel 0.5 * mean over images of (sum_hw a * dL/da)^2, times fan-in (Turner et al.)")


@register("grasp", needs_data=True, batched=False,
          summary="GraSP: -sum w * (H g) over Conv2d/Linear weights (Wang et al. 2020)")
def grasp(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch, temperature: float = 1.0) -> Tensor:
    """GraSP as the reference code computes it: g = dL/dw, Hg = d(stop_gradient(g) . dL/dw)/dw (double backward),
    score = -sum w * Hg over Conv2d/Linear weights. Logits divided by ``temperature``.
    Tensor[K] float64; disconnected: -inf."""
    network, batch = scoring_copy_on_cpu(supernet, minibatch, torch.contiguous_format)
    weights = [m.weight for m in conv_and_linear_layers(network)]

    def one(arch):
        return grasp_of_logits(lambda x: network(x, arch), weights, batch, temperature)

    cache = plan_cache("grasp", supernet, parameter_state(supernet), minibatch, temperature)
    with network_state_restored(network, training=True):
        return scores_with_disconnected_last(
            archs, lambda kept: torch.tensor([one(a) for a in kept], dtype=torch.float64), cache)


def grasp_of_logits(logits_of, weights: list[Tensor], minibatch: Minibatch, temperature: float = 1.0) -> float:
    """GraSP of one network: ``logits_of(inputs Tensor[B, C, H, W]) -> Tensor[B, classes]`` runs it, ``weights``
    are its Conv2d/Linear weights (those it does not use are skipped). -sum w * Hg with g = dL/dw and
    Hg = d(stop_gradient(g) . dL/dw)/dw, L the cross-entropy of the logits divided by ``temperature``."""
    # The reference runs two identical forward passes (one for g, one to differentiate); with the same batch
    # and weights they give the same graph, so one pass with create_graph serves both.
    loss = F.cross_entropy(logits_of(minibatch.inputs) / temperature, minibatch.targets)
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    used = [k for k, g in enumerate(grads) if g is not None]
    inner = sum((grads[k].detach() * grads[k]).sum() for k in used)
    hessian_gradient = torch.autograd.grad(inner, [weights[k] for k in used], allow_unused=True)
    pairs = [(weights[k].detach(), hg) for k, hg in zip(used, hessian_gradient) if hg is not None]
    with torch.no_grad():
        return -float(sum_product([w for w, _ in pairs], [hg for _, hg in pairs]).sum()) if pairs else 0.0

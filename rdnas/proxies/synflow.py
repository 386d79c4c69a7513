"""SynFlow and LogSynFlow (Tanaka et al. 2020; FreeREA's log variant).

Protocol (the published tables follow it): batch-norm removed, every parameter replaced by its absolute value,
an all-ones input of batch 1, float64; R = sum of the logits; synflow = sum over Conv2d/Linear weights of
|w * dR/dw|. Values reach 1e66, far beyond float32 and well inside float64, so they stay exact and finite.

Batched synflow uses an identity instead of weight gradients: with positive weights, no BN and a positive input
every activation is positive, so each layer is linear in its weights and, per layer, sum(w * dR/dw) equals
sum(y * dR/dy) over its output y (bias excluded). That is a per-row quantity, so K architectures stacked in one
``forward_subnets`` pass (one row each) get their own scores from one backward pass that never computes a
weight gradient. ``synflow_of_network`` is the textbook per-network version it is tested against.
"""

import copy

import torch
from torch import Tensor, nn

from rdnas.ops import linearize_, restore_signs_, sum_abs_product
from rdnas.proxies.base import (Minibatch, chunks, conv_and_linear_layers, default_archs_per_pass, derived_copy,
                                parameter_state, plan_cache, register, scores_with_disconnected_last)
from rdnas.proxies.probes import SubnetRows, batchnorm_removed, hooks_removed
from rdnas.supernet import NB201Supernet

def linearised_float64(supernet: NB201Supernet) -> NB201Supernet:
    """A float64 copy of ``supernet`` with every parameter replaced by its absolute value (made once and reused
    while the supernet's parameters are unchanged). Its parameters do not require gradients."""

    def make(source):
        net = copy.deepcopy(source).double()
        with torch.no_grad():
            linearize_([p for p in net.parameters()])
        return net.requires_grad_(False)

    return derived_copy(supernet, "linearised float64", make)


def _image_shape(supernet: NB201Supernet, minibatch: Minibatch | None) -> tuple:
    if minibatch is not None:
        return tuple(minibatch.inputs.shape[1:])
    return (supernet.config["in_channels"], 32, 32)


def synflow_flows(net: NB201Supernet, archs: list[tuple], image_shape: tuple) -> Tensor:
    """Synflow of K connected architectures in one pass of ``net`` (already float64 and linearised).

    Returns Tensor[K] float64 on the net's device.
    """
    device = next(net.parameters()).device
    k = len(archs)
    flows = torch.zeros(k, dtype=torch.float64, device=device)
    ones = torch.ones(1, *image_shape, dtype=torch.float64, device=device, requires_grad=True)
    def add_flow(rows: Tensor, values: Tensor):
        def on_grad(grad):
            flows.index_add_(0, rows, (values * grad).flatten(1).sum(1))
        return on_grad

    with SubnetRows(net, k, 1) as subnet_rows, batchnorm_removed(net):
        def on_layer(module, args, out):
            if module is net.stem_conv:  # shared by all subnets; counted per subnet where its output is expanded
                return None
            values = out.detach()
            if isinstance(module, nn.Linear) and module.bias is not None:
                values = values - module.bias
            out.register_hook(add_flow(subnet_rows.of_rows(device), values))
            return out.clone()  # later code may add into the returned tensor in place; `values` must stay intact

        def on_stem_rows(module, args):
            expanded = args[0]
            expanded.register_hook(add_flow(subnet_rows.of_rows(device), expanded.detach()))

        hooks = [m.register_forward_hook(on_layer) for m in conv_and_linear_layers(net)]
        hooks.append(net.stem_bn.register_forward_pre_hook(on_stem_rows))
        with hooks_removed(hooks):
            net.forward_subnets(ones, archs, bn="batch").sum().backward()
    return flows


@register("synflow", needs_data=False, batched=True,
          summary="SynFlow: sum |w * dR/dw|, |weights|, no BN, all-ones input, float64 (Tanaka et al. 2020)")
def synflow(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch | None = None,
            archs_per_pass: int | None = None) -> Tensor:
    """SynFlow of each architecture (float64, exact; the published protocol). Only the minibatch's image shape
    is used. Disconnected architectures: -inf. Tensor[K] float64.

    Args:
        archs_per_pass (int, optional): architectures stacked in one forward/backward pass (memory grows with
            it; default 32 on the CPU, 256 on a GPU: about 13 GB there at 32x32).
    """
    net = linearised_float64(supernet)
    shape = _image_shape(supernet, minibatch)
    archs_per_pass = default_archs_per_pass(archs_per_pass, next(net.parameters()).device, 32, 256)

    def connected(kept):
        return torch.cat([synflow_flows(net, chunk, shape).cpu() for chunk in chunks(kept, archs_per_pass)])

    cache = plan_cache("synflow", supernet, parameter_state(supernet), shape)
    return scores_with_disconnected_last(archs, connected, cache)


def synflow_of_network(model: nn.Module, image_shape: tuple, forward=None, log_gradients: bool = False,
                       linearise: bool = True) -> float:
    """SynFlow of one stand-alone network as the reference code computes it: float64, BN removed, parameters
    linearised in place with :func:`rdnas.ops.linearize_` (signs restored afterwards), backward from the summed
    logits of an all-ones input, then one fused reduction over the Conv2d/Linear weights.

    Args:
        model (nn.Module): a float64 network (BN layers are bypassed and left untouched).
        image_shape (tuple): (C, H, W) of its input.
        forward (callable, optional): ``forward(x) -> logits``; default ``model``.
        log_gradients (bool): LogSynFlow: use log(|grad| + 1) in place of the gradient.
        linearise (bool): take |w| first (and restore the signs after); False when the weights are already
            non-negative.
    """
    forward = model if forward is None else forward
    parameters = [p for p in model.parameters()]
    dtype = parameters[0].dtype
    with torch.no_grad():
        signs = linearize_(parameters) if linearise else None
    was_training = model.training
    model.eval()  # BN is bypassed anyway; eval mode keeps its running statistics untouched
    try:
        model.zero_grad(set_to_none=True)
        ones = torch.ones(1, *image_shape, dtype=dtype, device=parameters[0].device)
        with batchnorm_removed(model):
            forward(ones).sum().backward()
        weights = [m.weight for m in conv_and_linear_layers(model) if m.weight.grad is not None]
        grads = [w.grad for w in weights]
        if log_gradients:
            grads = torch._foreach_log1p(torch._foreach_abs(grads))
        with torch.no_grad():
            score = float(sum_abs_product(weights, grads).sum()) if weights else 0.0
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        if signs is not None:
            with torch.no_grad():
                restore_signs_(parameters, signs)
    return score


@register("logsynflow", needs_data=False, batched=False,
          summary="LogSynFlow: synflow with log(|dR/dw| + 1) in place of the gradient (FreeREA)")
def logsynflow(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch | None = None) -> Tensor:
    """FreeREA's LogSynFlow: sum over Conv2d/Linear weights of |w * log(|dR/dw| + 1)| under synflow's protocol,
    one float64 pass per architecture on the supernet's (linearised) weights. Disconnected architectures: -inf.
    Tensor[K] float64."""
    net = linearised_float64(supernet).eval()
    shape = _image_shape(supernet, minibatch)

    def connected(kept):
        net.requires_grad_(True)
        try:
            return torch.tensor([synflow_of_network(net, shape, lambda x, a=arch: net(x, a), log_gradients=True,
                                                    linearise=False) for arch in kept], dtype=torch.float64)
        finally:
            net.requires_grad_(False)

    cache = plan_cache("logsynflow", supernet, parameter_state(supernet), shape)
    return scores_with_disconnected_last(archs, connected, cache)

"""Proxies read off the architecture and the initial weights: params, flops, l2_norm.

Each is a sum over the layers the benchmark's network for an architecture holds (every non-``none`` edge op, as
NB201's network builds them): a constant for the stem, reduction blocks and head, plus one table entry per
(cell, edge, op). The tables come from the supernet once per call, so scoring K architectures costs K table sums.
"""

import weakref

import torch
from torch import Tensor, nn

from rdnas.proxies.base import Minibatch, network_state_restored, register, scores_with_disconnected_last
from rdnas.proxies.probes import hooks_removed
from rdnas.spaces import nb201
from rdnas.supernet import NB201Supernet, SearchCell
from rdnas.supernet.nb201 import _PARAMETRIC


def _cell_op_modules(supernet: NB201Supernet):
    """[(cell position, edge, op, module)] for every weighted op of every cell."""
    cells = [layer for layer in supernet.layers if isinstance(layer, SearchCell)]
    return [(c, edge, op, cell.edges[edge][name])
            for c, cell in enumerate(cells) for edge in range(nb201.NUM_EDGES)
            for op, (name, _) in _PARAMETRIC.items() if name in cell.edges[edge]]


def _per_arch_sum(supernet: NB201Supernet, archs: list[tuple], fixed: float, per_op: dict) -> Tensor:
    """fixed + sum over cells and non-none edges of per_op[(cell, edge, op)] (0 for parameter-free ops)."""
    num_cells = sum(isinstance(layer, SearchCell) for layer in supernet.layers)
    table = torch.zeros(num_cells, nb201.NUM_EDGES, nb201.NUM_OPS, dtype=torch.float64)
    for (cell, edge, op), value in per_op.items():
        table[cell, edge, op] = value
    ops = torch.tensor(archs, dtype=torch.long).view(-1, 1, nb201.NUM_EDGES, 1).expand(-1, num_cells, -1, 1)
    chosen = table.unsqueeze(0).expand(len(archs), -1, -1, -1).gather(3, ops).squeeze(3)
    return fixed + chosen.sum(dim=(1, 2))


@register("params", needs_data=False, batched=True,
          summary="parameter count of the benchmark's network (equals params_M * 1e6 of the NB201 table)")
def params(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch | None = None) -> Tensor:
    """Parameters of each architecture's network, as NB201 counts them (every non-``none`` edge op's weights,
    dead edges included; disconnected architectures included). Tensor[K] float64."""
    per_op = {(c, e, op): float(sum(p.numel() for p in module.parameters()))
              for c, e, op, module in _cell_op_modules(supernet)}
    total = float(sum(p.numel() for p in supernet.parameters()))
    return _per_arch_sum(supernet, archs, total - sum(per_op.values()), per_op)


def _macs_of(module: nn.Module, output: Tensor) -> float:
    """NB201's FLOP counter: Conv2d = output elements * (in / groups) * kernel area; Linear = in * out (+ out with
    a bias), per image."""
    if isinstance(module, nn.Conv2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * (module.in_channels // module.groups) * kernel
    return module.in_features * module.out_features + (module.out_features if module.bias is not None else 0)


_MACS = weakref.WeakKeyDictionary()  # supernet -> {image size: layer_macs result}; shapes only, not weights


@torch.no_grad()
def layer_macs(supernet: NB201Supernet, image_size: tuple[int, int]) -> dict[nn.Module, float]:
    """Multiply-accumulates per image of every Conv2d and Linear of the supernet at ``image_size`` (H, W)
    (measured once per supernet and size with two batch-1 forwards, then cached)."""
    cached = _MACS.setdefault(supernet, {})
    if tuple(image_size) not in cached:
        cached[tuple(image_size)] = _measure_macs(supernet, tuple(image_size))
    return cached[tuple(image_size)]


def _measure_macs(supernet: NB201Supernet, image_size: tuple[int, int]) -> dict[nn.Module, float]:
    macs = {}
    hooks = [m.register_forward_hook(lambda m, args, out: macs.__setitem__(m, _macs_of(m, out)))
             for m in supernet.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with hooks_removed(hooks), network_state_restored(supernet, training=False):
        probe = torch.zeros(1, supernet.config["in_channels"], *image_size, device=next(supernet.parameters()).device)
        for op in _PARAMETRIC:  # every edge carries this op, so every op module of that kind runs
            supernet(probe, (op,) * nb201.NUM_EDGES)
    return macs


@register("flops", needs_data=False, batched=True,
          summary="FLOPs per image as NB201 counts them (Conv2d + Linear multiply-accumulates; equals flops_M * 1e6)")
def flops(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch | None = None,
          image_size: tuple[int, int] | None = None) -> Tensor:
    """FLOPs of each architecture's network per image at the minibatch's resolution (or ``image_size``; 32x32 by
    default), counted as NB201 counts them: Conv2d and Linear multiply-accumulates, every non-``none`` edge
    included. Tensor[K] float64."""
    if image_size is None:
        image_size = tuple(minibatch.inputs.shape[2:]) if minibatch is not None else (32, 32)
    macs = layer_macs(supernet, image_size)
    per_op = {(c, e, op): float(sum(macs[m] for m in module.modules() if m in macs))
              for c, e, op, module in _cell_op_modules(supernet)}
    return _per_arch_sum(supernet, archs, sum(macs.values()) - sum(per_op.values()), per_op)


@register("l2_norm", needs_data=False, batched=True,
          summary="sum over Conv2d/Linear layers of the weights' L2 norm (NAS-Bench-Suite-Zero l2_norm)")
@torch.no_grad()
def l2_norm(supernet: NB201Supernet, archs: list[tuple], minibatch: Minibatch | None = None) -> Tensor:
    """Sum over the Conv2d and Linear layers of each architecture's network of ``||weight||_2`` at
    initialisation. Disconnected architectures: -inf. Tensor[K] float64."""
    norms = {m: float(m.weight.detach().double().norm()) for m in supernet.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))}
    per_op = {(c, e, op): sum(norms[m] for m in module.modules() if m in norms)
              for c, e, op, module in _cell_op_modules(supernet)}
    fixed = sum(norms.values()) - sum(per_op.values())
    return scores_with_disconnected_last(archs, lambda kept: _per_arch_sum(supernet, kept, fixed, per_op))


def cost_scorer(space, proxies):
    """A teacher scorer from a space's cost model (:meth:`rdnas.spaces.SearchSpace.cost`).

    Args:
        space (str or SearchSpace): e.g. ``"resnet48"`` (its cost model follows the CVPR 2022 Track 1
            conventions).
        proxies (str): one cost name of the space's cost model (``"flops"``, ``"params"``, ...); a leading ``-``
            negates it (``"-flops"``: a teacher that prefers cheaper architectures, e.g. where short training
            favours small networks).

    Returns:
        ``scorer(archs: LongTensor[K, width]) -> Tensor[K] float64``, higher = costlier (cheaper with ``-``).
        One cost only: a rank-average depends on the batch it is computed over, and a teacher scores new
        architectures on demand one batch at a time.
    """
    from rdnas.spaces import get_space

    space = get_space(space)
    names = [p.strip() for p in proxies.split(",")] if isinstance(proxies, str) else list(proxies)
    if len(names) != 1:
        raise ValueError(f"rdnas.proxies.cost_scorer: give one cost to score with, got {names} (a rank-average "
                         "depends on the batch it is computed over, so new architectures could not be scored alike)")
    name, sign = names[0].removeprefix("-"), -1.0 if names[0].startswith("-") else 1.0
    try:
        known = space.cost(space.smallest().unsqueeze(0))
    except NotImplementedError as error:
        raise ValueError(f"rdnas.proxies.cost_scorer: {error}") from None
    if name not in known:
        raise ValueError(f"rdnas.proxies.cost_scorer: the {space.name} cost model has {', '.join(known)}, "
                         f"not {name!r}")

    def scorer(archs) -> Tensor:
        return sign * space.cost(space.validate(archs))[name].double()

    scorer.__name__ = f"{space.name}_{names[0]}"
    return scorer

"""Scoring NB201 architectures with synflow and snip: rdnas against the way public zero-cost-proxy code does it.

Reference ("public"), per architecture, as zero-cost-nas / NASLib do: build the benchmark's network for the cell
(:class:`public_nb201.TinyNetwork`: plain ``nn`` modules, every edge of the cell computed, ``none`` as ``x * 0``,
``nn.AvgPool2d`` pooling), and per proxy a second network from ``get_prunable_copy`` (synflow: without BN, then
``.double()``); linearise through a Python loop over ``state_dict()``; sum a per-layer metric in a Python loop
(snip: the ``weight_mask`` trick). A second reference ("public-loop") runs the same steps on rdnas's
:class:`~rdnas.supernet.NB201Network` instead (its ops, deep copy instead of the second build, dead edges
computed, ``none`` skipped): what rdnas gains over it is the scoring engine alone, not the faster ops.
rdnas: ``PROXIES[name].score(supernet, archs, minibatch)`` on one supernet at initialisation: no network per
architecture, synflow batched over architectures, fused reductions, one pass per live cell plan.

``test_references_agree`` checks that all three compute the same scores from the same weights.

Each round scores a fixed random sample (plan caches are cleared every round, so nothing carries over), and
``extra_info`` projects the whole space. Each side is sampled so that its projection is unbiased: the references
cost one pass per cell, so they score a uniform sample of the 15,625 cells, scaled by 15,625 / sample; rdnas
costs one pass per distinct live cell plan, so it scores a uniform sample of the 9,444 distinct live plans (one
cell each), scaled by 9,444 / sample. (Sampling cells for rdnas too would weight each plan by the number of cells
that share it; the shared plans are the ones with dead edges, the cheap ones, so that projection flattered rdnas
by about a fifth.) With ``RDNAS_BENCH_WHOLE_SPACE=1`` rdnas scores all 15,625 cells once instead (one round; no
projection): synflow about 2.5 min, snip about half an hour on the 2-core CPU.
"""

import copy
import functools
import os
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from public_nb201 import TinyNetwork, load_rdnas_weights
from rdnas.proxies import PROXIES, Minibatch, scoring_supernet
from rdnas.proxies.base import clear_plan_caches, conv_and_linear_layers
from rdnas.proxies.probes import batchnorm_removed
from rdnas.spaces import nb201
from rdnas.supernet import NB201Network, cell_plan

SPACE, LIVE_PLANS = 15_625, 9_444
SAMPLE = {"synflow": 256, "snip": 32}
WHOLE_SPACE = os.environ.get("RDNAS_BENCH_WHOLE_SPACE", "") == "1"
LABELS = {"rdnas": "rdnas (supernet, batched)", "public": "public-style (zero-cost-nas network per arch)",
          "public-loop": "public-style loop on rdnas's network ops"}
ROLES = {"rdnas": "candidate", "public": "baseline", "public-loop": "baseline"}


@functools.cache
def all_cells() -> tuple[tuple, ...]:
    """The 15,625 NB201 cells as op tuples, in enumeration order."""
    return tuple(tuple(arch.tolist()) for arch in nb201.all_archs())


def sample_archs(count: int, connected_only: bool = False) -> list[tuple]:
    """``count`` cells drawn uniformly from the 15,625 (seeded), optionally only connected ones."""
    generator = torch.Generator().manual_seed(0)
    indices = torch.randperm(SPACE, generator=generator).tolist()
    every = all_cells()
    archs = [every[i] for i in indices if cell_plan(every[i]) or not connected_only]
    return archs[:count]


def sample_live_plans(count: int) -> list[tuple]:
    """One cell for each of ``count`` distinct live plans drawn uniformly from the 9,444 (seeded): the first cell
    in enumeration order with that plan."""
    first_cell = {}
    for arch in all_cells():
        plan = cell_plan(arch)
        if plan and plan not in first_cell:
            first_cell[plan] = arch
    cells = list(first_cell.values())
    assert len(cells) == LIVE_PLANS, len(cells)
    generator = torch.Generator().manual_seed(0)
    return [cells[i] for i in torch.randperm(len(cells), generator=generator)[:count].tolist()]


def random_minibatch(device) -> Minibatch:
    generator = torch.Generator().manual_seed(0)
    return Minibatch(torch.randn(64, 3, 32, 32, generator=generator),
                     torch.randint(0, 10, (64,), generator=generator), 10, "random").to(device)


def linearised_synflow(net, forward, image_shape) -> float:
    """zero-cost-nas's compute_synflow_per_weight on a float64 network: linearize() through state_dict(), one
    all-ones image, sum of |w * dL/dw| per layer in a Python loop, nonlinearize()."""
    device = next(net.parameters()).device
    signs = {}
    with torch.no_grad():
        for name, param in net.state_dict().items():
            signs[name] = torch.sign(param)
            param.abs_()
    net.zero_grad()
    forward(torch.ones(1, *image_shape, dtype=torch.float64, device=device)).sum().backward()
    with torch.no_grad():
        per_layer = [torch.abs(layer.weight * layer.weight.grad) for layer in conv_and_linear_layers(net)
                     if layer.weight.grad is not None]
        score = sum(float(t.sum()) for t in per_layer)
        for name, param in net.state_dict().items():
            param.mul_(signs[name])
    return score


def _masked_conv(self, x):
    return F.conv2d(x, self.weight * self.weight_mask, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _masked_linear(self, x):
    return F.linear(x, self.weight * self.weight_mask, self.bias)


def masked_snip(net, forward, minibatch) -> float:
    """zero-cost-nas's compute_snip_per_weight: a weight_mask parameter per Conv2d / Linear layer, forwards
    replaced, one cross-entropy backward, sum of |dL/dmask| per layer in a Python loop."""
    for layer in conv_and_linear_layers(net):
        layer.weight_mask = nn.Parameter(torch.ones_like(layer.weight))
        layer.weight.requires_grad = False
        layer.forward = types.MethodType(_masked_conv if isinstance(layer, nn.Conv2d) else _masked_linear, layer)
    net.zero_grad()
    F.cross_entropy(forward(minibatch.inputs), minibatch.targets).backward()
    grads_abs = [torch.abs(layer.weight_mask.grad) for layer in conv_and_linear_layers(net)
                 if layer.weight_mask.grad is not None]
    return sum(float(g.sum()) for g in grads_abs)


def public_synflow(net: TinyNetwork, image_shape) -> float:
    prunable = net.get_prunable_copy(bn=False).to(next(net.parameters()).device).double()
    return linearised_synflow(prunable, prunable, image_shape)


def public_snip(net: TinyNetwork, minibatch) -> float:
    prunable = net.get_prunable_copy(bn=True).to(next(net.parameters()).device)
    return masked_snip(prunable, prunable, minibatch)


def public_loop_synflow(net: NB201Network, image_shape) -> float:
    prunable = copy.deepcopy(net).double().eval()

    def forward(x):
        with batchnorm_removed(prunable):
            return prunable(x, edges="all")
    return linearised_synflow(prunable, forward, image_shape)


def public_loop_snip(net: NB201Network, minibatch) -> float:
    prunable = copy.deepcopy(net).train()
    return masked_snip(prunable, lambda x: prunable(x, edges="all"), minibatch)


REFERENCES = {("public", "synflow"): (TinyNetwork, public_synflow), ("public", "snip"): (TinyNetwork, public_snip),
              ("public-loop", "synflow"): (NB201Network, public_loop_synflow),
              ("public-loop", "snip"): (NB201Network, public_loop_snip)}


@pytest.mark.parametrize("proxy", ["synflow", "snip"])
def test_references_agree(device, proxy):
    """Both references and rdnas give the same scores from the same weights (snip: float32, and rdnas scores in
    channels_last on the CPU, so up to float32 rounding; on a GPU cuDNN's TF32 convolutions round more)."""
    archs = sample_archs(3, connected_only=True)
    minibatch = random_minibatch(device)
    supernet = scoring_supernet(device=device)
    clear_plan_caches()
    ours = PROXIES[proxy].score(supernet, archs, minibatch).tolist()
    data = (3, 32, 32) if proxy == "synflow" else minibatch
    for arch, value in zip(archs, ours):
        network = supernet.export(arch)
        public = load_rdnas_weights(TinyNetwork(arch), network).to(device)
        theirs = [REFERENCES["public", proxy][1](public, data), REFERENCES["public-loop", proxy][1](network, data)]
        tolerance = 1e-9 if proxy == "synflow" else 2e-4 if device == "cpu" else 1e-2
        assert theirs == pytest.approx([value, value], rel=tolerance)


@pytest.mark.parametrize("impl", ["rdnas", "public", "public-loop"])
@pytest.mark.parametrize("proxy", ["synflow", "snip"])
def test_score_architectures(device_benchmark, device, proxy, impl):
    bench = device_benchmark
    count = SAMPLE[proxy]
    whole_space = WHOLE_SPACE and impl == "rdnas"
    bench.group = f"score-{proxy}-{device}" + ("-whole-space" if WHOLE_SPACE else "")
    if whole_space:
        archs, scaled, sample = list(all_cells()), 1.0, "all 15,625 cells"
    elif impl == "rdnas":
        archs, scaled = sample_live_plans(count), LIVE_PLANS / count
        sample = f"{count} of the {LIVE_PLANS:,} distinct live plans"
    else:
        archs, scaled, sample = sample_archs(count), SPACE / count, f"{count} of the {SPACE:,} cells"
    minibatch = random_minibatch(device)
    bench.extra_info.update(impl=impl, label=LABELS[impl], role=ROLES[impl], sample=sample, whole_space_scale=scaled,
                            note="whole space = median x whole_space_scale (references: a uniform sample of the "
                                 "15,625 cells; rdnas: of the 9,444 distinct live plans, or all cells once)")
    if impl == "rdnas":
        supernet = scoring_supernet(device=device)

        def run():
            clear_plan_caches()
            return PROXIES[proxy].score(supernet, archs, minibatch)
    else:
        build, score = REFERENCES[impl, proxy]
        data = (3, 32, 32) if proxy == "synflow" else minibatch

        def run():
            return [score(build(arch).to(device), data) for arch in archs]
    bench(run, warmup=1, rounds=1 if whole_space else None)


def test_snip_breakdown_accounts_for_the_pass(capsys):
    """benchmarks/snip_breakdown.py (the README's convolution floor for snip) runs, and its categories add up:
    dense convolutions and batch norm are never empty in an NB201 pass, and nothing is negative."""
    import snip_breakdown

    seconds = snip_breakdown.main(["--plans", "2"])
    assert seconds["dense convolutions"] > 0 and seconds["batch norm"] > 0
    assert all(value >= 0 for name, value in seconds.items() if name != "not in an ATen call")
    assert sum(seconds[kind] for kind in snip_breakdown.KINDS) <= seconds["wall"]
    assert "dense convolutions alone over the 9,444 plans" in capsys.readouterr().out

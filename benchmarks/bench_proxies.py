"""Scoring NB201 architectures with synflow and snip: rdnas against the way public zero-cost-proxy code does it.

Reference ("public-style"), per architecture, as zero-cost-nas / NASLib do: build a new network for the cell
(fresh initialisation), deep-copy it (synflow: a float64 copy without BN, as ``get_prunable_copy(bn=False)``),
linearise through a Python loop over ``state_dict()``, run the whole benchmark network (every non-``none`` edge,
dead ones included; ``none`` itself is skipped, which public code computes as ``x * 0``), and sum a per-layer metric
in a Python loop (snip: the ``weight_mask`` trick). rdnas: ``PROXIES[name].score(supernet, archs, minibatch)`` on
one supernet at initialisation: no network per architecture, synflow batched over architectures, fused reductions,
one pass per live cell plan.

Each round scores the same random sample of architectures from the 15,625 (plan caches are cleared every round,
so nothing carries over). ``extra_info`` projects the whole space: the reference scales with 15,625 cells; rdnas
with the 9,444 distinct live plans (measured on the sample as time per distinct plan).
"""

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rdnas.proxies import PROXIES, Minibatch, scoring_supernet
from rdnas.proxies.base import clear_plan_caches
from rdnas.proxies.probes import batchnorm_removed
from rdnas.spaces import nb201
from rdnas.supernet import NB201Network, cell_plan

SPACE, LIVE_PLANS = 15_625, 9_444
SAMPLE = {"synflow": 64, "snip": 8}
LABELS = {"rdnas": "rdnas (supernet, batched)", "public": "public-style (model per arch)"}
ROLES = {"rdnas": "candidate", "public": "baseline"}


def sample_archs(count: int) -> list[tuple]:
    generator = torch.Generator().manual_seed(0)
    indices = torch.randperm(SPACE, generator=generator)[:count].tolist()
    everything = nb201.all_archs()
    return [tuple(everything[i].tolist()) for i in indices]


def conv_linear(net):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def public_synflow(arch, image_shape, device) -> float:
    net = NB201Network(arch).to(device)                     # a new network per architecture
    net = copy.deepcopy(net).double()                        # get_prunable_copy(bn=False) + .double()
    net.eval()
    signs = {}
    with torch.no_grad():
        for name, param in net.state_dict().items():         # linearize()
            signs[name] = torch.sign(param)
            param.abs_()
    net.zero_grad()
    with batchnorm_removed(net):
        net(torch.ones(1, *image_shape, dtype=torch.float64, device=device), edges="all").sum().backward()
    per_layer = [torch.abs(layer.weight * layer.weight.grad) for layer in conv_linear(net) if layer.weight.grad is not None]
    score = sum(float(t.sum()) for t in per_layer)
    with torch.no_grad():
        for name, param in net.state_dict().items():         # nonlinearize()
            param.mul_(signs[name])
    return score


def _masked_conv(self, x):
    return F.conv2d(x, self.weight * self.weight_mask, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _masked_linear(self, x):
    return F.linear(x, self.weight * self.weight_mask, self.bias)


def public_snip(arch, minibatch, device) -> float:
    net = copy.deepcopy(NB201Network(arch).to(device)).train()
    for layer in conv_linear(net):
        layer.weight_mask = nn.Parameter(torch.ones_like(layer.weight))
        layer.weight.requires_grad = False
        layer.forward = types.MethodType(_masked_conv if isinstance(layer, nn.Conv2d) else _masked_linear, layer)
    net.zero_grad()
    F.cross_entropy(net(minibatch.inputs, edges="all"), minibatch.targets).backward()
    grads_abs = [torch.abs(layer.weight_mask.grad) for layer in conv_linear(net) if layer.weight_mask.grad is not None]
    return sum(float(g.sum()) for g in grads_abs)


@pytest.mark.parametrize("impl", ["rdnas", "public"])
@pytest.mark.parametrize("proxy", ["synflow", "snip"])
def test_score_architectures(device_benchmark, device, proxy, impl):
    bench = device_benchmark
    count = SAMPLE[proxy]
    bench.group = f"score-{proxy}-{device}-{count}-archs"
    archs = sample_archs(count)
    generator = torch.Generator().manual_seed(0)
    minibatch = Minibatch(torch.randn(64, 3, 32, 32, generator=generator),
                          torch.randint(0, 10, (64,), generator=generator), 10, "random").to(device)
    plans = len({cell_plan(a) for a in archs if cell_plan(a)})
    scaled = SPACE / count if impl == "public" else LIVE_PLANS / plans
    bench.extra_info.update(impl=impl, label=LABELS[impl], role=ROLES[impl], archs=count, live_plans=plans,
                            whole_space_scale=scaled,
                            note="whole space = median x whole_space_scale (reference: 15,625 / sample; "
                                 "rdnas: 9,444 live plans / distinct plans in the sample)")
    if impl == "rdnas":
        supernet = scoring_supernet(device=device)

        def run():
            clear_plan_caches()
            return PROXIES[proxy].score(supernet, archs, minibatch)
    elif proxy == "synflow":
        def run():
            return [public_synflow(a, (3, 32, 32), device) for a in archs]
    else:
        def run():
            return [public_snip(a, minibatch, device) for a in archs]
    bench(run, warmup=1)

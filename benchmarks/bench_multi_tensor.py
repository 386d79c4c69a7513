"""Multi-tensor proxy reductions over every parameter of a network: one fused pass against a Python loop over
parameters and against torch._foreach_* equivalents.

Tensors: the parameters of the NB201 network for the best CIFAR-10 cell (C=16, N=5; 1.07 M parameters in 246
tensors) and random gradients of the same shapes, float32 (float64 for synflow's product, as the protocol runs it).
"""

import pytest
import torch

from rdnas.ops import linearize_, restore_signs_, sum_abs_product, sum_product, sum_squares
from rdnas.supernet import NB201Network

LABELS = {"fused": "rdnas fused", "loop": "Python loop", "foreach": "torch._foreach_*"}
ROLES = {"fused": "candidate", "loop": "baseline", "foreach": "baseline"}


def network_tensors(device, dtype):
    torch.manual_seed(0)
    network = NB201Network((3, 3, 3, 1, 3, 2)).to(device=device, dtype=dtype)
    params = [p.detach() for p in network.parameters()]
    grads = [torch.randn_like(p) for p in params]
    return params, grads


def snip_variants(params, grads):
    return {
        "fused": lambda: sum_abs_product(params, grads).sum(),
        "loop": lambda: sum((p * g).abs().sum(dtype=torch.float64) for p, g in zip(params, grads)),
        "foreach": lambda: torch.stack(torch._foreach_norm(torch._foreach_mul(params, grads), 1)).double().sum(),
    }


def synflow_variants(params, grads):
    return {
        "fused": lambda: sum_product(params, grads).sum(),
        "loop": lambda: sum((p * g).sum() for p, g in zip(params, grads)),
        "foreach": lambda: torch.stack([t.sum() for t in torch._foreach_mul(params, grads)]).sum(),
    }


def grad_norm_variants(params, grads):
    return {
        "fused": lambda: sum_squares(grads).sum(),
        "loop": lambda: sum(g.double().square().sum() for g in grads),
        "foreach": lambda: torch.stack(torch._foreach_norm(grads, 2)).double().square().sum(),
    }


def linearize_variants(params, grads):
    def fused():
        restore_signs_(params, linearize_(params))

    def loop():
        signs = [torch.sign(p) for p in params]
        for p in params:
            p.abs_()
        for p, s in zip(params, signs):
            p.mul_(s)

    def foreach():
        signs = torch._foreach_sign(params)
        torch._foreach_abs_(params)
        torch._foreach_mul_(params, signs)

    return {"fused": fused, "loop": loop, "foreach": foreach}


CASES = {
    "snip-sum-abs-product": (snip_variants, torch.float32),
    "synflow-sum-product": (synflow_variants, torch.float64),
    "grad-norm-sum-squares": (grad_norm_variants, torch.float32),
    "synflow-linearize-restore": (linearize_variants, torch.float32),
}


@pytest.mark.parametrize("impl", ["fused", "loop", "foreach"])
@pytest.mark.parametrize("case", list(CASES))
def test_multi_tensor(device_benchmark, device, case, impl):
    bench = device_benchmark
    bench.group = f"{case}-{device}-nb201"
    variants, dtype = CASES[case]
    params, grads = network_tensors(device, dtype)
    bench.extra_info.update(impl=impl, label=LABELS[impl], role=ROLES[impl], tensors=len(params),
                            elements=sum(p.numel() for p in params), dtype=str(dtype))
    functions = variants(params, grads)
    if case != "synflow-linearize-restore":
        expected = functions["loop"]()
        torch.testing.assert_close(torch.as_tensor(functions[impl]()).double(), torch.as_tensor(expected).double(),
                                   rtol=1e-5, atol=1e-6)
    else:
        before = [p.clone() for p in params]
        functions[impl]()
        assert all(torch.equal(a, b) for a, b in zip(before, params))
    bench(functions[impl])

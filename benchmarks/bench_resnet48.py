"""The ResNet48 elastic supernet: one training step against the same subnet as a static network, and the
throughput of supernet accuracy evaluation.

Training step (forward, cross-entropy, backward, SGD step with momentum and weight decay; a batch of 64, 10
classes) for a spread of subnets (the largest, the smallest, seeded random codes of the space's sampler), two
implementations:
  - the elastic supernet (rdnas.supernet.ResNet48Supernet.forward(x, arch): sliced convolutions, batch norms and
    classifier; the optimizer holds the supernet's full-width parameters, as in one-shot training);
  - the same subnet as a static network (ResNet48Supernet.export(arch): a ResNet48Network of plain layers of its
    exact widths, with copies of the supernet's weights).
Two configurations: the small-input one the project trains on the CPU (resnet_stem="small", width_divisor=8,
1-channel 16x16 inputs) and a heavier one (width_divisor=4, 3-channel 32x32 inputs; fewer subnets, to keep the
file's run short). Target: elastic / static <= 1.10 (a speed-up vs the static network of at least 0.91x).
Before timing, each group checks once that the exported network computes the supernet's subnet: equal logits,
loss and parameter gradients (the static network's gradient = the slice of the supernet's).

Evaluation: supernet accuracy of K = 8 subnets on 128 validation images in eval mode under torch.no_grad (BN with
the shared sliced running statistics), one ``forward_subnets(x, archs, bn="running")`` call against K single
``forward(x, arch)`` calls; ``extra_info["archs_per_s"]`` is K / median.
"""

import pytest
import torch
import torch.nn.functional as F

from rdnas.spaces import get_space, resnet48
from rdnas.supernet.resnet48 import ResNet48Supernet

SPACE = get_space("resnet48")
BATCH = 64
NUM_CLASSES = 10
CONFIGS = {
    "small-w8-1ch-16px": dict(options=dict(in_channels=1, resnet_stem="small", width_divisor=8), side=16),
    "small-w4-3ch-32px": dict(options=dict(in_channels=3, resnet_stem="small", width_divisor=4), side=32),
}


def _architectures() -> dict:
    archs = {"largest": SPACE.largest(), "smallest": SPACE.smallest()}
    for i, code in enumerate(SPACE.sample(4, torch.Generator().manual_seed(0))):
        archs[f"random{i}"] = code
    return archs


ARCHS = _architectures()
CASES = [(config, arch) for config in CONFIGS for arch in ARCHS
         if config == "small-w8-1ch-16px" or arch in ("largest", "smallest", "random0", "random1")]
LABELS = {"elastic": "elastic supernet forward(x, arch)", "static": "exported static network"}
ROLES = {"elastic": "candidate", "static": "baseline"}
TARGET_NOTE = "target: elastic / static <= 1.10, i.e. a speed-up vs the exported static network of at least 0.91x"


def make_supernet(device, config: str) -> ResNet48Supernet:
    torch.manual_seed(0)
    return ResNet48Supernet(num_classes=NUM_CLASSES, **CONFIGS[config]["options"]).to(device)


def make_batch(device, config: str, batch: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    channels, side = CONFIGS[config]["options"]["in_channels"], CONFIGS[config]["side"]
    images = torch.randn(batch, channels, side, side, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return images.to(device), labels.to(device)


def check_export(supernet: ResNet48Supernet, arch, images, labels) -> None:
    """The exported network's logits, loss and gradients equal the supernet's subnet (training mode, fresh
    copies: the timed models are untouched)."""
    import copy

    supernet = copy.deepcopy(supernet).train()
    static = supernet.export(arch)
    elastic_logits, static_logits = supernet(images, arch), static(images)
    torch.testing.assert_close(static_logits, elastic_logits, rtol=1e-4, atol=1e-4)
    elastic_loss, static_loss = F.cross_entropy(elastic_logits, labels), F.cross_entropy(static_logits, labels)
    torch.testing.assert_close(static_loss, elastic_loss, rtol=1e-5, atol=1e-5)
    elastic_loss.backward()
    static_loss.backward()
    full = dict(supernet.named_parameters())
    for name, param in static.named_parameters():
        sliced = full[name].grad[tuple(slice(0, n) for n in param.shape)]
        torch.testing.assert_close(param.grad, sliced, rtol=1e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("impl", ["static", "elastic"])
@pytest.mark.parametrize(("config", "arch_name"), CASES)
def test_training_step(device_benchmark, device, config, arch_name, impl):
    bench = device_benchmark
    bench.group = f"resnet48-step-{torch.device(device).type}-{config}-{arch_name}"
    arch = ARCHS[arch_name]
    supernet = make_supernet(device, config).train()
    images, labels = make_batch(device, config, BATCH)
    if impl == "static":  # once per group
        check_export(supernet, arch, images, labels)
    if impl == "elastic":
        model, forward = supernet, lambda: supernet(images, arch)  # noqa: E731
    else:
        model = supernet.export(arch)
        forward = lambda: model(images)  # noqa: E731
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(), labels).backward()
        optimizer.step()

    subnet_params = sum(p.numel() for p in supernet.export(arch).parameters())
    bench.extra_info.update(impl=impl, label=LABELS[impl], role=ROLES[impl], config=config,
                            options=CONFIGS[config]["options"], image_side=CONFIGS[config]["side"], batch=BATCH,
                            arch=resnet48.to_string(arch), subnet_params=subnet_params,
                            optimizer_params=sum(p.numel() for p in model.parameters()), note=TARGET_NOTE)
    median = bench(step)
    if median:
        bench.extra_info["images_per_s"] = BATCH / median


EVAL_CONFIG = "small-w8-1ch-16px"
EVAL_K = 8
EVAL_IMAGES = 128


@pytest.mark.parametrize("impl", ["k-subnets", "one-by-one"])
def test_evaluate_subnets(device_benchmark, device, impl):
    bench = device_benchmark
    bench.group = f"resnet48-eval-{torch.device(device).type}-{EVAL_CONFIG}-K{EVAL_K}"
    labels_text = {"k-subnets": f"forward_subnets(bn=\"running\"), K={EVAL_K}",
                   "one-by-one": f"{EVAL_K} x forward(x, arch)"}
    supernet = make_supernet(device, EVAL_CONFIG)
    with torch.no_grad():  # running statistics that are not the initial ones
        for seed, code in enumerate(SPACE.sample(8, torch.Generator().manual_seed(1))):
            supernet.train()(make_batch(device, EVAL_CONFIG, BATCH, seed=100 + seed)[0], code)
    supernet.eval()
    archs = SPACE.sample(EVAL_K, torch.Generator().manual_seed(2))
    images, labels = make_batch(device, EVAL_CONFIG, EVAL_IMAGES, seed=1)

    @torch.no_grad()
    def together():
        return (supernet.forward_subnets(images, archs, bn="running").argmax(-1) == labels).sum(-1)

    @torch.no_grad()
    def one_by_one():
        return torch.stack([(supernet(images, arch).argmax(-1) == labels).sum() for arch in archs])

    if impl == "k-subnets":
        with torch.no_grad():
            torch.testing.assert_close(supernet.forward_subnets(images, archs, bn="running"),
                                       torch.stack([supernet(images, arch) for arch in archs]), rtol=1e-5, atol=1e-5)
        assert torch.equal(together(), one_by_one())
    bench.extra_info.update(impl=impl, label=labels_text[impl], role="candidate" if impl == "k-subnets" else "baseline",
                            config=EVAL_CONFIG, options=CONFIGS[EVAL_CONFIG]["options"],
                            image_side=CONFIGS[EVAL_CONFIG]["side"], images=EVAL_IMAGES, K=EVAL_K)
    median = bench(together if impl == "k-subnets" else one_by_one)
    if median:
        bench.extra_info["archs_per_s"] = EVAL_K / median

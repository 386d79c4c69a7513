"""The NB201 supernet: one SPOS training step, and scoring 1,000 architectures.

Training step (forward, cross-entropy, backward, SGD step; standard NB201 network, C=16, N=5, 10 classes, a
batch of 32 images of 32x32 on the CPU, 128 on a GPU) for a spread of architectures, three implementations:
  - the path-sampled supernet (rdnas.supernet.NB201Supernet.forward: only the chosen op of each edge runs);
  - the same architecture as a static nn.Module (NB201Network, the benchmark's network for that cell);
  - a supernet that computes every op of every edge and masks with a one-hot choice (how several peer
    supernets implement single-path sampling).
Targets: supernet / static <= 1.10; compute-all-ops / supernet >= 3.

Scoring: supernet accuracy of 1,000 architectures on 128 validation images in batches of 64 (C=8, N=1, 8x8
one-channel inputs: the digits setting; BN batch statistics), K subnets per forward pass (forward_subnets, K = 50)
against one architecture at a time.
"""

import pytest
import torch
import torch.nn.functional as F

from rdnas.spaces import nb201
from rdnas.supernet import NB201Supernet
from rdnas.supernet.nb201 import SearchCell
from rdnas.supernet.nb201_ops import avg_pool_3x3

ARCHS = {
    "best-c10": (3, 3, 3, 1, 3, 2),  # |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip~0|nor_conv_3x3~1|nor_conv_1x1~2|
    "all-conv3x3": (3, 3, 3, 3, 3, 3),
    "mixed": (2, 4, 1, 3, 0, 2),
    "pool-skip": (4, 1, 4, 1, 0, 4),
}
IMPLS = ("supernet", "static", "all-ops")
LABELS = {"supernet": "path-sampled supernet", "static": "static nn.Module", "all-ops": "compute-all-ops supernet"}
ROLES = {"supernet": "candidate", "static": "baseline", "all-ops": "baseline"}


def all_ops_cell_forward(cell: SearchCell, x, arch):
    """Every op of every edge runs; a one-hot choice selects one output per edge (the masked-supernet way)."""
    nodes = [x]
    for node in (1, 2, 3):
        total = 0
        for edge, (src, dst) in enumerate(nb201.EDGES):
            if dst != node:
                continue
            inputs = nodes[src]
            candidates = torch.stack([
                torch.zeros_like(inputs), inputs, cell.edges[edge]["nor_conv_1x1"](inputs),
                cell.edges[edge]["nor_conv_3x3"](inputs), avg_pool_3x3(inputs)])
            one_hot = F.one_hot(torch.tensor(arch[edge], device=x.device), nb201.NUM_OPS).to(x.dtype)
            total = total + (one_hot.view(-1, 1, 1, 1, 1) * candidates).sum(0)
        nodes.append(total)
    return nodes[3]


def all_ops_forward(supernet: NB201Supernet, x, arch):
    out = supernet.stem_bn(supernet.stem_conv(x))
    for layer in supernet.layers:
        out = all_ops_cell_forward(layer, out, arch) if isinstance(layer, SearchCell) else layer(out)
    return supernet._head(out)


def training_step_case(device, impl, arch):
    torch.manual_seed(0)
    supernet = NB201Supernet().to(device)
    batch = 128 if torch.device(device).type == "cuda" else 32
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    if impl == "static":
        model = supernet.export(arch)
        forward = lambda: model(images)  # noqa: E731
    elif impl == "supernet":
        model = supernet
        forward = lambda: supernet(images, arch)  # noqa: E731
    else:
        model = supernet
        forward = lambda: all_ops_forward(supernet, images, arch)  # noqa: E731
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(), labels).backward()
        optimizer.step()

    return step, forward


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch_name", list(ARCHS))
def test_spos_training_step(device_benchmark, device, arch_name, impl):
    bench = device_benchmark
    bench.group = f"spos-step-{device}-{arch_name}"
    arch = ARCHS[arch_name]
    bench.extra_info.update(impl=impl, label=LABELS[impl], role=ROLES[impl], arch=nb201.to_string(arch))
    step, forward = training_step_case(device, impl, arch)
    if impl != "supernet":  # the three compute the same function of the same weights
        reference_step, reference_forward = training_step_case(device, "supernet", arch)
        with torch.no_grad():
            torch.testing.assert_close(forward(), reference_forward(), rtol=1e-4, atol=1e-4)
    bench(step)


SCORING_ARCHS = 1000
SCORING_K = 50


def scoring_case(device):
    torch.manual_seed(0)
    supernet = NB201Supernet(channels=8, cells_per_stage=1, num_classes=10, in_channels=1).to(device).train()
    batches = [(torch.randn(64, 1, 8, 8, device=device), torch.randint(0, 10, (64,), device=device)) for _ in range(2)]
    archs = nb201.all_archs()[torch.randperm(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(0))[:SCORING_ARCHS]]

    @torch.no_grad()
    def together():
        correct = []
        for start in range(0, len(archs), SCORING_K):
            chunk = archs[start:start + SCORING_K]
            correct.append(sum((supernet.forward_subnets(x, chunk, bn="batch").argmax(-1) == y).sum(-1)
                               for x, y in batches))
        return torch.cat(correct)

    @torch.no_grad()
    def one_by_one():
        return torch.stack([sum((supernet(x, arch).argmax(-1) == y).sum() for x, y in batches) for arch in archs])

    return together, one_by_one


@pytest.mark.parametrize("impl", ["k-subnets", "one-by-one"])
def test_score_1000_architectures(device_benchmark, device, impl):
    bench = device_benchmark
    bench.group = f"score-{device}-{SCORING_ARCHS}archs"
    labels = {"k-subnets": f"forward_subnets, K={SCORING_K}", "one-by-one": "one architecture at a time"}
    bench.extra_info.update(impl=impl, label=labels[impl], role="candidate" if impl == "k-subnets" else "baseline",
                            archs=SCORING_ARCHS)
    together, one_by_one = scoring_case(device)
    if impl == "k-subnets":
        assert torch.equal(together(), one_by_one())  # training-mode BN: the same accuracies
    bench(together if impl == "k-subnets" else one_by_one)

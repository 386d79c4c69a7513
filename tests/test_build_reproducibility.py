"""A mini-benchmark run is a function of (architecture, seed, recipe) alone: bitwise the same in any stack.

The builder trains many NB201 networks side by side in one ``StackedNB201``; which other networks share the stack
(how many, which cells, in which order) must not change a network's arithmetic, so that retraining a subset of a
benchmark (``rdnas bench build --archs-file``) gives bitwise the runs of the full build on the same machine at one
thread per process (as the builds run; the tests set it). Without the stack's two precautions these tests fail: a network alone in its op group (or alone in
its stack) ran a non-grouped convolution, and the classifier bias gradient and the reported losses were sums across
the stack that round differently in narrow stacks (differences of 1e-7 relative per step, which training grows to
0.3 accuracy points and 1e-3 in the loss after an epoch of the shipped recipe).
"""

import pytest
import torch
import torch.nn.functional as F

from rdnas.minibench import Recipe, StackedNB201, sample_architectures
from rdnas.minibench.build import benchmark_split, network_seed, train_stack
from rdnas.minibench.stacked import NETWORK_REDUCTION_WIDTH, pad_networks
from rdnas.spaces import nb201

ARCHS = sample_architectures(64, seed=0)
TARGET = ARCHS[0]  # |nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|
# differs from TARGET on every edge: in a stack of the two, each convolution of either runs on one network
EVERY_EDGE_DIFFERENT = (4, 3, 2, 2, 2, 3)
RECIPE = Recipe(channels=4, epochs=1, train_images=64, batch_size=32, valid_images=200)


def _stacks_holding_the_target() -> dict:
    """name -> (architectures, position of TARGET): one, two and a few networks (padded reductions, convolutions over
    one network), and 64 as the build trains them with TARGET at a position of its own."""
    assert all(a != b for a, b in zip(TARGET, EVERY_EDGE_DIFFERENT))
    return {"alone": ([TARGET], 0), "pair": ([EVERY_EDGE_DIFFERENT, TARGET], 1),
            "five": (ARCHS[40:44] + [TARGET], 4), "build-sized": (ARCHS[1:20] + [TARGET] + ARCHS[20:64], 19)}


# The builds run one thread per process (OMP_NUM_THREADS=1), and the property holds there: with several threads, a
# convolution's work is split by its size, and a stack's size changes the split and the rounding.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return benchmark_split(RECIPE)


def test_a_run_is_bitwise_the_same_in_any_stack(data):
    results = {}
    for name, (archs, position) in _stacks_holding_the_target().items():
        runs = train_stack(archs, [3] * len(archs), RECIPE, data)
        assert runs[position]["arch_str"] == nb201.to_string(TARGET)
        results[name] = {key: runs[position][key] for key in ("valid_acc", "valid_loss", "train_loss")}
    reference = results["build-sized"]
    for name, result in results.items():
        assert result == reference, f"{name}: {result} != the 64-network stack's {reference}"  # bitwise


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_training_step_gives_a_network_the_same_gradient_in_any_stack(dtype, data):
    images, labels = data[0][:32].to(dtype), data[1][:32]
    gradients = {}
    for name, (archs, position) in _stacks_holding_the_target().items():
        seeds = [network_seed(5, arch) for arch in archs]
        stack = StackedNB201(archs, seeds, channels=4).to(dtype)
        logits = stack(images)  # one minibatch for every network
        targets = labels.view(-1, 1).expand(-1, len(archs))
        F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(32, -1).mean(0).sum().backward()
        gradients[name] = {key: p.grad[position] for key, p in stack.named_parameters()
                           if p.grad is not None and p.grad[position].any()}
    reference = gradients["build-sized"]
    assert "classifier__bias" in reference and len(reference) > 20
    for name, grads in gradients.items():
        assert grads.keys() == reference.keys(), name
        for key, grad in grads.items():
            assert torch.equal(grad, reference[key]), f"{name}: {key} differs from the 64-network stack's"


def test_pad_networks_pads_narrow_stacks_only():
    narrow = torch.arange(6.0).view(2, 3)  # [B, M]
    padded = pad_networks(narrow)
    assert padded.shape == (2, NETWORK_REDUCTION_WIDTH)
    assert torch.equal(padded[:, :3], narrow) and not padded[:, 3:].any()
    assert pad_networks(torch.ones(3, 2, 4), dim=1).shape == (3, NETWORK_REDUCTION_WIDTH, 4)
    wide = torch.ones(2, NETWORK_REDUCTION_WIDTH)
    assert pad_networks(wide) is wide  # a wide stack (the build's 64) keeps its own reduction: its runs are unchanged

"""The shared whole-space evaluation (rdnas.rank.nb201_accuracy) against the per-subnet path of supernet_accuracy."""

import pytest
import torch

from rdnas.minibench import sample_architectures
from rdnas.rank import kendall_tau, supernet_accuracy
from rdnas.rank.nb201_accuracy import SharedChunk, plan_order
from rdnas.spaces import nb201
from rdnas.supernet import BNStatistics, NB201Supernet


def _supernet(dtype, cells_per_stage=1, seed=0):
    """A supernet at initialisation with random BN scales and shifts (so that every BN matters)."""
    torch.manual_seed(seed)
    supernet = NB201Supernet(channels=4, cells_per_stage=cells_per_stage, num_classes=10, in_channels=1)
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, torch.nn.BatchNorm2d) and module.weight is not None:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return supernet.to(dtype).eval()


def _batches(dtype, count, size, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=generator, dtype=dtype),
             torch.randint(0, 10, (size,), generator=generator)) for _ in range(count)]


def _cells(count=40, seed=0):
    """Connected classes, disconnected cells and isomorphic duplicates, in random order."""
    everything = nb201.all_archs()
    generator = torch.Generator().manual_seed(seed)
    picked = everything[torch.randperm(len(everything), generator=generator)[:count]]
    disconnected = everything[~nb201.connected(everything)][:3]
    return torch.cat([picked, disconnected, picked[:2]])[torch.randperm(count + 5, generator=generator)]


def _per_subnet_logits(supernet, archs, calibration, images):
    stats = BNStatistics("calibrate", len(archs))
    with torch.no_grad():
        for batch, _ in calibration:
            supernet.forward_subnets(batch, archs, bn=stats)
        return supernet.forward_subnets(images, archs, bn=stats.freeze())


@pytest.mark.parametrize("cells_per_stage", [1, 2])
def test_shared_logits_equal_the_per_subnet_forward_in_float64(cells_per_stage):
    supernet = _supernet(torch.float64, cells_per_stage)
    archs = _cells(24)
    calibration = _batches(torch.float64, 3, 16, seed=1)
    images = _batches(torch.float64, 1, 20, seed=2)[0][0]
    chunk = SharedChunk(supernet, archs)
    for batch, _ in calibration:
        chunk.calibrate(batch)
    shared = chunk.logits(images)
    expected = _per_subnet_logits(supernet, archs, calibration, images)
    assert shared.shape == expected.shape == (len(archs), 20, 10)
    torch.testing.assert_close(shared, expected, rtol=1e-10, atol=1e-10)


def test_shared_path_gives_the_per_subnet_accuracies_in_float64():
    supernet = _supernet(torch.float64, 2)
    archs = _cells(40)
    calibration = _batches(torch.float64, 4, 16, seed=3)
    valid = _batches(torch.float64, 2, 50, seed=4)
    old = supernet_accuracy(supernet, archs, valid, calibration_batches=calibration, subnets_per_pass=8,
                            path="subnets")
    new = supernet_accuracy(supernet, archs, valid, calibration_batches=calibration, subnets_per_pass=8,
                            path="shared")
    assert torch.equal(new, old)
    assert len(set(old.tolist())) > 5  # the cells' accuracies differ: the comparison can fail


def test_shared_path_in_float32_matches_within_rounding_and_keeps_the_ranking():
    supernet = _supernet(torch.float32, 1, seed=5)
    archs = _cells(60, seed=6)
    calibration = _batches(torch.float32, 4, 32, seed=7)
    valid = _batches(torch.float32, 2, 100, seed=8)
    chunk = SharedChunk(supernet, archs[:16])
    for batch, _ in calibration:
        chunk.calibrate(batch)
    expected = _per_subnet_logits(supernet, archs[:16], calibration, valid[0][0])
    torch.testing.assert_close(chunk.logits(valid[0][0]), expected, rtol=1e-5, atol=1e-5)
    old = supernet_accuracy(supernet, archs, valid, calibration_batches=calibration, path="subnets")
    new = supernet_accuracy(supernet, archs, valid, calibration_batches=calibration)  # "auto": the shared path
    assert torch.equal(new, old)
    truth = torch.linspace(0, 1, len(archs), dtype=torch.float64)[torch.randperm(len(archs))]
    assert kendall_tau(new.numpy(), truth.numpy()) == kendall_tau(old.numpy(), truth.numpy())


def test_plan_order_puts_cells_with_a_common_prefix_together():
    archs = torch.as_tensor(sample_architectures(200, seed=0))
    order = plan_order(archs)
    assert sorted(order.tolist()) == list(range(200))
    from rdnas.supernet.nb201 import cell_plan

    plans = [cell_plan(tuple(a)) for a in archs[order].tolist()]
    assert plans == sorted(plans)


def test_shared_path_refusals():
    supernet = _supernet(torch.float32)
    archs = torch.zeros(1, 6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"path must be one of \('auto', 'shared', 'subnets'\), got 'fast'"):
        supernet_accuracy(supernet, archs, [], calibration_batches=[], path="fast")
    with pytest.raises(ValueError, match=r"path='shared' needs bn='recalibrate'"):
        supernet_accuracy(supernet, archs, [], bn="batch", path="shared")
    chunk = SharedChunk(supernet, torch.tensor([[3, 3, 3, 1, 3, 2]]))
    images = torch.randn(4, 1, 8, 8)
    chunk.calibrate(images)
    chunk.logits(images)
    with pytest.raises(RuntimeError, match=r"SharedChunk.calibrate: the statistics are frozen"):
        chunk.calibrate(images)

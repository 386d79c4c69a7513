"""The NB201 supernet: path-sampled forward, K-subnet forward, export."""

from pathlib import Path

import pytest
import torch

from rdnas.spaces import nb201
from rdnas.supernet import BNStatistics, NB201Network, NB201Supernet, cell_plan

GT_TABLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201_gt.csv"
needs_gt = pytest.mark.skipif(not GT_TABLE.exists(), reason=f"NB201 ground-truth table not found at {GT_TABLE}")

ARCHS = torch.tensor([
    [3, 3, 3, 1, 3, 2],  # the benchmark's best CIFAR-10 cell
    [0, 0, 0, 0, 0, 0],  # disconnected
    [1, 4, 2, 0, 3, 1],
    [2, 2, 0, 3, 0, 4],
    [3, 0, 3, 0, 0, 0],  # edges that never reach the output
    [1, 1, 1, 1, 1, 1],  # parameter-free
])


def small_supernet(**kwargs):
    torch.manual_seed(0)
    return NB201Supernet(channels=8, cells_per_stage=2, num_classes=10, **kwargs)


def test_cell_plan_skips_dead_edges():
    assert cell_plan((0, 0, 0, 0, 0, 0)) == ()
    # Node 1 gets conv3x3 from node 0 but feeds nothing that reaches node 3: only edge 0->3 (skip) is computed.
    assert cell_plan((3, 0, 3, 1, 0, 0)) == ((), (), ((3, 0, 1),))
    # An edge into node 2 from node 1 counts only if node 1 receives something.
    assert cell_plan((0, 1, 3, 0, 0, 1)) == ((), ((1, 0, 1),), ((5, 2, 1),))


@needs_gt
def test_exported_networks_have_the_benchmark_parameter_counts():
    from rdnas.rank import GroundTruth

    table = GroundTruth.load(GT_TABLE)
    supernet = NB201Supernet()  # C=16, N=5, 10 classes: the benchmark's CIFAR-10 network
    params = table.column("params_M_cifar10")
    for row in range(0, len(table), 311):
        arch = tuple(table.archs[row].tolist())
        count = sum(p.numel() for p in supernet.export(arch).parameters())
        assert count / 1e6 == pytest.approx(params[row], abs=5e-7), nb201.to_string(arch)


def test_path_sampled_forward_touches_only_the_chosen_ops():
    supernet = small_supernet()
    x = torch.randn(4, 3, 16, 16)
    supernet(x, (3, 0, 0, 2, 0, 0)).sum().backward()  # edge 0: conv3x3 (dead: node 1 feeds nothing), edge 3: conv1x1
    cell = supernet.layers[0]
    assert cell.edges[3]["nor_conv_1x1"].conv.weight.grad is not None
    assert cell.edges[3]["nor_conv_3x3"].conv.weight.grad is None
    assert cell.edges[0]["nor_conv_3x3"].conv.weight.grad is None  # not computed: cannot reach the output


@pytest.mark.parametrize("affine,track", [(True, True), (False, False), (False, True)])
def test_subnets_forward_equals_separate_forwards_in_training_mode(affine, track):
    supernet = small_supernet(bn_affine=affine, bn_track_running_stats=track).train()
    x = torch.randn(6, 3, 16, 16)
    together = supernet.forward_subnets(x, ARCHS, bn="batch")
    separate = torch.stack([supernet(x, arch) for arch in ARCHS])
    assert together.shape == (len(ARCHS), 6, 10)
    torch.testing.assert_close(together, separate, rtol=1e-4, atol=1e-5)


def test_subnets_forward_equals_separate_forwards_with_running_statistics():
    supernet = small_supernet()
    with torch.no_grad():
        for _ in range(3):  # give the running statistics values of their own
            supernet.train()(torch.randn(8, 3, 16, 16), ARCHS[0])
    supernet.eval()
    x = torch.randn(5, 3, 16, 16)
    together = supernet.forward_subnets(x, ARCHS, bn="running")
    torch.testing.assert_close(together, torch.stack([supernet(x, arch) for arch in ARCHS]))


def test_subnets_forward_gradients_equal_separate_forwards():
    supernet = small_supernet().train()
    x = torch.randn(4, 3, 16, 16)
    supernet.forward_subnets(x, ARCHS).square().sum().backward()
    together = [p.grad.clone() if p.grad is not None else None for p in supernet.parameters()]
    supernet.zero_grad(set_to_none=True)
    sum(supernet(x, arch).square().sum() for arch in ARCHS).backward()
    for a, p in zip(together, supernet.parameters()):
        if a is None:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0
        else:
            torch.testing.assert_close(a, p.grad, rtol=1e-3, atol=1e-4)


def test_calibrated_statistics_are_per_subnet():
    supernet = small_supernet().eval()
    x = torch.randn(6, 3, 16, 16)
    stats = BNStatistics("calibrate", len(ARCHS))
    with torch.no_grad():
        calibrating = supernet.forward_subnets(x, ARCHS, bn=stats)
        calibrated = supernet.forward_subnets(x, ARCHS, bn=stats.freeze())
        batch = supernet.forward_subnets(x, ARCHS, bn="batch")
    # Calibrated on this one batch, each subnet's statistics are this batch's: the same as batch statistics.
    torch.testing.assert_close(calibrating, batch)
    torch.testing.assert_close(calibrated, batch, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bn", ["batch", "running", "calibrated"])
def test_k_subnet_forward_of_a_half_precision_network_matches_float64(dtype, bn):
    """A supernet converted to bfloat16 / float16 (no autocast) runs every BN mode of the K-subnet forward, its
    statistics kept in float32 (calibration failed on the CPU: float32 statistics met bf16 affine parameters)."""
    reference = small_supernet().double().eval()
    network = small_supernet().to(dtype).eval()
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)

    def run(net, images):
        with torch.no_grad():
            if bn != "calibrated":
                return net.forward_subnets(images, ARCHS, bn=bn)
            stats = BNStatistics("calibrate", len(ARCHS))
            net.forward_subnets(images, ARCHS, bn=stats)
            return net.forward_subnets(images, ARCHS, bn=stats.freeze())

    expected, out = run(reference, x), run(network, x.to(dtype))
    assert out.dtype == dtype
    tolerance = (0.1 if dtype == torch.bfloat16 else 0.01) * expected.abs().max().item()  # rounding grows with scale
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=tolerance)


def test_calibrated_mode_needs_a_calibration_pass():
    supernet = small_supernet()
    with pytest.raises(RuntimeError, match=r"no calibrated statistics for this layer"):
        supernet.forward_subnets(torch.randn(2, 3, 8, 8), ARCHS[:2], bn="calibrated")


def test_export_matches_the_supernet_and_owns_its_weights():
    supernet = small_supernet()
    x = torch.randn(4, 3, 16, 16)
    for arch in ARCHS:
        network = supernet.export(arch)
        assert isinstance(network, NB201Network)
        for mode in ("train", "eval"):
            getattr(supernet, mode)()
            getattr(network, mode)()
            torch.testing.assert_close(network(x), supernet(x, arch))
    network = supernet.export(ARCHS[0])
    with torch.no_grad():
        network.classifier.weight.add_(1.0)
    assert not torch.equal(network.classifier.weight, supernet.classifier.weight)


def test_fresh_stand_alone_network():
    network = NB201Network((3, 3, 3, 1, 3, 2), channels=8, cells_per_stage=1, num_classes=4, in_channels=1)
    assert network(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"rdnas.supernet.NB201Network: this network is \|nor_conv_3x3~0\|"):
        network(torch.randn(2, 1, 8, 8), (0, 0, 0, 0, 0, 0))


def test_disconnected_architecture_runs():
    supernet = small_supernet()
    out = supernet(torch.randn(3, 3, 16, 16), (0, 0, 0, 0, 0, 0))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


class TestErrors:
    def test_invalid_architecture(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"op index 7 on edge 0"):
            small_supernet()(torch.randn(1, 3, 8, 8), (7, 0, 0, 0, 0, 0))

    def test_bn_mode(self):
        with pytest.raises(ValueError, match=r"rdnas.supernet.BNStatistics: mode must be one of"):
            small_supernet().forward_subnets(torch.randn(1, 3, 8, 8), ARCHS[:1], bn="frozen")

    def test_running_mode_without_running_statistics(self):
        supernet = small_supernet(bn_track_running_stats=False)
        with pytest.raises(RuntimeError, match=r"BN statistics mode 'running' needs track_running_stats=True"):
            supernet.forward_subnets(torch.randn(2, 3, 8, 8), ARCHS[:1], bn="running")


@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (2, 4, 1, 1), (1, 3, 2, 9), (0, 4, 5, 5)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_avg_pool_3x3_is_the_benchmarks_pooling_with_first_and_second_derivatives(shape, layout):
    """avg_pool_3x3 (a depthwise convolution with an adjoint backward) against AvgPool2d(3, 1, 1,
    count_include_pad=False) in float64: values, gradients and the gradient's own derivative."""
    from rdnas.supernet.nb201_ops import avg_pool_3x3

    reference = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape[:3], shape[3] * (2 if layout == "strided" else 1), dtype=torch.float64,
                    generator=generator)
    x = x[..., ::2] if layout == "strided" else x.contiguous(memory_format=torch.channels_last) \
        if layout == "channels_last" else x
    x.requires_grad_(True)
    torch.testing.assert_close(avg_pool_3x3(x), reference(x), rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=generator)
    ours, = torch.autograd.grad(avg_pool_3x3(x), x, grad_out)
    theirs, = torch.autograd.grad(reference(x), x, grad_out)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    if x.numel():
        assert torch.autograd.gradcheck(avg_pool_3x3, (x,))
        assert torch.autograd.gradgradcheck(avg_pool_3x3, (x,))
        # Second derivative through a nonlinearity, as GraSP takes it: d/dx of <g, d/dx sum(pool(x)^2)>.
        def hessian_direction(f):
            first, = torch.autograd.grad(f(x).square().sum(), x, create_graph=True)
            second, = torch.autograd.grad((first * grad_out.sum(0, keepdim=True)).sum(), x)
            return second
        torch.testing.assert_close(hessian_direction(avg_pool_3x3), hessian_direction(reference), rtol=1e-12,
                                   atol=1e-12)


def test_avg_pool_3x3_keeps_the_input_dtype_in_float32_and_under_autocast():
    from rdnas.supernet.nb201_ops import avg_pool_3x3

    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    reference = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(avg_pool_3x3(x), reference, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = avg_pool_3x3(x)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_avg_pool_3x3_float32_counts_stay_exact_when_first_built_under_autocast():
    """The pooling's cached [1, 1, H, W] counts are keyed by dtype: built first under autocast, the float32 entry
    must still hold float32 values (it held bfloat16 ones, 1/9 as 0.111328, for every later float32 pass)."""
    from rdnas.supernet.nb201_ops import _pool_tensors, avg_pool_3x3

    _pool_tensors.cache_clear()
    x = torch.randn(2, 3, 5, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _pool_tensors(3, 5, 7, x.device, torch.float32)
    _, inverse_count = _pool_tensors(3, 5, 7, x.device, torch.float32)
    assert inverse_count.dtype == torch.float32 and inverse_count[0, 0, 2, 3].item() == pytest.approx(1 / 9, rel=1e-7)
    reference = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(avg_pool_3x3(x), reference, rtol=1e-6, atol=1e-6)


def test_avg_pool_3x3_cache_built_under_inference_mode_serves_a_recorded_backward():
    from rdnas.supernet.nb201_ops import _pool_tensors, avg_pool_3x3

    _pool_tensors.cache_clear()
    with torch.inference_mode():
        avg_pool_3x3(torch.randn(2, 3, 5, 5))
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    first, = torch.autograd.grad(avg_pool_3x3(x).square().sum(), x, create_graph=True)
    second, = torch.autograd.grad(first.sum(), x)  # failed: "Inference tensors cannot be saved for backward"
    assert torch.isfinite(second).all()


def test_export_keeps_the_supernet_mode_and_cell_plan_caches_any_encoding():
    from rdnas.supernet.nb201 import _cell_plan

    supernet = small_supernet()
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
    arch, x = (3, 3, 3, 1, 3, 2), torch.randn(2, 3, 8, 8)
    for training in (False, True):
        supernet.train(training)
        exported = supernet.export(arch)
        assert exported.training == training
        if not training:
            torch.testing.assert_close(exported(x), supernet(x, arch), rtol=1e-5, atol=1e-5)
    _cell_plan.cache_clear()
    as_tensor = torch.tensor(arch)
    for _ in range(3):
        assert cell_plan(tuple(as_tensor)) == cell_plan(arch)  # 0-dim tensors hash by identity: one entry only
    assert _cell_plan.cache_info().currsize == 1

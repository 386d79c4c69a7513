"""Zero-cost proxies: each against a plain per-network reference, batched against one-at-a-time, and (where
../shared/data exists) against the published tables."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from rdnas import proxies
from rdnas.proxies import PROXIES, Minibatch, score_space, scoring_supernet
from rdnas.proxies.probes import batchnorm_removed
from rdnas.spaces import nb201
from rdnas.supernet import NB201Network

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"NB201 reference tables not found at {DATA}")

ARCHS = [
    (3, 3, 3, 1, 3, 2),  # the benchmark's best CIFAR-10 cell
    (1, 4, 2, 0, 3, 1),
    (2, 2, 0, 3, 0, 4),
    (3, 2, 3, 1, 0, 0),  # node 1 and 2 feed nothing that reaches the output... except through edge 0->3
    (0, 3, 0, 1, 0, 2),  # node 1 receives nothing: edges out of it are dead
    (1, 1, 1, 1, 1, 1),  # parameter-free cell
    (0, 0, 0, 0, 0, 0),  # disconnected
    (3, 0, 3, 0, 0, 0),  # disconnected
]


def small(**kwargs):
    return scoring_supernet(channels=8, cells_per_stage=2, **kwargs)


def batch(size=16, side=16, classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return Minibatch(torch.randn(size, 3, side, side, generator=generator),
                     torch.randint(0, classes, (size,), generator=generator), classes, "random")


def state_of(network):
    return {name: value.clone() for name, value in network.state_dict().items()}


def assert_same_state(network, before):
    after = network.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), f"{name} changed"


def accumulated_grads(network):
    """Gives every other parameter a random ``.grad`` (as a training step would; the rest keep None) and returns
    [(grad tensor or None, a copy of its values)] per parameter, for :func:`assert_same_grads`."""
    for parameter in list(network.parameters())[::2]:
        parameter.grad = torch.randn_like(parameter)
    return [(p.grad, None if p.grad is None else p.grad.clone()) for p in network.parameters()]


def assert_same_grads(network, grads):
    for name_and_parameter, (grad, value) in zip(network.named_parameters(), grads):
        name, parameter = name_and_parameter
        assert parameter.grad is grad, f"{name}.grad was replaced"
        assert grad is None or torch.equal(grad, value), f"{name}.grad changed"


def float64(supernet, minibatch):
    """The same supernet and minibatch in float64: rounding can no longer flip a ReLU code or move a score, so
    different layouts and batchings of the same computation must agree to ~1e-9."""
    return supernet.double(), Minibatch(minibatch.inputs.double(), minibatch.targets, minibatch.num_classes)


def export(supernet, arch):
    return NB201Network(arch, supernet).train()


def layers_of(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_every_proxy_is_registered_with_a_summary():
    expected = {"synflow", "logsynflow", "snip", "grasp", "fisher", "grad_norm", "jacov", "naswot", "zen",
                "l2_norm", "plain", "flops", "params"}
    assert set(PROXIES) == expected
    assert all(p.summary and p.score.__doc__ for p in PROXIES.values())


@pytest.mark.parametrize("name", sorted(set(PROXIES) - {"flops", "params"}))
def test_disconnected_architectures_score_minus_infinity(name):
    scores = PROXIES[name].score(small(), ARCHS, batch())
    assert scores.dtype == torch.float64 and scores.shape == (len(ARCHS),)
    assert torch.isinf(scores[6:]).all() and (scores[6:] < 0).all()
    assert torch.isfinite(scores[:6]).all(), scores


def test_synflow_batched_equals_the_per_network_reference():
    supernet = small()
    batched = proxies.synflow(supernet, ARCHS[:6], batch(), archs_per_pass=4)
    for arch, value in zip(ARCHS[:6], batched.tolist()):
        network = export(supernet, arch).double().eval()
        reference = proxies.synflow_of_network(network, (3, 16, 16))
        assert value == pytest.approx(reference, rel=1e-12)


def test_synflow_of_network_restores_the_weights():
    network = export(small(), ARCHS[0]).double()
    before = state_of(network)
    proxies.synflow_of_network(network, (3, 16, 16))
    assert_same_state(network, before)
    assert all(p.grad is None for p in network.parameters())


def test_synflow_is_exact_and_finite_at_benchmark_size():
    """The benchmark's largest cell at C=16, N=5 reaches ~1e44 here (1e66 in the published table): far beyond
    float32, exact in float64."""
    scores = proxies.synflow(scoring_supernet(), [(3,) * 6, (1,) * 6], None)
    assert torch.isfinite(scores).all() and scores[0] > 1e38 > scores[1] > 0


def test_synflow_leaves_the_supernet_untouched():
    supernet = small()
    before = state_of(supernet)
    proxies.synflow(supernet, ARCHS, None)
    proxies.logsynflow(supernet, ARCHS[:2], None)
    assert_same_state(supernet, before)


def test_logsynflow_matches_a_plain_reference():
    supernet = small()
    scores = proxies.logsynflow(supernet, ARCHS[:3], batch())
    for arch, value in zip(ARCHS[:3], scores.tolist()):
        network = export(supernet, arch).double().eval()
        for p in network.parameters():
            p.data.abs_()
        with batchnorm_removed(network):
            network(torch.ones(1, 3, 16, 16, dtype=torch.float64)).sum().backward()
        reference = sum(float((m.weight.detach() * torch.log1p(m.weight.grad.abs())).abs().sum())
                        for m in layers_of(network) if m.weight.grad is not None)
        assert value == pytest.approx(reference, rel=1e-10)


def reference_gradient_proxies(network, minibatch):
    """The NAS-Bench-Suite-Zero formulas written out on a stand-alone network with a Python loop."""
    acts = {}
    hooks = [m.register_forward_hook(lambda m, a, out: acts.__setitem__(m, out)) for m in layers_of(network)]
    outputs = network(minibatch.inputs)
    for hook in hooks:
        hook.remove()
    loss = F.cross_entropy(outputs, minibatch.targets)
    tensors = [acts[m] for m in acts]
    weights = [m.weight for m in layers_of(network)]
    grads = torch.autograd.grad(loss, weights + tensors, allow_unused=True)
    weight_grads, act_grads = grads[:len(weights)], grads[len(weights):]
    used = [(w, g) for w, g in zip(weights, weight_grads) if g is not None]
    fisher = 0.0
    for layer, act, grad in zip(acts, tensors, act_grads):
        if grad is None:
            continue
        per_channel = (act * grad).flatten(2).sum(2) if act.dim() > 2 else act * grad
        channel_values = 0.5 * per_channel.double().pow(2).mean(0)
        # NAS-Bench-Suite-Zero broadcasts each channel's value over its weights, then sums everything
        fisher += float(channel_values.view(-1, *[1] * (layer.weight.dim() - 1)).expand(layer.weight.shape).sum())
    return {
        "snip": sum(float((w * g).abs().sum()) for w, g in used),
        "grad_norm": sum(float(g.norm()) for _, g in used),
        "plain": sum(float((w * g).sum()) for w, g in used),
        "fisher": fisher,
    }


def test_loss_gradient_proxies_match_the_stand_alone_networks():
    """float32 scores (channels_last on the CPU) against the float64 formulas on the exported network."""
    supernet, minibatch = small(), batch()
    ours = proxies.loss_gradient_proxies(supernet, ARCHS[:6], minibatch)
    exact = Minibatch(minibatch.inputs.double(), minibatch.targets, minibatch.num_classes)
    for k, arch in enumerate(ARCHS[:6]):
        reference = reference_gradient_proxies(export(supernet, arch).double(), exact)
        for name, value in reference.items():
            # float32 through training-mode BN on 16 images: up to 5e-4 relative from float64 (the float32
            # stand-alone network is as far). plain sums signed terms: its error scales with sum |w * g| (= snip).
            scale = reference["snip"] if name == "plain" else 0.0
            assert float(ours[name][k]) == pytest.approx(value, rel=1e-3, abs=1e-9 + 1e-4 * scale), (arch, name)


def test_loss_gradient_proxies_share_one_pass(monkeypatch):
    from rdnas.proxies import gradient

    calls = []
    original = gradient._one_architecture
    monkeypatch.setattr(gradient, "_one_architecture", lambda *a: calls.append(a[-1]) or original(*a))
    supernet, minibatch = small(), batch()
    names = ["snip", "params", "fisher", "grad_norm", "plain"]
    table = score_space(names, minibatch, archs=ARCHS[:3], supernet=supernet, progress=False)
    assert calls == [("snip", "fisher", "grad_norm", "plain")] * 3  # one pass per cell for the four together
    calls.clear()
    order = [nb201.from_string(a) for a in table.archs]
    for name in ("snip", "fisher"):  # alone: a pass computes only its own proxy (no fisher hooks for snip)
        np.testing.assert_array_equal(PROXIES[name].score(supernet, order, minibatch).numpy(), table.column(name))
    assert calls == [("snip",)] * 3 + [("fisher",)] * 3
    with pytest.raises(ValueError, match="loss_gradient_proxies: names must be a non-empty subset"):
        proxies.loss_gradient_proxies(supernet, ARCHS[:1], minibatch, ("snip", "grasp"))


def test_grasp_matches_the_two_pass_reference():
    supernet, minibatch = float64(small(), batch())
    ours = proxies.grasp(supernet, ARCHS[:3], minibatch)
    for arch, value in zip(ARCHS[:3], ours.tolist()):
        network = export(supernet, arch)
        weights = [m.weight for m in layers_of(network)]
        loss = F.cross_entropy(network(minibatch.inputs), minibatch.targets)
        first = torch.autograd.grad(loss, weights, allow_unused=True)
        loss = F.cross_entropy(network(minibatch.inputs), minibatch.targets)
        second = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        inner = sum((a.detach() * b).sum() for a, b in zip(first, second) if a is not None)
        inner.backward()
        reference = -sum(float((w * w.grad).sum()) for w in weights if w.grad is not None)
        assert value == pytest.approx(reference, rel=1e-9)


def test_naswot_batched_equals_one_at_a_time_and_the_reference():
    supernet, minibatch = float64(small(), batch())
    together = proxies.naswot(supernet, ARCHS, minibatch, archs_per_pass=5)
    alone = torch.cat([proxies.naswot(supernet, [a], minibatch) for a in ARCHS])
    assert torch.allclose(together, alone, rtol=1e-9)
    for arch, value in zip(ARCHS[:6], together.tolist()):
        network = export(supernet, arch)
        codes = []
        hooks = [m.register_forward_pre_hook(lambda m, a: codes.append((a[0] > 0).flatten(1).double()))
                 for m in network.modules() if isinstance(m, nn.ReLU)]
        with torch.no_grad():
            network(minibatch.inputs, edges="all")
        for hook in hooks:
            hook.remove()
        kernel = sum(c @ c.T + (1 - c) @ (1 - c).T for c in codes)
        assert value == pytest.approx(float(torch.linalg.slogdet(kernel)[1]), rel=1e-9)


def test_zen_batched_equals_one_at_a_time():
    supernet, minibatch = small(), batch()
    together = proxies.zen(supernet, ARCHS, minibatch, archs_per_pass=4)
    alone = torch.cat([proxies.zen(supernet, [a], minibatch) for a in ARCHS])
    assert torch.allclose(together, alone, rtol=1e-5)


def test_jacov_matches_the_reference_formula():
    supernet, minibatch = float64(small(), batch())
    ours = proxies.jacov(supernet, ARCHS[:3], minibatch)
    for arch, value in zip(ARCHS[:3], ours.tolist()):
        x = minibatch.inputs.clone().requires_grad_(True)
        export(supernet, arch)(x).sum().backward()
        eigenvalues = np.linalg.eigvalsh(np.corrcoef(x.grad.reshape(len(x), -1).double().numpy()))
        reference = -np.sum(np.log(eigenvalues + 1e-5) + 1 / (eigenvalues + 1e-5))
        assert value == pytest.approx(reference, rel=1e-9)


def test_cost_proxies_match_the_exported_networks():
    supernet = small()
    params, l2 = proxies.params(supernet, ARCHS), proxies.l2_norm(supernet, ARCHS)
    for k, arch in enumerate(ARCHS):
        network = export(supernet, arch)
        assert params[k] == sum(p.numel() for p in network.parameters())
        if k < 6:
            assert float(l2[k]) == pytest.approx(sum(float(m.weight.double().norm()) for m in layers_of(network)))


@needs_data
def test_params_and_flops_equal_the_benchmark_table_for_every_architecture():
    with open(DATA / "nb201_gt.csv") as handle:
        rows = list(csv.DictReader(handle))
    archs = [nb201.from_string(r["arch_str"]) for r in rows]
    supernet = scoring_supernet()
    params, flops = proxies.params(supernet, archs), proxies.flops(supernet, archs)
    assert np.abs(params.numpy() / 1e6 - np.array([float(r["params_M_cifar10"]) for r in rows])).max() < 5e-7
    assert np.abs(flops.numpy() / 1e6 - np.array([float(r["flops_M_cifar10"]) for r in rows])).max() < 5e-6


def test_proxies_restore_the_training_mode_and_leave_no_gradients():
    supernet = small()
    supernet.eval()
    for name in ("snip", "grasp", "jacov"):
        PROXIES[name].score(supernet, ARCHS[:2], batch())
    assert not supernet.training
    assert all(p.grad is None for p in supernet.parameters())


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_scoring_in_place_leaves_the_supernet_as_it_was(name, monkeypatch):
    """On a GPU the passes run on the supernet itself (no copy): stand in for that on the CPU by making the copy
    the identity, and check every parameter and buffer (BN running statistics, batch counts), the mode, and the
    gradients a training step had accumulated (the same tensors, unchanged; snip's backward used to drop them)."""
    from rdnas.proxies import activation, gradient
    in_place = lambda supernet, minibatch, memory_format=None: (supernet, minibatch)  # noqa: E731
    monkeypatch.setattr(gradient, "scoring_copy_on_cpu", in_place)
    monkeypatch.setattr(activation, "scoring_copy_on_cpu", in_place)
    supernet = small()
    with torch.no_grad():  # running statistics a training-mode pass would visibly move
        for module in supernet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    supernet.eval()
    grads = accumulated_grads(supernet)
    before = state_of(supernet)
    PROXIES[name].score(supernet, ARCHS[:3], batch())
    assert_same_state(supernet, before)
    assert not supernet.training
    assert_same_grads(supernet, grads)


def test_network_state_restored_puts_back_buffers_and_mode_when_the_block_raises():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    before = state_of(network)
    with pytest.raises(RuntimeError, match="inside"):
        with proxies.base.network_state_restored(network, training=True):
            assert network.training
            network(torch.randn(2, 3, 8, 8))
            assert not torch.equal(network[1].running_mean, before["1.running_mean"])
            raise RuntimeError("inside")
    assert_same_state(network, before)
    assert not network.training


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(PROXIES))
def test_scoring_on_cuda_leaves_the_supernet_as_it_was(name):
    supernet = small().cuda().eval()
    grads = accumulated_grads(supernet)
    before = state_of(supernet)
    PROXIES[name].score(supernet, ARCHS[:3], batch().to("cuda"))
    assert_same_state(supernet, before)
    assert not supernet.training
    assert_same_grads(supernet, grads)


def test_scoring_supernet_leaves_every_global_generator_as_it_was(monkeypatch):
    """It seeds the CPU generator for its own init and puts its state back; torch.manual_seed would also reseed
    every CUDA generator (and nothing restored those)."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    state = torch.random.get_rng_state()
    scoring_supernet(seed=7)
    assert torch.equal(torch.random.get_rng_state(), state) and reseeded == []


def test_bad_input_names_the_proxy_and_argument():
    with pytest.raises(ValueError, match="unknown proxy 'synflo'.*synflow"):
        proxies.get_proxy("synflo")
    with pytest.raises(ValueError, match="Minibatch: targets must be a LongTensor"):
        Minibatch(torch.zeros(4, 3, 8, 8), torch.zeros(3, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="Minibatch: targets must lie in 0..9"):
        Minibatch(torch.zeros(2, 3, 8, 8), torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match="scoring_supernet: init must be one of"):
        scoring_supernet(init="xavier")
    with pytest.raises(ValueError, match="invalid architecture"):
        proxies.synflow(small(), [(5, 0, 0, 0, 0, 0)], None)


def published(name):
    with open(DATA / name) as handle:
        return list(csv.DictReader(handle))


def cifar10_minibatch():
    return proxies.load_minibatch(f"npz:{DATA / 'cifar_minibatches' / 'freerea_cifar10_train_minibatches.npz'}")


def rank_last(values):
    return np.where(np.isfinite(values), values, -1e300)


@needs_data
@pytest.mark.parametrize("name, column, count", [("synflow", "synflow_cifar10", 300), ("naswot", "naswot_cifar10", 60)])
def test_sampled_architectures_rank_like_the_published_table(name, column, count):
    """CI-sized version of the full-space check (benchmarks/validate_proxies.py runs all 15,625)."""
    rows = published("nb201_zc_proxies.csv")
    chosen = [rows[i] for i in np.random.default_rng(0).choice(len(rows), count, replace=False)]
    archs = [nb201.from_string(r["arch_str"]) for r in chosen]
    ours = PROXIES[name].score(scoring_supernet(init="kaiming_normal"), archs, cifar10_minibatch()).numpy()
    reference = np.array([float(r[column]) for r in chosen])
    assert spearmanr(rank_last(ours), rank_last(reference))[0] >= 0.95


@pytest.mark.parametrize("name", ["synflow", "snip", "grasp", "naswot", "zen", "l2_norm"])
def test_scores_follow_the_weights_after_a_conversion_or_new_data(name):
    """The caches of scores and derived copies (channels_last, float64 linearised, ...) are keyed by the parameters'
    state: after ``supernet.double()`` or ``p.data = ...`` (neither bumps a version counter) a proxy scores the new
    weights, exactly as a supernet that never held the old ones."""
    archs, minibatch = ARCHS[:3], batch()
    supernet = small()
    PROXIES[name].score(supernet, archs, minibatch)  # fills the caches with float32 results
    converted, exact = float64(supernet, minibatch)
    fresh, _ = float64(small(), minibatch)
    before = PROXIES[name].score(converted, archs, exact)
    torch.testing.assert_close(before, PROXIES[name].score(fresh, archs, exact), rtol=0, atol=0)
    if name == "zen":
        return  # zen re-draws every weight from N(0, 1): new data cannot change its scores
    for weight in (p for p in converted.parameters() if p.dim() > 1):
        weight.data = weight.data * 1.5
    assert not torch.equal(before, PROXIES[name].score(converted, archs, exact))


@pytest.mark.parametrize("name", ["snip", "grasp", "jacov"])
def test_scores_follow_an_in_place_write_to_the_minibatch(name):
    """The per-plan score caches are keyed by the minibatch's tensors' state too: after new images and labels are
    written into the same Minibatch in place, a proxy scores the new data, exactly as a fresh Minibatch holding it."""
    archs, minibatch, supernet = ARCHS[:3], batch(), small()
    before = PROXIES[name].score(supernet, archs, minibatch)  # fills the per-plan cache
    with torch.no_grad():
        minibatch.inputs.mul_(-2.0)
        minibatch.targets.copy_(minibatch.targets.flip(0))
    after = PROXIES[name].score(supernet, archs, minibatch)
    fresh = Minibatch(minibatch.inputs.clone(), minibatch.targets.clone(), minibatch.num_classes)
    torch.testing.assert_close(after, PROXIES[name].score(supernet, archs, fresh), rtol=0, atol=0)
    assert not torch.equal(before, after)


def test_cells_that_differ_only_in_dead_edges_are_scored_once(monkeypatch):
    from rdnas.proxies import gradient

    same_network = [(3, 2, 3, 1, 0, 0), (2, 4, 1, 1, 0, 0), (1, 1, 1, 1, 0, 0)]  # only edge 0->3 (skip) is live
    calls = []
    original = gradient._one_architecture
    monkeypatch.setattr(gradient, "_one_architecture", lambda *a: calls.append(a[1]) or original(*a))
    supernet, minibatch = small(), batch()
    snip = proxies.snip(supernet, same_network, minibatch)
    assert len(calls) == 1 and len(set(snip.tolist())) == 1
    synflow = proxies.synflow(supernet, same_network, None)
    assert len(set(synflow.tolist())) == 1
    # naswot sees every edge, as the benchmark's network computes them: these differ.
    assert len(set(proxies.naswot(supernet, same_network, minibatch).tolist())) == 3


@needs_data
@pytest.mark.slow
def test_synflow_over_the_whole_space_ranks_like_the_published_table():
    """All 15,625 cells (about 6 minutes on 2 CPU cores): Spearman rho >= 0.95 against synflow_cifar10, every
    connected cell finite and positive."""
    rows = published("nb201_zc_proxies.csv")
    archs = [nb201.from_string(r["arch_str"]) for r in rows]
    ours = proxies.synflow(scoring_supernet(init="kaiming_normal"), archs, None).numpy()
    connected = np.array([nb201.is_connected(a) for a in archs])
    assert np.isfinite(ours[connected]).all() and (ours[connected] > 0).all()
    assert np.isneginf(ours[~connected]).all()
    reference = np.array([float(r["synflow_cifar10"]) for r in rows])
    reference[reference == 0] = -np.inf  # the published table's value for disconnected cells
    assert spearmanr(rank_last(ours), rank_last(reference))[0] >= 0.95


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(PROXIES))
def test_proxies_on_cuda_agree_with_the_cpu(name):
    supernet, minibatch = small(), batch()
    cpu = PROXIES[name].score(supernet, ARCHS, minibatch)
    cuda = PROXIES[name].score(supernet.cuda(), ARCHS, minibatch.to("cuda"))
    assert cuda.device.type == "cpu"
    torch.testing.assert_close(cuda, cpu, rtol=1e-3, atol=1e-6)


@needs_data
def test_suite_zero_subset_sample_ranks_like_the_published_table():
    """CI-sized version of the Suite-Zero comparison (benchmarks/validate_proxies.py scores all 724 CIFAR-10
    cells): 40 cells, PyTorch's default initialisation as NASLib's, Spearman rho >= 0.90 per proxy."""
    rows = [r for r in published("nb201_zc_suite_zero_subset.csv") if r["dataset"] == "cifar10"]
    chosen = [rows[i] for i in np.random.default_rng(0).choice(len(rows), 40, replace=False)]
    archs = [nb201.from_string(r["arch_str"]) for r in chosen]
    supernet, minibatch = scoring_supernet(init="pytorch"), cifar10_minibatch()
    for name, column in [("snip", "snip"), ("grad_norm", "grad_norm"), ("fisher", "fisher"), ("l2_norm", "l2_norm"),
                         ("flops", "flops_naslib"), ("params", "params")]:
        ours = PROXIES[name].score(supernet, archs, minibatch).numpy()
        reference = np.array([float(r[column]) for r in chosen])
        assert spearmanr(rank_last(ours), rank_last(reference))[0] >= 0.90, name

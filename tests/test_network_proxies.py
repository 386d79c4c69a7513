"""Zero-cost proxies of plain networks (rdnas.proxies.network) and every space through export(arch): each proxy on
ResNet48 against its formula written out on the exported network, the plain-network path against NB201's fused
path, scoring_supernet and score_space for a space that cannot be enumerated."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rdnas.proxies import (NETWORK_PROXIES, PROXIES, Minibatch, ScoreTable, merge_tables, score_network,
                           score_space, scoring_supernet)
from rdnas.proxies import network as network_proxies
from rdnas.proxies.activation import gaussian_copy
from rdnas.spaces import get_space

RESNET = dict(space="resnet48", resnet_stem="small", width_divisor=8)
SPACE = get_space("resnet48")


def resnet_supernet(dtype=torch.float64, **kwargs):
    return scoring_supernet(num_classes=10, in_channels=1, **RESNET, **kwargs).to(dtype)


def resnet_archs(count=3, seed=0):
    return torch.cat([SPACE.smallest().unsqueeze(0), SPACE.sample(count - 1, torch.Generator().manual_seed(seed))])


def minibatch(channels=1, dtype=torch.float64, size=8, side=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return Minibatch(torch.randn(size, channels, side, side, generator=generator).to(dtype),
                     torch.randint(0, 10, (size,), generator=generator), 10, "random")


def layers_of(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def walk(network, x):
    """ResNet48Network's forward written out: logits, and what every ReLU, BN and layer saw (in call order)."""
    seen = {"relu_in": [], "relu_out": [], "bn_in": [], "macs": []}

    def conv(module, t):
        y = module(t)
        seen["macs"].append(y[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        return y

    def bn(module, t):
        seen["bn_in"].append(t)
        return module(t)

    def relu(t):
        seen["relu_in"].append(t)
        seen["relu_out"].append(F.relu(t))
        return seen["relu_out"][-1]

    out = network.stem_pool(relu(bn(network.stem_bn, conv(network.stem_conv, x))))
    for blocks in network.stages:
        for block in blocks:
            y = bn(block.bn2, conv(block.conv2, relu(bn(block.bn1, conv(block.conv1, out)))))
            shortcut = out if block.shortcut_conv is None else bn(block.shortcut_bn, conv(block.shortcut_conv, out))
            out = relu(y + shortcut)
    classifier = network.classifier
    seen["macs"].append(classifier.in_features * classifier.out_features + classifier.out_features)
    return classifier(out.mean(dim=(2, 3))), seen


# ------------------------------------------------------------------------------------------------ the formulas


def synflow_reference(network, log_gradients=False):
    network = network.double()
    for p in network.parameters():
        p.data.abs_()
    hooks = [m.register_forward_hook(lambda m, a, out: a[0]) for m in network.modules()
             if isinstance(m, nn.BatchNorm2d)]
    network(torch.ones(1, 1, 16, 16, dtype=torch.float64)).sum().backward()
    for hook in hooks:
        hook.remove()
    return sum(float((m.weight.detach() * (torch.log1p(m.weight.grad.abs()) if log_gradients else m.weight.grad))
                     .abs().sum()) for m in layers_of(network))


def gradient_references(network, batch):
    network.train()
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, a, out: outputs.__setitem__(m, out)) for m in layers_of(network)]
    loss = F.cross_entropy(network(batch.inputs), batch.targets)
    for hook in hooks:
        hook.remove()
    layers = list(outputs)
    weights = [m.weight for m in layers]
    grads = torch.autograd.grad(loss, weights + [outputs[m] for m in layers])
    weight_grads, output_grads = grads[:len(layers)], grads[len(layers):]
    fisher = 0.0
    for layer, grad in zip(layers, output_grads):
        product = outputs[layer] * grad
        per_channel = product.flatten(2).sum(2) if product.dim() > 2 else product
        fisher += float((0.5 * per_channel.detach().pow(2).mean(0)).sum()) * layer.weight[0].numel()
    weights = [w.detach() for w in weights]
    return {"snip": sum(float((w * g).abs().sum()) for w, g in zip(weights, weight_grads)),
            "grad_norm": sum(float(g.norm()) for g in weight_grads),
            "plain": sum(float((w * g).sum()) for w, g in zip(weights, weight_grads)),
            "fisher": fisher}


def grasp_reference(network, batch):
    network.train()
    weights = [m.weight for m in layers_of(network)]
    first = torch.autograd.grad(F.cross_entropy(network(batch.inputs), batch.targets), weights)
    second = torch.autograd.grad(F.cross_entropy(network(batch.inputs), batch.targets), weights, create_graph=True)
    hessian_gradient = torch.autograd.grad(sum((a * b).sum() for a, b in zip(first, second)), weights)
    return -sum(float((w.detach() * hg).sum()) for w, hg in zip(weights, hessian_gradient))


def jacov_reference(network, batch):
    x = batch.inputs.clone().requires_grad_(True)
    network.train()(x).sum().backward()
    eigenvalues = np.linalg.eigvalsh(np.corrcoef(x.grad.reshape(len(x), -1).numpy()))
    return float(-np.sum(np.log(eigenvalues + 1e-5) + 1 / (eigenvalues + 1e-5)))


def naswot_reference(network, batch):
    with torch.no_grad():
        logits, seen = walk(network.train(), batch.inputs)
        assert torch.allclose(logits, network(batch.inputs), rtol=1e-12, atol=1e-12)  # the walk is the forward
    codes = [(x > 0).flatten(1).double() for x in seen["relu_in"]]
    return float(torch.linalg.slogdet(sum(c @ c.T + (1 - c) @ (1 - c).T for c in codes))[1])


def zen_reference(supernet, arch, shape, gamma=1e-2, seed=0):
    gaussian = supernet.__class__(**supernet.config).to(next(supernet.parameters()).dtype)
    gaussian.load_state_dict(supernet.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in gaussian.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
    network = gaussian.export(arch).train()
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(shape, generator=generator).double()  # drawn in float32, mixed in the network's dtype
    x_mixed = x + gamma * torch.randn(shape, generator=generator).double()
    with torch.no_grad():
        _, first = walk(network, x)
        _, mixed = walk(network, x_mixed)
    change = (first["relu_out"][-1] - mixed["relu_out"][-1]).abs().flatten(1).sum(1).mean()
    log_bn = 0.0
    for a, b in zip(first["bn_in"], mixed["bn_in"]):
        running = 0.9 * (0.9 + 0.1 * a.var(dim=(0, 2, 3))) + 0.1 * b.var(dim=(0, 2, 3))
        log_bn += 0.5 * float(running.mean().log())
    return float(change.log()) + log_bn


# ------------------------------------------------------------------------------------------------------ tests


def test_every_registered_proxy_has_a_plain_network_version():
    assert set(NETWORK_PROXIES) == set(PROXIES)
    assert all(function.__doc__ for function in NETWORK_PROXIES.values())


def test_each_proxy_on_resnet48_equals_its_formula_on_the_exported_network():
    supernet, batch, archs = resnet_supernet(), minibatch(), resnet_archs()
    before = {name: value.clone() for name, value in supernet.state_dict().items()}
    scores = {name: PROXIES[name].score(supernet, archs, batch) for name in PROXIES}
    for k, arch in enumerate(archs):
        exported = lambda: supernet.export(arch)  # noqa: E731  a fresh copy for every reference
        gradients = gradient_references(exported(), batch)
        cost = SPACE.cost(arch.unsqueeze(0), image_size=16, num_classes=10, in_channels=1, resnet_stem="small",
                          width_divisor=8)
        network = exported()
        reference = {
            "synflow": synflow_reference(exported()),
            "logsynflow": synflow_reference(exported(), log_gradients=True),
            **gradients,
            "grasp": grasp_reference(exported(), batch),
            "jacov": jacov_reference(exported(), batch),
            "naswot": naswot_reference(exported(), batch),
            "zen": zen_reference(supernet, arch, tuple(batch.inputs.shape)),
            "l2_norm": sum(float(m.weight.detach().norm()) for m in layers_of(network)),
            # the space's cost model, in the competition's conventions (tested against networks in test_resnet48)
            "params": float(cost["params"][0]),
            "flops": float(cost["flops"][0]),
        }
        assert cost["trainable_params"][0] == sum(p.numel() for p in network.parameters())
        macs = float(sum(walk(network, torch.zeros(1, 1, 16, 16, dtype=torch.float64))[1]["macs"]))
        assert macs < reference["flops"] < 1.05 * macs  # the cost model adds BN and pooling to the MACs
        assert score_network("flops", network, batch) == macs  # a plain network: its measured MACs
        for name, value in reference.items():
            # float64 throughout; plain is a signed sum whose rounding scales with snip's
            scale = reference["snip"] if name == "plain" else 0.0
            assert float(scores[name][k]) == pytest.approx(value, rel=1e-9, abs=1e-12 * (1 + scale)), (k, name)
    after = supernet.state_dict()
    assert all(torch.equal(after[name], value) for name, value in before.items())


def test_score_network_leaves_the_network_as_it_was_and_names_bad_input():
    network = resnet_supernet().export(resnet_archs(1)[0]).eval()
    batch = minibatch()
    network.classifier.weight.grad = torch.ones_like(network.classifier.weight)
    before = {name: value.clone() for name, value in network.state_dict().items()}
    for name in NETWORK_PROXIES:
        score_network(name, network, batch)
    assert not network.training and torch.equal(network.classifier.weight.grad,
                                                torch.ones_like(network.classifier.weight))
    assert all(torch.equal(network.state_dict()[name], value) for name, value in before.items())
    with pytest.raises(ValueError, match="score_network: unknown proxy 'synflo'"):
        score_network("synflo", network, batch)
    with pytest.raises(ValueError, match="rdnas.proxies.snip: this proxy uses images; pass a minibatch"):
        PROXIES["snip"].score(resnet_supernet(), resnet_archs(1), None)
    with pytest.raises(ValueError, match=r"rdnas.proxies.synflow: archs must be resnet48 architectures, "
                                         r"LongTensor\[K, 52\]"):
        PROXIES["synflow"].score(resnet_supernet(), torch.zeros(1, 6, dtype=torch.long), None)
    with pytest.raises(ValueError, match="zen_network: zen reads the output of the network's last ReLU"):
        score_network("zen", nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), batch)


def test_data_free_proxies_without_a_minibatch_use_the_default_shape():
    supernet, archs = resnet_supernet(torch.float32), resnet_archs(2)
    shaped = minibatch(dtype=torch.float32, size=64, side=32)
    for name in ("synflow", "flops", "params", "l2_norm"):
        assert torch.equal(PROXIES[name].score(supernet, archs), PROXIES[name].score(supernet, archs, shaped))


# NB201: the plain-network path on NB201Network against the fused path. Every edge of these cells is live, where
# the definitions agree; the last cell's node 1 receives nothing, so its two conv edges out of node 1 are dead:
# the plain network skips them, while the fused naswot and zen run them (edges="all", as the benchmark's network)
# and the fused flops counts them (NB201's table convention). Every other proxy agrees there too.
LIVE_CELLS = [(3, 3, 3, 1, 3, 2), (1, 4, 2, 0, 3, 1), (2, 2, 4, 3, 1, 4)]
DEAD_EDGE_CELL = (0, 3, 3, 1, 3, 2)
DIFFER_WITH_DEAD_EDGES = {"naswot", "zen", "flops"}


@pytest.mark.parametrize("cell", LIVE_CELLS + [DEAD_EDGE_CELL])
def test_the_plain_network_path_equals_nb201s_fused_path(cell):
    supernet = scoring_supernet(channels=8, cells_per_stage=1).double()
    batch = minibatch(channels=3, size=8)
    for name in PROXIES:
        model, data = supernet, batch
        if name == "flops":  # the fused MAC probe runs in float32
            model, data = scoring_supernet(channels=8, cells_per_stage=1), minibatch(channels=3, dtype=torch.float32)
        fused = float(PROXIES[name].score(model, [cell], data)[0])
        if name == "zen":
            plain = score_network(name, gaussian_copy(model, 0).export(cell), data, gaussian_init=False)
        else:
            plain = score_network(name, model.export(cell), data)
        scale = abs(float(PROXIES["snip"].score(model, [cell], data)[0])) if name == "plain" else 0.0
        agree = plain == pytest.approx(fused, rel=1e-9, abs=1e-12 * (1 + scale))
        assert agree or (cell == DEAD_EDGE_CELL and name in DIFFER_WITH_DEAD_EDGES), (name, plain, fused)
        if cell == DEAD_EDGE_CELL and name in DIFFER_WITH_DEAD_EDGES:
            assert not agree, name


def test_nb201_keeps_its_fused_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("NB201 went through export")

    monkeypatch.setattr(network_proxies, "score_exported", refuse)
    monkeypatch.setattr(network_proxies, "loss_gradient_exported", refuse)
    supernet, batch = scoring_supernet(channels=8, cells_per_stage=1), minibatch(channels=3, dtype=torch.float32)
    for name in PROXIES:
        assert PROXIES[name].score(supernet, LIVE_CELLS[:1], batch).shape == (1,)


def test_scoring_supernet_builds_any_space_seeded_and_leaves_the_generator_alone():
    state = torch.random.get_rng_state()
    for init in ("pytorch", "kaiming_normal"):
        first, second = (scoring_supernet(10, 1, init=init, seed=3, **RESNET) for _ in range(2))
        assert first.space is SPACE and first.config["width_divisor"] == 8
        assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    kaiming = scoring_supernet(10, 1, init="kaiming_normal", seed=3, **RESNET)
    assert float(kaiming.classifier.weight.std()) == pytest.approx(0.01, rel=0.1)
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="scoring_supernet: .*the resnet48 network takes the options.*got channels"):
        scoring_supernet(10, 1, channels=8, space="resnet48")


def test_score_space_on_resnet48_writes_resumes_shards_and_needs_archs(tmp_path):
    archs = SPACE.sample(6, torch.Generator().manual_seed(1))
    batch = minibatch(dtype=torch.float32)
    kwargs = dict(space="resnet48", archs_per_chunk=2, progress=False, resnet_stem="small", width_divisor=8)
    names = ["params", "snip", "naswot"]
    full = score_space(names, batch, archs=archs, out=tmp_path / "full.csv", **kwargs)
    assert full.indices.tolist() == list(range(6)) and full.archs == [SPACE.to_string(a) for a in archs]
    supernet = scoring_supernet(10, 1, **RESNET)
    np.testing.assert_array_equal(full.column("snip"), PROXIES["snip"].score(supernet, archs, batch).numpy())
    # killed after two chunks, in the middle of a line: the same command finishes the same file
    lines = (tmp_path / "full.csv").read_text().splitlines(keepends=True)
    (tmp_path / "resumed.csv").write_text("".join(lines[:5]) + lines[5][:7])
    (tmp_path / "resumed.csv.meta.json").write_text((tmp_path / "full.csv.meta.json").read_text())
    resumed = score_space(names, batch, archs=[SPACE.to_string(a) for a in archs], out=tmp_path / "resumed.csv",
                          **kwargs)
    assert resumed.info["already_present"] == 4 and resumed.info["written"] == 2
    assert (tmp_path / "resumed.csv").read_text() == (tmp_path / "full.csv").read_text()
    shards = [score_space(names, batch, archs=archs, out=tmp_path / "shard{shard}.csv", shard=(i, 2), **kwargs)
              for i in range(2)]
    assert [len(s) for s in shards] == [4, 2]
    merged = merge_tables([tmp_path / "shard0.csv", tmp_path / "shard1.csv"], expect_complete=True,
                          expected_indices=range(6))
    assert merged.identical_to(full)
    # complete = the run's 6 codes, as the sidecars record them (a ResNet48 space cannot be enumerated)
    assert merge_tables([tmp_path / "shard0.csv", tmp_path / "shard1.csv"], expect_complete=True).identical_to(full)
    with pytest.raises(ValueError, match="misses 2 of the run's 6 resnet48 architectures"):
        merge_tables([tmp_path / "shard0.csv"], expect_complete=True)
    with pytest.raises(ValueError, match="score_space: the resnet48 space .* cannot be enumerated; pass archs"):
        score_space("params", batch, **kwargs)
    with pytest.raises(ValueError, match="score_space: archs lists an architecture more than once"):
        score_space("params", batch, archs=torch.cat([archs, archs[:1]]), **kwargs)
    with pytest.raises(ValueError, match=r"score_space: archs: .*"):
        score_space("params", batch, archs=["123"], **kwargs)
    with pytest.raises(ValueError, match="score_space: .*was written with archs.count=6"):
        score_space(names, batch, archs=archs[:5], out=tmp_path / "full.csv", **kwargs)


def test_rdnas_proxies_scores_resnet48_codes_from_a_file(tmp_path, capsys):
    from rdnas.cli import main

    codes = [SPACE.to_string(a) for a in SPACE.sample(2, torch.Generator().manual_seed(2))]
    (tmp_path / "codes.txt").write_text("\n".join(codes) + "\n")
    common = ["proxies", "--space", "resnet48", "--proxy", "params", "--data", "random:1,16,16,10", "--quiet",
              "--out", str(tmp_path / "table.csv")]
    assert main(common + ["--archs-file", str(tmp_path / "codes.txt"), "--resnet-stem", "small",
                          "--width-divisor", "8"]) == 0
    assert ScoreTable.read(tmp_path / "table.csv").archs == codes
    assert main(common) == 1 and "cannot be enumerated; pass archs" in capsys.readouterr().err

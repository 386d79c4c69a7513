"""The ResNet48 search space (CVPR 2022 NAS Track 1): codes, validation, sampling, cost model; its elastic
supernet: slices equal the exported networks, K-subnet forwards, BN statistics."""

import copy
import itertools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rdnas.spaces import InvalidArchitecture, get_space, resnet48
from rdnas.supernet import BNStatistics, ResNet48Network, ResNet48Supernet, build_supernet, supernet_spec
from rdnas.supernet.resnet48 import subnet_plan

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "resnet48_track1"
TRACK1_TEST = DATA / "CVPR_2022_NAS_Track1_test.json"
needs_track1 = pytest.mark.skipif(not TRACK1_TEST.exists(),
                                  reason=f"the competition's 45,000 test codes are not at {TRACK1_TEST}")

SPACE = resnet48.SPACE
LARGEST = "1558511111111111111111111111111111111111111111111111"
SMALLEST = "1222277777000000777700000077770000000000007777000000"
# depths 3, 2, 4, 2; stem 2; stage widths 2, 5, 1, 7 (a hand-made mixed code)
MIXED = "1" + "3242" + "2" + "1232220000" + "5555000000" + "1111211100000000" + "7737000000"
SMALL = dict(resnet_stem="small", width_divisor=8)


def track1_codes() -> list:
    return [entry["arch"] for entry in json.loads(TRACK1_TEST.read_text()).values()]


# -- the space ------------------------------------------------------------------------------------------------------
def test_the_space_is_registered_with_its_width_and_exact_size():
    assert get_space("resnet48") is SPACE
    assert SPACE.width == 52 and not SPACE.enumerable
    middle = sum(7 ** sum(d) for d in itertools.product(range(2, 6), range(2, 6), range(2, 9), range(2, 6)))
    assert resnet48.PAPER_SIZE == middle and f"{middle:.2e}" == "5.06e+19"  # the paper's count
    assert SPACE.size == middle * 7**4 and isinstance(SPACE.size, int)
    with pytest.raises(NotImplementedError, match="cannot be enumerated"):
        SPACE.enumerate()


def test_width_table_is_the_competition_table():
    assert resnet48.WIDTH_TABLE == {
        64: (64, 64, 56, 56, 48, 48, 48), 128: (128, 120, 112, 112, 104, 96, 88),
        256: (256, 240, 232, 216, 208, 192, 176), 512: (512, 488, 464, 432, 408, 384, 360)}
    assert resnet48.make_divisible(10) == 16  # 8 would lose more than 10 %
    assert all(c % 8 == 0 for row in resnet48.WIDTH_TABLE.values() for c in row)


def test_largest_and_smallest_codes():
    assert SPACE.to_string(SPACE.largest()) == LARGEST
    assert SPACE.to_string(SPACE.smallest()) == SMALLEST


def test_decode_gives_depths_and_channel_widths():
    arch = resnet48.decode(MIXED)
    assert arch.code == MIXED and arch.depths == (3, 2, 4, 2) and arch.stem == 64
    assert arch.blocks == (((64, 64), (56, 64), (64, 64)), ((104, 104), (104, 104)),
                           ((256, 256), (256, 256), (240, 256), (256, 256)), ((360, 360), (464, 360)))
    assert arch.stage_widths == (64, 104, 256, 360)
    assert resnet48.decode(MIXED, width_divisor=8).blocks[3] == ((45, 45), (58, 45))
    with pytest.raises(ValueError, match="width_divisor must be one of"):
        resnet48.decode(MIXED, width_divisor=3)


def test_string_round_trip_and_accepted_inputs():
    rows = SPACE.from_string(MIXED)
    assert rows.dtype == torch.long and rows.shape == (52,) and SPACE.to_string(rows) == MIXED
    assert SPACE.key(rows) == MIXED
    expected = torch.stack([SPACE.largest(), rows])
    assert torch.equal(SPACE.validate([LARGEST, MIXED]), expected)
    assert torch.equal(SPACE.validate(expected), expected)
    assert torch.equal(SPACE.validate(expected.tolist()), expected)
    assert torch.equal(SPACE.validate(rows.int()), rows.unsqueeze(0))
    assert SPACE.validate([]).shape == (0, 52)
    with pytest.raises(InvalidArchitecture, match="integer tensor"):
        SPACE.validate(rows.float())
    with pytest.raises(InvalidArchitecture, match=r"LongTensor\[K, 52\]"):
        SPACE.validate(rows.view(1, 1, 52))


def _swap(code: str, position: int, digits: str) -> str:
    return code[:position] + digits + code[position + len(digits):]


@pytest.mark.parametrize("code, position, rule", [
    (LARGEST[:51], 51, "a code has 52 digits, got 51"),
    (LARGEST + "1", 52, "a code has 52 digits, got 53"),
    (_swap(LARGEST, 9, "x"), 9, "every position holds a digit 0..9, got 'x'"),
    (_swap(LARGEST, 0, "2"), 0, "the input-size digit must be 1 \\(224 x 224\\), got 2"),
    (_swap(LARGEST, 1, "6"), 1, "stage 1's depth must be in 2..5, got 6"),
    (_swap(LARGEST, 3, "9"), 3, "stage 3's depth must be in 2..8, got 9"),
    (_swap(LARGEST, 4, "1"), 4, "stage 4's depth must be in 2..5, got 1"),
    (_swap(LARGEST, 5, "8"), 5, "the stem width code must be in 1..7, got 8"),
    (_swap(SMALLEST, 10, "70"), 10, "conv1 of block 3 of stage 1 \\(depth 2\\) is beyond the stage's depth, so its slot "
                                    "must be 00, got 7"),
    (_swap(SMALLEST, 11, "7"), 11, "conv2 of block 3 of stage 1 .* must be 00"),
    (_swap(SMALLEST, 18, "0"), 18, "conv1 of block 2 of stage 2 .* within the stage's depth, so its width code "
                                   "must be in 1..7, got 0"),
    (_swap(SMALLEST, 19, "0"), 19, "conv2 of block 2 of stage 2 .* got 0"),
    (_swap(SMALLEST, 8, "9"), 8, "conv1 of block 2 of stage 1 .* width code must be in 1..7, got 9"),
    (_swap(SMALLEST, 5, "6"), 7, "tie broken: stage 1's conv2 code must equal the stem code 6"),
    (_swap(SMALLEST, 29, "6"), 29, "tie broken: every conv2 code of stage 3 must equal its first block's 7"),
    (_swap(LARGEST, 51, "2"), 51, "tie broken: every conv2 code of stage 4"),
])
def test_every_validation_rule_names_the_code_position_and_rule(code, position, rule):
    with pytest.raises(InvalidArchitecture, match=rf"{code!r} at position {position}: {rule}"):
        SPACE.validate(code)


def test_validation_of_tensors_reports_the_first_invalid_row():
    rows = torch.stack([SPACE.largest(), SPACE.largest(), SPACE.smallest()])
    rows[1, 7] = 12
    rows[2, 0] = 3
    with pytest.raises(InvalidArchitecture, match=r"'1558511\(12\)1.*' at position 7: every position holds a "
                                                  r"digit 0..9, got 12"):
        SPACE.validate(rows)
    with pytest.raises(InvalidArchitecture, match="a code has 52 digits, got 51"):
        SPACE.validate(torch.ones(2, 51, dtype=torch.long))


def test_sample_is_valid_seeded_and_draws_every_choice():
    archs = SPACE.sample(2000, torch.Generator().manual_seed(0))
    assert archs.shape == (2000, 52) and torch.equal(SPACE.validate(archs), archs)
    assert torch.equal(archs, SPACE.sample(2000, torch.Generator().manual_seed(0)))
    assert not torch.equal(archs, SPACE.sample(2000, torch.Generator().manual_seed(1)))
    for stage, (low, high) in enumerate(resnet48.DEPTH_RANGES):
        assert set(archs[:, 1 + stage].tolist()) == set(range(low, high + 1))
    assert set(archs[:, 5].tolist()) == set(range(1, 8)) and set(archs[:, 6].tolist()) == set(range(1, 8))
    # Depth uniform per stage (the authors' sampler), not weighted by the number of width combinations.
    assert abs(float((archs[:, 3] == 8).float().mean()) - 1 / 7) < 0.03


def _choices(row: torch.Tensor) -> dict:
    arch = resnet48.decode(row)
    digits = row.tolist()
    choices = {("depth", s): d for s, d in enumerate(arch.depths)}
    choices.update({("out", s): digits[resnet48.conv2_position(resnet48.SLOT_START[s])] for s in range(4)})
    choices.update({("conv1", resnet48.SLOT_START[s] + b): digits[resnet48.conv1_position(resnet48.SLOT_START[s] + b)]
                    for s in range(4) for b in range(arch.depths[s])})
    return choices


@pytest.mark.parametrize("changes", [1, 3, 16])
def test_mutate_redraws_choices_valid_different_and_seeded(changes):
    parents = SPACE.sample(200, torch.Generator().manual_seed(2))
    children = SPACE.mutate(parents, changes, torch.Generator().manual_seed(3))
    assert torch.equal(SPACE.validate(children), children)
    assert bool((SPACE.hamming(parents, children) > 0).all())
    assert torch.equal(children, SPACE.mutate(parents, changes, torch.Generator().manual_seed(3)))
    for parent, child in zip(parents, children):
        before, after = _choices(parent), _choices(child)
        changed = sum(before[c] != after[c] for c in before if c in after)
        assert 1 <= changed <= changes
        if changes == 1:
            assert changed == 1


def test_mutate_rejects_more_changes_than_choices():
    with pytest.raises(ValueError, match="has only 16 choices"):
        SPACE.mutate(SPACE.smallest(), 17, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="changes must be a positive int"):
        SPACE.mutate(SPACE.smallest(), 0, torch.Generator().manual_seed(0))


def test_encode_features():
    features = SPACE.encode([LARGEST, SMALLEST, MIXED])
    assert features.dtype == torch.float32 and features.shape == (3, 31)
    assert torch.equal(features[0], torch.ones(31))
    assert torch.equal(features[1, :4], torch.zeros(4))
    assert int((features[1, 4:27] > 0).sum()) == 8 and torch.allclose(features[1, 27:], torch.full((4,), 0.7))
    assert torch.allclose(features[2, :4], torch.tensor([1 / 3, 0, 1 / 3, 0]))
    assert torch.allclose(features[2, 27:], torch.tensor([0.95, 0.8, 1.0, 0.7]))


# -- cost model -----------------------------------------------------------------------------------------------------
def test_cost_model_reproduces_the_competition_numbers():
    cost = SPACE.cost([LARGEST, SMALLEST])
    assert all(value.dtype == torch.float64 for value in cost.values())
    assert cost["params"].tolist() == [34_067_880, 5_839_800]
    assert cost["trainable_params"].tolist() == [34_043_688, 5_833_080]
    assert cost["flops"].tolist() == [5_292_349_440, 946_450_400]


def test_cost_model_trainable_params_equal_the_imagenet_network():
    for code in (LARGEST, SMALLEST, MIXED):
        network = ResNet48Network(code)
        count = sum(p.numel() for p in network.parameters())
        buffers = sum(b.numel() for name, b in network.named_buffers() if "num_batches" not in name)
        cost = resnet48.cost(code)
        assert count == cost["trainable_params"].item() and count + buffers == cost["params"].item()


def _measured_flops(network: nn.Module, x: torch.Tensor) -> float:
    """Paddle's conventions counted by hooks on a network's layers (batch 1)."""
    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            total[0] += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.BatchNorm2d):
            total[0] += 2 * output.numel()
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features
            features = inputs[0]
            total[0] += features.shape[1] * (last_area[0] + 1)  # the global average pool that fed it

    last_area = [0]
    handles = [m.register_forward_hook(hook) for m in network.modules()]
    handles.append(network.stages[-1][-1].register_forward_hook(lambda m, i, o: last_area.__setitem__(0, o.shape[2] * o.shape[3])))
    network.eval()
    with torch.no_grad():
        network(x)
    for handle in handles:
        handle.remove()
    return total[0]


@pytest.mark.parametrize("options, side", [(SMALL, 16), (dict(resnet_stem="small", width_divisor=2), 12),
                                           (dict(resnet_stem="imagenet", width_divisor=4), 40)])
def test_cost_model_options_match_the_networks_actually_built(options, side):
    for code in (LARGEST, SMALLEST, MIXED):
        network = ResNet48Network(code, num_classes=10, in_channels=1, **options)
        cost = resnet48.cost(code, image_size=side, num_classes=10, in_channels=1, **options)
        assert cost["trainable_params"].item() == sum(p.numel() for p in network.parameters())
        assert cost["flops"].item() == _measured_flops(network, torch.zeros(1, 1, side, side))
    with pytest.raises(ValueError, match="resnet_stem must be one of"):
        resnet48.cost(LARGEST, resnet_stem="cifar")


@needs_track1
def test_every_competition_code_decodes_and_re_encodes_and_has_a_cost():
    codes = track1_codes()
    assert len(codes) == 45_000
    rows = SPACE.validate(codes)
    assert [SPACE.to_string(r) for r in rows[:: 997]] == codes[:: 997]
    text = (rows + ord("0")).to(torch.uint8).numpy().tobytes().decode("ascii")
    assert text == "".join(codes)
    cost = SPACE.cost(rows)
    largest, smallest = SPACE.cost([LARGEST, SMALLEST])["flops"].tolist()
    assert cost["flops"].shape == (45_000,) and bool((cost["flops"] <= largest).all())
    assert bool((cost["flops"] >= smallest).all()) and bool((cost["params"] > cost["trainable_params"]).all())
    # The released set uses codes 1-3 for stem, stage 1 and stage 2, as the data README says.
    assert int(rows[:, 5].max()) == 3


# -- supernet -------------------------------------------------------------------------------------------------------
def _codes() -> list:
    return [LARGEST, SMALLEST, MIXED] + [SPACE.to_string(a) for a in SPACE.sample(2, torch.Generator().manual_seed(5))]


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = ResNet48Supernet(num_classes=5, **SMALL)
    with torch.no_grad():  # non-trivial BN parameters and statistics, so slicing mistakes show
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return net


def test_supernet_registry_options_and_config():
    spec = supernet_spec("resnet48")
    assert spec.option_names == ("resnet_stem", "width_divisor", "bn_track_running_stats")
    net = build_supernet("resnet48", num_classes=7, in_channels=1, **SMALL)
    assert isinstance(net, ResNet48Supernet) and net.space is SPACE
    assert net.config == dict(num_classes=7, in_channels=1, resnet_stem="small", width_divisor=8,
                              bn_track_running_stats=True)
    again = build_supernet("resnet48", **net.config)
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]
    with pytest.raises(ValueError, match="takes the options resnet_stem, width_divisor, bn_track_running_stats"):
        build_supernet("resnet48", num_classes=7, in_channels=1, stem="small")
    with pytest.raises(ValueError, match="ResNet48Supernet: width_divisor must be one of"):
        ResNet48Supernet(width_divisor=16)
    with pytest.raises(ValueError, match="ResNet48Supernet: resnet_stem must be one of"):
        ResNet48Supernet(resnet_stem="tiny")
    spec.check_image_size(8, {})
    with pytest.raises(ValueError, match="image_size 0"):
        spec.check_image_size(0, {})


@pytest.mark.parametrize("training", [True, False])
def test_exported_network_equals_the_supernet_slice(supernet, training):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    supernet.train(training)
    for code in _codes():
        network = supernet.export(code)
        assert network.training == training and network.arch == code
        assert all(type(m) in (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.MaxPool2d, nn.Identity, nn.ModuleList,
                               ResNet48Network, type(network.stages[0][0])) for m in network.modules())
        expected = supernet(x, code)
        torch.testing.assert_close(network(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(network(x, SPACE.from_string(code)), supernet(x, SPACE.from_string(code)),
                                   rtol=1e-5, atol=1e-5)
    supernet.train()
    with pytest.raises(ValueError, match="this network is"):
        supernet.export(LARGEST)(x, SMALLEST)


def test_exported_network_with_the_imagenet_stem():
    torch.manual_seed(1)
    net = ResNet48Supernet(num_classes=4, width_divisor=8)
    x = torch.randn(2, 3, 40, 40)
    for training in (True, False):
        net.train(training)
        for code in (LARGEST, MIXED):
            torch.testing.assert_close(net.export(code)(x), net(x, code), rtol=1e-5, atol=1e-5)


def test_forward_subnets_equals_single_forwards_in_batch_mode_without_touching_buffers(supernet):
    supernet.train()
    codes = _codes()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    buffers = {name: b.clone() for name, b in supernet.named_buffers()}
    logits = supernet.forward_subnets(x, SPACE.validate(codes))
    assert logits.shape == (len(codes), 4, 5)
    for name, b in supernet.named_buffers():
        assert torch.equal(b, buffers[name]), name
    single = torch.stack([supernet(x, code) for code in codes])
    torch.testing.assert_close(logits, single, rtol=1e-5, atol=1e-5)
    supernet.eval()
    torch.testing.assert_close(supernet.forward_subnets(x, codes, bn="running"),
                               torch.stack([supernet(x, code) for code in codes]), rtol=1e-5, atol=1e-5)
    supernet.train()
    with pytest.raises(ValueError, match="BNStatistics is for 2 subnets, got 5"):
        supernet.forward_subnets(x, codes, bn=BNStatistics("batch", 2))


def test_forward_subnets_calibrate_then_calibrated_keeps_statistics_per_subnet(supernet):
    # float64: BNStatistics keeps E[x] and E[x^2], whose difference loses float32 digits on the last stages' few
    # values per channel (batch 4 at 1 x 1); the bookkeeping is what this test checks.
    supernet = copy.deepcopy(supernet).double().train()
    codes = _codes()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    stats = BNStatistics("calibrate", len(codes))
    torch.testing.assert_close(supernet.forward_subnets(x, codes, bn=stats), supernet.forward_subnets(x, codes))
    count, mean, _ = stats.recorded(supernet.stem_bn)
    assert count.tolist() == [1.0] * len(codes) and mean.shape == (len(codes), 8)
    assert bool((mean[1, 6:] == 0).all()) and bool((mean[1, :6] != 0).all())  # smallest stem: 48 / 8 channels
    stats.freeze()
    # Calibrated on x: on x itself the calibrated statistics are x's batch statistics.
    torch.testing.assert_close(supernet.forward_subnets(x, codes, bn=stats), supernet.forward_subnets(x, codes))
    # On another batch: each subnet normalised by its statistics from x, as its exported network in eval mode
    # with those statistics as running statistics would.
    calibrated = supernet.forward_subnets(y, codes, bn=stats)
    for k, code in enumerate(codes):
        network = supernet.export(code).eval()
        for name, module in network.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                _, mean, var = stats.recorded(supernet.get_submodule(name))
                module.running_mean.copy_(mean[k, :module.num_features])
                module.running_var.copy_(var[k, :module.num_features])
        torch.testing.assert_close(calibrated[k], network(y))


def test_running_statistics_update_only_the_subnet_slice(supernet):
    supernet.train()
    layer = supernet.stages[1][0].bn1
    before_mean, before_var = layer.running_mean.clone(), layer.running_var.clone()
    network = supernet.export(SMALLEST)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    supernet(x, SMALLEST)
    network(x)
    width = network.stages[1][0].bn1.num_features  # 88 / 8 = 11 of 16
    assert width == 11 and layer.num_features == 16
    assert torch.equal(layer.running_mean[width:], before_mean[width:])
    assert torch.equal(layer.running_var[width:], before_var[width:])
    assert not torch.equal(layer.running_mean[:width], before_mean[:width])
    torch.testing.assert_close(layer.running_mean[:width], network.stages[1][0].bn1.running_mean)
    torch.testing.assert_close(layer.running_var[:width], network.stages[1][0].bn1.running_var)


def test_a_subnet_trains_only_its_slices(supernet):
    supernet.train()
    supernet.zero_grad()
    supernet(torch.randn(2, 3, 8, 8), SMALLEST).sum().backward()
    block = supernet.stages[3][0]  # stage 4: 360 / 8 = 45 of 64 channels, conv1 45 of 64
    assert bool((block.conv1.weight.grad[45:] == 0).all()) and bool((block.conv1.weight.grad[:45] != 0).any())
    assert bool((block.conv1.weight.grad[:, 22:] == 0).all())  # its input: stage 3's 176 / 8 = 22 of 32
    assert supernet.stages[3][2].conv1.weight.grad is None  # beyond the depth
    assert bool((supernet.classifier.weight.grad[:, 45:] == 0).all())
    supernet.zero_grad()


def test_bn_without_running_statistics_uses_batch_statistics():
    net = ResNet48Supernet(num_classes=3, bn_track_running_stats=False, **SMALL).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net.export(MIXED)(x), net(x, MIXED), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="needs bn_track_running_stats=True"):
        net.forward_subnets(x, [MIXED], bn="running")


def test_supernet_rejects_invalid_architectures(supernet):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(InvalidArchitecture, match="position 7: tie broken"):
        supernet(x, _swap(SMALLEST, 5, "6"))
    with pytest.raises(ValueError, match=r"expected one architecture, LongTensor\[52\]"):
        supernet(x, SPACE.largest().unsqueeze(0))
    assert supernet.plan_key(SPACE.from_string(MIXED)) == MIXED
    assert subnet_plan(MIXED, 8).stem == 8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_every_bn_mode_runs_in_the_supernet_dtype(dtype):
    net = ResNet48Supernet(num_classes=3, **SMALL).to(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    stats = BNStatistics("calibrate", 2)
    for bn in ("batch", "running", stats, "calibrated"):
        if bn == "calibrated":
            bn = stats.freeze()
        assert net.forward_subnets(x, [MIXED, SMALLEST], bn=bn).dtype == dtype
    assert net.export(MIXED)(x).dtype == dtype

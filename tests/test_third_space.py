"""A third search space, defined here and nowhere in rdnas, runs through rdnas's public API: the contract of
docs/guides/adding_a_space.md, proved.

The space: a chain of three positions on 8 x 8 images, each position one of four ops (conv 3x3, conv 1x1, max-pool
3x3, skip): 64 architectures, enumerable. Its supernet holds every op of every position and takes two options of
its own, declared as a NetworkOptions dataclass (:class:`ChainOptions`: ``chain_width``, ``stem_kernel``); it is
registered with ``register_space`` / ``register_supernet`` for the tests of this file only and unregistered after
them. With it: training (SPOS; RD-NAS with a table teacher read from a score table, and with a sampled teacher),
its options through TrainConfig and ``rdnas train`` (flags derived from ChainOptions, refused for other spaces),
evaluation (supernet accuracy with per-subnet BN recalibration), zero-cost proxies (through ``export``), predictors
(fit, predict, save and load) and search (random and evolution).
"""

import copy
import itertools
import json
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from rdnas.predictors import get_predictor, load_predictor
from rdnas.proxies import get_proxy, scoring_supernet
from rdnas.rank import kendall_tau, recalibrated_accuracy_fn, supernet_accuracy
from rdnas.search import evolution_search, random_search
from rdnas.cli import build_parser, main
from rdnas.spaces import (InvalidArchitecture, NetworkOptions, SearchSpace, get_space, option, register_space,
                          space_names, unregister_space)
from rdnas.supernet import BNStatistics, SubnetBatchNorm, SupernetSpec, build_supernet, register_supernet
from rdnas.supernet import unregister_supernet
from rdnas.train import OneShotTrainer, SampledTeacher, Teacher, TrainConfig

NAME = "toy_chain"
OPS = ("conv3x3", "conv1x1", "maxpool3x3", "skip")
POSITIONS = 3


@dataclass(frozen=True)
class ChainOptions(NetworkOptions):
    """The toy network's options: what a third space declares so that TrainConfig, checkpoints and every command
    take them (``rdnas train --space toy_chain --chain-width 4 --stem-kernel 1``)."""

    chain_width: int = option(8, "channels of the stem and of every position", minimum=1)
    stem_kernel: int = option(3, "the stem convolution's kernel side", choices=(1, 3))


class ChainSpace(SearchSpace):
    """Three positions, four ops each; an architecture is LongTensor[3] of op indices; enumeration order: mixed
    radix, the first position most significant."""

    name = NAME
    width = POSITIONS
    size = len(OPS) ** POSITIONS
    enumerable = True

    def validate(self, archs) -> Tensor:
        try:
            rows = torch.as_tensor(archs, dtype=torch.long) if not isinstance(archs, Tensor) else archs.cpu().long()
        except (TypeError, ValueError, RuntimeError):
            raise InvalidArchitecture(f"{NAME}: expected LongTensor[K, {POSITIONS}], got {archs!r}") from None
        rows = rows.unsqueeze(0) if rows.dim() == 1 else rows
        if rows.dim() != 2 or rows.shape[1] != POSITIONS:
            raise InvalidArchitecture(f"{NAME}: expected shape [K, {POSITIONS}], got {list(rows.shape)}")
        bad = (rows < 0) | (rows >= len(OPS))
        if bool(bad.any()):
            k, position = (int(i) for i in bad.nonzero()[0])
            raise InvalidArchitecture(f"{NAME}: architecture {rows[k].tolist()} at position {position}: op index "
                                      f"must be in 0..{len(OPS) - 1}, got {int(rows[k, position])}")
        return rows

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, len(OPS), (n, POSITIONS), generator=generator)

    def mutate(self, archs, changes: int, generator: torch.Generator) -> Tensor:
        rows = self.validate(archs).clone()
        for row in rows:
            positions = torch.randperm(POSITIONS, generator=generator)[:changes]
            row[positions] = (row[positions] + torch.randint(1, len(OPS), (len(positions),), generator=generator)) \
                % len(OPS)
        return rows

    def to_string(self, arch) -> str:
        rows = self.validate(arch)
        return "-".join(OPS[op] for op in rows[0].tolist())

    def from_string(self, text: str) -> Tensor:
        try:
            return torch.tensor([OPS.index(op) for op in text.split("-")])
        except ValueError:
            raise InvalidArchitecture(f"{NAME}: {text!r} is not ops from {OPS} joined by '-'") from None

    def encode(self, archs) -> Tensor:
        return nn.functional.one_hot(self.validate(archs), len(OPS)).flatten(1).float()

    def enumerate(self) -> Tensor:
        return torch.tensor(list(itertools.product(range(len(OPS)), repeat=POSITIONS)))

    def index(self, archs) -> Tensor:
        rows = self.validate(archs)
        return (rows * torch.tensor([len(OPS) ** (POSITIONS - 1 - p) for p in range(POSITIONS)])).sum(1)


class ReLUConvBN(nn.Module):
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.bn = SubnetBatchNorm(channels)

    def forward(self, x, subnets=None, stats=None):
        return self.bn(self.conv(torch.relu(x)), subnets, stats)


def make_op(op: int, channels: int) -> nn.Module:
    if OPS[op] == "conv3x3":
        return ReLUConvBN(channels, 3)
    if OPS[op] == "conv1x1":
        return ReLUConvBN(channels, 1)
    return nn.MaxPool2d(3, 1, 1) if OPS[op] == "maxpool3x3" else nn.Identity()


def run_op(module: nn.Module, x: Tensor, subnets=None, stats=None) -> Tensor:
    return module(x, subnets, stats) if isinstance(module, ReLUConvBN) else module(x)


class ChainSupernet(nn.Module):
    """Stem (conv 3x3 + BN), one op per position, ReLU, global average pool, linear classifier."""

    space = None  # set when registered

    def __init__(self, num_classes: int, in_channels: int, chain_width: int = 8, stem_kernel: int = 3):
        super().__init__()
        ChainOptions(chain_width, stem_kernel).check("ChainSupernet")
        self.space = get_space(NAME)
        self.config = dict(num_classes=num_classes, in_channels=in_channels, chain_width=chain_width,
                           stem_kernel=stem_kernel)
        self.stem = nn.Conv2d(in_channels, chain_width, stem_kernel, padding=stem_kernel // 2, bias=False)
        self.stem_bn = SubnetBatchNorm(chain_width)
        self.positions = nn.ModuleList(nn.ModuleList(make_op(op, chain_width) for op in range(len(OPS)))
                                       for _ in range(POSITIONS))
        self.classifier = nn.Linear(chain_width, num_classes)

    def _head(self, x: Tensor) -> Tensor:
        return self.classifier(torch.relu(x).mean(dim=(2, 3)))

    def forward(self, x: Tensor, arch) -> Tensor:
        out = self.stem_bn(self.stem(x))
        for position, op in enumerate(self.space.validate(arch)[0].tolist()):
            out = run_op(self.positions[position][op], out)
        return self._head(out)

    def forward_subnets(self, x: Tensor, archs, bn="batch") -> Tensor:
        archs = self.space.validate(archs)
        k, batch = len(archs), len(x)
        stats = bn if isinstance(bn, BNStatistics) else BNStatistics(bn, k)
        every = torch.arange(k, device=x.device)
        stem = self.stem(x)
        out = self.stem_bn(stem.unsqueeze(0).expand(k, *stem.shape).flatten(0, 1), every, stats).view(k, *stem.shape)
        for position in range(POSITIONS):
            result = torch.empty_like(out)
            for op in archs[:, position].unique().tolist():
                group = (archs[:, position] == op).nonzero().flatten().to(x.device)
                part = run_op(self.positions[position][op], out[group].flatten(0, 1), group, stats)
                result[group] = part.view(len(group), batch, *part.shape[1:])
            out = result
        return self._head(out.flatten(0, 1)).view(k, batch, -1)

    def export(self, arch) -> nn.Module:
        ops = self.space.validate(arch)[0].tolist()
        network = ChainNetwork(copy.deepcopy(self.stem), copy.deepcopy(self.stem_bn),
                               [copy.deepcopy(self.positions[p][op]) for p, op in enumerate(ops)],
                               copy.deepcopy(self.classifier))
        return network.train(self.training)


class ChainNetwork(nn.Module):
    """One architecture as a stand-alone network (what ``export`` returns)."""

    def __init__(self, stem, stem_bn, ops, classifier):
        super().__init__()
        self.stem, self.stem_bn, self.ops, self.classifier = stem, stem_bn, nn.ModuleList(ops), classifier

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem_bn(self.stem(x))
        for op in self.ops:
            out = run_op(op, out)
        return self.classifier(torch.relu(out).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def space():
    registered = register_space(ChainSpace())
    register_supernet(SupernetSpec(NAME, ChainSupernet, ChainOptions,
                                   "a toy chain of conv / pool choices (tests only)"))
    yield registered
    unregister_supernet(NAME)
    unregister_space(NAME)


def config(tmp_path, **fields) -> TrainConfig:
    values = dict(space=NAME, data="digits", image_size=8, epochs=1, batch_size=32, paths_per_step=2, lr=0.05,
                  out_dir=str(tmp_path), seed=0)
    return TrainConfig(**{**values, **fields})


def conv_count(archs: Tensor) -> Tensor:
    """A made-up 'accuracy' for predictor and search tests: conv layers count, 3x3 more than 1x1."""
    return 2.0 * (archs == 0).sum(1).double() + (archs == 1).sum(1).double()


@pytest.fixture(scope="module")
def trained(space, tmp_path_factory):
    trainer = OneShotTrainer(config(tmp_path_factory.mktemp("spos"), epochs=2, lr=0.1), progress=False)
    trainer.fit()
    return trainer


def test_registering_and_unregistering_leave_the_registry_as_it_was(space):
    assert NAME in space_names() and get_space(NAME) is space
    spec = unregister_supernet(NAME)
    unregister_space(NAME)
    assert NAME not in space_names()
    with pytest.raises(ValueError, match="rdnas.spaces.unregister_space: no space named 'toy_chain'"):
        unregister_space(NAME)
    with pytest.raises(ValueError, match="rdnas.supernet.unregister_supernet: no supernet is registered"):
        unregister_supernet(NAME)
    register_space(space)
    register_supernet(spec)
    assert get_space(NAME) is space


def test_the_supernet_keeps_the_contract(space):
    torch.manual_seed(0)
    supernet = build_supernet(NAME, num_classes=10, in_channels=1).double()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    archs = space.enumerate()[[0, 5, 22, 63]]
    together = supernet.forward_subnets(x, archs)
    assert together.shape == (4, 6, 10)
    for k, arch in enumerate(archs):
        torch.testing.assert_close(together[k], supernet(x, arch))
        torch.testing.assert_close(supernet.export(arch)(x), supernet(x, arch))


def test_spos_trains_and_resumes_on_the_third_space(trained):
    assert [e["epoch"] for e in trained.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in trained.history)
    resumed = OneShotTrainer(config(trained.out_dir, epochs=2, lr=0.1), progress=False)
    resumed.fit(resume=True)  # the checkpoint is at the last epoch: nothing left to train
    assert resumed.epoch == 2 and resumed.history == trained.history
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_supernet_accuracy_evaluates_every_architecture(trained, space):
    archs = space.enumerate()
    accuracy = recalibrated_accuracy_fn(trained.model, trained.data, trained.device, calibration_batch_size=32)
    scores = accuracy(archs)  # BN recalibrated per subnet, the default protocol
    assert scores.shape == (space.size,) and scores.dtype == torch.float64
    assert bool(((scores >= 0) & (scores <= 1)).all()) and len(scores.unique()) > 1
    valid = trained.data.evaluation_batches("valid", 128, trained.device)
    batch_bn = supernet_accuracy(trained.model, archs[:6], valid, bn="batch", subnets_per_pass=4)
    trained.model.train()  # training-mode BN = each subnet's batch statistics, one forward at a time
    with torch.no_grad():
        by_hand = [sum(int((trained.model(images, arch).argmax(-1) == labels).sum()) for images, labels in valid)
                   / sum(len(labels) for _, labels in valid) for arch in archs[:6]]
    torch.testing.assert_close(batch_bn, torch.tensor(by_hand, dtype=torch.float64))


def test_proxies_score_the_third_space_through_export(space):
    supernet = scoring_supernet(num_classes=10, in_channels=1, space=NAME)
    archs = space.enumerate()[:8]
    for name in ("synflow", "params", "flops"):
        scores = get_proxy(name).score(supernet, archs, None)
        assert scores.shape == (8,) and bool(torch.isfinite(scores).all()), name
    params = get_proxy("params").score(supernet, space.enumerate()[[0, 1, 3]], None)  # conv3x3 > conv1x1 > skip
    assert params[0] > params[1] > params[2]


def test_score_space_scores_the_whole_third_space(space):
    from rdnas.proxies import score_space

    table = score_space("params", space=NAME, progress=False)
    assert len(table) == space.size


def test_rdnas_trains_with_a_table_teacher_read_from_a_score_table(space, tmp_path):
    supernet = scoring_supernet(num_classes=10, in_channels=1, space=NAME)
    archs = space.enumerate()
    scores = get_proxy("synflow").score(supernet, archs, None)
    table = tmp_path / "teacher.csv"
    table.write_text("arch,synflow\n" + "".join(f"{space.to_string(a)},{float(s)!r}\n"
                                                 for a, s in zip(archs.flip(0), scores.flip(0))))  # any row order
    run = config(tmp_path / "rdnas", method="rdnas", teacher_table=str(table), teacher_proxies="synflow", groups=4)
    trainer = OneShotTrainer(run, progress=False)
    assert isinstance(trainer.teacher, Teacher) and torch.equal(trainer.teacher.scores, scores)
    trainer.fit()
    assert len(trainer.history) == 1 and "rank_loss" in trainer.history[0]


def test_rdnas_trains_with_a_sampled_teacher_that_scores_new_architectures_on_demand(space, tmp_path):
    supernet = scoring_supernet(num_classes=10, in_channels=1, space=NAME)

    def params(archs):
        return get_proxy("params").score(supernet, space.validate(archs), None)

    reference = space.sample_distinct(24, torch.Generator().manual_seed(0))
    teacher = SampledTeacher(reference, params(reference), 4, "params", NAME, params)
    outside = next(a for a in space.enumerate() if space.key(a) not in {space.key(r) for r in reference})
    assert torch.equal(teacher.score(outside), params(outside))  # not in the reference set: scored on demand
    trainer = OneShotTrainer(config(tmp_path, method="rdnas", paths_per_step=2), progress=False, teacher=teacher)
    trainer.fit()
    assert trainer.teacher is teacher and len(trainer.history) == 1 and "rank_loss" in trainer.history[0]
    assert "archs" in torch.load(trainer.checkpoint_path, weights_only=True)["teacher"]


@pytest.mark.parametrize("kind, options", [("gbt", dict(n_estimators=30)), ("mlp", dict(epochs=60)),
                                           ("nar", dict(epochs=3, layers=1, d_model=16, heads=2, ffn=32,
                                                        tier_hidden=16, score_hidden=32, tiers=2))])
def test_predictors_fit_predict_save_and_load_on_the_third_space(space, tmp_path, kind, options):
    archs = space.enumerate()
    order = torch.randperm(space.size, generator=torch.Generator().manual_seed(0))
    train, held_out = archs[order[:40]], archs[order[40:]]
    predictor = get_predictor(kind)(space=NAME, seed=0, **options).fit(train, conv_count(train))
    predicted = predictor.predict(held_out)
    assert predicted.shape == (len(held_out),)
    if kind == "gbt":  # the trees learn this target; the tiny NAR and MLP only have to run
        assert kendall_tau(predicted.numpy(), conv_count(held_out).numpy()) > 0.6
    predictor.save(tmp_path / "model.pt")
    loaded = load_predictor(tmp_path / "model.pt")
    assert loaded.space is space and torch.equal(loaded.predict(held_out), predicted)


def test_random_and_evolution_search_the_third_space(space):
    def fitness(archs):
        return conv_count(space.validate(archs))

    random = random_search(fitness, 20, seed=0, space=NAME)
    evolution = evolution_search(fitness, 40, seed=0, population=8, sample_size=3, batch=4, space=NAME)
    for history in (random, evolution):
        keys = [space.key(torch.tensor(a)) for a in history.archs]
        assert len(keys) == len(set(keys)) == len(history.scores)
        space.validate(torch.tensor(history.archs))
    assert len(random.archs) == 20 and len(evolution.archs) == 40
    assert max(evolution.scores) == 6.0  # three conv 3x3: the best of the 64


def test_the_spaces_options_reach_the_supernet_through_train_config_and_resume(space, tmp_path):
    run = config(tmp_path, chain_width=4, stem_kernel=1)  # keyword arguments that are not fields: space options
    assert run.space_options == dict(chain_width=4, stem_kernel=1)
    trainer = OneShotTrainer(run, progress=False)
    assert trainer.model.stem.weight.shape == (4, 1, 1, 1) and trainer.model.classifier.in_features == 4
    trainer.fit()
    saved = torch.load(trainer.checkpoint_path, weights_only=True)["config"]
    assert saved["space_options"] == dict(chain_width=4, stem_kernel=1)
    resumed = OneShotTrainer(config(tmp_path, chain_width=4, stem_kernel=1), progress=False)
    resumed.fit(resume=True)
    assert resumed.epoch == 1 and torch.equal(resumed.model.stem.weight, trainer.model.stem.weight)
    with pytest.raises(ValueError, match="cannot resume: the checkpoint has chain_width=4, this run 8"):
        OneShotTrainer(config(tmp_path, stem_kernel=1), progress=False).fit(resume=True)
    with pytest.raises(ValueError, match="TrainConfig: stem_kernel must be one of \\(1, 3\\), got 5"):
        config(tmp_path, stem_kernel=5).check()
    with pytest.raises(ValueError, match="the toy_chain network takes the options chain_width, stem_kernel; got "
                                         "width_divisor"):
        config(tmp_path, width_divisor=8).check()


def test_rdnas_train_derives_the_spaces_flags_and_refuses_them_for_other_spaces(space, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--space", NAME, "--chain-width", "4", "--stem-kernel", "1", "--image-size", "8",
                 "--epochs", "1", "--paths", "2", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["space"] == NAME and saved["space_options"] == dict(chain_width=4, stem_kernel=1)
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the flags are in --help, with the space that takes them
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--chain-width CHAIN_WIDTH" in help_text and "toy_chain: channels of the stem" in help_text
    for argv, flag, other in ((["--chain-width", "4"], "--chain-width", "nb201"),
                              (["--space", NAME, "--width-divisor", "8"], "--width-divisor", NAME)):
        assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "refused"), "--quiet"]) == 2
        owner = NAME if flag == "--chain-width" else "resnet48"
        assert f"rdnas train: error: {flag} is an option of {owner}, not of the {other} space" in \
            capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's own refusal of a value outside the option's choices
        main(["train", "--space", NAME, "--stem-kernel", "5", "--out", str(tmp_path / "refused")])
    assert stop.value.code == 2
    assert "--stem-kernel: invalid choice: 5" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    assert build_parser().parse_args(["search", "--space", NAME, "--table", "t.csv", "--table-column", "c"]).space \
        == NAME  # every command's --space lists the registered spaces


def test_predictor_fit_derives_its_input_flags_from_the_spaces_feature_options(space, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(type(space), "feature_options", {"chain_order": ("forward", "reversed")}, raising=False)
    monkeypatch.setattr(type(space), "feature_option_help", {"chain_order": "tokens in chain order or reversed"},
                        raising=False)
    table = tmp_path / "t.csv"
    table.write_text("arch_str,acc\n")
    args = build_parser().parse_args(["predictor", "fit", "--space", NAME, "--gt", str(table), "--train-archs", "4",
                                      "--chain-order", "reversed", "--out", str(tmp_path / "m.pt")])
    assert args.chain_order == "reversed" and args.cells is None and args.edges is None
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predictor", "fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--chain-order {forward,reversed}" in help_text
    assert "toy_chain input: tokens in chain order or reversed" in help_text
    assert "--cells {stages,all} nb201 input: the 7 distinct cell tokens" in help_text

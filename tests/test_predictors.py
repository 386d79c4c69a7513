"""Predictors: features, the NAR tier ranker, the tree and MLP baselines, model files, and `rdnas predictor`.

Models here are tiny (constructor options) so that the file runs in about a minute on one thread."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import rdnas.ops
from rdnas.cli import main
from rdnas.predictors import (
    ArchFeatures, NARModel, NARPredictor, NotFitted, ProxyFeatures, get_predictor, load_predictor, nb201_cell_tensors,
    nb201_path_tokens, rank_normalise, tier_assignment,
)
from rdnas.predictors.protocol import training_rows
from rdnas.predictors.sampling_search import sampling_search, top_tier_weights
from rdnas.rank import GroundTruth, kendall_tau
from rdnas.spaces import get_space, nb201

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "nb201_gt.csv").exists(),
                                reason=f"the NB201 ground truth is not on this machine ({DATA / 'nb201_gt.csv'})")

TINY = {
    # lr_mul / rank_weight: the authors' (at the defaults' 0.14 / 2 this 16-wide tier head's ReLUs die within
    # three epochs and the tiers stop depending on the buckets; the full-size model's tiers stay alive)
    "nar": {"d_model": 16, "layers": 1, "heads": 2, "ffn": 32, "tier_hidden": 16, "score_hidden": 32, "epochs": 3,
            "batch_size": 32, "warmup": 4, "lr_mul": 0.07, "rank_weight": 1.0},
    "gbt": {"n_estimators": 20},
    "mlp": {"hidden": 32, "epochs": 5, "batch_size": 32},
}
SPACE = get_space("nb201")


def synthetic_accuracy(archs):
    """A deterministic 'accuracy' the structure explains: convolutions help, none edges hurt, plus a little noise."""
    archs = torch.as_tensor(archs)
    noise = torch.sin(archs.double() @ torch.tensor([1.3, 2.1, 0.7, 3.3, 1.9, 2.9], dtype=torch.float64))
    return (2.0 * (archs == nb201.CONV3X3).sum(1) + (archs == nb201.CONV1X1).sum(1) - (archs == nb201.NONE).sum(1)
            + 0.3 * noise).double()


def some_archs(count, seed=0):
    return SPACE.sample(count, torch.Generator().manual_seed(seed))


# -- features -------------------------------------------------------------------------------------------------------
def test_nb201_cell_tensors_hold_the_op_adjacency_and_log_scaled_costs():
    arch = nb201.from_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    tensors = nb201_cell_tensors(torch.tensor([arch]))
    assert tensors.shape == (1, 31, 4, 4) and tensors.dtype == torch.float32
    assert 0 <= tensors.min() and tensors.max() <= 1
    adjacency = tensors[0, 0]
    assert adjacency[0, 1] == 0.75 and adjacency[0, 2] == 0 and adjacency[1, 2] == 0.25
    assert adjacency[0, 3] == 1.0 and adjacency[1, 3] == 0.5 and adjacency[2, 3] == 0.75
    # A 3x3 convolution has the largest count of every cost channel: log1p(max) / log1p(max) = 1.
    assert torch.all(tensors[0, 1:, 0, 1] == 1) and torch.all(tensors[0, 1:, 2, 3] == 1)
    assert torch.all(tensors[0, 1:, 0, 3] == 0) and torch.all(tensors[0, 1:, 1, 2] == 0)  # pool, skip: no cost
    conv1 = tensors[0, 1:, 1, 3]
    assert torch.all((0 < conv1) & (conv1 < 1))
    # Per-cell FLOPs are equal in every stage (C^2 H^2 is constant); parameters grow with the stage.
    assert torch.allclose(conv1[0::2], conv1[0].expand(15))
    assert conv1[1] < conv1[11] < conv1[21]


def test_stage_tokens_keep_one_cell_per_stage_because_the_cells_of_a_stage_are_identical():
    archs = SPACE.enumerate()[::97]
    every_cell, stages = nb201_cell_tensors(archs), nb201_cell_tensors(archs, cells="stages")
    assert stages.shape == (len(archs), 7, 4, 4)
    assert torch.equal(stages[:, 0], every_cell[:, 0])
    for stage in range(3):
        for cell in range(5):  # the five cells of a stage repeat the stage's two channels
            first = 1 + 2 * (5 * stage + cell)
            assert torch.equal(every_cell[:, first:first + 2], stages[:, 1 + 2 * stage:3 + 2 * stage])
    features = ArchFeatures("nb201", cells="stages", edges="all")
    assert features.num_tokens == 7 and ArchFeatures.from_state(features.state()).cells == "stages"
    with pytest.raises(ValueError, match="cells must be one of \\('all', 'stages'\\), got 'half'"):
        ArchFeatures("nb201", cells="half")
    with pytest.raises(ValueError, match="cells='stages' is an input option of nb201, not of the resnet48 space"):
        ArchFeatures("resnet48", cells="stages")


def test_live_edges_input_turns_dead_edges_into_none_in_every_channel():
    # 0 -3x3-> 1 -3x3-> 2 is dead weight (node 2 feeds nothing); 0 -1x1-> 3 and 0 -> 1 -> 3 (skip) live.
    arch = torch.tensor([[nb201.CONV3X3, nb201.NONE, nb201.CONV3X3, nb201.CONV1X1, nb201.SKIP, nb201.NONE]])
    pruned = arch.clone()
    pruned[0, 2] = nb201.NONE
    live = nb201_cell_tensors(arch, edges="live")
    assert torch.equal(live, nb201_cell_tensors(pruned))
    assert not torch.equal(live, nb201_cell_tensors(arch))
    assert torch.all(live[0, :, 1, 2] == 0)  # op code and every cost channel of the dead edge
    assert torch.equal(nb201_cell_tensors(arch, "stages", "live"), nb201_cell_tensors(pruned, "stages"))
    with pytest.raises(ValueError, match="edges must be one of \\('all', 'live'\\), got 'some'"):
        nb201_cell_tensors(arch, edges="some")


def test_the_path_token_describes_the_four_input_to_output_paths():
    arch = torch.tensor([[nb201.CONV3X3, nb201.NONE, nb201.CONV3X3, nb201.CONV1X1, nb201.SKIP, nb201.NONE]])
    token = nb201_path_tokens(arch)
    assert token.shape == (1, 1, 16) and token.dtype == torch.float32
    live_paths, conv_share, op_share = token[0, 0, :4], token[0, 0, 4:8], token[0, 0, 8:13]
    assert live_paths.tolist() == [1, 1, 0, 0]  # 0-3 and 0-1-3 live; 0-2-3 and 0-1-2-3 cross a none edge
    assert conv_share.tolist() == [1, 0.5, 0, 0]  # 0-3 is a 1x1 conv; 0-1-3 is a 3x3 conv then a skip
    # live edges 0 (3x3), 3 (1x1), 4 (skip); the three others count as none
    assert torch.allclose(op_share, torch.tensor([3, 1, 1, 1, 0]) / 6)
    assert torch.all(token[0, 0, 13:] == 0)
    features = ArchFeatures("nb201", cells="stages", edges="live")
    assert torch.equal(features.tokens(arch), torch.cat([nb201_cell_tensors(arch, "stages", "live").flatten(2),
                                                         token], dim=1))
    assert features.num_tokens == 8 and ArchFeatures("nb201", cells="all", edges="live").num_tokens == 32
    assert ArchFeatures.from_state(features.state()).edges == "live"
    with pytest.raises(ValueError, match="edges='live' is an input option of nb201, not of the resnet48 space"):
        ArchFeatures("resnet48", edges="live")


def test_features_give_tokens_of_16_and_a_flat_vector():
    features = ArchFeatures("nb201", cells="all", edges="all")  # the authors' input
    archs = some_archs(7)
    assert features.tokens(archs).shape == (7, 31, 16)
    assert features.flat(archs).shape == (7, 31 * 16)
    assert features.num_tokens == 31


def test_the_default_input_is_the_live_cell_on_stage_tokens():
    features = ArchFeatures("nb201")
    assert (features.cells, features.edges, features.num_tokens) == ("stages", "live", 8)
    archs = some_archs(5)
    assert torch.equal(features.tokens(archs), ArchFeatures("nb201", cells="stages", edges="live").tokens(archs))
    other = ArchFeatures("resnet48")  # other spaces: their encoding as it is, without NB201's input options
    assert other.options == {} and ArchFeatures("resnet48", cells="all", edges="all").options == {}
    # a model file from before the edges option (no "edges" in its state) keeps the authors' edges
    old_state = {"space": "nb201", "proxies": None, "cells": "all"}
    assert ArchFeatures.from_state(old_state).edges == "all"


def test_other_spaces_use_their_encoding_cut_into_tokens():
    space = get_space("resnet48")
    archs = space.sample(3, torch.Generator().manual_seed(0))
    tokens = ArchFeatures(space).tokens(archs)
    width = space.encode(archs).shape[1]
    assert tokens.shape == (3, -(-width // 16), 16)
    assert torch.equal(tokens.flatten(1)[:, :width], space.encode(archs).float())


def test_rank_normalise_scales_average_ranks_to_the_unit_interval():
    values = rank_normalise(np.array([3.0, -np.inf, 3.0, 10.0, np.nan]))
    assert values.tolist() == [0.5, 0.0, 0.5, 1.0, 0.5]


def write_table(path, archs, columns: dict):
    lines = ["index,arch_str," + ",".join(columns)]
    for row, arch in enumerate(archs):
        lines.append(f"{row},{SPACE.to_string(arch)}," + ",".join(repr(float(values[row])) for values in columns.values()))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def full_table(tmp_path_factory):
    """A synthetic table over all 15,625 cells: 'acc' from synthetic_accuracy, 'proxy' a noisy copy of it."""
    archs = SPACE.enumerate()
    accuracy = synthetic_accuracy(archs)
    proxy = accuracy + torch.cos(torch.arange(len(archs), dtype=torch.float64))
    return write_table(tmp_path_factory.mktemp("tables") / "full.csv", archs, {"acc": accuracy, "proxy": proxy})


def test_proxy_features_are_rank_normalised_and_looked_up_by_architecture(full_table):
    proxies = ProxyFeatures.from_table(full_table, ["proxy"])
    archs = SPACE.enumerate()[[0, 100, 15624]]
    table = GroundTruth.load(full_table)
    expected = rank_normalise(table.column("proxy"))[table.rows_of(archs).numpy()]
    assert torch.allclose(proxies(archs)[:, 0].double(), torch.from_numpy(expected), atol=1e-6)
    assert ArchFeatures("nb201", proxies).tokens(archs).shape == (3, 9, 16)  # 8 structure tokens + 1 of proxies


def test_a_feature_table_that_does_not_cover_the_space_is_an_error(tmp_path):
    archs = some_archs(10)
    path = write_table(tmp_path / "part.csv", torch.unique(archs, dim=0), {"proxy": torch.arange(10.0)})
    with pytest.raises(ValueError, match="does not cover the space nb201"):
        ProxyFeatures.from_table(path, ["proxy"])


def test_an_unknown_feature_column_is_an_error(full_table):
    with pytest.raises(ValueError, match="has no column 'synflow'"):
        ProxyFeatures.from_table(full_table, ["synflow"])


# -- tiers ----------------------------------------------------------------------------------------------------------
def test_tiers_cut_the_training_set_sorted_by_accuracy_into_equal_parts():
    accuracy = torch.tensor([50.0, 90.0, 70.0, 10.0, 80.0, 60.0, 30.0, 20.0, 40.0, 100.0, 0.0, 55.0])
    tiers = tier_assignment(accuracy, 5)
    assert torch.bincount(tiers).tolist() == [3, 3, 2, 2, 2]  # 12 = 3 + 3 + 2 + 2 + 2
    order = torch.argsort(accuracy, descending=True)
    assert tiers[order].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    # A better architecture is never in a worse tier.
    for i in range(12):
        for j in range(12):
            if accuracy[i] > accuracy[j]:
                assert tiers[i] <= tiers[j]


def test_tied_accuracies_keep_their_input_order_across_a_tier_boundary():
    assert tier_assignment(torch.tensor([1.0, 1.0, 1.0, 1.0]), 2).tolist() == [0, 0, 1, 1]


def test_too_few_architectures_for_the_tiers_is_an_error():
    with pytest.raises(ValueError, match="too few architectures for the tiers"):
        tier_assignment(torch.tensor([1.0, 2.0, 3.0]), 5)
    with pytest.raises(ValueError, match="too few architectures for the tiers"):
        NARPredictor(**TINY["nar"]).fit(some_archs(4), torch.arange(4.0))


# -- every predictor ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def training_set():
    archs = torch.unique(some_archs(96, seed=1), dim=0)
    return archs, synthetic_accuracy(archs)


@pytest.fixture(scope="module")
def fitted(training_set):
    archs, accuracy = training_set
    return {name: get_predictor(name)(seed=0, **options).fit(archs, accuracy) for name, options in TINY.items()}


@pytest.mark.parametrize("name", ["nar", "gbt", "mlp"])
def test_predict_gives_one_float64_score_per_architecture(fitted, name):
    scores = fitted[name].predict(some_archs(37, seed=5))
    assert scores.shape == (37,) and scores.dtype == torch.float64 and torch.isfinite(scores).all()
    assert fitted[name].predict(torch.zeros(0, 6, dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize("name", ["nar", "gbt", "mlp"])
def test_fit_is_deterministic_for_a_seed(fitted, training_set, name):
    archs, accuracy = training_set
    again = get_predictor(name)(seed=0, **TINY[name]).fit(archs, accuracy)
    test = some_archs(50, seed=9)
    assert torch.equal(again.predict(test), fitted[name].predict(test))


def test_another_seed_gives_another_nar(fitted, training_set):
    archs, accuracy = training_set
    other = NARPredictor(seed=1, **TINY["nar"]).fit(archs, accuracy)
    test = some_archs(20, seed=9)
    assert not torch.equal(other.predict(test), fitted["nar"].predict(test))


def test_predict_before_fit_is_an_error():
    with pytest.raises(NotFitted, match="predict before fit"):
        get_predictor("mlp")(**TINY["mlp"]).predict(some_archs(2))


def test_unknown_options_and_predictors_are_errors():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['epoch'\]"):
        NARPredictor(epoch=3)
    with pytest.raises(ValueError, match="unknown predictor 'svm'"):
        get_predictor("svm")


@pytest.mark.parametrize("name", ["nar", "gbt", "mlp"])
def test_save_and_load_give_identical_predictions(fitted, tmp_path, name):
    path = tmp_path / f"{name}.pt"
    fitted[name].save(path)
    loaded = load_predictor(path)
    assert type(loaded) is type(fitted[name]) and loaded.options == fitted[name].options
    test = some_archs(64, seed=3)
    assert torch.equal(loaded.predict(test), fitted[name].predict(test))
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_a_file_that_is_not_a_predictor_is_an_error(tmp_path):
    (tmp_path / "bad.pt").write_text("not a model")
    with pytest.raises(ValueError, match="is not a predictor file"):
        load_predictor(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_predictor(tmp_path / "absent.pt")


def test_proxy_features_are_saved_with_the_model(full_table, training_set, tmp_path):
    archs, accuracy = training_set
    features = ArchFeatures("nb201", ProxyFeatures.from_table(full_table, ["proxy"]))
    predictor = get_predictor("mlp")(features=features, **TINY["mlp"]).fit(archs, accuracy)
    predictor.save(tmp_path / "model.pt")
    full_table.rename(tmp_path / "moved.csv")  # the model file does not need the table any more
    try:
        loaded = load_predictor(tmp_path / "model.pt")
        test = some_archs(30, seed=4)
        assert loaded.features.proxies.columns == ["proxy"]
        assert torch.equal(loaded.predict(test), predictor.predict(test))
    finally:
        (tmp_path / "moved.csv").rename(full_table)


# -- NAR's buckets and loss -----------------------------------------------------------------------------------------
def test_nar_buckets_are_the_frozen_tier_means_of_the_training_encodings(fitted, training_set):
    nar = fitted["nar"]
    archs, accuracy = training_set
    tiers = tier_assignment(accuracy, 5)
    with torch.no_grad():
        encoding = nar.model.encode(nar.features.tokens(archs))
    for tier in range(5):
        assert torch.allclose(nar.model.buckets[tier], encoding[tiers == tier].mean(0), atol=1e-5)


def test_nar_evaluation_sees_no_labels_and_leaves_the_buckets_frozen(fitted, tmp_path):
    nar = fitted["nar"]
    before = nar.model.buckets.clone()
    test = some_archs(40, seed=11)
    first_scores, first_tiers = nar.predict(test), nar.predict_tiers(test)
    # Scoring other architectures (a different 'evaluation set') changes nothing.
    nar.predict(some_archs(200, seed=12))
    nar.predict_tiers(some_archs(50, seed=13))
    assert torch.equal(nar.model.buckets, before)
    assert torch.equal(nar.predict(test), first_scores) and torch.equal(nar.predict_tiers(test), first_tiers)
    assert first_tiers.shape == (40, 5) and torch.allclose(first_tiers.sum(1), torch.ones(40))
    # The buckets are part of the model file.
    nar.save(tmp_path / "nar.pt")
    assert torch.equal(load_predictor(tmp_path / "nar.pt").model.buckets, before)
    # They matter for the tiers (so freezing them is what keeps labels out), not for the score.
    copy = load_predictor(tmp_path / "nar.pt")
    copy.model.buckets.normal_()
    assert not torch.allclose(copy.predict_tiers(test), first_tiers)
    assert torch.equal(copy.predict(test), first_scores)


@pytest.mark.parametrize("name", ["nar", "mlp"])
def test_the_ranking_loss_is_the_fused_op(monkeypatch, training_set, name):
    calls = []
    fused = rdnas.ops.pairwise_margin_rank_loss

    def counting(scores, teacher, *args, **kwargs):
        calls.append((scores.shape, kwargs.get("loss")))
        return fused(scores, teacher, *args, **kwargs)

    monkeypatch.setattr(rdnas.ops, "pairwise_margin_rank_loss", counting)
    archs, accuracy = training_set
    options = {**TINY[name], "epochs": 2, "batch_size": 40}
    get_predictor(name)(**options).fit(archs, accuracy)
    batches = -(-len(archs) // 40)
    assert len(calls) == 2 * batches  # one call per batch: the pairs are never a Python loop
    assert all(loss == "logistic" for _, loss in calls)
    assert sorted({shape[0] for shape, _ in calls}) == sorted({40, len(archs) - 40 * (batches - 1)})


# -- learning -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nar", "gbt", "mlp"])
def test_a_small_fit_beats_random_on_held_out_synthetic_cells(name):
    archs = SPACE.enumerate()
    rows = training_rows(len(archs), 100, seed=0)
    held_out = torch.ones(len(archs), dtype=torch.bool)
    held_out[rows] = False
    held_out = held_out.nonzero().squeeze(1)[::15]
    options = {**TINY[name], "epochs": 30} if name == "nar" else {**TINY[name], "epochs": 60} if name == "mlp" else {}
    predictor = get_predictor(name)(seed=0, **options).fit(archs[rows], synthetic_accuracy(archs[rows]))
    tau = kendall_tau(predictor.predict(archs[held_out]).numpy(), synthetic_accuracy(archs[held_out]).numpy())
    assert tau > 0.5, f"{name}: Kendall tau {tau:.3f} on held-out cells"


@needs_data
@pytest.mark.parametrize("name", ["nar", "gbt", "mlp"])
def test_a_small_fit_beats_random_on_held_out_nb201_ground_truth(name):
    table = GroundTruth.load(DATA / "nb201_gt.csv")
    rows = training_rows(len(table), 100, seed=0)
    held_out = torch.ones(len(table), dtype=torch.bool)
    held_out[rows] = False
    held_out = held_out.nonzero().squeeze(1)[::10]
    options = {**TINY[name], "epochs": 30} if name == "nar" else {**TINY[name], "epochs": 60} if name == "mlp" else {}
    predictor = get_predictor(name)(seed=0, **options).fit(table.archs[rows],
                                                           table.column("cifar10_valid_acc")[rows.numpy()])
    tau = kendall_tau(predictor.predict(table.archs[held_out]).numpy(),
                      table.column("cifar10_test_acc")[held_out.numpy()])
    # Random scores give tau ~ 0 +- 0.02 on 1,550 cells; a real fit on 100 cells gives far more.
    assert tau > 0.3, f"{name}: Kendall tau {tau:.3f} on held-out NB201 cells"


def test_nar_without_tiers_skips_the_decoder_and_still_ranks(monkeypatch, training_set):
    archs, accuracy = training_set

    def no_decoder(*args, **kwargs):
        raise AssertionError("tier_logits ran with tier_weight=0")

    monkeypatch.setattr(NARModel, "tier_logits", no_decoder)
    predictor = get_predictor("nar")(seed=0, **{**TINY["nar"], "epochs": 30, "tier_weight": 0.0}).fit(archs, accuracy)
    held_out = some_archs(300, seed=5)
    tau = kendall_tau(predictor.predict(held_out).numpy(), synthetic_accuracy(held_out).numpy())
    assert tau > 0.5, f"Kendall tau {tau:.3f}"


# -- sampling search ------------------------------------------------------------------------------------------------
def test_top_tier_weights_follow_the_top_tiers_value_frequencies():
    pool = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 1]])
    top = torch.tensor([[1, 1], [1, 1], [1, 0]])
    weights = top_tier_weights(pool, top, smoothing=1.0)
    # position 0: counts (0, 3, 0) + 1 each -> (1, 4, 1) / 6; position 1: (1, 2) + 1 -> (2, 3) / 5
    expected = torch.tensor([1 / 6 * 2 / 5, 4 / 6 * 2 / 5, 4 / 6 * 3 / 5, 1 / 6 * 3 / 5], dtype=torch.float64)
    torch.testing.assert_close(weights, expected)
    with pytest.raises(ValueError, match="smoothing must be positive"):
        top_tier_weights(pool, top, smoothing=0.0)


@pytest.mark.parametrize("name", ["nar", "gbt"])
def test_sampling_search_spends_the_budget_on_distinct_cells_and_beats_its_random_start(name):
    everything = SPACE.enumerate()
    truth = synthetic_accuracy(everything)
    queried = []

    def fitness(archs):
        queried.append(len(archs))
        return truth[SPACE.index(archs)]

    history = sampling_search(fitness, 60, lambda: get_predictor(name)(seed=0, **TINY[name]), seed=0, initial=30,
                              rounds=2, pool=2000, candidates=200)
    assert len(history.archs) == 60 == sum(queried) and len(set(history.archs)) == 60
    assert not bool(SPACE.is_trivial(torch.tensor(history.archs)).any())
    # the rounds' picks (the last 30 queries) are better than the uniform start (the first 30)
    assert np.mean(history.scores[30:]) > np.mean(history.scores[:30]) + 1.0
    again = sampling_search(lambda a: truth[SPACE.index(a)], 60, lambda: get_predictor(name)(seed=0, **TINY[name]),
                            seed=0, initial=30, rounds=2, pool=2000, candidates=200)
    assert again.archs == history.archs  # deterministic for a seed
    with pytest.raises(ValueError, match="needs tiers <= initial <= budget"):
        sampling_search(fitness, 10, lambda: get_predictor(name)(seed=0), initial=20)


class _OneTopTierPredictor:
    """A stand-in predictor: scores by the op sum and puts exactly one candidate, the lowest-scoring, in its top tier."""

    def fit(self, archs, accuracy):
        return self

    def predict(self, archs):
        return archs.sum(1).double()

    def predict_tiers(self, archs):
        tiers = torch.zeros(len(archs), 5)
        tiers[:, 1] = 1.0
        tiers[torch.argmin(self.predict(archs)), 0] = 2.0
        return tiers


def test_sampling_search_queries_the_predicted_top_tier_first_and_fills_the_round_by_score():
    everything = SPACE.enumerate()
    truth = synthetic_accuracy(everything)
    history = sampling_search(lambda a: truth[SPACE.index(a)], 40, _OneTopTierPredictor, seed=0, initial=20,
                              rounds=1, pool=2000, candidates=200)
    assert len(history.archs) == 40 == len(set(history.archs))  # the round spends its share of 20
    round_picks = torch.tensor(history.archs[20:])
    sums = round_picks.sum(1)
    assert sums[0] == sums.min()  # the one predicted top tier comes first, though it scores lowest
    assert torch.all(sums[1:-1] >= sums[2:])  # then the rest by score


def test_sampling_search_works_in_a_space_that_cannot_be_enumerated():
    space = get_space("resnet48")

    def fitness(archs):  # favours small FLOPs and large codes: something the trees can learn
        return -space.cost(archs)["flops"] / 1e9 + 0.1 * archs.double().sum(1)

    history = sampling_search(fitness, 40, lambda: get_predictor("gbt")(space="resnet48", seed=0, n_estimators=20),
                              seed=0, space="resnet48", pool=2000, candidates=200)
    assert len(set(history.archs)) == 40
    assert max(history.scores[20:]) > max(history.scores[:20])


# -- the command ----------------------------------------------------------------------------------------------------
def fit_args(table, out, *extra):
    return ["predictor", "fit", "--gt", str(table), "--column", "acc", "--train-archs", "64", "--quiet",
            "--out", str(out), *extra]


def test_predictor_fit_and_rank_write_a_model_and_a_full_ranking(full_table, tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert main(fit_args(full_table, model, "--model", "gbt", "--option", "n_estimators=20")) == 0
    assert load_predictor(model).options["n_estimators"] == 20
    ranking = tmp_path / "ranking.csv"
    assert main(["predictor", "rank", "--model", str(model), "--gt", str(full_table), "--column", "acc",
                 "--out", str(ranking), "--report", str(tmp_path / "report.json")]) == 0
    lines = ranking.read_text().splitlines()
    assert lines[0] == "arch,score" and len(lines) == 1 + 15625
    assert len({line.split(",")[0] for line in lines[1:]}) == 15625
    assert "Kendall tau" in capsys.readouterr().out
    assert (tmp_path / "report.json").exists()


def test_predictor_fit_with_proxy_features(full_table, tmp_path):
    model = tmp_path / "model.pt"
    assert main(fit_args(full_table, model, "--model", "mlp", "--option", "epochs=2", "--feature-table",
                         str(full_table), "--features", "proxy")) == 0
    assert load_predictor(model).features.proxies.columns == ["proxy"]


def test_predictor_fit_with_a_feature_table_defaults_to_the_trees_and_without_one_to_nar(full_table, tmp_path,
                                                                                        capsys):
    with_features = tmp_path / "trees.pt"
    assert main(fit_args(full_table, with_features, "--option", "n_estimators=5", "--feature-table",
                         str(full_table), "--features", "proxy")) == 0
    assert load_predictor(with_features).name == "gbt"
    assert "rdnas predictor fit: gbt on 64" in capsys.readouterr().out
    chosen = tmp_path / "mlp.pt"  # --model still wins
    assert main(fit_args(full_table, chosen, "--model", "mlp", "--option", "epochs=2", "--feature-table",
                         str(full_table), "--features", "proxy")) == 0
    assert load_predictor(chosen).name == "mlp"
    structure_only = tmp_path / "nar.pt"
    assert main(fit_args(full_table, structure_only, *[f"--option={k}={v}" for k, v in TINY["nar"].items()])) == 0
    assert load_predictor(structure_only).name == "nar"


def test_predictor_fit_defaults_to_the_live_cell_on_stage_tokens(full_table, tmp_path):
    model = tmp_path / "model.pt"
    assert main(fit_args(full_table, model, *[f"--option={k}={v}" for k, v in TINY["nar"].items()])) == 0
    loaded = load_predictor(model)
    assert (loaded.features.cells, loaded.features.edges, loaded.features.num_tokens) == ("stages", "live", 8)


def test_predictor_fit_on_the_authors_input(full_table, tmp_path):
    model = tmp_path / "model.pt"
    assert main(fit_args(full_table, model, "--model", "gbt", "--option", "n_estimators=5", "--cells", "all",
                         "--edges", "all")) == 0
    loaded = load_predictor(model)
    assert (loaded.features.cells, loaded.features.edges, loaded.features.num_tokens) == ("all", "all", 31)


@pytest.mark.parametrize("extra, message", [
    (["--column", "nope"], "has no column 'nope'"),
    (["--train-archs", "3"], "too few architectures for the tiers"),
    (["--train-archs", "20000"], "--train-archs: 20000 architectures, but .* has 15625 rows"),
    (["--features", "proxy"], "--feature-table and --features go together"),
    (["--option", "bogus=1"], r"unknown option\(s\) \['bogus'\]"),
])
def test_predictor_fit_errors_exit_2_with_a_message(full_table, tmp_path, capsys, extra, message):
    assert main(fit_args(full_table, tmp_path / "m.pt", "--model", "nar", *extra)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "m.pt").exists()


def test_a_feature_table_that_does_not_cover_the_space_exits_2(full_table, tmp_path, capsys):
    part = write_table(tmp_path / "part.csv", torch.unique(some_archs(10), dim=0), {"proxy": torch.arange(10.0)})
    assert main(fit_args(full_table, tmp_path / "m.pt", "--feature-table", str(part), "--features", "proxy")) == 2
    assert "does not cover the space nb201" in capsys.readouterr().err


def test_predictor_rank_errors_exit_2(full_table, tmp_path, capsys):
    assert main(["predictor", "rank", "--model", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "no model file" in capsys.readouterr().err
    model = tmp_path / "model.pt"
    assert main(fit_args(full_table, model, "--model", "gbt", "--option", "n_estimators=5")) == 0
    assert main(["predictor", "rank", "--model", str(model), "--gt", str(full_table), "--column", "nope",
                 "--out", str(tmp_path / "r.csv")]) == 2
    assert "has no column 'nope'" in capsys.readouterr().err


def test_a_bad_option_value_is_a_usage_error(full_table, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(full_table, tmp_path / "m.pt", "--option", "epochs"))
    assert exit_info.value.code == 2

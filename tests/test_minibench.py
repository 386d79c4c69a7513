"""The mini-benchmark: stacked stand-alone training equals separate training; builds resume; tables and reliability."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from rdnas.minibench import Recipe, StackedNB201, benchmark_table, build, read_runs, reliability, sample_architectures
from rdnas.minibench.build import write_table
from rdnas.rank import GroundTruth
from rdnas.spaces import nb201

ARCHS = [(0, 0, 0, 0, 0, 0), (1, 0, 2, 1, 0, 1), (3, 3, 3, 3, 3, 3), (4, 2, 0, 3, 1, 4), (2, 4, 4, 0, 3, 3),
         (1, 1, 1, 1, 1, 1)]


def test_stacked_networks_equal_their_exported_networks_through_a_training_step():
    generator = torch.Generator().manual_seed(0)
    stack = StackedNB201(ARCHS, list(range(len(ARCHS))), channels=4, cells_per_stage=2)
    networks = [stack.export(m) for m in range(len(ARCHS))]  # for the forward comparison
    trained = [stack.export(m) for m in range(len(ARCHS))]  # trained one step separately
    x = torch.randn(8, len(ARCHS), 1, 12, 12, generator=generator)
    y = torch.randint(0, 10, (8, len(ARCHS)), generator=generator)
    stack.train()
    logits = stack(x)
    for m, network in enumerate(networks):
        network.train()
        torch.testing.assert_close(logits[:, m], network(x[:, m]), rtol=1e-5, atol=1e-5)

    options = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    optimizer = torch.optim.SGD(stack.parameters(), **options)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(8, -1).mean(0).sum().backward()
    optimizer.step()
    stack.eval()
    after = stack(x[:, 0])  # eval mode, one minibatch shared by every network
    for m, network in enumerate(trained):
        separate = torch.optim.SGD(network.parameters(), **options)
        separate.zero_grad()
        network.train()
        F.cross_entropy(network(x[:, m]), y[:, m]).backward()
        separate.step()
        network.eval()
        torch.testing.assert_close(after[:, m], network(x[:, 0]), rtol=1e-4, atol=1e-5)


def test_a_network_depends_on_its_own_seed_only():
    alone = StackedNB201([ARCHS[2]], [7], channels=4)
    together = StackedNB201([ARCHS[1], ARCHS[2]], [3, 7], channels=4)
    for (name, a), (_, b) in zip(alone.export(0).state_dict().items(), together.export(1).state_dict().items()):
        assert torch.equal(a, b), name


def test_stacked_input_errors():
    stack = StackedNB201(ARCHS[:2], [0, 1], channels=4)
    with pytest.raises(ValueError, match=r"StackedNB201: x must be \[B, 2, 1, H, W\]"):
        stack(torch.zeros(2, 3, 1, 8, 8))
    with pytest.raises(ValueError, match="archs and seeds must be non-empty and of equal length"):
        StackedNB201(ARCHS[:2], [0], channels=4)


def test_sample_architectures_are_distinct_connected_networks():
    archs = sample_architectures(300, seed=3)
    assert len(archs) == 300 and len(set(archs)) == 300
    assert all(nb201.is_connected(a) for a in archs)
    assert len({nb201.canonical_string(a) for a in archs}) == 300
    assert archs == sample_architectures(300, seed=3)


TINY_RECIPE = Recipe(channels=4, epochs=1, train_images=128, batch_size=32, networks_per_stack=3)


def test_build_resumes_without_losing_or_repeating_a_run(tmp_path):
    archs = sample_architectures(4, seed=0)
    straight = build(tmp_path / "straight", archs, [0, 1], TINY_RECIPE, progress=False)
    build(tmp_path / "resumed", archs, [0], TINY_RECIPE, progress=False)  # an interrupted build: seed 1 missing
    runs_csv = tmp_path / "resumed" / "runs.csv"
    complete = runs_csv.read_bytes()
    runs_csv.write_bytes(complete + complete.splitlines(keepends=True)[-1][:17])  # killed mid-line
    assert len(read_runs(runs_csv)) == 4  # the partial line is not a run
    resumed = build(tmp_path / "resumed", archs, [0, 1], TINY_RECIPE, progress=False)
    key = lambda r: (r["enumeration_index"], r["seed"])  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, straight)) and len(read_runs(tmp_path / "resumed" / "runs.csv")) == 8
    by_key = {key(r): r for r in straight}
    for r in read_runs(tmp_path / "resumed" / "runs.csv"):  # the same runs, whatever stack they shared
        assert r["valid_acc"] == pytest.approx(by_key[key(r)]["valid_acc"], abs=0.2)
        assert r["valid_loss"] == pytest.approx(by_key[key(r)]["valid_loss"], rel=1e-3)
    assert runs_csv.read_bytes().startswith(complete) and runs_csv.read_bytes().count(b"\n") == 9  # cut, then appended
    environment = tmp_path / "resumed" / "environment.jsonl"  # one line per start that had runs to train
    starts = [json.loads(line) for line in environment.read_text().splitlines()]
    assert [(start["runs_done"], start["runs_pending"]) for start in starts] == [(0, 4), (4, 4)]
    assert starts[0]["threads"] == torch.get_num_threads() and starts[0]["torch"] == torch.__version__
    assert starts[0]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and starts[0]["shard"] == "0/1"
    build(tmp_path / "resumed", archs, [0, 1], TINY_RECIPE, progress=False)  # nothing to train: no line
    assert len(environment.read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="was built with"):
        build(tmp_path / "resumed", archs, [0], Recipe(channels=4, epochs=2), progress=False)
    runs_csv.write_text(runs_csv.read_text() + "12,not a row\n")
    with pytest.raises(ValueError, match=r"read_runs: .*runs.csv:10: not a run row"):
        read_runs(runs_csv)


def test_table_and_reliability(tmp_path):
    runs = []
    for seed in range(4):
        for k, arch in enumerate(sample_architectures(10, seed=0)):
            runs.append({"enumeration_index": nb201.enumeration_index(arch), "arch_str": nb201.to_string(arch),
                         "seed": seed, "valid_acc": 50.0 + k + 0.1 * seed, "valid_loss": 2.0 - 0.1 * k,
                         "train_loss": 0.0, "seconds": 0.0})
    table = benchmark_table(runs)
    assert len(table) == 10 and all(row["seeds"] == 4 for row in table.values())
    result = reliability(runs, [0, 1], [2, 3])
    assert result["kendall_tau_valid_acc"] == pytest.approx(1.0) and result["kendall_tau_valid_loss"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"reliability: seeds_a and seeds_b must be disjoint .*both have \[1\]"):
        reliability(runs, [0, 1], [1, 2])  # a seed in both builds inflates the agreement
    path = tmp_path / "digits.csv"
    write_table(path, table)
    truth = GroundTruth.load(path)
    assert len(truth.archs) == 10 and "digits_valid_acc" in truth.columns
    with open(path) as handle:
        assert next(csv.reader(handle))[:3] == ["index", "arch_str", "digits_valid_acc"]
    assert len(benchmark_table(runs[:-1])) == 9  # an architecture missing a seed is left out


def test_too_few_training_images_for_one_batch_is_an_error():
    """It trained zero steps and reported an untrained network with train_loss NaN."""
    from rdnas.minibench.build import digits_split, train_stack

    recipe = Recipe(channels=4, epochs=1, train_images=16, batch_size=32)
    with pytest.raises(ValueError, match=r"train_stack: 16 training images make no batch of batch_size 32"):
        train_stack(sample_architectures(1, seed=0), [0], recipe, digits_split(recipe.image_size))


# -- other spaces: the same builder with stand-alone networks of the space ---------------------------------------
RESNET_RECIPE = Recipe(space="resnet48", width_divisor=8, resnet_stem="small", epochs=1, train_images=64,
                       batch_size=32, networks_per_stack=2, valid_images=100)


def test_resnet48_samples_are_distinct_seeded_codes():
    from rdnas.spaces import get_space

    archs = sample_architectures(20, seed=3, space="resnet48")
    assert archs == sample_architectures(20, seed=3, space="resnet48")
    space = get_space("resnet48")
    assert len({space.key(torch.tensor(a)) for a in archs}) == 20
    space.validate(archs)


def test_sharded_resnet48_build_equals_one_process_and_reads_as_ground_truth(tmp_path):
    from rdnas.minibench import read_all_runs
    from rdnas.rank import GroundTruth

    archs = sample_architectures(3, seed=0, space="resnet48")
    whole = build(tmp_path / "whole", archs, [0, 1], RESNET_RECIPE, progress=False)
    for shard in range(2):
        build(tmp_path / "sharded", archs, [0, 1], RESNET_RECIPE, progress=False, shard=(shard, 2))
    assert sorted(p.name for p in (tmp_path / "sharded").glob("runs*.csv")) == ["runs.0of2.csv", "runs.1of2.csv"]
    sharded = read_all_runs(tmp_path / "sharded")

    def key(run):
        return run["arch_str"], run["seed"]

    assert sorted(map(key, sharded)) == sorted(map(key, whole)) and len(sharded) == 6
    by_key = {key(r): r for r in sharded}
    for run in whole:  # a run depends on its architecture and seed alone, not on the process that trained it
        assert by_key[key(run)]["valid_acc"] == run["valid_acc"]
        assert by_key[key(run)]["valid_loss"] == pytest.approx(run["valid_loss"], rel=1e-6)
    # resuming with either sharding trains nothing new
    assert len(build(tmp_path / "sharded", archs, [0, 1], RESNET_RECIPE, progress=False)) == 6
    table_path = tmp_path / "resnet48_digits.csv"
    write_table(table_path, benchmark_table(sharded, [0, 1]), "digits")
    table = GroundTruth.load(table_path, "resnet48")
    assert "index" not in table_path.read_text().splitlines()[0]
    assert len(table) == 3 and {"digits_valid_acc", "seeds"} <= set(table.columns)
    assert sorted(table.rows_of(torch.tensor(archs)).tolist()) == [0, 1, 2]


def test_bad_shards_are_refused(tmp_path):
    archs = sample_architectures(3, seed=0, space="resnet48")
    with pytest.raises(ValueError, match=r"shard must be \(i, n\) with 0 <= i < n"):
        build(tmp_path, archs, [0], RESNET_RECIPE, progress=False, shard=(2, 2))

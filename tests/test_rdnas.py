"""RD-NAS: the teacher, the samplers, the ranking-distillation step, the baselines in the same trainer."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from rdnas.ops import _reference
from rdnas.proxies import ScoreTable
from rdnas.spaces import nb201
from rdnas.train import (FairSampler, HammingPairSampler, MarginSubnetSampler, OneShotTrainer, SandwichSampler,
                         Teacher, TrainConfig, rank_average, rank_weight)

TINY = dict(data="digits", image_size=8, channels=4, cells_per_stage=1, batch_size=128)


def random_teacher(groups=5, seed=0):
    scores = torch.rand(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scores[~nb201.connected(nb201.all_archs())] = float("-inf")
    return Teacher(scores.numpy(), groups, "random")


def test_teacher_groups_split_the_space_by_rank():
    teacher = random_teacher(groups=7)
    sizes = torch.bincount(teacher.groups, minlength=7)
    assert int(sizes.sum()) == nb201.NUM_ARCHS and int(sizes.max() - sizes.min()) <= 1
    for g in range(6):  # every member of a better group scores at least as high as every member of the next
        assert teacher.scores[teacher.members(g)].min() >= teacher.scores[teacher.members(g + 1)].max()
    assert torch.equal(teacher.group(nb201.all_archs()[teacher.members(3)]), torch.full_like(teacher.members(3), 3))
    disconnected = ~nb201.connected(nb201.all_archs())
    assert bool((teacher.groups[disconnected] == 6).all())  # -inf ranks last
    assert float(teacher.ranks.max()) == 1.0 and float(teacher.ranks[disconnected].max()) < float(teacher.ranks.min()) + 0.03


def test_teacher_state_round_trip():
    teacher = random_teacher(groups=6)
    again = Teacher.from_state(teacher.state())
    assert again.name == teacher.name and again.num_groups == 6
    assert torch.equal(again.scores, teacher.scores) and torch.equal(again.groups, teacher.groups)


def test_rank_average_orders_ties_and_infinities():
    a = [3.0, 1.0, float("-inf"), 1.0]
    b = [0.0, 2.0, float("nan"), 1.0]
    assert rank_average([a]).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.5])
    combined = rank_average([a, b])
    assert combined[2] == 0.0 and combined.argmax() in (0, 1)
    with pytest.raises(ValueError, match="different lengths"):
        rank_average([[1.0], [1.0, 2.0]])


def test_teacher_from_a_score_table(tmp_path):
    archs = nb201.all_archs()
    first = torch.arange(nb201.NUM_ARCHS, dtype=torch.float64)
    second = first.flip(0).clone()
    table = ScoreTable(torch.arange(nb201.NUM_ARCHS), [nb201.to_string(tuple(a)) for a in archs.tolist()],
                       {"up": first.numpy(), "down": second.numpy()})
    path = tmp_path / "table.csv"
    table.write(path)
    up = Teacher.from_table(path, "up", num_groups=5)
    assert int(up.groups[-1]) == 0 and int(up.groups[0]) == 4 and up.name == "up"
    both = Teacher.from_table(path, "up,down")
    assert torch.all(both.ranks == both.ranks[0])  # opposite columns average to a tie everywhere
    with pytest.raises(ValueError, match="no column 'synflow'"):
        Teacher.from_table(path, "synflow")
    ScoreTable(torch.arange(10), table.archs[:10], {"up": first[:10].numpy()}).write(tmp_path / "small.csv")
    with pytest.raises(ValueError, match="must hold all 15625"):
        Teacher.from_table(tmp_path / "small.csv", "up")


def test_teacher_rejects_bad_input():
    with pytest.raises(ValueError, match="must cover all 15625"):
        Teacher([1.0, 2.0])
    with pytest.raises(ValueError, match="num_groups must be in"):
        Teacher(torch.zeros(nb201.NUM_ARCHS).numpy(), 1)


def test_margin_sampler_draws_every_reachable_group_distance():
    teacher = random_teacher(groups=5)
    sampler = MarginSubnetSampler(teacher, num_paths=3, seed=0)
    counts = torch.zeros(5)
    for _ in range(3000):
        archs = sampler.sample()
        assert archs.shape == (3, 6) and archs.dtype == torch.long
        groups = teacher.group(archs)
        distances = (groups[1:] - groups[0]).abs()
        assert bool((distances >= 1).all())
        counts += torch.bincount(distances, minlength=5).float()
    # From the middle group only distances 1 and 2 exist, from the ends 1..4: every distance occurs, and short
    # ones (reachable from more groups) more often.
    assert counts[0] == 0 and bool((counts[1:] > 0).all()) and counts[1] > counts[4]
    first_groups = []
    for _ in range(2000):
        first_groups.append(int(teacher.group(sampler.sample()[:1])))
    assert torch.bincount(torch.tensor(first_groups), minlength=5).min() > 300  # the first subnet is uniform


def test_margin_sampler_weights_and_state():
    teacher = random_teacher(groups=4)
    sampler = MarginSubnetSampler(teacher, 2, seed=1, distance_weights=[0, 0, 1])
    for _ in range(200):
        groups = teacher.group(sampler.sample())
        assert sorted(groups.tolist()) == [0, 3]  # distance 3 exists only between the end groups
    state = copy.deepcopy(sampler.state_dict())
    expected = [sampler.sample() for _ in range(5)]
    sampler.load_state_dict(state)
    assert all(torch.equal(sampler.sample(), e) for e in expected)
    with pytest.raises(ValueError, match="distance_weights must be 3 non-negative weights"):
        MarginSubnetSampler(teacher, 2, distance_weights=[1, 1])
    with pytest.raises(ValueError, match="num_paths must be at least 2"):
        MarginSubnetSampler(teacher, 1)


def test_hamming_sampler_distances_and_adaptive_schedule():
    sampler = HammingPairSampler(num_paths=4, seed=0, max_distance=3)
    for _ in range(300):
        archs = sampler.sample()
        distance = (archs[1:] != archs[0]).sum(1)
        assert bool(((distance >= 1) & (distance <= 3)).all())
    adaptive = HammingPairSampler(2, seed=0, adaptive=True)
    assert adaptive.current_max_distance() == 6
    adaptive.set_progress(0.5)
    assert adaptive.current_max_distance() == 3
    adaptive.set_progress(1.0)
    assert adaptive.current_max_distance() == 1
    assert all(int((a[1] != a[0]).sum()) == 1 for a in (adaptive.sample() for _ in range(50)))


def test_fair_and_sandwich_samplers():
    fair = FairSampler(seed=0)
    for _ in range(20):
        archs = fair.sample()
        assert archs.shape == (5, 6)
        assert all(sorted(archs[:, e].tolist()) == list(range(5)) for e in range(6))
    sandwich = SandwichSampler(4, seed=0).sample()
    assert sandwich[0].tolist() == [nb201.CONV3X3] * 6 and sandwich[1].tolist() == [nb201.SKIP] * 6
    assert sandwich.shape == (4, 6)


def test_rank_weight_schedules():
    assert rank_weight("constant", 7.5, 10) == 1.0
    assert rank_weight("warmup", 5, 100) == 0.5 and rank_weight("warmup", 50, 100) == 2.0
    assert rank_weight("sine", 50, 100) == pytest.approx(2 * math.sin(0.4 * math.pi))
    assert [rank_weight("multistage", e, 9) for e in (0, 4, 8)] == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="schedule must be one of"):
        rank_weight("cosine", 0, 1)


@pytest.mark.parametrize("margin_mode", ["group", "constant", "none"])
def test_rdnas_step_adds_the_pairwise_margin_loss_of_the_subnet_losses(tmp_path, margin_mode):
    teacher = random_teacher(groups=5)
    config = TrainConfig(**TINY, method="rdnas", paths_per_step=4, margin=0.3, margin_mode=margin_mode,
                         rank_schedule="constant", rank_weight=0.7, grad_clip=0.0, out_dir=str(tmp_path))
    trainer = OneShotTrainer(config, progress=False, teacher=teacher)
    images, labels = next(iter(trainer.batches))
    before = copy.deepcopy(trainer.model)
    sampler_state = copy.deepcopy(trainer.sampler.state_dict())
    result = trainer.train_step(images, labels, progress=0.0)

    # The same step by hand: each subnet alone (its own batch statistics), the reference all-pairs loss in float64.
    trainer.sampler.load_state_dict(sampler_state)
    archs = trainer.sampler.sample()
    losses = torch.stack([F.cross_entropy(before(images, a), labels) for a in archs])
    groups = teacher.group(archs) if margin_mode == "group" else None
    margin = 0.0 if margin_mode == "none" else 0.3
    reference = _reference.pairwise_margin_rank_loss(-losses.double(), teacher.rank(archs), margin, groups)
    assert float(result["rank_loss"]) == pytest.approx(float(reference.detach()), rel=1e-4, abs=1e-6)
    assert float(result["loss"]) == pytest.approx(float(losses.mean()), rel=1e-5)

    objective = losses.sum() + 0.7 * _reference.pairwise_margin_rank_loss(-losses, teacher.rank(archs).float(),
                                                                          margin, groups)
    objective.backward()
    optimizer = torch.optim.SGD(before.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    optimizer.step()
    for (name, a), (_, b) in zip(trainer.model.named_parameters(), before.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_rdnas_needs_a_teacher_and_resumes_only_with_the_same_one(tmp_path):
    with pytest.raises(ValueError, match="method 'rdnas' needs a teacher"):
        OneShotTrainer(TrainConfig(**TINY, method="rdnas", paths_per_step=2, out_dir=str(tmp_path)), progress=False)
    config = TrainConfig(**TINY, method="rdnas", paths_per_step=2, epochs=2, out_dir=str(tmp_path / "a"))
    straight = OneShotTrainer(config, progress=False, teacher=random_teacher())
    straight.fit()

    class Interrupted(Exception):
        pass

    def stop_in_epoch_two(trainer):
        if trainer.epoch == 2:
            raise Interrupted  # after epoch 2's steps, before its checkpoint: only epoch 1 is on disk
        return {}

    run = dict(config.__dict__, out_dir=str(tmp_path / "c"))
    with pytest.raises(Interrupted):
        OneShotTrainer(TrainConfig(**run), progress=False, teacher=random_teacher(), evaluate=stop_in_epoch_two).fit()
    resumed = OneShotTrainer(TrainConfig(**run), progress=False, teacher=random_teacher())
    resumed.fit(resume=True)
    assert resumed.epoch == 2
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="the checkpoint's teacher differs"):
        OneShotTrainer(TrainConfig(**run), progress=False, teacher=random_teacher(seed=1)).fit(resume=True)


@pytest.mark.parametrize("method,paths", [("spos", 3), ("fairnas", 5), ("sandwich", 3)])
def test_baselines_train_in_the_same_trainer(tmp_path, method, paths):
    config = TrainConfig(**TINY, method=method, paths_per_step=paths, epochs=1, out_dir=str(tmp_path))
    history = OneShotTrainer(config, progress=False).fit()
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"]) and "rank_loss" not in history[0]


@pytest.mark.parametrize("field,value,message", [
    ("method", "darts", "method must be one of"), ("sampler", "greedy", "sampler must be one of"),
    ("margin_mode", "adaptive", "margin_mode must be one of"), ("rank_schedule", "cos", "rank_schedule must be one of"),
    ("groups", 1, "groups must be at least 2"), ("margin", -0.1, "margin must be non-negative"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
    config = TrainConfig(**TINY, method="rdnas", paths_per_step=2, out_dir=str(tmp_path))
    setattr(config, field, value)
    with pytest.raises(ValueError, match=message):
        OneShotTrainer(config, progress=False, teacher=random_teacher())
    with pytest.raises(ValueError, match="needs paths_per_step >= 2"):
        OneShotTrainer(TrainConfig(**TINY, method="sandwich", out_dir=str(tmp_path)), progress=False)

"""The one contract every registered search space and its supernet keep (parametrised over the registry, so a new
space is tested by registering it): valid samples, string round trip, key invariance, mutation, the optional
methods the trainer uses, forward_subnets == K single forwards, export(a)(x) == supernet(x, a), checkpoint round
trip, and a short training run of the generic trainer."""

import io

import pytest
import torch

from rdnas.spaces import InvalidArchitecture, get_space, space_names
from rdnas.supernet import BNStatistics, build_supernet, supernet_spec
from rdnas.train import OneShotTrainer, SampledTeacher, TrainConfig, UniformSampler

# Small supernets per space, as a user would configure them for 16x16 images.
SMALL_OPTIONS = {
    "nb201": dict(channels=4, cells_per_stage=1),
    "resnet48": dict(resnet_stem="small", width_divisor=8),
}
SPACES = space_names()


def small_supernet(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_supernet(name, num_classes=5, in_channels=1, **SMALL_OPTIONS[name]).double()


def test_every_registered_space_has_options_for_this_contract():
    assert set(SPACES) == set(SMALL_OPTIONS)


@pytest.mark.parametrize("name", SPACES)
def test_samples_are_valid_seeded_and_shaped(name):
    space = get_space(name)
    first = space.sample(64, torch.Generator().manual_seed(3))
    again = space.sample(64, torch.Generator().manual_seed(3))
    assert first.dtype == torch.long and first.shape == (64, space.width)
    assert torch.equal(first, again)
    assert torch.equal(space.validate(first), first)
    assert isinstance(space.size, int) and space.size > 1


@pytest.mark.parametrize("name", SPACES)
def test_distinct_samples_are_nontrivial_with_distinct_keys(name):
    space = get_space(name)
    archs = space.sample_distinct(40, torch.Generator().manual_seed(1))
    assert archs.shape == (40, space.width)
    assert torch.equal(archs, space.sample_distinct(40, torch.Generator().manual_seed(1)))
    assert len({space.key(a) for a in archs}) == 40 and not bool(space.is_trivial(archs).any())


@pytest.mark.parametrize("name", SPACES)
def test_string_round_trip_and_key_invariance(name):
    space = get_space(name)
    archs = space.sample(32, torch.Generator().manual_seed(1))
    for arch in archs:
        text = space.to_string(arch)
        assert isinstance(text, str)
        assert torch.equal(space.from_string(text), arch)
        assert space.key(space.from_string(text)) == space.key(arch)
    assert len({space.key(a) for a in archs}) <= len({space.to_string(a) for a in archs})


@pytest.mark.parametrize("name", SPACES)
def test_invalid_strings_and_rows_are_named_errors(name):
    space = get_space(name)
    with pytest.raises(InvalidArchitecture, match=name):
        space.from_string("not an architecture")
    with pytest.raises(InvalidArchitecture):
        space.validate(torch.full((1, space.width), 99))
    with pytest.raises(InvalidArchitecture):
        space.validate(torch.zeros(1, space.width + 1, dtype=torch.long))


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("changes", [1, 2])
def test_mutation_gives_valid_different_architectures(name, changes):
    space = get_space(name)
    generator = torch.Generator().manual_seed(5)
    parents = space.sample(20, generator)
    children = space.mutate(parents, changes, generator)
    assert children.shape == parents.shape
    space.validate(children)
    assert bool((children != parents).any(1).all())


@pytest.mark.parametrize("name", SPACES)
def test_encoding_is_a_float_matrix_with_one_row_per_architecture(name):
    space = get_space(name)
    archs = space.sample(7, torch.Generator().manual_seed(2))
    features = space.encode(archs)
    assert features.dtype == torch.float32 and features.dim() == 2 and len(features) == 7
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name", SPACES)
def test_enumeration_and_index_exist_exactly_for_enumerable_spaces(name):
    space = get_space(name)
    archs = space.sample(5, torch.Generator().manual_seed(0))
    if space.enumerable:
        everything = space.enumerate()
        assert len(everything) == space.size
        assert torch.equal(everything[space.index(archs)], archs)
    else:
        with pytest.raises(NotImplementedError, match="cannot be enumerated"):
            space.enumerate()
        with pytest.raises(NotImplementedError):
            space.index(archs)


@pytest.mark.parametrize("name", SPACES)
def test_largest_and_smallest_are_valid_and_nontrivial(name):
    space = get_space(name)
    ends = torch.stack([space.largest(), space.smallest()])
    space.validate(ends)
    assert not bool(space.is_trivial(ends).any())


@pytest.mark.parametrize("name", SPACES)
def test_supernet_is_registered_for_the_space(name):
    supernet = small_supernet(name)
    assert supernet.space is get_space(name)
    rebuilt = build_supernet(name, **supernet.config) if "num_classes" in supernet.config else None
    if rebuilt is not None:
        assert set(rebuilt.state_dict()) == set(supernet.state_dict())
    with pytest.raises(ValueError, match=f"the {name} supernet takes the options"):
        build_supernet(name, num_classes=5, in_channels=1, no_such_option=1)


@pytest.mark.parametrize("name", SPACES)
def test_forward_subnets_equals_k_single_forwards(name):
    space, supernet = get_space(name), small_supernet(name).train()
    archs = torch.cat([space.largest().unsqueeze(0), space.smallest().unsqueeze(0),
                       space.sample(2, torch.Generator().manual_seed(4))])
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    together = supernet.forward_subnets(x, archs, bn="batch")
    assert together.shape == (len(archs), 3, 5)
    for k, arch in enumerate(archs):
        torch.testing.assert_close(together[k], supernet(x, arch), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SPACES)
def test_calibrated_statistics_equal_per_subnet_running_statistics(name):
    """Calibrate on one batch, evaluate in "calibrated" mode: each subnet is normalised with its own statistics of
    that batch, so the logits equal a train-mode forward of that subnet on the same batch."""
    space, supernet = get_space(name), small_supernet(name)
    archs = space.sample(3, torch.Generator().manual_seed(8))
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    stats = BNStatistics("calibrate", len(archs))
    supernet.forward_subnets(x, archs, bn=stats)
    calibrated = supernet.forward_subnets(x, archs, bn=stats.freeze())
    for k, arch in enumerate(archs):
        torch.testing.assert_close(calibrated[k], supernet.train()(x, arch), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_export_computes_what_the_supernet_computes(name, mode):
    space, supernet = get_space(name), small_supernet(name)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if mode == "eval":  # give the running statistics something other than their initial values
        for arch in space.sample(3, torch.Generator().manual_seed(6)):
            supernet.train()(x, arch)
    supernet.train(mode == "train")
    for arch in space.sample(3, torch.Generator().manual_seed(7)):
        network = supernet.export(arch)
        assert network.training == (mode == "train")
        torch.testing.assert_close(network(x), supernet(x, arch), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SPACES)
def test_supernet_checkpoint_round_trip(name):
    space, supernet = get_space(name), small_supernet(name, seed=0)
    buffer = io.BytesIO()
    torch.save(supernet.state_dict(), buffer)
    other = small_supernet(name, seed=1)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    arch = space.sample(1, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(other.eval()(x, arch), supernet.eval()(x, arch), rtol=0, atol=0)


@pytest.mark.parametrize("name", SPACES)
def test_uniform_sampler_draws_the_space_and_resumes(name):
    sampler = UniformSampler(num_paths=3, seed=2, space=name)
    first = sampler.sample()
    state = sampler.state_dict()
    nxt = sampler.sample()
    resumed = UniformSampler(num_paths=3, seed=99, space=name)
    resumed.load_state_dict(state)
    assert first.shape == (3, get_space(name).width)
    assert torch.equal(resumed.sample(), nxt)


@pytest.mark.parametrize("name", SPACES)
def test_sampled_teacher_groups_and_ranks_any_space(name):
    space = get_space(name)
    reference = space.sample(200, torch.Generator().manual_seed(0))
    scores = space.encode(reference).double().sum(1)  # any deterministic function of the architecture

    def scorer(archs):
        return space.encode(archs).double().sum(1)

    teacher = SampledTeacher(reference, scores, 4, "encoding-sum", name, scorer)
    sizes = torch.bincount(teacher.groups, minlength=4)
    assert sizes.sum() == 200 and int(sizes.max()) - int(sizes.min()) <= 200  # ties may merge groups
    fresh = space.sample(10, torch.Generator().manual_seed(9))
    ranks, groups = teacher.lookup(fresh)
    assert ranks.shape == (10,) and bool(((ranks >= 0) & (ranks <= 1)).all())
    # a better score never falls in a worse group or gets a lower rank
    order = torch.argsort(scorer(fresh))
    assert bool((groups[order].diff() <= 0).all()) and bool((ranks[order].diff() >= 0).all())
    again = SampledTeacher.from_state(teacher.state(), scorer)
    assert again.same_as(teacher.state()) and torch.equal(again.lookup(fresh)[1], groups)


@pytest.mark.parametrize("name", SPACES)
def test_the_generic_trainer_trains_and_resumes_every_space(tmp_path, name):
    def config(out):
        return TrainConfig(space=name, data="digits", image_size=8, epochs=1, batch_size=128, paths_per_step=2,
                           out_dir=str(out), **SMALL_OPTIONS[name])

    trainer = OneShotTrainer(config(tmp_path / "run"), progress=False)
    assert type(trainer.model) is type(supernet_spec(name).build(num_classes=10, in_channels=1,
                                                                  **SMALL_OPTIONS[name]))
    history = trainer.fit()
    assert len(history) == 1 and history[0]["train_loss"] > 0
    resumed = OneShotTrainer(config(tmp_path / "run"), progress=False)
    assert resumed.fit(resume=True) == history  # nothing left to do: the checkpoint is complete

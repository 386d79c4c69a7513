"""Each space's network options (a NetworkOptions dataclass its SupernetSpec names): checked by the spec, held in
TrainConfig.space_options, turned into the commands' flags; checkpoints and config files written before
space_options existed (every space's options as top-level TrainConfig fields) still load and resume."""

import json
from dataclasses import asdict

import pytest
import torch

from rdnas.cli import main
from rdnas.cli.checkpoint import load_supernet
from rdnas.spaces import NetworkOptions
from rdnas.spaces.nb201 import NB201Options
from rdnas.spaces.resnet48 import ResNet48Options
from rdnas.supernet import SupernetSpec, supernet_spec
from rdnas.train import OneShotTrainer, TrainConfig, load_checkpoint, save_checkpoint

# What TrainConfig held before space_options: every space's options as fields, at these defaults.
LEGACY_DEFAULTS = dict(channels=16, cells_per_stage=5, bn_affine=True, bn_track_running_stats=True,
                       resnet_stem="imagenet", width_divisor=1)
TINY = dict(data="digits", image_size=8, epochs=1, batch_size=128)


def legacy_config(config: TrainConfig) -> dict:
    """``config`` as a checkpoint written before space_options existed saved it."""
    values = asdict(config)
    return {**{k: v for k, v in values.items() if k != "space_options"}, **LEGACY_DEFAULTS,
            **values["space_options"]}


def test_every_registered_supernet_declares_its_options_as_a_dataclass():
    assert supernet_spec("nb201").options is NB201Options and supernet_spec("resnet48").options is ResNet48Options
    assert ResNet48Options().as_dict() == dict(resnet_stem="imagenet", width_divisor=1, bn_track_running_stats=True)
    with pytest.raises(TypeError, match="options of the toy supernet must be a rdnas.spaces.NetworkOptions"):
        SupernetSpec("toy", torch.nn.Identity, ("width",))


@pytest.mark.parametrize("values, message", [
    (dict(width_divisor=3), r"where: width_divisor must be one of \(1, 2, 4, 8\), got 3"),
    (dict(resnet_stem="tiny"), r"where: resnet_stem must be one of \('imagenet', 'small'\), got 'tiny'"),
    (dict(bn_track_running_stats=1), "where: bn_track_running_stats must be True or False, got 1"),
    (dict(channels=8), "where: the resnet48 network takes the options resnet_stem, width_divisor, "
                       "bn_track_running_stats; got channels"),
])
def test_the_spec_checks_the_options_naming_each(values, message):
    with pytest.raises(ValueError, match=message):
        supernet_spec("resnet48").check_options(values, "where")


@pytest.mark.parametrize("values, message", [(dict(channels=0), "channels must be a positive integer, got 0"),
                                             (dict(cells_per_stage=True),
                                              "cells_per_stage must be a positive integer")])
def test_nb201_options_refuse_non_positive_sizes(values, message):
    with pytest.raises(ValueError, match=message):
        NB201Options(**values).check("where")


def test_a_network_without_options_takes_none():
    with pytest.raises(ValueError, match="the toy network takes no options; got width"):
        NetworkOptions.from_dict({"width": 2}, "where", "the toy network")


def test_train_config_takes_space_options_as_keywords_and_fills_in_defaults():
    config = TrainConfig(space="resnet48", resnet_stem="small", width_divisor=8)
    assert config.space_options == dict(resnet_stem="small", width_divisor=8)
    assert config.supernet_options() == dict(resnet_stem="small", width_divisor=8, bn_track_running_stats=True)
    assert TrainConfig(space="resnet48", space_options=dict(width_divisor=2)).supernet_options()["width_divisor"] == 2
    with pytest.raises(ValueError, match="TrainConfig: the nb201 network takes the options .*; got width_divisor"):
        TrainConfig(width_divisor=8).check()


@pytest.mark.parametrize("space, options", [("nb201", dict(channels=4, cells_per_stage=1)),
                                            ("resnet48", dict(resnet_stem="small", width_divisor=8))])
def test_a_checkpoint_from_before_space_options_loads_and_resumes(tmp_path, space, options):
    first = OneShotTrainer(TrainConfig(space=space, out_dir=str(tmp_path), **TINY, **options), progress=False)
    first.fit()
    state = load_checkpoint(first.checkpoint_path)
    state["config"] = legacy_config(first.config)
    assert "space_options" not in state["config"]
    assert state["config"]["width_divisor"] == options.get("width_divisor", 1)
    save_checkpoint(first.checkpoint_path, state)

    loaded = TrainConfig.from_dict(load_checkpoint(first.checkpoint_path)["config"])
    assert loaded.supernet_options() == first.config.supernet_options()
    assert set(loaded.space_options) == set(supernet_spec(space).option_names)  # the other space's dropped
    supernet, config, _ = load_supernet(first.checkpoint_path, "cpu")  # what eval and search load
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(supernet.state_dict()[name], tensor), name
    resumed = OneShotTrainer(TrainConfig(space=space, out_dir=str(tmp_path), **TINY, **options), progress=False)
    resumed.fit(resume=True)  # the run is complete: it resumes at its last epoch
    assert resumed.epoch == 1 and resumed.history == first.history
    other = {name: 2 if isinstance(value, int) and not isinstance(value, bool) else value
             for name, value in options.items()}
    other = {**other, "width_divisor": 4} if space == "resnet48" else other
    with pytest.raises(ValueError, match="cannot resume: the checkpoint has"):
        OneShotTrainer(TrainConfig(space=space, out_dir=str(tmp_path), **TINY, **other), progress=False).fit(
            resume=True)


def test_a_config_json_from_before_space_options_loads(tmp_path):
    values = legacy_config(TrainConfig(space="resnet48", resnet_stem="small", width_divisor=8))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    config = TrainConfig.from_dict(json.loads(path.read_text()))
    assert config.space_options == dict(resnet_stem="small", width_divisor=8, bn_track_running_stats=True)
    with pytest.raises(ValueError, match=r"unknown fields \['learning_rate'\]"):
        TrainConfig.from_dict({**values, "learning_rate": 0.1})


def test_rdnas_train_refuses_another_spaces_option_by_name(tmp_path, capsys):
    for argv, message in ((["--width-divisor", "8"],
                           "--width-divisor is an option of resnet48, not of the nb201 space"),
                          (["--space", "resnet48", "--cells", "2"],
                           "--cells is an option of nb201, not of the resnet48 space")):
        assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 2
        assert f"rdnas train: error: {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # the option's own type, derived from NB201Options (minimum 1)
        main(["train", "--channels", "0", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert "rdnas train: error: argument --channels: expected a positive integer, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["proxies", "--proxy", "params"], ["bench", "build"]])
def test_proxies_and_bench_build_refuse_another_spaces_option_by_name(tmp_path, capsys, command):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main([*command, "--space", "nb201", "--width-divisor", "4", "--out", str(out)])
    assert stop.value.code == 2
    assert (f"rdnas {' '.join(command[:2]) if command[0] == 'bench' else command[0]}: error: --width-divisor is an "
            "option of resnet48, not of the nb201 space") in capsys.readouterr().err
    assert not out.exists()


def test_flags_are_derived_from_the_fields_type_minimum_and_default():
    import argparse
    from dataclasses import dataclass

    from rdnas.cli.arguments import network_option_type, network_option_flag
    from rdnas.spaces import option

    @dataclass(frozen=True)
    class Options(NetworkOptions):
        drop: float = option(0.1, "dropout", minimum=0)
        act: str = option("relu", "activation")
        wide: bool = option(False, "wider layers")
        narrow: bool = option(True, "narrower layers")

    drop, act, wide, narrow = Options.option_fields()
    assert [network_option_flag(f) for f in (drop, act, wide, narrow)] == ["--drop", "--act", "--wide", "--no-narrow"]
    assert network_option_type(drop)("0") == 0.0 and network_option_type(act)("gelu") == "gelu"
    with pytest.raises(argparse.ArgumentTypeError, match="expected a non-negative number"):
        network_option_type(drop)("-1")
    for values, message in ((dict(drop=float("nan")), "drop must be a finite number of at least 0, got nan"),
                            (dict(act=3), "act must be a string, got 3"),
                            (dict(wide="yes"), "wide must be True or False, got 'yes'")):
        with pytest.raises(ValueError, match=message):
            Options(**values).check("where")


def test_the_pipeline_trains_the_shipped_benchmarks_network_unless_told_otherwise():
    from rdnas.cli import build_parser
    from rdnas.demo import config_from_args
    from rdnas.pipeline import PipelineConfig

    assert PipelineConfig().train_config("spos", 0, "out").supernet_options() == \
        dict(channels=8, cells_per_stage=1, bn_affine=True, bn_track_running_stats=True)
    resnet = PipelineConfig(space="resnet48").train_config("spos", 0, "out")
    assert resnet.supernet_options() == dict(resnet_stem="small", width_divisor=8, bn_track_running_stats=True)
    assert PipelineConfig(space_options=dict(channels=4)).train_config("spos", 0, "out").space_options == \
        dict(channels=4)
    for space, options in (("nb201", {}), ("resnet48", dict(resnet_stem="small", width_divisor=8))):
        argv = ["demo", "--space", space, "--data", "cifar10:/nowhere", "--gt", "gt.csv"]
        config = config_from_args(build_parser().parse_args(argv))  # the benchmark's network on 32 px images
        assert (config.space_options, config.image_size) == (options, 32)


def test_a_benchmark_recipe_holds_its_spaces_options_with_the_benchmark_defaults():
    from rdnas.minibench import Recipe

    assert Recipe().space_options == dict(channels=8, cells_per_stage=1, bn_affine=True, bn_track_running_stats=True)
    assert Recipe(space="resnet48", width_divisor=4).space_options == \
        dict(resnet_stem="small", width_divisor=4, bn_track_running_stats=True)
    assert Recipe(channels=4) == Recipe(space_options=dict(channels=4))
    with pytest.raises(ValueError, match="rdnas.minibench.Recipe: the nb201 network takes the options .*; got "
                                         "width_divisor"):
        Recipe(width_divisor=8)
    with pytest.raises(ValueError, match="rdnas.minibench.Recipe: channels must be a positive integer, got 0"):
        Recipe(channels=0)


def test_a_build_folder_from_before_space_options_resumes(tmp_path):
    """recipe.json files written with every space's options as top-level fields (the shipped recipes, builds
    running when space_options came) read as the same recipe; the other space's options are dropped."""
    from rdnas.minibench import Recipe, build, sample_architectures

    recipe = Recipe(channels=4, epochs=1, train_images=64, batch_size=32, networks_per_stack=2)
    old = {name: value for name, value in asdict(recipe).items() if name != "space_options"}
    old.update(channels=4, cells_per_stage=1, resnet_stem="small", width_divisor=8)
    assert Recipe.from_dict(old) == recipe
    (tmp_path / "recipe.json").write_text(json.dumps(old))
    archs = sample_architectures(3, seed=0)
    build(tmp_path, archs, [0], recipe, progress=False)  # resumes: the saved recipe is this one
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 1 + len(archs)
    with pytest.raises(ValueError, match="was built with"):
        build(tmp_path, archs, [0], Recipe(channels=8, epochs=1, train_images=64, batch_size=32), progress=False)


def test_bench_build_takes_the_options_own_names_beside_their_flags(tmp_path):
    from rdnas.cli import build_parser

    args = build_parser().parse_args(["bench", "build", "--cells-per-stage", "2", "--channels", "4"])
    assert (args.cells_per_stage, args.channels) == (2, 4)
    assert build_parser().parse_args(["bench", "build", "--cells", "3"]).cells_per_stage == 3

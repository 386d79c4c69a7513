"""ResNet48 through the generic core: the trainer's methods in this space (SPOS, sandwich with in-place
distillation, RD-NAS in the authors' form and with the margin sampler, min-Hamming pairs), a FLOPs teacher over a
reference sample, resume, and the CLI (`rdnas arch`, a competition submission from `rdnas eval --archs-json`)."""

import json

import pytest
import torch

from rdnas.cli import main
from rdnas.proxies import cost_scorer
from rdnas.spaces import get_space
from rdnas.train import MinHammingPairSampler, OneShotTrainer, SampledTeacher, TrainConfig, make_teacher

SPACE = get_space("resnet48")
LARGEST = "1558511111111111111111111111111111111111111111111111"
SMALLEST = "1222277777000000777700000077770000000000007777000000"


def config(out, **changes) -> TrainConfig:
    values = dict(space="resnet48", resnet_stem="small", width_divisor=8, data="digits", image_size=8, epochs=1,
                  batch_size=128, paths_per_step=4, out_dir=str(out), teacher_samples=256, teacher_proxies="flops")
    values.update(changes)
    return TrainConfig(**values)


METHODS = {
    "spos": dict(method="spos", paths_per_step=1),
    "sandwich+distill": dict(method="sandwich", distill=True),
    "rdnas-authors": dict(method="rdnas", sampler="sandwich", distill=True, margin_mode="none",
                          rank_schedule="warmup"),
    "rdnas-margin": dict(method="rdnas", sampler="margin", margin_mode="group"),
    "rdnas-min-hamming": dict(method="rdnas", sampler="min_hamming", min_hamming=20, margin_mode="none"),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_the_resnet48_supernet(tmp_path, method):
    trainer = OneShotTrainer(config(tmp_path, **METHODS[method]), progress=False)
    history = trainer.fit()
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))
    if METHODS[method]["method"] == "rdnas":
        assert "rank_loss" in history[0]


def test_flops_teacher_is_a_sampled_teacher_whose_groups_follow_flops():
    teacher = make_teacher(config("unused", method="rdnas"))
    assert isinstance(teacher, SampledTeacher) and teacher.population_size == 256
    flops = SPACE.cost(teacher.archs)["flops"]
    assert torch.equal(teacher.scores, flops.double())
    # group 0 holds the costliest quarter... fifth: every member of group g has more FLOPs than any of group g + 1
    for g in range(teacher.num_groups - 1):
        assert flops[teacher.members(g)].min() >= flops[teacher.members(g + 1)].max()
    ranks, groups = teacher.lookup(torch.stack([SPACE.largest(), SPACE.smallest()]))  # outside the reference set
    assert groups.tolist() == [0, teacher.num_groups - 1] and ranks[0] == 1.0 and ranks[1] == 0.0


def test_a_negated_cost_teacher_prefers_cheap_architectures():
    teacher = make_teacher(config("unused", method="rdnas", teacher_proxies="-flops"))
    assert torch.equal(teacher.scores, -SPACE.cost(teacher.archs)["flops"].double())
    ranks, groups = teacher.lookup(torch.stack([SPACE.largest(), SPACE.smallest()]))
    assert groups.tolist() == [teacher.num_groups - 1, 0] and ranks[0] == 0.0 and ranks[1] == 1.0


def test_sandwich_rank_term_ranks_only_the_random_subnets(tmp_path):
    trainer = OneShotTrainer(config(tmp_path, **METHODS["rdnas-authors"]), progress=False)
    archs = trainer.sampler.sample()
    assert SPACE.to_string(archs[0]) == LARGEST and SPACE.to_string(archs[1]) == SMALLEST


def test_min_hamming_pairs_are_far_apart():
    sampler = MinHammingPairSampler(num_paths=3, seed=0, min_distance=33, space="resnet48")
    for _ in range(5):
        archs = sampler.sample()
        assert bool((SPACE.hamming(archs[:1].expand(2, -1), archs[1:]) >= 33).all())
    with pytest.raises(ValueError, match="min_distance must be in 1..52"):
        MinHammingPairSampler(min_distance=60, space="resnet48")


def test_an_interrupted_resnet48_rdnas_run_resumes_to_the_same_weights(tmp_path):
    straight = OneShotTrainer(config(tmp_path / "a", epochs=2, **METHODS["rdnas-margin"]), progress=False)
    straight.fit()

    def crash_in_epoch_two(trainer):
        if trainer.epoch == 2:  # called before epoch 2's checkpoint: the run dies with epoch 1 saved
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        OneShotTrainer(config(tmp_path / "b", epochs=2, **METHODS["rdnas-margin"]), progress=False,
                       evaluate=crash_in_epoch_two).fit()
    resumed = OneShotTrainer(config(tmp_path / "b", epochs=2, **METHODS["rdnas-margin"]), progress=False)
    resumed.fit(resume=True)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


def test_fairnas_needs_a_space_with_fair_paths():
    with pytest.raises(ValueError, match="fairnas needs the space's fair_paths: .*no strict-fairness paths"):
        config("x", method="fairnas").check()


def test_distill_needs_the_sandwich_rule():
    with pytest.raises(ValueError, match="distill .* needs the sandwich rule"):
        config("x", method="spos", distill=True).check()


def test_teacher_tables_are_for_enumerable_spaces():
    with pytest.raises(ValueError, match="teacher_table is for enumerable spaces"):
        make_teacher(config("x", method="rdnas", teacher_table="t.csv"))


def test_cost_scorer_refuses_unknown_costs_and_spaces_without_a_cost_model():
    with pytest.raises(ValueError, match="has params, trainable_params, flops, not 'zen'"):
        cost_scorer("resnet48", "zen")
    with pytest.raises(ValueError, match="one cost to score with"):
        cost_scorer("resnet48", "flops,params")


def test_arch_command_prints_the_nb201_benchmark_counts(capsys):
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert main(["arch", cell]) == 0
    # nb201_gt.csv: params_M_cifar10 1.288506, flops_M_cifar10 184.730250 for this cell (official index 9930)
    assert json.loads(capsys.readouterr().out) == {"arch": cell, "params": 1288506, "trainable_params": 1288506,
                                                    "flops": 184730250}


def test_arch_command_prints_the_competition_costs(capsys):
    assert main(["arch", "--space", "resnet48", LARGEST, SMALLEST]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"arch": LARGEST, "params": 34067880, "trainable_params": 34043688, "flops": 5292349440},
        {"arch": SMALLEST, "params": 5839800, "trainable_params": 5833080, "flops": 946450400}]


def test_arch_command_names_a_malformed_code(capsys):
    assert main(["arch", "--space", "resnet48", "1558"]) == 2
    assert "resnet48" in capsys.readouterr().err


def test_nb201_image_size_the_macro_network_cannot_take_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--image-size", "14", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "image_size 14 does not fit the NB201 macro network" in capsys.readouterr().err


def test_eval_writes_a_competition_submission(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--space", "resnet48", "--image-size", "8", "--epochs", "1", "--batch-size", "128",
                 "--out", str(run), "--quiet"]) == 0
    codes = SPACE.sample(5, torch.Generator().manual_seed(0))
    entries = {f"arch{k + 1}": {"acc": 0.0, "arch": SPACE.to_string(code)} for k, code in enumerate(codes)}
    (tmp_path / "test.json").write_text(json.dumps(entries))
    out = tmp_path / "submission.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--archs-json", str(tmp_path / "test.json"),
                 "--out", str(out), "--quiet", "--calibration-steps", "1", "--valid-limit", "64"]) == 0
    submission = json.loads(out.read_text())
    assert list(submission) == list(entries)
    assert [v["arch"] for v in submission.values()] == [v["arch"] for v in entries.values()]
    assert all(0.0 <= v["acc"] <= 1.0 for v in submission.values())


def test_resnet48_options_are_refused_for_nb201_and_nb201_runs_keep_their_defaults(tmp_path, capsys):
    assert main(["train", "--width-divisor", "4", "--epochs", "1", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "--width-divisor is an option of resnet48, not of the nb201 space" in capsys.readouterr().err
    # a CLI run of NB201 records every option of its own network and none of another space's, so the API resumes it
    assert main(["train", "--image-size", "8", "--channels", "4", "--cells", "1", "--epochs", "1",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 0
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["space_options"] == dict(channels=4, cells_per_stage=1, bn_affine=True, bn_track_running_stats=True)
    assert "resnet_stem" not in saved and "width_divisor" not in saved
    resumed = OneShotTrainer(TrainConfig(image_size=8, channels=4, cells_per_stage=1, epochs=1,
                                         out_dir=str(tmp_path / "b")), progress=False)
    resumed.fit(resume=True)
    assert resumed.epoch == 1


def test_train_and_eval_on_an_imagenet_style_folder(tmp_path, capsys):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 3)):
        for label in ("ant", "bee"):
            folder = tmp_path / "imagenet" / split / label
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = torch.randint(0, 256, (20, 24, 3), generator=rng, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{k}.png")
    run = tmp_path / "run"
    assert main(["train", "--space", "resnet48", "--data", f"imagenet:{tmp_path / 'imagenet'}", "--image-size", "32",
                 "--width-divisor", "8", "--batch-size", "4", "--epochs", "1", "--paths", "2", "--out", str(run),
                 "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["space_options"] == dict(resnet_stem="imagenet", width_divisor=8,  # the competition's stem on folders
                                          bn_track_running_stats=True)
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--archs", "3", "--batch-size", "4",
                 "--calibration-steps", "1", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["valid_images"] == 6 and len(result["supernet_accuracy"]) == 3
    assert all(0.0 <= a <= 1.0 for a in result["supernet_accuracy"])

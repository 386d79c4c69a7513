"""The RD-NAS pipeline on a user's own data: a CIFAR-10 folder and a ground-truth table (both tiny, written here)."""

import json
import pickle

import numpy as np
import torch

from rdnas.demo import format_report, run_demo
from rdnas.minibench import sample_architectures
from rdnas.pipeline import PipelineConfig, shipped_benchmark
from rdnas.rank import GroundTruth
from rdnas.spaces import nb201


def write_cifar10(folder, rng):
    for k in range(1, 6):
        with open(folder / f"data_batch_{k}", "wb") as handle:
            pickle.dump({"data": rng.integers(0, 256, (16, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 16).tolist()}, handle)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8),
                     "labels": rng.integers(0, 10, 40).tolist()}, handle)


def test_demo_pipeline_on_a_cifar10_folder_and_a_ground_truth_table(tmp_path):
    rng = np.random.default_rng(0)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    write_cifar10(cifar, rng)
    archs = sample_architectures(12, seed=1)
    table = tmp_path / "gt.csv"
    rows = [f"{k},{nb201.to_string(a)},{rng.uniform(80, 95):.3f}" for k, a in enumerate(archs)]
    table.write_text("index,arch_str,cifar10_valid_acc\n" + "\n".join(rows) + "\n")
    config = PipelineConfig(data=f"cifar10:{cifar}", gt=str(table), gt_column="cifar10_valid_acc",
                            space_options=dict(channels=4, cells_per_stage=1), epochs=2, batch_size=16,
                            eval_every=1, proxies="flops,synflow",
                            teacher_proxies="flops", out_dir=str(tmp_path / "out"))
    report = run_demo(config, progress=False)
    assert report["num_archs"] == 12 and set(report["proxies"]) == {"flops", "synflow"}
    for run in report["supernets"].values():
        assert len(run["estimates"]) == 12 and [h["epoch"] for h in run["history"]] == [1, 2]
        assert all("kendall_tau" in h for h in run["history"])
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["ground_truth"] == str(table)
    assert "RD-NAS supernet" in format_report(report) and "flops" in format_report(report)


def test_shipped_benchmark_is_the_documented_build():
    table = GroundTruth.load(shipped_benchmark())
    assert len(table.archs) == 240 and bool(nb201.connected(table.archs).all())
    assert {"digits_valid_acc", "digits_valid_loss", "seeds"} <= set(table.columns)
    assert bool((torch.as_tensor(table.column("seeds")) == 10).all())
    reliability = json.loads(shipped_benchmark().with_name("nb201_digits_reliability.json").read_text())
    assert reliability["architectures"] == 240 and reliability["kendall_tau_valid_acc"] >= 0.6
    assert [nb201.enumeration_index(tuple(a)) for a in table.archs.tolist()] == sorted(
        nb201.enumeration_index(a) for a in sample_architectures(240, seed=0))


def test_shipped_resnet48_benchmark_is_the_documented_build():
    from rdnas.minibench import Recipe
    from rdnas.spaces import get_space

    path = shipped_benchmark("resnet48")
    table = GroundTruth.load(path, "resnet48")
    assert len(table.archs) == 64 and bool((torch.as_tensor(table.column("seeds")) == 8).all())
    assert {"digits_valid_acc", "digits_valid_loss", "digits_valid_acc_std"} <= set(table.columns)
    space = get_space("resnet48")
    assert sorted(space.to_string(a) for a in table.archs) == sorted(
        space.to_string(torch.tensor(a)) for a in sample_architectures(64, seed=0, space="resnet48"))
    recipe = Recipe.from_dict(json.loads(path.with_name("resnet48_digits_recipe.json").read_text()))
    assert (recipe.space, recipe.space_options["width_divisor"], recipe.space_options["resnet_stem"], recipe.epochs) == \
        ("resnet48", 8, "small", 6)
    reliability = json.loads(path.with_name("resnet48_digits_reliability.json").read_text())
    assert reliability["architectures"] == 64 and reliability["kendall_tau_valid_acc"] >= 0.6
    assert reliability["seeds_a"] == [0, 1, 2, 3] and reliability["seeds_b"] == [4, 5, 6, 7]


def test_proxy_scores_that_are_not_finite_rank_as_the_proxy_means():
    from rdnas.demo import finite_for_ranking

    ranked = finite_for_ranking(np.array([1.0, 2.0, np.inf, -np.inf, np.nan]))
    assert np.isfinite(ranked).all() and list(np.argsort(ranked, kind="stable")) == [3, 4, 0, 1, 2]
    assert list(finite_for_ranking(np.array([-np.inf, np.inf]))) == [-1.0, 1.0]

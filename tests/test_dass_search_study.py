"""benchmarks/dass_search_study.py on a tiny benchmark folder (one meta-test task, a 1-epoch teacher at 8 px, an
untrained DaSS model): every (task, sample) search runs once with the benchmark's student recipe and the median
FLOPs of its candidates as the cap, a rerun trains nothing, and the report pairs DaSS's pick with the others."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rdnas.kd import bench, read_tasks, save_teacher, train_teacher  # noqa: E402
from rdnas.kd.embeddings import last_stage_map, probe_image  # noqa: E402
from rdnas.predictors.dass import DaSSNet, MetaSGD, save_model  # noqa: E402
from rdnas.spaces import get_space  # noqa: E402

SPACE = get_space("resnet48")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import dass_search_study as script
    import tiny_kd_bench

    root = tmp_path_factory.mktemp("study")
    values = tiny_kd_bench.tasks_values([("fit-me", "meta-train", [0, 1, 2]), ("unseen", "meta-test", [3, 4, 5])])
    values["student"] = {"epochs": 2, "batch_size": 16, "lr": 0.03}
    (root / "tasks.json").write_text(json.dumps(values))
    tasks = read_tasks(root / "tasks.json")
    folder = root / "bench"
    folder.mkdir()
    bench._check_bench_file(folder, tasks)  # bench.json, as a build writes it
    teacher = train_teacher(tasks.tasks[1], SPACE)
    save_teacher(teacher, bench.teacher_path(folder, tasks.tasks[1]))
    maps = last_stage_map(teacher.network, probe_image(1, 8, 0))
    features = SPACE.encode(SPACE.largest().unsqueeze(0)).shape[1]
    net = dict(channels=maps.shape[0], arch_features=features, width=8, arch_width=4, hidden=8, use_student=True,
               use_teacher=True, use_arch=True)
    torch.manual_seed(0)
    save_model(root / "dass.pt", MetaSGD(DaSSNet(**net)),
               {**net, "space": "resnet48", "probe_seed": 0, "image_sides": [list(maps.shape[1:])], "label": "kd",
                "adapt": True, "embedding": "remap", "student_options": {"width_divisor": 8}})
    argv = ["run", "--bench", str(folder), "--model", str(root / "dass.pt"), "--candidates", "12", "--samples", "2",
            "--seeds", "1", "--out", str(root / "study")]
    assert script.main(argv) == 0
    return script, root, argv


def test_each_sample_is_one_search_under_the_median_flops_with_the_benchmarks_recipe(study):
    _, root, _ = study
    for sample in (0, 1):
        report = json.loads((root / "study" / f"unseen_sample{sample}.json").read_text())
        assert report["candidates"] == 12 and report["eligible"] >= 6  # the median cap: half of them or more
        assert report["recipe"]["epochs"] == 2 and report["recipe"]["batch_size"] == 16 and report["recipe"]["lr"] == 0.03
        assert all(p["flops"] <= report["max_flops"] for p in report["picks"].values())
        assert len((root / "study" / f"unseen_sample{sample}.archs").read_text().split()) == 12
    assert not (root / "study" / "fit-me_sample0.json").exists()  # meta-train tasks are not searched


def test_a_rerun_trains_nothing_and_the_report_pairs_the_picks(study, capsys):
    script, root, argv = study
    journal = root / "study" / "unseen_sample0.runs.csv"
    before = journal.read_text()
    assert script.main(argv) == 0
    assert "unseen sample 0: done already" in capsys.readouterr().out and journal.read_text() == before
    assert script.main(["report", "--out", str(root / "study")]) == 0
    summary = json.loads((root / "study" / "summary.json").read_text())
    assert summary["pairs"] == 2 and summary["tasks"]["unseen"]["samples"] == 2
    picks = [json.loads((root / "study" / f"unseen_sample{s}.json").read_text())["picks"] for s in (0, 1)]
    expected = sum(p["dass"]["kd_valid_acc"]["mean"] - p["random"]["kd_valid_acc"]["mean"] for p in picks) / 2
    assert summary["dass_minus_random"]["mean"] == pytest.approx(expected)
    assert (root / "study" / "summary.md").read_text().startswith("KD validation accuracy")


def test_missing_teachers_are_named_with_how_to_rebuild_them(study, tmp_path):
    script, root, _ = study
    with pytest.raises(SystemExit, match=r"no teacher file .*unseen\.pt: rebuild the benchmark's teachers"):
        script.main(["run", "--bench", str(root / "bench"), "--teachers", str(tmp_path), "--model",
                     str(root / "dass.pt"), "--out", str(tmp_path / "out")])


def test_a_shard_runs_every_nth_search_and_an_existing_model_is_not_refitted(study, tmp_path, monkeypatch):
    script, root, argv = study
    out = tmp_path / "shard"
    shard_argv = [*argv[:-1], str(out), "--shard", "1/2"]  # searches (unseen, 0), (unseen, 1): shard 1 runs sample 1
    assert script.main(shard_argv) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["unseen_sample1.json"]

    import rdnas.cli

    model = out / "dass_seed0.pt"
    model.write_bytes((root / "dass.pt").read_bytes())
    monkeypatch.setattr(rdnas.cli, "main", lambda argv: pytest.fail(f"refitted: {argv}"))
    args = script.argparse.Namespace(model=None, out=out, bench=str(root / "bench"))
    assert script.fitted_model(args) == model

"""Issue 26's end-to-end review of DaSS: each test would have caught one finding (the review's report lists them).

- the random-embedding ablation runs every randomly initialised student in one batched pass, equal to one forward
  per student (float64), and ``random_students=False`` gives zeros (the flag was shadowed by a network);
- a meta-test task that shares a class of an image source with a meta-train / meta-valid task is refused;
- ``--bench shipped`` names the shipped package data in ``dass fit`` / ``dass evaluate`` / the experiment script,
  with a clear error while nothing is shipped;
- one implementation of: cutting a partial journal line, the search's proxy and the evaluation's proxy baseline;
- an evaluation job made with other embeddings is refused; an embeddings file of the old version is refused;
- a model meta-trained on mixed student families cannot rank (it names no family to remap).
"""

import importlib.util
import json
import math
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from rdnas.cli import main
from rdnas.kd import baselines, bench, embeddings, methods, read_tasks, remap
from rdnas.kd.baselines import proxy_scores as baseline_proxy_scores
from rdnas.kd.search import proxy_scores as search_proxy_scores
from rdnas.kd.tasks import parse_tasks
from rdnas.supernet import ResNet48Network, ResNet48Supernet
from tiny_kd_bench import SPACE, TEACHER, build_tiny_bench, tasks_values

ROOT = Path(__file__).resolve().parent.parent
TASKS = [("digits-train", "meta-train", [0, 1, 2]), ("digits-valid", "meta-valid", [3, 4, 5]),
         ("digits-test", "meta-test", [6, 7, 8])]


@pytest.fixture(scope="module")
def shipped_build(tmp_path_factory):
    """A finished tiny KD build (tests/tiny_kd_bench.py: 3 digits tasks) and its package data in a folder."""
    root = tmp_path_factory.mktemp("dass_review")
    out, tasks, archs = build_tiny_bench(root, TASKS)
    shipped = bench.ship(out, tasks, archs, [0], ("kd",), root / "package_data")
    return out, shipped, tasks, archs


# -- the random-embedding ablation, batched -------------------------------------------------------------------------
def _random_statistics(network, seed: int) -> None:
    """Random BN statistics and affine parameters: a fresh BN is the identity and would hide mis-slicing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point() and ("bn" in name):
                values = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_students_in_one_batched_pass_equal_one_forward_per_student_in_float64(seed):
    supernet = embeddings.random_supernet(SPACE, 3, 1, seed=seed, resnet_stem="small", width_divisor=8).double()
    _random_statistics(supernet, seed)
    archs = SPACE.sample(6, torch.Generator().manual_seed(seed))
    probe = embeddings.probe_image(1, 16, seed).double()
    batched = embeddings.supernet_last_stage_maps(supernet, archs, probe)
    for arch, got in zip(archs, batched):
        expected = embeddings.last_stage_map(supernet.export(arch), probe)  # one stand-alone network, one forward
        assert got.dtype == torch.float64 and got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12), float((got - expected).abs().max())
    # the one-forward-per-subnet path (spaces without forward_stacked) gives the same maps
    for got, one_by_one in zip(batched, embeddings.supernet_last_stage_maps(supernet, archs, probe, batched=False)):
        assert torch.allclose(got, one_by_one, rtol=1e-12, atol=1e-12)


def test_task_embeddings_build_no_network_per_student_and_random_students_are_the_random_supernets(
        shipped_build, monkeypatch):
    out, _, tasks, archs = shipped_build
    task = tasks.tasks[0]
    teacher = bench.task_teacher(out, task, SPACE)
    built = []
    original_init = ResNet48Network.__init__

    def counting_init(self, *args, **kwargs):
        built.append(args[0] if args else kwargs.get("arch"))
        original_init(self, *args, **kwargs)

    def one_subnet_forward(self, x, arch):
        raise AssertionError("a student ran through its own forward, not the batched pass")

    monkeypatch.setattr(ResNet48Network, "__init__", counting_init)
    monkeypatch.setattr(ResNet48Supernet, "forward", one_subnet_forward)
    emb = embeddings.task_embeddings(teacher, task, archs, probe_seed=0)
    assert built == []
    monkeypatch.undo()
    fresh = embeddings.random_supernet(SPACE, 3, 1, **task.student_network_options())
    probe = embeddings.probe_image(1, 8, 0)
    for k, arch in enumerate(archs):
        expected = embeddings.last_stage_map(fresh.export(arch), probe)
        width = expected.shape[0]
        assert torch.allclose(emb["random"][k, :width], expected, rtol=1e-5, atol=1e-6)
        assert torch.all(emb["random"][k, width:] == 0)
        student = embeddings.last_stage_map(remap(teacher.network, arch, SPACE, **task.student_options), probe)
        assert torch.allclose(emb["students"][k, :student.shape[0]], student, rtol=1e-5, atol=1e-6)
    assert not torch.equal(emb["random"], emb["students"])
    # without random students their maps are zeros (the flag was once shadowed by the network it built)
    assert torch.equal(embeddings.task_embeddings(teacher, task, archs, 0, random_students=False)["random"],
                       torch.zeros_like(emb["random"]))


def test_an_embeddings_file_of_the_old_version_is_refused(tmp_path):
    torch.save({"kind": bench.EMBEDDINGS_KIND, "version": 1, "space": "resnet48", "probe_seed": 0, "tasks": {}},
               tmp_path / "embeddings.pt")
    with pytest.raises(ValueError, match=r"embeddings file version 1, expected 2; rerun the build's rdnas dass bench"):
        bench.read_embeddings(tmp_path / "embeddings.pt")


# -- leakage between meta-train / meta-valid and meta-test tasks ----------------------------------------------------
@pytest.mark.parametrize("tasks,dataset,match", [
    ([("a", "meta-train", [0, 1, 2]), ("b", "meta-test", [2, 3])], "digits",
     r"tasks\[1\]: meta-test task 'b' shares class 2 of digits with meta-train task 'a' \(tasks\[0\]\)"),
    ([("a", "meta-valid", [4, 5]), ("b", "meta-test", [5, 6])], "digits", r"with meta-valid task 'a'"),
    ([("a", "meta-train", ["A", "B"]), ("b", "meta-test", ["B", "C"])], "glyphs", r"shares class 'B' of glyphs"),
    ([("a", "meta-train", []), ("b", "meta-test", ["x", "y"])], "folder:/tmp/images",
     r"shares its classes \(a task that lists none takes them all\)"),
])
def test_a_meta_test_task_that_shares_a_class_with_meta_training_is_refused(tasks, dataset, match):
    with pytest.raises(ValueError, match=match):
        parse_tasks(tasks_values(tasks, dataset), "tasks.json")


def test_meta_test_tasks_on_other_classes_or_other_data_are_accepted():
    parse_tasks(tasks_values(TASKS), "tasks.json")
    same_source = tasks_values([("a", "meta-train", [0, 1]), ("b", "meta-test", [0, 1])], "fashion_mnist")
    same_source["tasks"][1]["dataset"] = "fashion_mnist:/usr/share/datasets/fashion-mnist/"  # the default, spelt out
    with pytest.raises(ValueError, match="shares class 0"):
        parse_tasks(same_source, "tasks.json")
    other_data = tasks_values([("a", "meta-train", [0, 1]), ("b", "meta-test", [0, 1])], "digits")
    other_data["tasks"][0]["dataset"] = "fashion_mnist"
    assert [t.split for t in parse_tasks(other_data, "tasks.json").tasks] == ["meta-train", "meta-test"]
    both_test = tasks_values([("a", "meta-test", [0, 1]), ("b", "meta-test", [0, 1])], "digits")
    assert len(parse_tasks(both_test, "tasks.json").tasks) == 2  # two meta-test tasks may share data


def test_the_builds_tasks_file_passes_the_meta_test_leak_check():
    tasks = read_tasks(ROOT / "benchmarks" / "dass_tasks" / "tasks.json")
    assert {t.split for t in tasks.tasks} == {"meta-train", "meta-valid", "meta-test"}


# -- --bench shipped ------------------------------------------------------------------------------------------------
def test_bench_shipped_before_anything_ships_is_a_usage_error_naming_the_option(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "SHIPPED_FOLDER", tmp_path / "nothing_shipped")
    for argv in (["dass", "fit", "--bench", "shipped", "--out", str(tmp_path / "m.pt")],
                 ["dass", "evaluate", "--bench", "shipped", "--out", str(tmp_path / "r.json")]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"rdnas dass {argv[1]}: error: --bench: the KD benchmark is not shipped in" in err
        assert "build it with bash benchmarks/dass_build.sh" in err and "is ./shipped" in err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "r.json").exists()


def test_the_package_ships_no_benchmark_yet_or_a_complete_one():
    """The KD build has not run yet: either nothing ships, or what ships is whole."""
    if any((bench.SHIPPED_FOLDER / name).exists() for name in bench.SHIPPED_FILES):
        assert bench.bench_folder("shipped") == bench.SHIPPED_FOLDER
    else:
        with pytest.raises(ValueError, match="not shipped"):
            bench.bench_folder("shipped")
    assert bench.bench_folder("./shipped") == Path("shipped")  # a folder of that name is still reachable


def test_bench_shipped_names_the_package_data_in_fit_evaluate_and_the_experiment_script(
        shipped_build, tmp_path, capsys, monkeypatch):
    _, shipped, _, _ = shipped_build
    monkeypatch.setattr(bench, "SHIPPED_FOLDER", shipped)
    monkeypatch.chdir(tmp_path)  # no folder named shipped here: the name means the package data
    assert main(["dass", "fit", "--bench", "shipped", "--episodes", "2", "--query", "2", "--width", "8", "--quiet",
                 "--out", "dass.pt"]) == 0
    from rdnas.predictors.dass import load_model

    assert load_model(tmp_path / "dass.pt")[1]["bench"] == str(shipped)
    assert main(["dass", "evaluate", "--bench", "shipped", "--model", "dass.pt", "--proxies", "none", "--quiet",
                 "--out", "report.json"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["bench"] == str(shipped)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its harness beside it
    spec = importlib.util.spec_from_file_location("dass_experiment", ROOT / "benchmarks" / "dass_experiment.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.open_bench(Namespace(bench="shipped")).folder == shipped
    monkeypatch.setattr(bench, "SHIPPED_FOLDER", tmp_path / "nothing_shipped")
    with pytest.raises(SystemExit, match=r"dass_experiment.py: --bench: the KD benchmark is not shipped"):
        script.open_bench(Namespace(bench="shipped"))


# -- merged twins ---------------------------------------------------------------------------------------------------
def test_cut_partial_line_drops_only_an_unfinished_last_row(tmp_path):
    path = tmp_path / "runs.csv"
    bench.cut_partial_line(path)  # a missing file: nothing to do
    assert not path.exists()
    path.write_bytes(b"a,b\n1,2\n3,")
    bench.cut_partial_line(path)
    assert path.read_bytes() == b"a,b\n1,2\n"
    bench.cut_partial_line(path)
    assert path.read_bytes() == b"a,b\n1,2\n"


@pytest.mark.parametrize("proxy", ["synflow", "snip", "naswot"])
def test_the_search_proxy_pick_scores_as_the_evaluations_proxy_baseline(shipped_build, proxy):
    out, _, tasks, archs = shipped_build
    task = tasks.tasks[2]
    teacher = bench.task_teacher(out, task, SPACE)
    data = task.data()
    searched = search_proxy_scores(teacher, archs, proxy, task.student_options, data)
    evaluated = baseline_proxy_scores(SPACE, teacher.task_spec(task.student_options), archs, data, [proxy])[proxy]
    assert torch.equal(searched, evaluated)


# -- stale inputs ---------------------------------------------------------------------------------------------------
def test_an_evaluation_job_made_with_other_embeddings_is_refused(shipped_build, tmp_path):
    import shutil

    out, _, tasks, archs = shipped_build
    folder = tmp_path / "bench"
    shutil.copytree(out, folder)
    evaluation_bench = methods.EvaluationBench(folder)
    result, kept = methods.cached_job(tmp_path / "jobs", evaluation_bench, "baselines", "digits-test", proxies=[])
    assert not kept
    embeddings = bench.read_embeddings(folder / "embeddings.pt")
    embeddings["tasks"]["digits-test"]["random"] = embeddings["tasks"]["digits-test"]["random"] + 1.0
    torch.save(embeddings, folder / "embeddings.pt")  # same table, other embeddings
    with pytest.raises(ValueError, match=r"was made with benchmark .* \(its table and embeddings\)"):
        methods.cached_job(tmp_path / "jobs", methods.EvaluationBench(folder), "baselines", "digits-test", proxies=[])


def test_a_model_of_mixed_student_families_refuses_to_rank_naming_the_files(shipped_build):
    from rdnas.predictors.dass import DaSSNet, MetaSGD, predict_for_teacher

    out, _, tasks, archs = shipped_build
    teacher = bench.task_teacher(out, tasks.tasks[2], SPACE)
    model = MetaSGD(DaSSNet(teacher.network.classifier.in_features, SPACE.encode(SPACE.largest()[None]).shape[1], 8))
    config = {"space": "resnet48", "student_options": None, "bench": "b", "probe_seed": 0, "embedding": "remap"}
    with pytest.raises(ValueError, match=r"m.pt was meta-trained on tasks whose students have different network "
                       r"options .* to remap from t.pt"):
        predict_for_teacher(model, config, teacher, archs, model_name="m.pt", teacher_name="t.pt")


# -- augmentation that changes labels -------------------------------------------------------------------------------
def test_augmentation_flips_only_data_whose_classes_survive_a_mirror_image(monkeypatch):
    from rdnas.kd import StudentRecipe, TaskSpec, TeacherRecipe, train_student, train_teacher
    from rdnas.kd.data import flips_keep_labels

    assert [flips_keep_labels(s) for s in ("fashion_mnist", "folder:/x", "digits", "glyphs")] == [
        True, True, False, False]  # glyphs: '<' and '>' are each other's mirror image
    # a left-to-right ramp (1..8, zero padding 0): a shift keeps it rising, a flip makes it fall
    images = torch.arange(1.0, 9.0).view(1, 1, 1, 8).expand(16, 1, 8, 8).contiguous()
    labels = torch.zeros(16, dtype=torch.long)
    recipe = StudentRecipe(epochs=2, batch_size=8, augment=True)

    def falling_rows(flip: bool) -> int:
        seen = []
        network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
        train_student(network, images, labels, images[:2], labels[:2], recipe, seed=0, flip=flip)
        rows = torch.cat(seen)[:, 0, :, :]  # training batches and the evaluation pass
        rows = rows[rows.abs().sum(-1) > 0]
        return sum(1 for row in rows if not torch.all(row[row > 0].diff() > 0))

    assert falling_rows(flip=True) > 0 and falling_rows(flip=False) == 0
    calls = []
    monkeypatch.setattr("rdnas.kd.teacher.train_student",
                        lambda *args, **kwargs: calls.append(kwargs["flip"]) or {"valid_acc": 0.0, "valid_loss": 0.0})
    for dataset, classes in (("glyphs", ("<", ">")), ("digits", (0, 1))):
        train_teacher(TaskSpec("t", dataset, classes, 8, 8, 4, teacher=TeacherRecipe(**TEACHER)), SPACE)
    assert calls == [False, False]


# -- judging tasks seen in meta-training ----------------------------------------------------------------------------
@pytest.mark.parametrize("split,caveat", [("meta-test", None), ("meta-valid", "picked the meta-trained methods' kept"),
                                          ("meta-train", "the meta-trained methods were fitted on")])
def test_a_report_on_tasks_seen_in_meta_training_says_so_first(shipped_build, split, caveat):
    from rdnas.kd import evaluation

    out = shipped_build[0]
    report = evaluation.build_report(methods.EvaluationBench(out, split), [])
    if caveat is None:
        assert report["caveat"] is None and not report["verdict"]["text"].startswith("Not a measurement")
    else:
        assert caveat in report["caveat"] and report["verdict"]["text"].startswith("Not a measurement on unseen tasks")
        assert "Verdict: Not a measurement on unseen tasks" in evaluation.markdown_report(report)


# -- meta-training's model selection ----------------------------------------------------------------------------------
def test_model_selection_survives_nan_meta_valid_scores_and_keeps_the_best_finite_one():
    from rdnas.predictors.dass import run_episodes

    model = torch.nn.Linear(1, 1)
    scores = iter([float("nan"), 0.5, 0.2])
    report = run_episodes(model, lambda: model.weight.sum() ** 2 + model.bias.sum(), lambda: next(scores), 3, 0.1, 1)
    assert report["best_episode"] == 2 and report["best_valid_spearman"] == 0.5
    report = run_episodes(model, lambda: model.weight.sum() ** 2, lambda: float("nan"), 2, 0.1, 1)
    assert report["best_episode"] == 1 and math.isnan(report["best_valid_spearman"])  # was: a crash
    report = run_episodes(model, lambda: model.weight.sum() ** 2, None, 3, 0.1, 2)  # no meta-valid task: the last
    assert report["best_episode"] == 3 and math.isnan(report["best_valid_spearman"])


def test_training_free_signals_never_read_the_validation_split_they_are_judged_on(shipped_build):
    import dataclasses

    out, _, tasks, archs = shipped_build
    task = tasks.tasks[2]
    teacher = bench.task_teacher(out, task, SPACE)
    data = task.data()
    blind = dataclasses.replace(data, valid_x=torch.full_like(data.valid_x, float("nan")),
                                valid_y=torch.full_like(data.valid_y, -1))
    seen, unseen = baselines.training_free_signals(teacher, task, archs, data), \
        baselines.training_free_signals(teacher, task, archs, blind)
    for name in ("zero_shot_acc", "neg_kl"):
        assert bool(torch.isfinite(unseen[name]).all()) and torch.equal(seen[name], unseen[name])


def test_the_dataset_conditioned_baseline_predicts_for_a_task_with_more_channels_than_meta_training():
    from rdnas.kd import TaskData
    from rdnas.kd.baselines import DatasetTask, fit_dataset_conditioned, predict_dataset_conditioned

    def task(name, split, channels, seed):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(12, channels, 8, 8, generator=generator)
        y = torch.arange(12) % 3
        data = TaskData(x, y, x[:3], y[:3], (0.0,) * channels, (1.0,) * channels, ("a", "b", "c"))
        features, labels = torch.randn(4, 5, generator=generator), torch.rand(4, generator=generator)
        return DatasetTask(name, split, data, features, labels)

    train = [task("t", "meta-train", 1, 0), task("v", "meta-valid", 1, 1)]
    colour = task("c", "meta-test", 3, 2)
    model, _ = fit_dataset_conditioned(train, 5, episodes=2, query=2, eval_every=1, channels=3)
    assert predict_dataset_conditioned(model, colour).shape == (4,)
    narrow, _ = fit_dataset_conditioned(train, 5, episodes=2, query=2, eval_every=1)
    with pytest.raises(ValueError, match="images have 3 channels, at most 1 expected"):
        predict_dataset_conditioned(narrow, colour)


# -- train / validation overlap -------------------------------------------------------------------------------------
def test_copies_of_an_image_never_land_in_both_splits(tmp_path):
    import numpy as np
    from PIL import Image

    from rdnas.kd import load_task_data
    from rdnas.kd.data import first_copies

    assert first_copies(torch.tensor([[1], [2], [1], [3], [2]], dtype=torch.uint8)).tolist() == [
        True, True, False, True, False]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    generator = np.random.default_rng(0)
    images = [generator.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(8)]
    for i, image in enumerate(images):  # class a: 4 images, each saved 3 times; class b: 4 more + copies of a's
        for copy_ in range(3):
            Image.fromarray(image).save(tmp_path / ("a" if i < 4 else "b") / f"{i}_{copy_}.png")
    Image.fromarray(images[0]).save(tmp_path / "b" / "copy_of_a.png")
    data = load_task_data(f"folder:{tmp_path}", [], 6, train=4, valid=4, seed=0)
    train = {bytes(x.numpy().tobytes()) for x in data.train_x}
    valid = {bytes(x.numpy().tobytes()) for x in data.valid_x}
    assert len(train) == 4 and len(valid) == 4 and not train & valid
    with pytest.raises(Exception, match=r"has 4 distinct images of class 'a'"):
        load_task_data(f"folder:{tmp_path}", [], 6, train=6, valid=4, seed=0)


# -- errors name the flag the user typed ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--resnet-stem", "big"], "argument --resnet-stem: invalid choice: 'big'"),
    (["--width-divisor", "3"], "argument --width-divisor: invalid choice: 3"),
    (["--cells", "3"], "--cells is an option of nb201, not of the resnet48 space"),
    (["--classes", "0"], "--classes: a digits task lists at least 2 labels"),
    (["--train", "2"], "--train: train and valid need at least one image per class"),
])
def test_dass_teacher_errors_name_the_flag_that_was_given(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["dass", "teacher", "--data", "digits", *argv, "--out", str(tmp_path / "t.pt")])
    assert exit_.value.code == 2
    assert f"rdnas dass teacher: error: {message}" in capsys.readouterr().err  # was: "--options", no such flag


def test_dass_teacher_takes_the_spaces_derived_network_flags(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("rdnas.kd.teacher.train_teacher", lambda task, space: calls.append(task) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # stop once the task is built
        main(["dass", "teacher", "--data", "digits", "--width-divisor", "8", "--out", str(tmp_path / "t.pt")])
    assert calls[0].teacher.options == {"resnet_stem": "small", "width_divisor": 8}  # small stem: DaSS's default
    with pytest.raises(ZeroDivisionError):
        main(["dass", "teacher", "--data", "digits", "--resnet-stem", "imagenet", "--no-bn-running-stats",
              "--image-size", "32", "--out", str(tmp_path / "t.pt")])
    assert calls[1].teacher.options == {"resnet_stem": "imagenet", "bn_track_running_stats": False}


def test_judging_a_model_file_refuses_tasks_of_another_image_size_or_student_family(shipped_build, tmp_path):
    from rdnas.predictors.dass import load_model, save_model

    out = shipped_build[0]
    assert main(["dass", "fit", "--bench", str(out), "--episodes", "1", "--query", "2", "--width", "8", "--quiet",
                 "--out", str(tmp_path / "m.pt")]) == 0
    model, config = load_model(tmp_path / "m.pt")
    evaluation_bench = methods.EvaluationBench(out, channels=config["channels"])
    assert methods.model_scores(evaluation_bench, tmp_path / "m.pt")["tasks"].keys() == {"digits-test"}
    for change, match in (({"image_sides": [[9, 9]]}, r"task digits-test has 1x1 last-stage maps, but .* was trained "
                                                      r"on \[\[9, 9\]\] \(probe mismatch"),
                          ({"student_options": {"width_divisor": 4}}, r"students have the network options \{\}, but")):
        save_model(tmp_path / "other.pt", model, {**config, **change})
        with pytest.raises(ValueError, match=match):
            methods.model_scores(evaluation_bench, tmp_path / "other.pt")

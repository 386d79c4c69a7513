"""DaSS's KD benchmark: tasks.json validation, teacher files, the resumable KD build, the dass CLI end to end."""

import copy
import csv
import json

import numpy as np
import pytest
import torch

from rdnas.cli import main
from rdnas.kd import TaskSpec, TeacherRecipe, load_teacher, read_tasks, remap, save_teacher, train_teacher
from rdnas.kd import baselines, bench, embeddings
from rdnas.minibench.build import sample_architectures
from rdnas.spaces import get_space

SPACE = get_space("resnet48")
TINY_TEACHER = {"options": {"resnet_stem": "small", "width_divisor": 8}, "epochs": 1, "seed": 0, "batch_size": 32}


def _tasks_dict(**changes) -> dict:
    tasks = [{"name": "digits-a", "split": "meta-train", "dataset": "digits", "classes": [0, 1, 2], "image_size": 8,
              "train": 64, "valid": 30, "seed": 0, "teacher": TINY_TEACHER},
             {"name": "glyphs-a", "split": "meta-test", "dataset": "glyphs", "classes": ["A", "B", "C"],
              "image_size": 8, "train": 64, "valid": 30, "seed": 1, "teacher": TINY_TEACHER}]
    values = {"kind": "rdnas-dass-tasks", "version": 1, "space": "resnet48",
              "student": {"epochs": 1, "batch_size": 32}, "probe_seed": 0, "tasks": tasks}
    values = copy.deepcopy(values)  # TINY_TEACHER is shared
    for path, value in changes.items():
        target = values
        *parents, last = path.split("/")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value
    return values


def _write(tmp_path, values, name="tasks.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


def test_a_valid_tasks_file_is_read(tmp_path):
    tasks = read_tasks(_write(tmp_path, _tasks_dict()))
    assert tasks.space == "resnet48" and [t.name for t in tasks.tasks] == ["digits-a", "glyphs-a"]
    assert tasks.tasks[1].classes == ("A", "B", "C") and tasks.tasks[1].split == "meta-test"
    assert tasks.tasks[0].teacher.label_smoothing == 0.1
    assert tasks.student.epochs == 1


@pytest.mark.parametrize("path,value,match", [
    ("kind", "other", r"kind: expected 'rdnas-dass-tasks'"),
    ("space", "nope", r"space: expected one of"),
    ("tasks", [], r"tasks: expected a non-empty list"),
    ("tasks/0/classes", [0, 0], r"tasks\[0\]\.classes: classes must be distinct"),
    ("tasks/0/classes", [0, 12], r"tasks\[0\]\.classes: a digits task lists at least 2 labels in 0..9"),
    ("tasks/1/classes", ["AB", "C"], r"tasks\[1\]\.classes: a glyphs task lists at least 2 single"),
    ("tasks/0/dataset", "cifar10", r"tasks\[0\]\.dataset: .*unknown dataset spec 'cifar10'"),
    ("tasks/0/image_size", 2, r"tasks\[0\]\.image_size: expected an integer >= 4, got 2"),
    ("tasks/0/train", "64", r"tasks\[0\]\.train: expected an integer >= 1, got '64'"),
    ("tasks/0/split", "test", r"tasks\[0\]\.split: expected one of meta-train, meta-valid, meta-test"),
    ("tasks/0/colour", 1, r"tasks\[0\]\.colour: unknown field"),
    ("tasks/1/name", "digits-a", r"tasks\[1\]\.name: 'digits-a' repeats tasks\[0\]"),
    ("tasks/0/name", "a/b", r"tasks\[0\]\.name: expected letters"),
    ("tasks/0/teacher/epochs", 0, r"tasks\[0\]\.teacher\.epochs: expected an integer >= 1"),
    ("tasks/0/teacher/lr", float("nan"), r"tasks\[0\]\.teacher\.lr: expected a finite number"),
    ("tasks/0/teacher/options", {"width_divisor": 3}, r"tasks\[0\]\.teacher\.options: .*width_divisor must be one of"),
    ("tasks/0/teacher/options", {"channels": 8}, r"tasks\[0\]\.teacher\.options: the resnet48 network takes"),
    ("tasks/0/student_options", {"width_divisor": 5}, r"tasks\[0\]\.student_options: .*width_divisor"),
    ("student", {"epochs": 0}, r"student: .*epochs must be a positive int"),
])
def test_a_malformed_tasks_file_names_the_file_and_field(tmp_path, path, value, match):
    file = _write(tmp_path, _tasks_dict(**{path: value}))
    with pytest.raises(ValueError, match=match) as error:
        read_tasks(file)
    assert str(error.value).startswith(str(file))


def test_a_tasks_file_that_is_not_json_or_missing_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match=r"bad.json: not JSON \(line 1"):
        read_tasks(bad)
    with pytest.raises(ValueError, match=r"nothing.json: cannot read the tasks file"):
        read_tasks(tmp_path / "nothing.json")


def test_a_teacher_file_keeps_the_network_and_is_checked_on_load(tmp_path):
    task = TaskSpec("t", "digits", (0, 1, 2), 8, 64, 30, teacher=TeacherRecipe(**TINY_TEACHER))
    teacher = train_teacher(task, SPACE)
    assert teacher.recipe.label_smoothing == 0.1 and 0 <= teacher.valid_acc <= 100
    save_teacher(teacher, tmp_path / "t.pt")
    loaded = load_teacher(tmp_path / "t.pt", "resnet48")
    assert loaded.digest() == teacher.digest() and loaded.valid_acc == teacher.valid_acc
    assert loaded.task == task.data_dict() and loaded.recipe == task.teacher
    x = task.data().valid_x[:5]
    assert torch.equal(loaded.network(x), teacher.network(x))
    with pytest.raises(ValueError, match="is a teacher of the resnet48 space, expected one of the nb201 space"):
        load_teacher(tmp_path / "t.pt", "nb201")
    torch.save({"kind": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not a teacher file: its kind is 'something-else'"):
        load_teacher(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk.pt is not a teacher file \(cannot be read"):
        load_teacher(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher(tmp_path / "missing.pt")


def _build_args(tmp_path):
    tasks = read_tasks(_write(tmp_path, _tasks_dict()))
    archs = sample_architectures(2, seed=0, space=SPACE)
    return tasks, archs


def test_an_interrupted_build_resumes_without_losing_or_repeating_a_run(tmp_path):
    tasks, archs = _build_args(tmp_path)
    out = tmp_path / "bench"
    total = len(tasks.tasks) * len(archs) * 2 * 2  # tasks x archs x seeds x regimes = 16
    first = bench.build(out, tasks, archs, [0, 1], ("kd", "ce"), progress=False, max_runs=5)
    assert len(first) == 5 and len(bench.read_runs(out)) == 5
    # a kill while writing a row leaves a partial last line: it is not a run, and the resume cuts it off
    with open(out / "runs.csv", "a") as handle:
        handle.write("digits-a,abc,1558")
    assert len(bench.read_runs(out)) == 5
    shard = bench.build(out, tasks, archs, [0, 1], ("kd", "ce"), shard=(1, 2), progress=False, max_runs=3)
    assert len(shard) == 8
    runs = bench.build(out, tasks, archs, [0, 1], ("kd", "ce"), progress=False)
    keys = [(r["task"], r["arch_str"], r["seed"], r["regime"]) for r in bench.read_runs(out)]
    assert len(runs) == total and len(keys) == total and len(set(keys)) == total
    lines = [row for path in bench.runs_files(out) for row in csv.DictReader(open(path))]
    assert len(lines) == total  # no run written twice, the partial line gone
    assert bench.build(out, tasks, archs, [0, 1], ("kd", "ce"), progress=False) == bench.read_runs(out)  # nothing to do
    # one teacher per task, recorded in every kd run of its task; the ce runs use none
    for task in tasks.tasks:
        digest = load_teacher(bench.teacher_path(out, task)).digest()
        assert {r["teacher"] for r in runs if r["task"] == task.name and r["regime"] == "kd"} == {digest}
        assert {r["teacher"] for r in runs if r["task"] == task.name and r["regime"] == "ce"} == {bench.NO_TEACHER}
    rows = bench.kd_table(runs, tasks, [0, 1], ("kd", "ce"))
    assert len(rows) == 4 and {"kd_valid_acc", "ce_valid_acc", "kd_valid_acc_std"} <= set(rows[0])


def test_train_seeds_give_the_meta_train_tasks_fewer_seeds_and_the_judged_tasks_all(tmp_path, capsys):
    tasks, archs = _build_args(tmp_path)  # digits-a: meta-train, glyphs-a: meta-test
    out = tmp_path / "bench"
    runs = bench.build(out, tasks, archs, [0, 1], ("kd",), progress=False, train_seeds=1)
    seeds = {(r["task"], r["seed"]) for r in runs}
    assert seeds == {("digits-a", 0), ("glyphs-a", 0), ("glyphs-a", 1)} and len(runs) == 2 + 4
    assert [(r["task"], r["seed"]) for r in runs][:4] == [("digits-a", 0)] * 2 + [("glyphs-a", 0)] * 2  # seed first
    rows = bench.kd_table(runs, tasks, [0, 1], ("kd",), train_seeds=1)
    assert [(r["task"], r["seeds"]) for r in rows] == [("digits-a", 1)] * 2 + [("glyphs-a", 2)] * 2
    judged = [r for r in runs if r["task"] == "glyphs-a"]
    assert rows[2]["kd_valid_acc"] == pytest.approx(np.mean([r["valid_acc"] for r in judged
                                                             if r["arch_str"] == rows[2]["arch_str"]]))
    assert bench.kd_table(runs, tasks, [0, 1], ("kd",)) == rows[2:]  # without train_seeds digits-a lacks seed 1
    bench.write_embeddings(out, tasks, archs)
    with pytest.raises(ValueError, match=r"cannot ship an unfinished build: 2 of 4 \(task, student\) rows lack"):
        bench.ship(out, tasks, archs, [0, 1], ("kd",), tmp_path / "shipped")
    recipe = bench.load_shipped(bench.ship(out, tasks, archs, [0, 1], ("kd",), tmp_path / "shipped", train_seeds=1))
    assert recipe["recipe"]["train_seeds"] == 1 and len(recipe["runs"]) == 6 and len(recipe["table"]) == 4
    for bad in (0, 3, True, 1.0):
        with pytest.raises(ValueError, match=r"train_seeds must be an int from 1 to the 2 seeds"):
            bench.build(out, tasks, archs, [0, 1], ("kd",), progress=False, train_seeds=bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["dass", "bench", "--tasks", str(tmp_path / "tasks.json"), "--archs", "2", "--seeds", "2",
              "--train-seeds", "3", "--out", str(out)])
    assert exit_info.value.code == 2 and "--train-seeds: at most --seeds (2), got 3" in capsys.readouterr().err


def test_a_resume_with_a_changed_task_or_teacher_is_refused(tmp_path):
    tasks, archs = _build_args(tmp_path)
    out = tmp_path / "bench"
    bench.build(out, tasks, archs[:1], [0], ("kd",), progress=False, max_runs=1)
    changed = read_tasks(_write(tmp_path, _tasks_dict(**{"tasks/0/valid": 31}), "changed.json"))
    with pytest.raises(ValueError, match="was built with task 'digits-a' defined as"):
        bench.build(out, changed, archs, [0], ("kd",), progress=False)
    reseeded = TeacherRecipe(**{**TINY_TEACHER, "seed": 1})
    other = train_teacher(TaskSpec(**{**tasks.tasks[0].__dict__, "teacher": reseeded}), SPACE)
    other.task, other.recipe = tasks.tasks[0].data_dict(), tasks.tasks[0].teacher  # a different teacher, same labels
    save_teacher(other, bench.teacher_path(out, tasks.tasks[0]))
    with pytest.raises(ValueError, match="were made with teacher"):
        bench.build(out, tasks, archs, [0], ("kd",), progress=False)


def test_teacher_free_runs_survive_a_new_teacher_and_the_teacher_runs_do_not(tmp_path):
    """ce runs record no teacher (``-``) and stay valid when the task's teacher is retrained differently (a teacher
    retrained on another CPU is another teacher); kd runs made with the old teacher still refuse the new one."""
    tasks, archs = _build_args(tmp_path)
    out = tmp_path / "bench"
    runs = bench.build(out, tasks, archs[:1], [0], ("ce", "kd"), progress=False)
    first = tasks.tasks[0].name
    by_regime = {r["regime"]: r for r in runs if r["task"] == first}
    assert by_regime["ce"]["teacher"] == bench.NO_TEACHER
    assert by_regime["kd"]["teacher"] == bench.task_teacher(out, tasks.tasks[0], SPACE).digest()
    reseeded = TeacherRecipe(**{**TINY_TEACHER, "seed": 1})
    other = train_teacher(TaskSpec(**{**tasks.tasks[0].__dict__, "teacher": reseeded}), SPACE)
    other.task, other.recipe = tasks.tasks[0].data_dict(), tasks.tasks[0].teacher
    save_teacher(other, bench.teacher_path(out, tasks.tasks[0]))
    with pytest.raises(ValueError, match="were made with teacher"):
        bench.build(out, tasks, archs, [0], ("ce", "kd"), progress=False)
    for path in bench.runs_files(out):  # the kd run set aside: the ce run is kept, and the build resumes
        lines = path.read_text().splitlines()
        path.write_text("\n".join(line for line in lines if not line.startswith(f"{first},") or ",kd," not in line)
                        + "\n")
    again = [r for r in bench.build(out, tasks, archs[:1], [0], ("ce", "kd"), progress=False) if r["task"] == first]
    kept = [r for r in again if r["regime"] == "ce"]
    assert len(again) == 2 and kept[0]["valid_acc"] == by_regime["ce"]["valid_acc"]
    assert [r["teacher"] for r in again if r["regime"] == "kd"] == [other.digest()]
    table = bench.kd_table(again, tasks, [0], ("ce", "kd"))
    assert table[0]["teacher"] == other.digest()
    assert bench.kd_table(again, tasks, [0], ("ce",))[0]["teacher"] == bench.NO_TEACHER


def test_a_teacher_free_build_never_loads_trains_or_checks_a_teacher(tmp_path):
    """--regimes ce needs no teacher: no teacher file is trained into the build, and a resume beside kd runs of
    another teacher is not refused (only runs that use the teacher check it)."""
    tasks, archs = _build_args(tmp_path)
    out = tmp_path / "bench"
    runs = bench.build(out, tasks, archs[:2], [0], ("ce",), progress=False)
    assert {r["teacher"] for r in runs} == {bench.NO_TEACHER} and len(runs) == 2 * len(tasks.tasks)
    assert not any(bench.teacher_path(out, task).exists() for task in tasks.tasks)
    bench.build(out, tasks, archs[:1], [0], ("kd",), progress=False)  # trains the teachers
    reseeded = TeacherRecipe(**{**TINY_TEACHER, "seed": 1})
    other = train_teacher(TaskSpec(**{**tasks.tasks[0].__dict__, "teacher": reseeded}), SPACE)
    other.task, other.recipe = tasks.tasks[0].data_dict(), tasks.tasks[0].teacher
    save_teacher(other, bench.teacher_path(out, tasks.tasks[0]))  # a teacher the kd runs were not made with
    more = bench.build(out, tasks, archs, [0], ("ce",), progress=False)
    assert sum(r["regime"] == "ce" for r in more) == len(archs) * len(tasks.tasks)
    with pytest.raises(ValueError, match="were made with teacher"):
        bench.build(out, tasks, archs, [0], ("kd",), progress=False)


def test_embeddings_are_the_probe_through_teacher_and_remapped_students(tmp_path):
    tasks, archs = _build_args(tmp_path)
    task = tasks.tasks[0]
    teacher = bench.task_teacher(tmp_path / "b", task, SPACE)
    emb = embeddings.task_embeddings(teacher, task, archs, probe_seed=7)
    probe = embeddings.probe_image(1, 8, 7)
    assert torch.equal(emb["probe"], probe)
    channels = teacher.network.classifier.in_features
    assert emb["teacher"].shape == (channels, 1, 1) and emb["students"].shape == (2, channels, 1, 1)
    student = remap(teacher.network, archs[1], SPACE).eval()
    with torch.no_grad():
        pooled = []
        student.classifier.register_forward_hook(lambda m, a, o: pooled.append(a[0]))
        student(probe)
    width = pooled[0].shape[1]
    assert torch.allclose(emb["students"][1, :width, 0, 0], pooled[0][0])
    assert torch.all(emb["students"][1, width:] == 0)
    assert not torch.equal(emb["random"][1], emb["students"][1])
    assert emb["archs"] == [SPACE.to_string(torch.tensor(a)) for a in archs]


def test_dass_cli_end_to_end_teacher_bench_fit_rank_evaluate(tmp_path, capsys):
    tasks = _write(tmp_path, _tasks_dict())
    t = tmp_path / "t.pt"
    assert main(["dass", "teacher", "--data", "digits", "--classes", "3,4,5", "--image-size", "8", "--train", "64",
                 "--valid", "30", "--width-divisor", "8", "--epochs", "1", "--seed", "0", "--out", str(t)]) == 0
    teacher = load_teacher(t, "resnet48")
    assert teacher.task["classes"] == [3, 4, 5] and teacher.network.config["width_divisor"] == 8
    assert teacher.network.config["resnet_stem"] == "small"
    out = tmp_path / "kdbench"
    assert main(["dass", "bench", "--tasks", str(tasks), "--archs", "2", "--seeds", "1", "--regimes", "kd",
                 "--quiet", "--out", str(out)]) == 0  # 2 tasks x 2 students
    rows = list(csv.DictReader(open(out / "kdbench.csv")))
    assert [r["task"] for r in rows] == ["digits-a", "digits-a", "glyphs-a", "glyphs-a"]
    assert {"kd_valid_acc", "teacher", "split"} <= set(rows[0])
    embeddings = bench.read_embeddings(out / "embeddings.pt")
    assert set(embeddings["tasks"]) == {"digits-a", "glyphs-a"}
    assert "4 of 4 (task, student) rows complete" in capsys.readouterr().out
    model = tmp_path / "dass.pt"
    assert main(["dass", "fit", "--bench", str(out), "--episodes", "3", "--query", "2", "--width", "8",
                 "--quiet", "--out", str(model)]) == 0
    ranking = tmp_path / "ranking.csv"
    assert main(["dass", "rank", "--model", str(model), "--teacher", str(t), "--archs", "5", "--out",
                 str(ranking)]) == 0
    ranked = list(csv.DictReader(open(ranking)))
    assert len(ranked) == 5 and set(ranked[0]) == {"arch", "score"}
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores, reverse=True)
    report = tmp_path / "report.json"
    assert main(["dass", "evaluate", "--bench", str(out), "--model", str(model), "--out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert set(result["tasks"]) == {"glyphs-a"}
    baselines = {"flops_spearman", "zero_shot_acc_spearman", "neg_kl_spearman", "map_cosine_spearman"}
    assert baselines <= set(result["tasks"]["glyphs-a"])
    spearman = result["tasks"]["glyphs-a"]["spearman"]  # None where both students tie (two 1-epoch students)
    regret = result["mean_top1_regret"]  # None where no task has varying KD accuracy (nothing to rank)
    assert (spearman is None or -1.0 <= spearman <= 1.0) and (regret is None or regret >= 0)
    # a teacher at another image size gives other map sides than the model was trained on: a probe mismatch
    t16 = tmp_path / "t16.pt"
    assert main(["dass", "teacher", "--data", "digits", "--classes", "0,1", "--image-size", "16", "--train", "64",
                 "--valid", "20", "--width-divisor", "8", "--epochs", "1", "--out", str(t16)]) == 0
    capsys.readouterr()
    assert main(["dass", "rank", "--model", str(model), "--teacher", str(t16), "--archs", "2", "--out",
                 str(ranking)]) == 2
    assert "probe mismatch" in capsys.readouterr().err
    assert main(["dass", "rank", "--model", str(t), "--teacher", str(t16), "--out", str(ranking)]) == 2
    assert "is not a DaSS model file" in capsys.readouterr().err
    # a model trained with another probe than the benchmark's embeddings
    from rdnas.predictors.dass import load_model, save_model

    loaded, config = load_model(model)
    save_model(tmp_path / "other_probe.pt", loaded, {**config, "probe_seed": 5})
    assert main(["dass", "evaluate", "--bench", str(out), "--model", str(tmp_path / "other_probe.pt"), "--out",
                 str(report)]) == 2
    assert "probe mismatch" in capsys.readouterr().err
    # a teacher from a tasks file: the task's data and teacher recipe
    t2 = tmp_path / "t2.pt"
    assert main(["dass", "teacher", "--tasks", str(tasks), "--task", "glyphs-a", "--out", str(t2)]) == 0
    assert load_teacher(t2).task == read_tasks(tasks).task("glyphs-a").data_dict()
    with pytest.raises(SystemExit):
        main(["dass", "teacher", "--tasks", str(tasks), "--task", "nope", "--out", str(t2)])
    assert "--task: no task named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["dass", "teacher", "--out", "x.pt"], "--data SPEC is required"),
    (["dass", "teacher", "--data", "glyphs", "--out", "x.pt"], "a glyphs task needs its characters"),
    (["dass", "teacher", "--data", "digits", "--classes", "a,b", "--out", "x.pt"], "lists labels 0..9"),
    (["dass", "teacher", "--data", "mnist", "--out", "x.pt"], "--data: .*unknown dataset spec"),
    (["dass", "teacher", "--data", "digits", "--cells", "3", "--out", "x.pt"],
     "--cells is an option of nb201, not of the resnet48 space"),
    (["dass", "bench", "--tasks", "t.json", "--regimes", "kd,xx", "--out", "o"], "--regimes: unknown regime 'xx'"),
])
def test_dass_cli_usage_errors_exit_2_naming_the_option(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "rdnas dass" in err and __import__("re").search(match, err)


def test_dass_cli_bad_input_files_exit_2(tmp_path, capsys):
    (tmp_path / "t.json").write_text(json.dumps(_tasks_dict(**{"tasks/0/train": 0})))
    assert main(["dass", "bench", "--tasks", str(tmp_path / "t.json"), "--out", str(tmp_path / "o")]) == 2
    assert "tasks[0].train: expected an integer >= 1" in capsys.readouterr().err


# -- the DaSS predictor ---------------------------------------------------------------------------------------------
def _tiny_meta_sgd(seed=0):
    from rdnas.predictors.dass import DaSSNet, MetaSGD

    torch.manual_seed(seed)
    model = MetaSGD(DaSSNet(channels=3, arch_features=5, width=4, arch_width=3, hidden=4)).double()
    with torch.no_grad():  # distinct step sizes, so a mix-up of parameters and steps shows
        for step in model.steps.values():
            step.copy_(torch.rand(step.shape, dtype=torch.float64) * 0.01 + 0.001)
    generator = torch.Generator().manual_seed(seed + 1)

    def batch(n):
        return (torch.randn(n, 3, 4, 4, generator=generator, dtype=torch.float64),
                torch.randn(n, 3, 4, 4, generator=generator, dtype=torch.float64),
                torch.randn(n, 5, generator=generator, dtype=torch.float64),
                torch.rand(n, generator=generator, dtype=torch.float64))

    return model, batch(1), batch(6)


def _coordinates(model, generator):
    """A few (parameter name, flat index) pairs from every parameter tensor of the network."""
    for name, p in model.net.named_parameters():
        for index in torch.randint(0, p.numel(), (2,), generator=generator).tolist():
            yield name, p, index


@pytest.mark.parametrize("seed", [0, 1])
def test_the_inner_step_is_theta_minus_alpha_times_the_finite_difference_gradient(seed):
    model, support, _ = _tiny_meta_sgd(seed)
    adapted = model.adapt(support, create_graph=False)
    eps = 1e-6
    for name, p, index in _coordinates(model, torch.Generator().manual_seed(seed)):
        flat = p.data.view(-1)
        original = float(flat[index])
        with torch.no_grad():
            flat[index] = original + eps
            up = float(model.support_loss(model.parameters_dict(), support))
            flat[index] = original - eps
            down = float(model.support_loss(model.parameters_dict(), support))
            flat[index] = original
        gradient = (up - down) / (2 * eps)
        step = float(model.steps[name.replace(".", "__")].detach().view(-1)[index])
        got = float(adapted[name].detach().view(-1)[index])
        assert got == pytest.approx(original - step * gradient, abs=1e-9), name


@pytest.mark.parametrize("seed", [0, 1])
def test_the_second_order_outer_gradient_matches_finite_differences(seed):
    from rdnas.predictors.dass import episode_loss

    model, support, query = _tiny_meta_sgd(seed)
    loss = episode_loss(model, support, query)
    tensors = dict(model.net.named_parameters())
    tensors.update({f"step:{k}": v for k, v in model.steps.items()})
    grads = dict(zip(tensors, torch.autograd.grad(loss, list(tensors.values()))))
    eps = 1e-6
    generator = torch.Generator().manual_seed(seed + 10)
    checked = 0
    for key, tensor in tensors.items():
        for index in torch.randint(0, tensor.numel(), (2,), generator=generator).tolist():
            flat = tensor.data.view(-1)
            original = float(flat[index])
            flat[index] = original + eps
            up = float(episode_loss(model, support, query).detach())
            flat[index] = original - eps
            down = float(episode_loss(model, support, query).detach())
            flat[index] = original
            numeric = (up - down) / (2 * eps)
            assert float(grads[key].view(-1)[index]) == pytest.approx(numeric, rel=1e-5, abs=1e-9), key
            checked += 1
    assert checked == 2 * len(tensors)
    # the step sizes matter: without adaptation they get no gradient
    plain = episode_loss(model, support, query, adapt=False)
    assert torch.autograd.grad(plain, list(model.steps.values()), allow_unused=True)[0] is None


def test_step_sizes_start_at_dass_value_and_ablations_zero_their_input():
    from rdnas.predictors.dass import STEP_INIT, DaSSNet, MetaSGD, pad_channels

    model = MetaSGD(DaSSNet(3, 5, width=4, arch_width=3, hidden=4, use_teacher=False))
    assert all(torch.all(step == STEP_INIT) for step in model.steps.values()) and STEP_INIT == 0.005
    s, a = torch.randn(2, 3, 2, 2), torch.randn(2, 5)
    first = model.net(s, torch.randn(2, 3, 2, 2), a)
    assert torch.equal(first, model.net(s, torch.randn(2, 3, 2, 2), a))  # the teacher input is ignored
    assert pad_channels(torch.ones(1, 2, 1, 1), 3)[0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="have 4 channels, the predictor takes at most 3"):
        pad_channels(torch.ones(1, 4, 1, 1), 3)


def test_training_free_signals_are_the_remapped_students_zero_shot_accuracy_kl_and_map_cosine(tmp_path):
    tasks, archs = _build_args(tmp_path)
    task = tasks.tasks[0]
    teacher = bench.task_teacher(tmp_path / "b", task, SPACE)
    data = task.data()
    emb = embeddings.task_embeddings(teacher, task, archs, probe_seed=0)
    signals = baselines.training_free_signals(teacher, task, archs, data, emb)
    student = remap(teacher.network, archs[0], SPACE).eval()
    with torch.no_grad():  # on the training images: the validation labels are what the signals are judged against
        z_s, z_t = student(data.train_x).double(), teacher.network(data.train_x).double()
    accuracy = 100.0 * float((z_s.argmax(1) == data.train_y).double().mean())
    p_t = z_t.softmax(1)
    kl = float((p_t * (p_t.log() - z_s.log_softmax(1))).sum(1).mean())
    assert float(signals["zero_shot_acc"][0]) == pytest.approx(accuracy)
    assert float(signals["neg_kl"][0]) == pytest.approx(-kl, rel=1e-6)
    s, t = emb["students"][0].flatten().double(), emb["teacher"].flatten().double()
    assert float(signals["map_cosine"][0]) == pytest.approx(float(s @ t / (s.norm() * t.norm())), rel=1e-9)
    full = baselines.training_free_signals(teacher, task, SPACE.largest().unsqueeze(0), data)
    assert float(full["neg_kl"][0]) == pytest.approx(0.0, abs=1e-9)  # the largest student is the teacher


@pytest.mark.parametrize("teacher_divisor", [8, 4])
def test_the_supernet_path_gives_each_remapped_students_own_last_stage_map(teacher_divisor):
    from rdnas.kd import largest_network

    teacher = largest_network(SPACE, num_classes=3, in_channels=1, resnet_stem="small", width_divisor=teacher_divisor)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random weights and BN statistics (a fresh BN is the identity and hides mis-slicing)
        for name, tensor in teacher.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * (0.3 if tensor.dim() == 4 else 1.0)
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    teacher.eval().double()  # float64: the batched path sums in another order (through 48 layers of random weights)
    archs = SPACE.sample(5, torch.Generator().manual_seed(teacher_divisor))
    probe = embeddings.probe_image(1, 16, 0).double()
    maps = embeddings.remapped_last_stage_maps(teacher, archs, SPACE, probe, width_divisor=8)
    for arch, got in zip(archs, maps):
        expected = embeddings.last_stage_map(remap(teacher, arch, SPACE, width_divisor=8), probe)
        assert got.shape == expected.shape and got.shape[-1] == 2
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)

"""DaSS's measurement: the rank metrics against hand computations, the seed ceiling, the paired test's direction,
every baseline's scores on a tiny KD benchmark, the report on known labels, `rdnas dass evaluate` end to end and the
resumable experiment script."""

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rdnas.cli import main
from rdnas.kd import bench, evaluation, methods, read_tasks
from rdnas.kd.baselines import dataset_sample, pooled_predictor_scores, proxy_names, task_minibatch
from rdnas.kd.teacher import load_teacher, save_teacher
from rdnas.minibench.build import sample_architectures
from rdnas.spaces import get_space

SPACE = get_space("resnet48")
ROOT = Path(__file__).resolve().parent.parent
# The experiment script imports the rdnas this test imports (the installed package in CI, the checkout with
# PYTHONPATH in a development tree): the checkout's source tree has no compiled extension after `pip install .`.
RDNAS_ROOT = Path(bench.__file__).resolve().parents[2]
TEACHER = {"options": {"resnet_stem": "small", "width_divisor": 8}, "epochs": 1, "seed": 0, "batch_size": 32}
TASKS = [("digits-train", "meta-train", "digits", [0, 1, 2]), ("digits-valid", "meta-valid", "digits", [3, 4, 5]),
         ("digits-test", "meta-test", "digits", [6, 7, 8]), ("glyphs-test", "meta-test", "glyphs", ["A", "B", "C"])]
STUDENTS = 4
TINY_FIT = methods.FitSettings(episodes=4, query=4, width=8, eval_every=2)


# -- metrics against hand computations ----------------------------------------------------------------------------
def test_rank_metrics_match_a_hand_computation():
    truth = [10.0, 20.0, 30.0, 40.0]
    m = evaluation.task_metrics([3.0, 1.0, 2.0, 4.0], truth)
    # ranks 3,1,2,4 against 1,2,3,4: d = 2,-1,-1,0, sum d^2 = 6, rho = 1 - 6 * 6 / (4 * 15) = 0.4
    assert m["spearman"] == pytest.approx(0.4)
    # pairs: (0,1) and (0,2) discordant, the other 4 concordant: tau = (4 - 2) / 6
    assert m["kendall"] == pytest.approx(1 / 3)
    # top 10 % of 4 = 1 student: predicted best (index 3) is the true best
    assert m["precision_top10"] == 1.0 and m["top1_regret"] == 0.0 and not m["constant"]
    m = evaluation.task_metrics([4.0, 1.0, 2.0, 3.0], truth)  # picks index 0: 40 - 10 = 30 points
    assert m["top1_regret"] == 30.0 and m["precision_top10"] == 0.0
    # ties at the top: the regret is the expectation over the tied picks, 40 - (10 + 20) / 2
    assert evaluation.task_metrics([5.0, 5.0, 1.0, 1.0], truth)["top1_regret"] == 25.0
    # a constant score ranks nothing: correlations 0, a random pick's precision (1 / 4) and regret (40 - 25)
    m = evaluation.task_metrics([7.0] * 4, truth)
    assert (m["spearman"], m["kendall"], m["precision_top10"], m["top1_regret"], m["constant"]) == (
        0.0, 0.0, 0.25, 15.0, True)
    # -inf (a proxy's worst) ranks last; constant labels: nothing to rank; NaN is an error
    assert evaluation.task_metrics([-np.inf, 1.0, 2.0, 3.0], truth)["spearman"] == pytest.approx(1.0)
    assert evaluation.task_metrics([1.0, 2.0, 3.0, 4.0], [20.0] * 4) is None
    with pytest.raises(ValueError, match="NaN"):
        evaluation.task_metrics([1.0, np.nan, 2.0, 3.0], truth)
    with pytest.raises(ValueError, match="same length"):
        evaluation.task_metrics([1.0, 2.0], truth)


def test_precision_at_top_10_percent_counts_the_overlap_of_the_top_tenth():
    truth = list(range(20))  # top 10 % = the 2 best: indices 19 and 18
    scores = [0.0] * 20
    scores[19], scores[3] = 5.0, 4.0  # one of the two predicted best is truly in the top 2
    assert evaluation.task_metrics(scores, truth)["precision_top10"] == pytest.approx(0.5)


def test_the_seed_ceiling_is_the_mean_spearman_over_seed_pairs():
    archs = ["a", "b", "c", "d"]
    accuracy = {0: [1, 2, 3, 4], 1: [1, 2, 4, 3], 2: [4, 3, 2, 1]}
    runs = [{"task": "t", "regime": "kd", "seed": s, "arch_str": a, "valid_acc": float(v)}
            for s, values in accuracy.items() for a, v in zip(archs, values)]
    runs.append({"task": "t", "regime": "ce", "seed": 0, "arch_str": "a", "valid_acc": 99.0})  # other regime
    ceiling = evaluation.seed_ceiling(runs, "t", archs)
    # (0, 1): d^2 sum 2 -> 0.8; (0, 2): -1; (1, 2): d^2 sum 18 -> 1 - 108 / 60 = -0.8
    assert [p[:2] for p in ceiling["pairs"]] == [[0, 1], [0, 2], [1, 2]]
    assert [p[2] for p in ceiling["pairs"]] == pytest.approx([0.8, -1.0, -0.8])
    assert ceiling["spearman"] == pytest.approx((0.8 - 1.0 - 0.8) / 3)
    assert evaluation.seed_ceiling([r for r in runs if r["seed"] == 0], "t", archs) is None  # one seed: none


def test_the_paired_test_says_which_side_is_better():
    better = evaluation.paired_test([0.5, 0.6, 0.7, 0.4, 0.8, 0.55], [0.1, 0.2, 0.3, 0.35, 0.1, 0.5])
    assert better["reference_better"] == 6 and better["other_better"] == 0 and better["mean_difference"] > 0
    assert better["p_value"] == pytest.approx(2 / 2 ** 6) and better["smallest_p"] == pytest.approx(2 / 2 ** 6)
    worse = evaluation.paired_test([0.1, 0.2, 0.3, 0.35, 0.1, 0.5], [0.5, 0.6, 0.7, 0.4, 0.8, 0.55])
    assert worse["other_better"] == 6 and worse["mean_difference"] < 0 and worse["p_value"] == better["p_value"]
    mixed = evaluation.paired_test([0.5, 0.1, 0.7], [0.1, 0.5, 0.6])
    assert (mixed["reference_better"], mixed["other_better"]) == (2, 1) and mixed["p_value"] > 0.5
    assert evaluation.paired_test([0.3, 0.4], [0.3, 0.4])["p_value"] == 1.0
    five = evaluation.paired_test([1.0] * 5, [0.0] * 5)  # 5 tasks can never reach p < 0.05
    assert five["p_value"] == pytest.approx(0.0625) and five["smallest_p"] == pytest.approx(0.0625)


# -- a tiny KD benchmark, built once ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """A real KD benchmark (4 tasks of 3 classes at 8 px, 4 students, 2 seeds, kd and ce, 1-epoch teachers)."""
    folder = tmp_path_factory.mktemp("dass_evaluation")
    tasks = [{"name": name, "split": split, "dataset": dataset, "classes": classes, "image_size": 8, "train": 48,
              "valid": 30, "seed": i, "teacher": copy.deepcopy(TEACHER)}
             for i, (name, split, dataset, classes) in enumerate(TASKS)]
    path = folder / "tasks.json"
    path.write_text(json.dumps({"kind": "rdnas-dass-tasks", "version": 1, "space": "resnet48",
                                "student": {"epochs": 1, "batch_size": 32}, "probe_seed": 0, "tasks": tasks}))
    tasks = read_tasks(path)
    archs = sample_architectures(STUDENTS, seed=0, space=SPACE)
    out = folder / "bench"
    runs = bench.build(out, tasks, archs, [0, 1], ("kd", "ce"), progress=False)
    bench.write_kd_table(out / "kdbench.csv", bench.kd_table(runs, tasks, [0, 1], ("kd", "ce")), ("kd", "ce"))
    bench.write_embeddings(out, tasks, archs)
    return out, tasks, archs


def _truth(task_index: int, k: int, seed: int, regime: str) -> float:
    """Known labels: KD accuracy rises with the student's position (reversed in the glyphs task), seeds spread it
    by +-0.5 (seed 1 swaps the two middle students of every task, so the seed ceiling is below 1), CE accuracy
    ranks the students the other way round."""
    position = k if task_index != 3 else STUDENTS - 1 - k
    if seed == 1 and position in (1, 2):
        position = 3 - position
    value = 40.0 + 10.0 * position + (0.5 if seed == 0 else -0.5)
    return value if regime == "kd" else 100.0 - value


@pytest.fixture(scope="module")
def labelled_bench(tiny_bench, tmp_path_factory):
    """The tiny benchmark with known accuracies (:func:`_truth`) in place of its 1-epoch students' (which are at
    chance): same teachers, embeddings and students."""
    out, tasks, archs = tiny_bench
    folder = tmp_path_factory.mktemp("dass_labelled") / "bench"
    shutil.copytree(out, folder)
    names = [SPACE.to_string(a) for a in archs]
    order = {t.name: i for i, t in enumerate(tasks.tasks)}
    rows = bench.read_runs(folder)
    for row in rows:
        row["valid_acc"] = _truth(order[row["task"]], names.index(row["arch_str"]), row["seed"], row["regime"])
    for path in bench.runs_files(folder):
        path.unlink()
    with open(folder / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=bench.RUN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    bench.write_kd_table(folder / "kdbench.csv", bench.kd_table(bench.read_runs(folder), tasks, [0, 1], ("kd", "ce")),
                         ("kd", "ce"))
    return folder, names


def test_every_seed_free_baseline_scores_each_student_finitely(tiny_bench):
    out, tasks, archs = tiny_bench
    bench_ = methods.EvaluationBench(out)
    assert bench_.judged == ["digits-test", "glyphs-test"]
    result = methods.fixed_scores(bench_, "glyphs-test")
    expected = {"flops", "params", "zero_shot_acc", "neg_kl", "map_cosine", *proxy_names()}
    assert set(result["scores"]) == expected and {"synflow", "snip", "grad_norm", "naswot", "zen"} <= expected
    assert result["archs"] == bench_.kd["glyphs-test"].archs and result["skipped"] == {}
    for method, values in result["scores"].items():
        assert len(values) == STUDENTS and np.isfinite(values).all(), method
    cost = SPACE.cost(SPACE.validate(result["archs"]), image_size=8, num_classes=3, in_channels=1,
                      resnet_stem="small", width_divisor=8)
    assert result["scores"]["flops"] == pytest.approx(cost["flops"].tolist())  # the students' own cost model
    minibatch = task_minibatch(bench_.data("glyphs-test"), 16, seed=3)
    assert minibatch.inputs.shape == (16, 1, 8, 8) and minibatch.num_classes == 3
    assert torch.equal(minibatch.inputs, task_minibatch(bench_.data("glyphs-test"), 16, seed=3).inputs)


@pytest.mark.parametrize("method", methods.SEEDED_METHODS)
def test_every_meta_trained_method_scores_each_judged_student_finitely(tiny_bench, method):
    out, _, _ = tiny_bench
    bench_ = methods.EvaluationBench(out)
    result = methods.seeded_scores(bench_, method, 0, TINY_FIT)
    assert result["method"] == method and result["seed"] == 0 and set(result["tasks"]) == set(bench_.judged)
    for name, entry in result["tasks"].items():
        assert entry["archs"] == bench_.kd[name].archs
        assert len(entry["scores"]) == STUDENTS and np.isfinite(entry["scores"]).all()
    again = methods.seeded_scores(bench_, method, 0, TINY_FIT)
    assert again["tasks"] == result["tasks"]  # same seed, same scores


def test_the_dataset_encoding_is_invariant_to_the_order_of_images_and_classes():
    from rdnas.kd.baselines import SetEncoder

    torch.manual_seed(0)
    encoder = SetEncoder(1, 8)
    images = torch.randn(3, 4, 1, 8, 8)
    shuffled = images[torch.tensor([2, 0, 1])][:, torch.tensor([3, 1, 0, 2])]
    assert torch.allclose(encoder(images), encoder(shuffled), atol=1e-6)


def test_dataset_sample_takes_a_few_images_of_every_class(tiny_bench):
    out, _, _ = tiny_bench
    data = methods.EvaluationBench(out).data("digits-test")
    sample = dataset_sample(data, per_class=3, seed=1, channels=2)
    assert sample.shape == (3, 3, 2, 8, 8) and torch.all(sample[:, :, 1] == 0)
    for label in range(3):
        rows = data.train_x[data.train_y == label]
        assert all(any(torch.equal(image, row) for row in rows) for image in sample[label, :, :1])


def test_pooled_predictors_standardise_each_task_and_refuse_nothing_to_learn():
    archs = sample_architectures(6, seed=1, space=SPACE)
    train = [(archs, torch.arange(6.0)), (archs, 50.0 + 10.0 * torch.arange(6.0))]  # same ranking, other scales
    scores = pooled_predictor_scores("gbt", SPACE, train, archs, seed=0)
    assert scores.shape == (6,) and scores.dtype == torch.float64
    assert np.corrcoef(scores.numpy(), np.arange(6.0))[0, 1] > 0.9  # learnt the shared order
    with pytest.raises(ValueError, match="nothing to learn"):
        pooled_predictor_scores("mlp", SPACE, [(archs, torch.ones(6))], archs)
    with pytest.raises(ValueError, match="gbt, mlp"):
        pooled_predictor_scores("nar", SPACE, train, archs)


# -- the report on known labels -----------------------------------------------------------------------------------
def _result(method, seed, bench_, scores_of):
    """A seeded result whose scores are ``scores_of(task, truth list)``, students listed in reverse order (the
    report must read them by architecture)."""
    tasks = {}
    for name in bench_.judged:
        archs = bench_.kd[name].archs
        truth = [bench_.truth(name)[a] for a in archs]
        scores = scores_of(name, truth)
        tasks[name] = {"archs": archs[::-1], "scores": list(scores)[::-1]}
    return {"kind": "seeded", "method": method, "seed": seed, "settings": {}, "fit": {}, "tasks": tasks}


def test_the_report_on_known_labels(labelled_bench):
    folder, names = labelled_bench
    bench_ = methods.EvaluationBench(folder)
    truth = bench_.truth("digits-test")
    assert [truth[a] for a in names] == [40.0, 55.0, 55.0, 70.0]  # means over seeds 0 and 1 (the middle two swap)
    results = [_result("dass", s, bench_, lambda n, t: t) for s in (0, 1)]  # a perfect ranker
    results += [_result("gbt", s, bench_, lambda n, t: [-v for v in t]) for s in (0, 1)]  # the reverse
    results += [_result("dass-no-adapt", s, bench_, lambda n, t: [1.0] * len(t)) for s in (0, 1)]  # constant
    report = evaluation.build_report(bench_, results)
    json.dumps(report)  # plain JSON
    assert report["ranked_tasks"] == ["digits-test", "glyphs-test"]
    dass, gbt, flat = (report["methods"][m]["mean"] for m in ("dass", "gbt", "dass-no-adapt"))
    assert dass["spearman"]["mean"] == pytest.approx(1.0) and dass["top1_regret"]["mean"] == 0.0
    assert gbt["spearman"]["mean"] == pytest.approx(-1.0) and gbt["top1_regret"]["mean"] == pytest.approx(30.0)
    assert flat["spearman"]["mean"] == 0.0 and flat["top1_regret"]["mean"] == pytest.approx(15.0)
    assert report["methods"]["dass"]["mean"]["spearman"]["std"] == 0.0 and dass["spearman"]["n"] == 2
    for name in report["ranked_tasks"]:
        task = report["tasks"][name]
        # seed 0 and seed 1 differ by the swap of the two middle students: Spearman 1 - 6 * 2 / 60 = 0.8
        assert task["seed_ceiling_spearman"] == pytest.approx(0.8)
        assert task["kd_vs_ce_spearman"] == pytest.approx(-1.0)  # CE ranks them the other way round
        assert task["spearman"] == pytest.approx(1.0) and task["gbt_spearman"] == pytest.approx(-1.0)
    test = report["tests"]["gbt"]
    assert test["over_tasks"]["reference_better"] == 2 and test["over_tasks"]["mean_difference"] == pytest.approx(2)
    assert test["over_seed_task"]["n"] == 4 and test["over_seed_task"]["reference_better"] == 4
    assert report["verdict"]["beats_every_baseline"] and report["verdict"]["regret_within_1"]
    # the ablation is no baseline: a better baseline would flip the verdict
    results.append(_result("mlp", 0, bench_, lambda n, t: t))
    losing = evaluation.build_report(bench_, results)
    assert not losing["verdict"]["beats_every_baseline"] and losing["verdict"]["not_beaten_by"] == ["mlp"]
    assert "does NOT beat every baseline" in losing["verdict"]["text"]
    partial = _result("mlp", 1, bench_, lambda n, t: t)
    del partial["tasks"]["glyphs-test"]  # a seed that scored only one of the two judged tasks
    assert evaluation.build_report(bench_, results + [partial])["incomplete"] == {"mlp": [1]}
    text = evaluation.markdown_report(losing)
    assert "| dass | DaSS | 1.000 ± 0.000 |" in text and "| gbt | learned baseline | -1.000 ± 0.000 |" in text
    assert "| seed ceiling | 0.800 | 0.800 |" in text and "Verdict: DaSS does NOT beat" in text


def test_the_report_refuses_scores_of_other_students(labelled_bench):
    folder, _ = labelled_bench
    bench_ = methods.EvaluationBench(folder)
    result = _result("dass", 0, bench_, lambda n, t: t)
    result["tasks"]["glyphs-test"]["archs"][0] = SPACE.to_string(SPACE.largest())
    with pytest.raises(ValueError, match="scores of dass .* on task glyphs-test miss student"):
        evaluation.build_report(bench_, [result])


# -- the command line and the experiment script -------------------------------------------------------------------
def test_evaluate_meta_trains_every_method_and_writes_the_report_and_its_table(labelled_bench, tmp_path, capsys):
    folder, _ = labelled_bench
    out = tmp_path / "report.json"
    assert main(["dass", "evaluate", "--bench", str(folder), "--seeds", "2", "--episodes", "4", "--width", "8",
                 "--query", "4", "--eval-every", "2", "--proxies", "synflow,snip", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(methods.SEEDED_METHODS) <= set(report["methods"])
    assert {"flops", "params", "synflow", "snip", "zero_shot_acc", "neg_kl", "map_cosine"} <= set(report["methods"])
    assert "naswot" not in report["methods"]
    for method in methods.SEEDED_METHODS:
        assert report["methods"][method]["seeds"] == [0, 1]
        assert report["methods"][method]["mean"]["spearman"]["n"] == 2
    assert set(report["tests"]) == set(report["methods"]) - {"dass"}
    assert report["tasks"]["digits-test"]["seed_ceiling_spearman"] == pytest.approx(0.8)
    assert report["tasks"]["digits-test"]["kd_vs_ce_spearman"] == pytest.approx(-1.0)
    table = out.with_suffix(".md").read_text()
    assert "| method | kind | Spearman |" in table and "Verdict: " in table and "| metad2a |" in table
    # every finished job is kept: the same command again reads them back, other settings are refused
    jobs = out.with_suffix(".jobs")
    assert len(list(jobs.glob("*.json"))) == 2 + 2 * len(methods.SEEDED_METHODS)
    kept = (jobs / "dass_seed1.json").read_bytes()
    assert main(["dass", "evaluate", "--bench", str(folder), "--seeds", "2", "--episodes", "4", "--width", "8",
                 "--query", "4", "--eval-every", "2", "--proxies", "synflow,snip", "--methods", "dass", "--out",
                 str(tmp_path / "again.json"), "--jobs", str(jobs)]) == 0
    assert "dass seed 1: done already" in capsys.readouterr().out and (jobs / "dass_seed1.json").read_bytes() == kept
    assert json.loads((tmp_path / "again.json").read_text())["methods"]["dass"] == report["methods"]["dass"]
    assert main(["dass", "evaluate", "--bench", str(folder), "--seeds", "1", "--episodes", "5", "--width", "8",
                 "--query", "4", "--eval-every", "2", "--proxies", "synflow,snip", "--methods", "dass", "--out",
                 str(tmp_path / "other.json"), "--jobs", str(jobs)]) == 2
    assert "was meta-trained with" in capsys.readouterr().err and not (tmp_path / "other.json").exists()


@pytest.mark.parametrize("argv,match", [
    (["--methods", "dass,nope"], "--methods: expected some of dass"),
    (["--proxies", "synflow,nope"], "--proxies: expected 'none' or some of"),
    (["--seeds", "0"], "--seeds"),
])
def test_evaluate_usage_errors_exit_2_naming_the_option(labelled_bench, tmp_path, capsys, argv, match):
    folder, _ = labelled_bench
    with pytest.raises(SystemExit) as exit_:
        main(["dass", "evaluate", "--bench", str(folder), *argv, "--out", str(tmp_path / "r.json")])
    assert exit_.value.code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_evaluate_judges_a_model_file_in_place_of_meta_training_dass(labelled_bench, tmp_path, capsys):
    folder, _ = labelled_bench
    model = tmp_path / "dass.pt"
    assert main(["dass", "fit", "--bench", str(folder), "--episodes", "2", "--query", "4", "--width", "8", "--quiet",
                 "--out", str(model)]) == 0
    out = tmp_path / "report.json"
    assert main(["dass", "evaluate", "--bench", str(folder), "--model", str(model), "--proxies", "none", "--quiet",
                 "--out", str(out), "--markdown", str(tmp_path / "table.md")]) == 0
    report = json.loads(out.read_text())
    assert report["methods"]["dass"]["seeds"] == ["model"] and report["model"] == str(model)
    assert not set(methods.SEEDED_METHODS[1:]) & set(report["methods"])  # nothing else meta-trained
    assert (tmp_path / "table.md").exists()
    with pytest.raises(SystemExit):
        main(["dass", "evaluate", "--bench", str(folder), "--model", str(model), "--methods", "dass", "--out",
              str(out)])
    assert "'dass' is the --model file" in capsys.readouterr().err


def test_the_experiment_script_resumes_and_never_redoes_a_finished_seed(labelled_bench, tmp_path):
    folder, _ = labelled_bench
    results = tmp_path / "runs"
    script = [sys.executable, str(ROOT / "benchmarks" / "dass_experiment.py")]
    common = ["--bench", str(folder), "--results", str(results)]
    options = ["--episodes", "3", "--width", "8", "--query", "4", "--eval-every", "3", "--proxies", "synflow"]

    def run(*argv):
        done = subprocess.run(script + list(argv), capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1",
                                   "PYTHONPATH": f"{RDNAS_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
        return done.returncode, done.stdout + done.stderr

    code, output = run("run", "--methods", "baselines,dass,gbt", "--seeds", "0", *common, *options)
    assert code == 0, output
    files = sorted(p.name for p in results.glob("*.json"))
    assert files == ["baselines_digits-test.json", "baselines_glyphs-test.json", "dass_seed0.json", "gbt_seed0.json"]
    first = (results / "dass_seed0.json").read_bytes()
    code, output = run("run", "--methods", "baselines,dass,gbt", "--seeds", "0,1", "--shard", "1/2", "--dry-run",
                       *common, *options)  # jobs 1, 3, 5 of [2 baselines, dass 0, dass 1, gbt 0, gbt 1]
    assert code == 0, output
    assert output.splitlines() == ["baselines task glyphs-test: done already (baselines_glyphs-test.json)",
                                   "dass seed 1: to run (dass_seed1.json)", "gbt seed 1: to run (gbt_seed1.json)",
                                   "2 job(s) to run"]
    code, output = run("run", "--methods", "dass,gbt", "--seeds", "0,1", *common, *options)
    assert code == 0 and "dass seed 0: done already" in output and "gbt seed 0: done already" in output
    assert (results / "dass_seed0.json").read_bytes() == first and (results / "dass_seed1.json").exists()
    code, output = run("run", "--methods", "dass", "--seeds", "2", *common, "--episodes", "5", "--width", "8")
    assert code != 0 and "was meta-trained with" in output and not (results / "dass_seed2.json").exists()
    code, output = run("report", *common, "--out", str(tmp_path / "report.json"))
    assert code == 0, output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["methods"]["dass"]["seeds"] == [0, 1] and report["methods"]["gbt"]["seeds"] == [0, 1]
    assert "Verdict:" in (tmp_path / "report.md").read_text()


def test_a_benchmark_without_ce_labels_has_no_premise_and_refuses_dass_ce(labelled_bench, tmp_path, capsys):
    folder, _ = labelled_bench
    kd_only = tmp_path / "kd_only"
    shutil.copytree(folder, kd_only)
    tasks = bench.read_bench_tasks(kd_only)
    runs = [r for r in bench.read_runs(kd_only) if r["regime"] == "kd"]
    bench.write_kd_table(kd_only / "kdbench.csv", bench.kd_table(runs, tasks, [0, 1], ("kd",)), ("kd",))
    bench_ = methods.EvaluationBench(kd_only)
    assert bench_.ce is None
    with pytest.raises(ValueError, match="dass-ce needs CE labels"):
        methods.seeded_scores(bench_, "dass-ce", 0, TINY_FIT)
    report = evaluation.build_report(bench_, [_result("dass", 0, bench_, lambda n, t: t)])
    assert all(task["kd_vs_ce_spearman"] is None for task in report["tasks"].values())
    # a teacher file that is not the build's teacher (retrained on another CPU) is refused, naming both digests
    path = kd_only / "teachers" / "glyphs-test.pt"
    built = load_teacher(path)
    for parameter in built.network.parameters():
        parameter.data.mul_(1.0 + 1e-6)
    save_teacher(built, path)
    with pytest.raises(ValueError, match=f"is teacher {built.digest()}, but the benchmark .* was built with teacher"):
        methods.fixed_scores(bench_, "glyphs-test", [])
    # without its teacher file (a shipped benchmark) a task's KD signals are not scored, and the report says so
    path.unlink()
    fixed = methods.fixed_scores(bench_, "glyphs-test", [])
    assert set(fixed["scores"]) == {"flops", "params"} and set(fixed["skipped"]) == {"zero_shot_acc", "neg_kl",
                                                                                      "map_cosine"}
    skipped = evaluation.build_report(bench_, [fixed])["skipped"]
    assert "zero_shot_acc (glyphs-test)" in skipped and "no teacher file" in skipped["neg_kl (glyphs-test)"]
    with pytest.raises(SystemExit) as exit_:
        main(["dass", "evaluate", "--bench", str(kd_only), "--methods", "dass-ce", "--out", str(tmp_path / "r.json")])
    assert exit_.value.code == 2 and "--methods: dass-ce needs CE labels" in capsys.readouterr().err

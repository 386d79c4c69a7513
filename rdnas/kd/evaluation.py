"""The measurement of DaSS against its baselines and ablations on a KD benchmark's meta-test tasks (issue 26, 3):
rank metrics, seed ceiling, premise, paired tests, the report and its Markdown table. The methods' scores come
from :mod:`rdnas.kd.methods` (results of its jobs).

:func:`build_report` turns results into the report: per (method, seed, task) Spearman and Kendall of the scores
against the KD accuracy (mean over the benchmark's seeds), P@top-10 % and the top-1 pick's regret (the pool's best
KD accuracy minus the picked student's, in points); per task the seed ceiling (Spearman between the KD accuracies
of two training seeds, averaged over seed pairs) and DaSS's premise (Spearman between the KD and the CE accuracy
of the same students); per method the mean over tasks (for each seed, then mean and standard deviation over
seeds); and a paired test of DaSS against every other method (:func:`paired_tests`). :func:`markdown_report`
writes its table; the verdict line says which methods DaSS does not beat.

Undefined values. A task whose KD accuracies are all equal ranks nothing: its metrics are None and it is left out
of every mean and test (for every method alike). A method whose scores of a task are all equal ranks nothing
either: its Spearman and Kendall count as 0, its P@top-10 % and regret are those of a uniformly random pick (the
expectation over tie-breaks), so a constant baseline is neither dropped nor rewarded.
"""

import math

import numpy as np

from rdnas.kd.methods import ABLATIONS, KINDS, LEARNED_BASELINES, REFERENCE, SUMMARIES, EvaluationBench

METRICS = ("spearman", "kendall", "precision_top10", "top1_regret")


# -- metrics ------------------------------------------------------------------------------------------------------
def task_metrics(scores, truth, percent: float = 10.0) -> dict | None:
    """Rank metrics of ``scores`` [K] (higher = predicted better) against ``truth`` [K] (KD accuracy, %):
    ``spearman``, ``kendall`` (0.0 where the scores are constant), ``precision_top10`` (overlap of the predicted
    and the true top ``percent`` %, ties broken uniformly at random, in expectation), ``top1_regret`` (the best
    true accuracy minus the true accuracy of the predicted best, in expectation over tied best predictions; >= 0),
    ``constant`` (whether the scores were constant). None when ``truth`` is constant (nothing to rank). Scores may
    hold -inf (a proxy's "worst"); NaN is an error."""
    from scipy import stats

    from rdnas.rank import kendall_tau, precision_at_top, spearman_rho

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if scores.shape != truth.shape or scores.size < 2:
        raise ValueError(f"rdnas.kd.evaluation.task_metrics: scores and truth must have the same length >= 2, got "
                         f"{scores.size} and {truth.size}")
    if np.isnan(scores).any() or np.isnan(truth).any():
        raise ValueError("rdnas.kd.evaluation.task_metrics: scores and truth must not hold NaN")
    if np.ptp(truth) == 0:
        return None
    ranks = stats.rankdata(scores)  # the same order, -inf included, finite for the correlations
    top = ranks == ranks.max()
    regret = float(truth.max() - truth[top].mean())
    k = max(1, math.ceil(scores.size * percent / 100))
    if np.ptp(ranks) == 0:
        return {"spearman": 0.0, "kendall": 0.0, "precision_top10": k / scores.size, "top1_regret": regret,
                "constant": True}
    return {"spearman": spearman_rho(ranks, truth), "kendall": kendall_tau(ranks, truth),
            "precision_top10": precision_at_top(ranks, truth, percent), "top1_regret": regret, "constant": False}


def seed_ceiling(runs: list, task: str, archs: list, regime: str = "kd") -> dict | None:
    """The seed ceiling of a task: Spearman between the ``regime`` validation accuracies of the students ``archs``
    trained with two different seeds, for every pair of the benchmark's seeds: ``{"spearman": mean over pairs,
    "pairs": [[s1, s2, rho], ...]}``; None with fewer than two seeds (a pair whose accuracies are constant is
    left out)."""
    from rdnas.rank import spearman_rho
    from rdnas.rank.metrics import UndefinedRankCorrelation

    by_seed = {}
    for r in runs:
        if r["task"] == task and r["regime"] == regime:
            by_seed.setdefault(r["seed"], {})[r["arch_str"]] = r["valid_acc"]
    seeds = sorted(s for s in by_seed if all(a in by_seed[s] for a in archs))
    pairs = []
    for i, first in enumerate(seeds):
        for second in seeds[i + 1:]:
            try:
                rho = spearman_rho([by_seed[first][a] for a in archs], [by_seed[second][a] for a in archs])
            except UndefinedRankCorrelation:
                continue
            pairs.append([first, second, rho])
    if not pairs:
        return None
    return {"spearman": float(np.mean([p[2] for p in pairs])), "pairs": pairs}


def premise(bench: EvaluationBench, name: str) -> float | None:
    """DaSS's premise on task ``name``: Spearman between the KD and the CE accuracy (means over seeds) of the same
    students; None without CE labels or where either is constant."""
    from rdnas.rank import spearman_rho
    from rdnas.rank.metrics import UndefinedRankCorrelation

    if bench.ce is None or name not in bench.ce:
        return None
    kd, ce = bench.truth(name), dict(zip(bench.ce[name].archs, (100.0 * bench.ce[name].labels).tolist()))
    common = [a for a in bench.kd[name].archs if a in ce]
    try:
        return spearman_rho([kd[a] for a in common], [ce[a] for a in common])
    except (UndefinedRankCorrelation, ValueError):
        return None


def paired_test(reference: list, other: list) -> dict:
    """Wilcoxon signed-rank test (two-sided, exact where scipy can) of paired values, reference - other:
    ``{"n", "mean_difference", "reference_better", "other_better", "ties", "statistic", "p_value",
    "smallest_p"}``; ``smallest_p`` is the smallest two-sided p the exact test can reach with n non-zero pairs
    (2 / 2^n): with 5 tasks it is 0.0625, so no difference over 5 tasks can be significant at 0.05. All
    differences zero: p = 1. Fewer than one pair: p None."""
    from scipy import stats

    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    difference = reference - other
    nonzero = difference[difference != 0]
    result = {"n": int(difference.size), "mean_difference": float(difference.mean()) if difference.size else None,
              "reference_better": int((difference > 0).sum()), "other_better": int((difference < 0).sum()),
              "ties": int((difference == 0).sum()), "statistic": None, "p_value": None,
              "smallest_p": 2.0 / 2 ** nonzero.size if nonzero.size else None}
    if difference.size and not nonzero.size:
        result["p_value"] = 1.0
    elif nonzero.size:
        test = stats.wilcoxon(reference, other, zero_method="wilcox", alternative="two-sided")
        result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return result


def _mean_std(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def _per_task_scores(results: list, bench: EvaluationBench) -> dict:
    """{method: {seed: {task: scores aligned with bench.kd[task].archs}}} from the results, by architecture."""
    methods = {}
    for result in results:
        if result["kind"] == "fixed":
            task = result["task"]
            for method, values in result["scores"].items():
                methods.setdefault(method, {}).setdefault(None, {})[task] = (result["archs"], values)
        else:
            for task, entry in result["tasks"].items():
                methods.setdefault(result["method"], {}).setdefault(result["seed"], {})[task] = (
                    entry["archs"], entry["scores"])
    aligned = {}
    for method, seeds in methods.items():
        for seed, tasks in seeds.items():
            for task, (archs, values) in tasks.items():
                if task not in bench.judged:
                    continue
                by_arch = dict(zip(archs, values))
                missing = [a for a in bench.kd[task].archs if a not in by_arch]
                if missing:
                    raise ValueError(f"rdnas.kd.evaluation: the scores of {method} (seed {seed}) on task {task} miss "
                                     f"student {missing[0]} (results of another benchmark?)")
                aligned.setdefault(method, {}).setdefault(seed, {})[task] = [by_arch[a] for a in bench.kd[task].archs]
    return aligned


def build_report(bench: EvaluationBench, results: list, reference: str = REFERENCE) -> dict:
    """The evaluation report (module docstring) of ``results`` (:func:`fixed_scores`, :func:`seeded_scores`,
    :func:`model_scores` dicts): ``{"bench", "split", "tasks": {task: summary}, "methods": {method: {...}},
    "incomplete": {method: seeds whose scores miss a judged task (left out)}, "skipped": {"method (task)": why},
    "tests": {method: {"over_tasks", "over_seed_task"}}, "caveat" (:data:`SEEN_CAVEATS` of a split other than
    meta-test, else None; it also opens the verdict), "verdict", ...}``; the reference's (DaSS's) headline
    figures also as ``mean_spearman``, ``mean_kendall``, ``mean_precision_top10``, ``mean_top1_regret``."""
    scores = _per_task_scores(results, bench)
    truths = {name: [bench.truth(name)[a] for a in bench.kd[name].archs] for name in bench.judged}
    tasks = {}
    for name in bench.judged:
        ceiling = seed_ceiling(bench.runs, name, bench.kd[name].archs)
        tasks[name] = {"students": len(truths[name]), "best_kd_acc": max(truths[name]),
                       "constant_labels": bool(np.ptp(truths[name]) == 0),
                       "seed_ceiling_spearman": None if ceiling is None else ceiling["spearman"],
                       "seed_ceiling_pairs": None if ceiling is None else ceiling["pairs"],
                       "kd_vs_ce_spearman": premise(bench, name),
                       "teacher_valid_acc": float(100.0 * bench.kd[name].teacher_acc[0])}
    ranked = [name for name in bench.judged if not tasks[name]["constant_labels"]]
    methods, incomplete = {}, {}
    for method, seeds in scores.items():
        complete = {seed: per_task for seed, per_task in seeds.items() if all(t in per_task for t in bench.judged)}
        left_out = [seed for seed in seeds if seed not in complete]
        if left_out:  # e.g. a baselines job not finished for every task yet
            incomplete[method] = left_out
        if not complete:
            continue
        per_seed = {seed: {t: task_metrics(per_task[t], truths[t]) for t in bench.judged}
                    for seed, per_task in complete.items()}
        entry = {"kind": KINDS.get(method, "zero-cost proxy"), "summary": SUMMARIES.get(method, f"proxy {method}"),
                 "seeds": [s for s in per_seed], "per_task": {}, "mean": {}}
        for t in bench.judged:
            entry["per_task"][t] = {m: _mean_std([None if per_seed[s][t] is None else per_seed[s][t][m]
                                                  for s in per_seed]) for m in METRICS}
            entry["per_task"][t]["constant_scores"] = sum(bool(per_seed[s][t] and per_seed[s][t]["constant"])
                                                          for s in per_seed)
        for m in METRICS:
            entry["mean"][m] = _mean_std([float(np.mean([per_seed[s][t][m] for t in ranked])) if ranked else None
                                          for s in per_seed])
        entry["per_seed"] = {str(s): {t: per_seed[s][t] for t in bench.judged} for s in per_seed}
        methods[method] = entry
    report = {"bench": str(bench.folder), "split": bench.split, "space": bench.space.name,
              "judged_tasks": list(bench.judged), "ranked_tasks": ranked, "reference": reference, "tasks": tasks,
              "methods": methods, "incomplete": incomplete, "tests": {}, "test_note": TEST_NOTE,
              "skipped": {f"{m} ({r['task']})": why for r in results if r["kind"] == "fixed"
                          for m, why in r.get("skipped", {}).items()}}
    if reference in methods:
        report["tests"] = paired_tests(methods, reference, ranked)
        ref = methods[reference]
        for m in METRICS:
            report[f"mean_{m}"] = ref["mean"][m]["mean"]
            report[f"tasks_with_{m}"] = len(ranked)
        for t in bench.judged:
            tasks[t].update({m: ref["per_task"][t][m]["mean"] for m in METRICS})
    for method, entry in methods.items():
        if method != reference:
            for t in bench.judged:
                tasks[t][f"{method}_spearman"] = entry["per_task"][t]["spearman"]["mean"]
    report["caveat"] = SEEN_CAVEATS.get(bench.split)
    report["verdict"] = verdict(report)
    if report["caveat"]:
        report["verdict"]["text"] = f"{report['caveat']} {report['verdict']['text']}"
    return report


SEEN_CAVEATS = {
    "meta-train": "Not a measurement on unseen tasks: the judged tasks are meta-train tasks, whose labels the "
                  "meta-trained methods were fitted on.",
    "meta-valid": "Not a measurement on unseen tasks: the judged tasks are meta-valid tasks, whose labels picked "
                  "the meta-trained methods' kept checkpoint.",
}
"""What a report on a split other than meta-test must say first: its tasks were seen in meta-training."""


TEST_NOTE = ("Primary test: Wilcoxon signed-rank over the meta-test tasks of the per-task Spearman, each averaged "
             "over the meta-training seeds (the task is the unit that generalises: meta-training seeds share a "
             "task's labels, so they are not independent samples of 'does DaSS rank an unseen task better'; "
             "Wilcoxon rather than a paired t because Spearman differences are bounded and the few tasks cannot "
             "check normality). With n tasks the exact test cannot give p below 2 / 2^n (0.0625 for 5). Secondary: "
             "the same test over (seed, task) pairs (a seed-free baseline repeated per seed), which treats seeds as "
             "replicates: it speaks to robustness to the meta-training seed on these tasks, not to unseen tasks.")


def paired_tests(methods: dict, reference: str, ranked: list) -> dict:
    """The paired tests of ``reference`` against every other method on Spearman (see :data:`TEST_NOTE`):
    {method: {"over_tasks": :func:`paired_test`, "over_seed_task": :func:`paired_test`}}."""
    ref = methods[reference]
    tests = {}
    for method, entry in methods.items():
        if method == reference:
            continue
        over_tasks = paired_test([ref["per_task"][t]["spearman"]["mean"] for t in ranked],
                                 [entry["per_task"][t]["spearman"]["mean"] for t in ranked])
        first, second = [], []
        for seed in ref["per_seed"]:
            other = entry["per_seed"].get(seed) or (entry["per_seed"]["None"] if "None" in entry["per_seed"]
                                                    else None)
            if other is None:
                continue
            for t in ranked:
                first.append(ref["per_seed"][seed][t]["spearman"])
                second.append(other[t]["spearman"])
        tests[method] = {"over_tasks": over_tasks, "over_seed_task": paired_test(first, second)}
    return tests


def verdict(report: dict) -> dict:
    """Whether DaSS met the issue's goal: a higher mean Spearman than every baseline (ablations are not
    baselines) and a mean top-1 regret within 1 point: ``{"beats_every_baseline", "not_beaten_by"` (baselines
    whose mean Spearman is >= DaSS's), "regret_within_1", "text"}``."""
    methods, reference = report["methods"], report["reference"]
    if reference not in methods or methods[reference]["mean"]["spearman"]["mean"] is None:
        why = (f"no {reference} result" if reference not in methods else
               "no judged task has students of different KD accuracy (nothing to rank)")
        return {"beats_every_baseline": None, "not_beaten_by": [], "regret_within_1": None,
                "text": f"{why}: nothing to judge"}
    mean = methods[reference]["mean"]["spearman"]["mean"]
    others = [m for m, e in methods.items() if m != reference and e["kind"] != "ablation"]
    losing = sorted((m for m in others if methods[m]["mean"]["spearman"]["mean"] is not None
                     and methods[m]["mean"]["spearman"]["mean"] >= mean),
                    key=lambda m: -methods[m]["mean"]["spearman"]["mean"])
    regret = methods[reference]["mean"]["top1_regret"]["mean"]
    within = regret <= 1.0
    if losing:
        text = (f"DaSS does NOT beat every baseline: mean Spearman {mean:.3f}, at or below "
                + ", ".join(f"{m} ({methods[m]['mean']['spearman']['mean']:.3f})" for m in losing) + ".")
    else:
        text = f"DaSS has the highest mean Spearman ({mean:.3f}) of all {len(others)} baselines."
    text += (f" Its top-1 pick is {regret:.2f} points below the pool's best on average "
             f"({'within' if within else 'NOT within'} the 1-point goal).")
    return {"beats_every_baseline": not losing, "not_beaten_by": losing, "regret_within_1": within, "text": text}


def _cell(stat: dict, digits: int = 3) -> str:
    if stat is None or stat.get("mean") is None:
        return "—"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def _p(test: dict | None) -> str:
    if test is None or test["p_value"] is None:
        return "—"
    return f"{test['p_value']:.3g}"


def markdown_report(report: dict) -> str:
    """The report as Markdown: the methods' table (mean over the ranked tasks, ± standard deviation over
    meta-training seeds), the per-task Spearman table with the seed ceiling and the premise, the verdict."""
    tasks, methods, ranked = report["tasks"], report["methods"], report["ranked_tasks"]
    ref = report["reference"]
    order = [m for m in (ref,) + ABLATIONS + LEARNED_BASELINES if m in methods]
    order += sorted((m for m in methods if m not in order), key=lambda m: (
        -(methods[m]["mean"]["spearman"]["mean"] if methods[m]["mean"]["spearman"]["mean"] is not None else -9)))
    seeds = max((len(methods[m]["seeds"]) for m in methods if methods[m]["kind"] in ("DaSS", "ablation")), default=0)
    students = sorted({tasks[t]["students"] for t in ranked})
    lines = [f"DaSS against its baselines on {len(ranked)} {report['split']} tasks ({', '.join(ranked)}); "
             f"{'/'.join(map(str, students))} students per task; ground truth: KD validation accuracy, mean over "
             f"the benchmark's training seeds; meta-trained methods: mean over tasks ± standard deviation over "
             f"{seeds} meta-training seeds (seed-free baselines: one value). Regret: points of KD accuracy below "
             f"the pool's best. p: Wilcoxon signed-rank of DaSS against the method over tasks (two-sided; smallest "
             f"reachable "
             f"{2.0 / 2 ** len(ranked):.3g}) and over (seed, task) pairs.", "",
             "| method | kind | Spearman | Kendall | P@top-10 % | top-1 regret | DaSS better on (tasks) | p (tasks) "
             "| p (seed x task) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in order:
        e, test = methods[m], report["tests"].get(m)
        better = "—" if test is None else f"{test['over_tasks']['reference_better']} / {test['over_tasks']['n']}"
        lines.append(f"| {m} | {e['kind']} | {_cell(e['mean']['spearman'])} | {_cell(e['mean']['kendall'])} | "
                     f"{_cell(e['mean']['precision_top10'], 2)} | {_cell(e['mean']['top1_regret'], 2)} | {better} | "
                     f"{_p(test and test['over_tasks'])} | {_p(test and test['over_seed_task'])} |")
    ceilings = [tasks[t]["seed_ceiling_spearman"] for t in ranked if tasks[t]["seed_ceiling_spearman"] is not None]
    premises = [tasks[t]["kd_vs_ce_spearman"] for t in ranked if tasks[t]["kd_vs_ce_spearman"] is not None]
    lines.append(f"| seed ceiling (KD seed vs seed) | ceiling | {_fmt(np.mean(ceilings) if ceilings else None)} | | | "
                 "| | | |")
    lines.append(f"| premise: KD vs CE accuracy | premise | {_fmt(np.mean(premises) if premises else None)} | | | | | "
                 "| |")
    lines += ["", "Spearman per task (mean over meta-training seeds):", "",
              "| method | " + " | ".join(report["judged_tasks"]) + " |",
              "|---|" + "---|" * len(report["judged_tasks"])]
    for m in order:
        lines.append(f"| {m} | " + " | ".join(_fmt(methods[m]["per_task"][t]["spearman"]["mean"])
                                             for t in report["judged_tasks"]) + " |")
    lines.append("| seed ceiling | " + " | ".join(_fmt(tasks[t]["seed_ceiling_spearman"])
                                                 for t in report["judged_tasks"]) + " |")
    lines.append("| KD vs CE (premise) | " + " | ".join(_fmt(tasks[t]["kd_vs_ce_spearman"])
                                                       for t in report["judged_tasks"]) + " |")
    lines.append("| teacher accuracy (%) | " + " | ".join(f"{tasks[t]['teacher_valid_acc']:.1f}"
                                                          for t in report["judged_tasks"]) + " |")
    lines += ["", f"Verdict: {report['verdict']['text']}", "", f"Tests. {report['test_note']}", ""]
    if report.get("skipped"):
        lines += ["Not scored: " + "; ".join(f"{m}: {why}" for m, why in report["skipped"].items()), ""]
    if report.get("incomplete"):
        lines += ["Left out (scores missing for some judged task): " + "; ".join(
            f"{m} (seeds {', '.join(map(str, seeds))})" for m, seeds in report["incomplete"].items()), ""]
    return "\n".join(lines)


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"

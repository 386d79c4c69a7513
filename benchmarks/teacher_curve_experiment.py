"""When does ranking distillation help? RD-NAS's gain over SPOS as a function of the teacher's quality (issue 27).

Ground truth: NB201 on digits over the whole space (``benchmarks/nb201_digits_full.py``; while the build runs, its
``table_partial.csv`` of the seeds finished so far). Every supernet is evaluated on one representative of every
connected isomorphism class that the table holds (6,461 when complete), Kendall tau against ``digits_valid_acc``.

Teachers (scores over all 15,625 cells; disconnected cells last, as the proxies rank them):

- ``oracle-<tau>`` (0.3, 0.45, 0.6, 0.75, 0.9): the table's own accuracy, perturbed. A controlled experiment, not a
  teacher anyone has: each class's normal score of its accuracy rank plus seeded Gaussian noise whose scale is set
  by bisection so that the teacher's Kendall tau on the evaluation classes is the target (within 0.005).
  ``oracle-0`` is the noise alone: a random ranking, the control for what the ranking loss does by itself.
- ``oracle-0.9-w4``, ``oracle-0.9-w16``, ``synflow-w4`` (not run by default): the best oracle with the ranking loss
  weighted 4x and 16x (``rank_weight``; 1 elsewhere), to tell a gain limited by the teacher from one limited by the
  distillation, and synflow (a teacher worse than the supernet) at 4x, to see what a stronger weight costs there.
- ``synflow``, ``zen``, ``flops``: zero-cost proxies on the pipeline's network at initialisation (whole-space tables).
- ``trees-60``, ``trees-240``: gradient-boosted trees on the live cell (``rdnas predictor`` gbt, default input)
  fitted on the accuracy of 60 / 240 random classes (seeded by the run's seed), scoring the whole space; scored
  against the classes they were not fitted on, like the supernets.

Methods at equal budget, the README's main setting: SPOS with K = 4 subnets per step, and RD-NAS with K = 4, the
margin sampler, 5 groups (``rdnas.pipeline.PipelineConfig`` defaults), at 10 and 30 epochs. One JSON per run in
``benchmarks/results/teacher_curve/``; finished runs are skipped, so the script can be stopped and restarted::

    OMP_NUM_THREADS=1 python benchmarks/teacher_curve_experiment.py run --epochs 10 --seeds 0,1,2,3,4
    bash benchmarks/teacher_curve.sh                  # the whole experiment: two shards side by side, nice 19
    python benchmarks/teacher_curve_experiment.py report     # table, teacher_curve.json and teacher_curve.png
    python benchmarks/teacher_curve_experiment.py report --ship   # and the curve rdnas teacher check reads

``report`` pairs each RD-NAS run with the SPOS run of the same seed and budget: the gain is the mean paired
difference of Kendall tau on the teacher's rows (every class; the trees: the classes they were not fitted on), with
a bootstrap interval over seeds (10,000 resamples) and a paired t-test. Every run keeps its estimates and its
teacher's scores beside its JSON (``<run>.npz``), so ``report --gt TABLE`` re-scores the whole experiment against
another table of the same space (e.g. the same build with more seeds) without training anything again.
"""

import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ttest_rel

from experiment_harness import (comma_list, command_line, load_results, load_table, run_pending, shard, shard_jobs,
                                table_sha256)
from rdnas.atomic_file import atomic_open, write_text_atomic
from rdnas.pipeline import PipelineConfig, build_teacher, train_and_rank
from rdnas.predictors import ArchFeatures, get_predictor
from rdnas.rank import kendall_tau, shipped_tables
from rdnas.rank.ground_truth import table_path
from rdnas.spaces import nb201
from rdnas.train import Teacher

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "teacher_curve"
WORK = ROOT.parent / "runs" / "teacher_curve"
BUILD = RESULTS / "nb201_digits_full"
ORACLE_TAUS = (0, 0.3, 0.45, 0.6, 0.75, 0.9)
ORACLES = tuple(f"oracle-{t}" for t in ORACLE_TAUS)
TEACHERS = ORACLES + ("synflow", "zen", "flops", "trees-60", "trees-240")
# the dose arm: the best oracle teacher distilled with the ranking loss weighted 4x and 16x (PipelineConfig's
# rank_weight; 1 in every other run): is the gain limited by the teacher's quality or by how hard it is distilled?
# And synflow, a teacher worse than the supernet, at 4x: does a stronger weight cost there?
WEIGHTED = ("oracle-0.9-w4", "oracle-0.9-w16", "synflow-w4")
COLUMN = "digits_valid_acc"
SHIPPED_CURVE = ROOT.parent / "rdnas" / "minibench" / "data" / "teacher_curve.json"


def ground_truth(path: Path, classes: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation architectures int [A, 6]: the build's class representatives the table holds, or a seeded sample of
    ``classes`` of them; their accuracy)."""
    table = load_table(path, COLUMN, "--gt")
    lines = (BUILD / "archs.txt").read_text().splitlines()
    archs = np.array([nb201.from_string(line.strip()) for line in lines if line.strip() and not line.startswith("#")])
    archs = archs[table.values(archs, "trained") == 1]
    if classes:
        archs = archs[np.sort(np.random.default_rng(0).permutation(len(archs))[:classes])]
    return archs, table.values(archs, COLUMN)


def spread_to_space(archs: np.ndarray, class_scores: np.ndarray) -> np.ndarray:
    """Scores of class representatives -> scores of all 15,625 cells in enumeration order (a cell takes its class's
    score; disconnected cells -inf, classes without a representative here NaN: both rank last)."""
    score_of_class = {nb201.canonical_string(tuple(a)): s for a, s in zip(archs.tolist(), class_scores)}
    scores = np.full(nb201.NUM_ARCHS, np.nan)
    for index, arch in enumerate(nb201.all_archs().tolist()):
        arch = tuple(arch)
        scores[index] = (score_of_class.get(nb201.canonical_string(arch), np.nan) if nb201.is_connected(arch)
                         else -np.inf)
    return scores


def perturbed_oracle(truth: np.ndarray, target: float, seed: int) -> tuple[np.ndarray, float]:
    """(class scores whose Kendall tau against ``truth`` is ``target`` within 0.005, that tau): normal scores of
    the truth's ranks plus noise of a bisected scale (one seeded noise draw, scaled). ``target`` 0 gives the noise
    alone, a random ranking (its tau is whatever the draw gives, about 0 +- 0.01 over 6,461 classes)."""
    from scipy.stats import norm, rankdata

    noise = np.random.default_rng(seed).standard_normal(len(truth))
    if target == 0:
        return noise, kendall_tau(noise, truth)
    base = norm.ppf(rankdata(truth) / (len(truth) + 1))
    low, high = 0.0, 100.0
    for _ in range(60):
        scale = (low + high) / 2
        tau = kendall_tau(base + scale * noise, truth)
        if abs(tau - target) < 0.005:
            break
        low, high = (scale, high) if tau > target else (low, scale)
    return base + scale * noise, tau


def make_teacher(name: str, seed: int, archs: np.ndarray, truth: np.ndarray, config: PipelineConfig, work: Path):
    """(Teacher over the whole space, its scores of the evaluation classes, the evaluation rows it is judged on: every
    row, or for the trees the classes they were not fitted on)."""
    rows = np.arange(len(truth))
    index = nb201.enumeration_indices(torch.as_tensor(archs)).numpy()
    if name.startswith("oracle-"):
        scores, _ = perturbed_oracle(truth, float(name.split("-")[1]), 7000 + seed)
        return Teacher(spread_to_space(archs, scores), config.groups, name), scores, rows
    if name.startswith("trees-"):
        labelled = np.random.default_rng(3000 + seed).permutation(len(truth))[:int(name.split("-")[1])]
        predictor = get_predictor("gbt")(features=ArchFeatures("nb201"), seed=seed)
        predictor.fit(archs[labelled], truth[labelled])
        scores = predictor.predict(nb201.all_archs()).numpy().astype(np.float64)
        scores[~nb201.connected(nb201.all_archs()).numpy()] = -np.inf
        return Teacher(scores, config.groups, name), scores[index], np.setdiff1d(rows, labelled)
    teacher = build_teacher(dataclasses.replace(config, teacher_proxies=name, out_dir=str(work / "proxy_tables")))
    return teacher, teacher.scores.numpy().astype(np.float64)[index], rows


def split_weight(name: str) -> tuple[str, float]:
    """(teacher, ranking-loss weight) of a run name: ``oracle-0.9-w4`` -> (``oracle-0.9``, 4.0); no ``-w<weight>``
    suffix: weight 1."""
    found = re.fullmatch(r"(.+)-w(\d+(?:\.\d+)?)", name)
    return (found.group(1), float(found.group(2))) if found else (name, 1.0)


def scores_path(runs: Path, epochs: int, seed: int, name: str) -> Path:
    """A run's arrays beside its JSON: ``archs`` (int8 [A, 6], the evaluation classes), ``estimates`` (float32 [A],
    the supernet's accuracy of each), ``teacher_scores`` (float32 [A]; NaN for SPOS) and ``teacher_rows`` (int32, the
    rows the teacher is judged on). With them a run is re-scored against another table (``report --gt``) without
    training again, and SPOS is compared with a teacher on the teacher's own rows."""
    return runs / f"{name}_e{epochs}_seed{seed}.npz"


def run_one(context, epochs: int, seed: int, name: str) -> dict:
    """One supernet (SPOS, or RD-NAS distilling teacher ``name``) trained and evaluated on every class; its arrays
    (:func:`scores_path`) are written before the result, whose JSON marks the run done."""
    args, archs, truth = context
    teacher_name, weight = split_weight(name)
    config = PipelineConfig(space="nb201", out_dir=str(args.work / f"{name}_e{epochs}"), epochs=epochs,
                            eval_every=epochs, gt=str(args.gt), rank_weight=weight)
    started = time.perf_counter()
    teacher, teacher_scores, rows = (None, np.full(len(truth), np.nan), np.arange(len(truth))) if name == "spos" \
        else make_teacher(teacher_name, seed, archs, truth, config, args.work)
    result = train_and_rank(config, "spos" if name == "spos" else "rdnas", seed, torch.as_tensor(archs), truth,
                            teacher=teacher, paths_per_step=4)
    estimates = np.asarray(result["estimates"])
    args.runs.mkdir(parents=True, exist_ok=True)
    with atomic_open(scores_path(args.runs, epochs, seed, name), "wb") as handle:
        np.savez_compressed(handle, archs=archs.astype(np.int8), estimates=estimates.astype(np.float32),
                            teacher_scores=teacher_scores.astype(np.float32), teacher_rows=rows.astype(np.int32))
    return {"teacher": name, "epochs": epochs, "seed": seed, "classes": len(truth), "gt": str(args.gt),
            "gt_sha256": args.gt_sha256,
            "teacher_kendall_tau": None if teacher is None else kendall_tau(teacher_scores[rows], truth[rows]),
            "evaluation_rows": len(rows),
            "kendall_tau": kendall_tau(estimates, truth),
            "kendall_tau_teacher_rows": kendall_tau(estimates[rows], truth[rows]),
            "report": result["report"], "history": result["history"],
            "config": result["config"], "seconds": time.perf_counter() - started}


def progress_line(result: dict, seconds: float) -> str:
    teacher_tau = result["teacher_kendall_tau"]
    teacher_text = "" if teacher_tau is None else f"teacher tau {teacher_tau:.3f}, "
    return f"{teacher_text}supernet tau {result['kendall_tau']:.3f} ({result['seconds']:.0f} s)"


def default_table() -> Path:
    """The shipped whole-space table once it exists, else the build's ``table_partial.csv``."""
    return shipped_tables().get("nb201_digits_full", BUILD / "table_partial.csv")


PROXY_TEACHERS = ("synflow", "zen", "flops")


def prepare_proxy_tables(args, names) -> None:
    """Builds the proxy teachers' whole-space score tables in ``args.work`` one shard at a time (an exclusive lock on
    ``work/proxy_tables.lock``), so that shards side by side never write one table together; a table already there
    is read back."""
    import fcntl

    args.work.mkdir(parents=True, exist_ok=True)
    config = PipelineConfig(space="nb201", out_dir=str(args.work / "proxy_tables"))
    with open(args.work / "proxy_tables.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names:
            build_teacher(dataclasses.replace(config, teacher_proxies=name))


def run(args) -> int:
    args.gt = args.gt or default_table()

    def prepare():
        archs, truth = ground_truth(args.gt, args.eval_classes)
        args.gt_sha256 = table_sha256(args.gt)[:16]  # every run records its table; report refuses a mix
        print(f"ground truth: {len(truth)} classes of {args.gt} (sha256 {args.gt_sha256})", flush=True)
        return args, archs, truth

    jobs = [(epochs, seed, name) for epochs in args.epochs for seed in args.seeds for name in ["spos"] + args.teachers]
    if args.shard:
        jobs = shard_jobs(jobs, args.shard)
        proxies = sorted({split_weight(name)[0] for _, _, name in jobs} & set(PROXY_TEACHERS))
        if proxies and not args.dry_run:
            prepare_proxy_tables(args, proxies)
    return run_pending(jobs, lambda epochs, seed, name: args.runs / f"{name}_e{epochs}_seed{seed}.json", run_one,
                       lambda epochs, seed, name: f"{name} {epochs} epochs seed {seed}", progress_line,
                       dry_run=args.dry_run, prepare=prepare)


def bootstrap_mean_interval(values: np.ndarray, samples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over resamples (with replacement)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def scored_runs(args, runs: list[dict]) -> dict:
    """(teacher, epochs, seed) -> the run's arrays (:func:`scores_path`) and ``truth``, the accuracy of its
    evaluation classes in the table: ``--gt`` where given (a re-scoring), else the one table every run recorded
    (refused when the runs name several tables, or when the file has changed since they ran). Raises SystemExit with
    the reason."""
    if args.gt is None:
        tables = sorted({(r.get("gt_sha256"), r.get("gt")) for r in runs}, key=str)
        if len(tables) > 1:
            raise SystemExit(f"the runs in {args.runs} were evaluated against {len(tables)} different tables "
                             f"({', '.join(f'{path} ({digest})' for digest, path in tables)}); keep one table's runs, "
                             "or re-score them all against one with --gt")
        digest, path = tables[0]
        if not table_path(path).is_file():
            raise SystemExit(f"{path}, the table the runs in {args.runs} were evaluated against, is gone; "
                             "re-score them against another with --gt")
        if table_sha256(path)[:16] != digest:
            raise SystemExit(f"{path} has changed since the runs were evaluated against it (sha256 {digest}); "
                             "re-score them against it with --gt")
        chosen = path
    else:
        chosen = args.gt
    table = load_table(chosen, COLUMN, "--gt")
    scored = {}
    for r in runs:
        path = scores_path(args.runs, r["epochs"], r["seed"], r["teacher"])
        if not path.exists():
            raise SystemExit(f"{path.name} is missing beside {r['teacher']}_e{r['epochs']}_seed{r['seed']}.json in "
                             f"{args.runs}: the run's estimates are needed; delete its JSON to run it again")
        with np.load(path) as arrays:
            run = {key: arrays[key] for key in ("archs", "estimates", "teacher_scores", "teacher_rows")}
        run["truth"] = table.values(run["archs"].astype(np.int64), COLUMN)
        scored[(r["teacher"], r["epochs"], r["seed"])] = run
    return scored


def paired_taus(teacher_run: dict, spos_run: dict) -> tuple[float, float, float]:
    """(RD-NAS tau, SPOS tau, teacher tau) of one seed, all on the teacher's rows (the trees' unlabelled classes,
    every class for the other teachers)."""
    if not np.array_equal(teacher_run["archs"], spos_run["archs"]):
        raise SystemExit("an RD-NAS run and the SPOS run of its seed were evaluated on different classes")
    rows, truth = teacher_run["teacher_rows"], teacher_run["truth"][teacher_run["teacher_rows"]]
    return (kendall_tau(teacher_run["estimates"][rows], truth), kendall_tau(spos_run["estimates"][rows], truth),
            kendall_tau(teacher_run["teacher_scores"][rows], truth))


def seed_paired(per_seed: dict) -> tuple[list, np.ndarray]:
    """(the seeds every teacher of ``per_seed`` (teacher -> {seed: (RD-NAS tau, SPOS tau, teacher tau)}) has, sorted:
    the seeds a paired bootstrap resamples, all teachers together; their taus, float64 [teachers, seeds, 3])."""
    seeds = sorted(set.intersection(*(set(runs) for runs in per_seed.values())))
    return seeds, np.array([[per_seed[name][s] for s in seeds] for name in per_seed], dtype=np.float64).reshape(
        len(per_seed), len(seeds), 3)


def zero_crossing(teacher_taus, gains) -> float:
    """The teacher tau above which distilling paid off in every measured teacher: teachers in order of tau, the gain
    linearly interpolated between the last one with a negative gain and the next; -inf when no teacher's gain is
    negative (it paid off for every one), +inf when the best teacher's is (none measured pays off)."""
    order = np.argsort(teacher_taus, kind="stable")
    x, y = np.asarray(teacher_taus, dtype=np.float64)[order], np.asarray(gains, dtype=np.float64)[order]
    negative = np.flatnonzero(y < 0)
    if not len(negative):
        return -np.inf
    i = negative[-1]
    if i == len(y) - 1:
        return np.inf
    return float(x[i] + (x[i + 1] - x[i]) * (-y[i]) / (y[i + 1] - y[i]))


def crossing_interval(per_seed: dict, samples: int = 2000, seed: int = 0) -> dict:
    """:func:`zero_crossing` of one budget's oracle teachers (``per_seed``: teacher -> {seed: (RD-NAS tau, SPOS tau,
    teacher tau)}) with a bootstrap over the seeds every teacher has (resampled together, as the runs are paired by
    seed): the crossing of the means, its 95% percentile interval over the resamples whose crossing is finite, and
    the shares of resamples where every teacher paid off (-inf) or none did (+inf)."""
    seeds, taus = seed_paired(per_seed)
    if not seeds:
        return {"seeds": [], "teachers": list(per_seed), "crossing": None, "crossing_ci95": None}

    def crossing(columns):
        means = taus[:, columns].mean(axis=1)
        return zero_crossing(means[:, 2], means[:, 0] - means[:, 1])

    rng = np.random.default_rng(seed)
    resampled = np.array([crossing(rng.integers(0, len(seeds), len(seeds))) for _ in range(samples)])
    finite = resampled[np.isfinite(resampled)]
    point = crossing(np.arange(len(seeds)))
    return {"seeds": seeds, "teachers": list(per_seed), "crossing": point if np.isfinite(point) else str(point),
            "crossing_ci95": [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
            if len(finite) else None,
            "share_every_teacher_pays": float(np.mean(resampled == -np.inf)),
            "share_no_teacher_pays": float(np.mean(resampled == np.inf))}


def gain_slope(per_seed: dict, samples: int = 2000, seed: int = 0) -> dict:
    """Least-squares line through one budget's per-seed gains (RD-NAS tau - SPOS tau) against the teacher's tau
    (``per_seed``: teacher -> {seed: (RD-NAS tau, SPOS tau, teacher tau)}, every seed of every teacher one point): its
    slope and intercept, with a bootstrap over the seeds every teacher has (resampled together, as the runs are paired
    by seed): the slope's 95% percentile interval and the share of resamples whose slope is not positive (a one-sided
    bootstrap p for "a better teacher gives a larger gain"). Unlike the zero crossing, the line does not assume the
    gain is monotonic in the teacher's tau."""
    seeds, taus = seed_paired(per_seed)
    if len(seeds) < 2 or len(per_seed) < 2:
        return {"seeds": seeds, "slope": None, "intercept": None, "slope_ci95": None, "share_slope_not_positive": None}

    def fit(columns):
        chosen = taus[:, columns]
        return np.polyfit(chosen[..., 2].ravel(), (chosen[..., 0] - chosen[..., 1]).ravel(), 1)

    rng = np.random.default_rng(seed)
    slopes = np.array([fit(rng.integers(0, len(seeds), len(seeds)))[0] for _ in range(samples)])
    slope, intercept = fit(np.arange(len(seeds)))
    return {"seeds": seeds, "slope": float(slope), "intercept": float(intercept),
            "slope_ci95": [float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))],
            "share_slope_not_positive": float(np.mean(slopes <= 0))}


def pooled_gain(per_seed: dict, samples: int = 10_000, seed: int = 0) -> dict:
    """The gain of distilling "a teacher", pooled over teachers: per seed, the mean over ``per_seed``'s teachers
    (teacher -> {seed: (RD-NAS tau, SPOS tau, teacher tau)}) of RD-NAS tau - SPOS tau; then the mean over the seeds
    every teacher has, a bootstrap interval over those seeds (the teachers' runs share each seed's SPOS run, so they
    are resampled together, not as independent points) and a one-sample t-test of the per-seed means against 0."""
    from scipy.stats import ttest_1samp

    seeds, taus = seed_paired(per_seed)
    per_seed_mean = (taus[..., 0] - taus[..., 1]).mean(axis=0)
    if len(seeds) < 2:
        return {"seeds": seeds, "teachers": list(per_seed), "gain": float(per_seed_mean.mean()) if seeds else None,
                "gain_ci95": None, "t_test_p": None}
    return {"seeds": seeds, "teachers": list(per_seed), "gain": float(per_seed_mean.mean()),
            "gain_ci95": list(bootstrap_mean_interval(per_seed_mean, samples, seed)),
            "t_test_p": float(ttest_1samp(per_seed_mean, 0.0).pvalue)}


def dose_comparison(teachers: dict) -> dict:
    """Each weighted run name in ``teachers`` (teacher -> {seed: (RD-NAS tau, SPOS tau, teacher tau)}, one budget)
    against the same teacher at weight 1, paired by seed: name -> ``against``, ``seeds``, ``difference`` (mean RD-NAS
    tau at the weight minus at weight 1), ``difference_ci95`` (bootstrap over seeds) and ``paired_t_p``. Names whose
    base teacher was not run, or with fewer than 2 shared seeds, are left out."""
    found = {}
    for name in teachers:
        base, weight = split_weight(name)
        seeds = sorted(set(teachers[name]) & set(teachers.get(base, {}))) if weight != 1.0 else []
        if len(seeds) < 2:
            continue
        weighted, plain = (np.array([teachers[n][s][0] for s in seeds]) for n in (name, base))
        difference = weighted - plain
        found[name] = {"against": base, "seeds": seeds, "difference": float(difference.mean()),
                       "difference_ci95": list(bootstrap_mean_interval(difference)),
                       "paired_t_p": float(ttest_rel(weighted, plain).pvalue)}
    return found


def top_pick_accuracies(teacher_run: dict, spos_run: dict) -> tuple[float, float]:
    """(RD-NAS's, SPOS's) top pick on the teacher's rows: the table accuracy of the class each supernet ranks first
    (ties: the first in the rows' order) -- what a search that trusts the supernet returns."""
    rows, truth = teacher_run["teacher_rows"], teacher_run["truth"][teacher_run["teacher_rows"]]
    return (float(truth[np.argmax(teacher_run["estimates"][rows])]),
            float(truth[np.argmax(spos_run["estimates"][rows])]))


def report(args) -> int:
    runs = load_results(args.runs)
    if not runs:
        print("no runs yet: run `python benchmarks/teacher_curve_experiment.py run` first", file=sys.stderr)
        return 1
    scored = scored_runs(args, runs)
    spos = {(epochs, seed): run for (name, epochs, seed), run in scored.items() if name == "spos"}
    points, per_seed = [], {}
    lines = ["| epochs | teacher | seeds | teacher tau | RD-NAS tau | SPOS tau | gain (RD-NAS - SPOS) | 95% bootstrap | "
             "paired t p | top pick's accuracy, RD-NAS / SPOS |", "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for epochs in sorted({r["epochs"] for r in runs}):
        for name in TEACHERS + WEIGHTED:
            seeds = sorted(seed for (n, e, seed) in scored if n == name and e == epochs and (epochs, seed) in spos)
            if not seeds:
                continue
            taus = np.array([paired_taus(scored[(name, epochs, seed)], spos[(epochs, seed)]) for seed in seeds])
            per_seed.setdefault(epochs, {})[name] = dict(zip(seeds, map(tuple, taus)))
            picks = np.array([top_pick_accuracies(scored[(name, epochs, seed)], spos[(epochs, seed)]) for seed in seeds])
            gain = taus[:, 0] - taus[:, 1]
            low, high = bootstrap_mean_interval(gain) if len(gain) > 1 else (float("nan"), float("nan"))
            p_value = float(ttest_rel(taus[:, 0], taus[:, 1]).pvalue) if len(gain) > 1 else float("nan")
            point = {"epochs": epochs, "teacher": name, "rank_weight": split_weight(name)[1], "seeds": seeds,
                     "teacher_kendall_tau": float(taus[:, 2].mean()), "rdnas_kendall_tau": float(taus[:, 0].mean()),
                     "spos_kendall_tau": float(taus[:, 1].mean()), "gain": float(gain.mean()),
                     "gain_ci95": [low, high], "paired_t_p": p_value,
                     "rdnas_top_pick_acc": float(picks[:, 0].mean()), "spos_top_pick_acc": float(picks[:, 1].mean()),
                     "evaluation_rows": int(len(scored[(name, epochs, seeds[0])]["teacher_rows"]))}
            points.append(point)
            lines.append(f"| {epochs} | {name} | {len(seeds)} | {point['teacher_kendall_tau']:.3f} | "
                         f"{point['rdnas_kendall_tau']:.3f} | {point['spos_kendall_tau']:.3f} | {gain.mean():+.3f} | "
                         f"{low:+.3f}..{high:+.3f} | {p_value:.2g} | {point['rdnas_top_pick_acc']:.2f} / "
                         f"{point['spos_top_pick_acc']:.2f} |")
    print("\n".join(lines))
    own = {epochs: float(np.mean([kendall_tau(run["estimates"], run["truth"]) for (e, _), run in spos.items()
                                  if e == epochs])) for epochs in sorted({e for e, _ in spos})}
    print("SPOS's own tau on every class: " + ", ".join(f"{tau:.3f} at {epochs} epochs" for epochs, tau in own.items()))
    summary = {}
    for epochs, teachers in per_seed.items():  # where the oracle teachers' gain crosses zero
        oracles = {name: runs for name, runs in teachers.items() if name in ORACLES}
        if len(oracles) < 2:
            continue
        line = gain_slope(oracles)
        informative = {name: runs for name, runs in teachers.items()  # every teacher at the default weight but noise
                       if name != "oracle-0" and split_weight(name)[1] == 1.0}
        pooled = pooled_gain(informative)
        summary[epochs] = {"spos_own_kendall_tau": own.get(epochs), **crossing_interval(oracles),
                           "oracle_mean_gain": float(np.mean([p["gain"] for p in points
                                                              if p["epochs"] == epochs and p["teacher"] in oracles])),
                           "line": line, "pooled_informative_teachers": pooled}
        found = summary[epochs]
        interval = found["crossing_ci95"]
        crossing = found["crossing"]
        where = {"-inf": "nowhere (every oracle teacher's mean gain is positive)",
                 "inf": "nowhere (no oracle teacher's mean gain is positive)"}
        print(f"{epochs} epochs: the oracle teachers' gain crosses zero at teacher tau "
              + (f"{crossing:.3f}" if isinstance(crossing, float) else where.get(str(crossing), str(crossing)))
              + (f" (95% bootstrap of the finite crossings {interval[0]:.3f}..{interval[1]:.3f})" if interval else "")
              + f"; SPOS's own tau {own.get(epochs, float('nan')):.3f}; every teacher pays in "
              f"{100 * found['share_every_teacher_pays']:.0f}% of the resamples, none in "
              f"{100 * found['share_no_teacher_pays']:.0f}%; mean gain of the oracle teachers "
              f"{found['oracle_mean_gain']:+.3f}")
        if pooled["gain_ci95"] is not None:
            low, high = pooled["gain_ci95"]
            print(f"{epochs} epochs: pooled over the {len(informative)} teachers but the random one (seeds "
                  f"{','.join(map(str, pooled['seeds']))}): gain {pooled['gain']:+.3f} (95% bootstrap over seeds "
                  f"{low:+.3f}..{high:+.3f}; t-test p {pooled['t_test_p']:.2g})")
        if line["slope"] is not None:
            low, high = line["slope_ci95"]
            print(f"{epochs} epochs: least-squares line through the oracle teachers' per-seed gains: "
                  f"{line['slope']:+.3f} per unit of teacher tau (95% bootstrap {low:+.3f}..{high:+.3f}; "
                  f"not positive in {100 * line['share_slope_not_positive']:.0f}% of the resamples), gain "
                  f"{line['intercept'] + line['slope'] * own.get(epochs, float('nan')):+.3f} at SPOS's own tau")
    for epochs, teachers in per_seed.items():  # the dose arm against its teacher at weight 1, paired by seed
        for name, found in dose_comparison(teachers).items():
            summary.setdefault(epochs, {}).setdefault("dose", {})[name] = found
            low, high = found["difference_ci95"]
            print(f"{epochs} epochs: {name} against {found['against']} (RD-NAS tau, same seed): "
                  f"{found['difference']:+.3f} (95% bootstrap {low:+.3f}..{high:+.3f}; paired t p "
                  f"{found['paired_t_p']:.2g})")
    write_text_atomic(args.runs.parent / "teacher_curve.json", json.dumps(points, indent=1))
    write_text_atomic(args.runs.parent / "teacher_curve_crossing.json", json.dumps(summary, indent=1))
    _plot(points, own, args.runs.parent / "teacher_curve.png", summary)
    if args.ship:  # what `rdnas teacher check` reads to say what distilling a teacher of a given tau is worth
        write_text_atomic(SHIPPED_CURVE, json.dumps(points, indent=1) + "\n")
        print(f"shipped the curve to {SHIPPED_CURVE}")
    return 0


def _plot(points: list[dict], spos_tau: dict, path: Path, crossings: dict) -> None:
    """One panel per budget: each teacher's mean gain with its bootstrap interval against its tau (oracle teachers
    circles, proxies and trees squares, the dose arm triangles), the oracles' least-squares line, their zero crossing
    and SPOS's own tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({p["epochs"] for p in points})
    figure, panels = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 5.4), sharey=True, squeeze=False)
    for axes, epochs in zip(panels[0], budgets):
        mine = [p for p in points if p["epochs"] == epochs]
        kinds = (("oracle teachers (controlled)", "o", "tab:blue", lambda p: p["teacher"] in ORACLES),
                 ("proxies and trees", "s", "tab:green",
                  lambda p: p["teacher"] not in ORACLES and p.get("rank_weight", 1.0) == 1.0),
                 ("ranking loss x4 / x16 (dose arm)", "^", "tab:red", lambda p: p.get("rank_weight", 1.0) != 1.0))
        for label, marker, colour, belongs in kinds:
            chosen = [p for p in mine if belongs(p)]
            if not chosen:
                continue
            error = np.array([[p["gain"] - p["gain_ci95"][0], p["gain_ci95"][1] - p["gain"]] for p in chosen]).T
            axes.errorbar([p["teacher_kendall_tau"] for p in chosen], [p["gain"] for p in chosen], yerr=error,
                          fmt=marker, color=colour, capsize=3, label=label)
            for p in chosen:
                axes.annotate(p["teacher"], (p["teacher_kendall_tau"], p["gain"]), fontsize=6, xytext=(4, 2),
                              textcoords="offset points")
        found = crossings.get(epochs, {})
        line = found.get("line", {})
        if line.get("slope") is not None:
            ends = np.array([0.0, 1.0])
            axes.plot(ends, line["intercept"] + line["slope"] * ends, color="tab:blue", linewidth=0.8, alpha=0.6,
                      label=f"oracles' least-squares line ({line['slope']:+.3f} per unit tau)")
        if isinstance(found.get("crossing"), float):
            axes.axvline(found["crossing"], color="tab:blue", linestyle=":", linewidth=1,
                         label=f"oracles' gain crosses zero ({found['crossing']:.2f})")
        axes.axvline(spos_tau[epochs], color="black", linestyle="--", linewidth=1,
                     label=f"SPOS's own tau ({spos_tau[epochs]:.3f})")
        axes.axhline(0, color="black", linewidth=0.6)
        axes.set_title(f"{epochs} epochs", fontsize=10)
        axes.set_xlabel("teacher's Kendall tau against the digits accuracy of every class")
        axes.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    panels[0][0].set_ylabel("RD-NAS tau - SPOS tau (same seed)")
    figure.suptitle("NB201 on digits, whole space (6,461 classes): the gain of distilling a teacher (K = 4)",
                    fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_options(parser) -> None:
    parser.add_argument("--seeds", type=comma_list(int), default=list(range(5)), help="default 0-4")
    parser.add_argument("--epochs", type=comma_list(int), default=[10, 30], help="budgets (default 10,30)")
    parser.add_argument("--eval-classes", type=int, default=0,
                        help="evaluate on a seeded sample of this many classes (default 0: all; a quick look only)")
    parser.add_argument("--gt", type=Path, default=None,
                        help="the whole-space table (default: the shipped rdnas/minibench/data/nb201_digits_full.csv "
                        "where it exists, else the build's table_partial.csv)")
    parser.add_argument("--runs", type=Path, default=RUNS, help=f"one JSON and one .npz per run (default {RUNS})")
    parser.add_argument("--work", type=Path, default=WORK, help=f"checkpoints and proxy tables (default {WORK})")
    parser.add_argument("--shard", type=shard, help="i/n: run only the jobs at positions p with p mod n = i, e.g. two shards "
                        "side by side, one per core (the proxy tables are built under a lock first)")


def report_options(parser) -> None:
    parser.add_argument("--runs", type=Path, default=RUNS, help=f"one JSON and one .npz per run (default {RUNS})")
    parser.add_argument("--gt", type=Path, default=None,
                        help="re-score every run against this table (e.g. one with more seeds) from the runs' stored "
                        "estimates; default: the table the runs recorded")
    parser.add_argument("--ship", action="store_true",
                        help="also write the curve into the package (rdnas/minibench/data/teacher_curve.json), "
                        "where `rdnas teacher check` reads it")


def main(argv=None) -> int:
    return command_line(__doc__, run, report, "--teachers", TEACHERS + WEIGHTED, defaults=TEACHERS,
                        run_options=run_options,
                        report_options=report_options,
                        run_help="train SPOS and the RD-NAS supernets of each teacher; resumable",
                        report_help="the Markdown table and teacher_curve.{json,png} beside the runs", argv=argv)


if __name__ == "__main__":
    sys.exit(main())

"""A learned teacher for RD-NAS on the digits mini-benchmark (issue 18): SPOS vs RD-NAS at equal budget, where the
teacher is a predictor fitted on a random quarter of the benchmark's cells instead of a zero-cost proxy.

For seed s: a seeded permutation of the benchmark's 240 cells gives s's teacher cells (the first quarter, 60) and
evaluation cells (the other 180). The predictor (``nar``: rdnas's NAR ranker on NB201's 7 stage tokens; ``gbt``:
gradient-boosted trees on the structure features; ``gbt-live``: the trees on the live cell, ``edges="live"``) is
fitted on the teacher cells' ``digits_valid_acc`` and scores all 15,625 cells; those scores are the RD-NAS teacher
(groups, margins and pairs exactly as with a proxy). The supernet is trained as
``benchmarks/rdnas_experiments.py``'s "RD-NAS (K=4)" (30 epochs, K = 4, the margin sampler; seed s) and every
method is scored by Kendall tau on seed s's evaluation cells only, the teacher's training cells excluded.

The references run here too, on the same seeds (so the comparison is paired and on one machine): SPOS (K=4)
(``spos``) and RD-NAS (K=4) with the main suite's synflow teacher (``synflow``); their estimates cover all 240
cells and are scored on each seed's 180 evaluation cells like the others. One JSON per run in
``benchmarks/results/learned_teacher/``; finished runs are skipped::

    OMP_NUM_THREADS=1 python benchmarks/learned_teacher_experiment.py run --methods spos,synflow,gbt,nar,gbt-live \
        --seeds 0,1,2,3,4,5,6
    python benchmarks/learned_teacher_experiment.py report
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import ttest_rel

from experiment_harness import command_line, comma_list, load_results, run_pending
from rdnas.atomic_file import write_text_atomic
from rdnas.pipeline import PipelineConfig, build_teacher, load_ground_truth, train_and_rank
from rdnas.predictors import ArchFeatures, NARPredictor, get_predictor
from rdnas.rank import kendall_tau
from rdnas.spaces import nb201
from rdnas.train import Teacher

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "learned_teacher"
WORK = ROOT.parent / "runs" / "learned_teacher"
TEACHER_FRACTION = 4  # a quarter of the cells train the teacher
# fitted predictors: (predictor, its NB201 input, its options; NAR ran at the authors' batch size, as recorded)
TEACHERS = {"nar": ("nar", dict(cells="stages", edges="all"), dict(batch_size=NARPredictor.AUTHORS_BATCH_SIZE)),
            "gbt": ("gbt", dict(cells="all", edges="all"), {}), "gbt-live": ("gbt", dict(cells="all", edges="live"), {})}
METHODS = ("spos", "synflow", "gbt", "nar", "gbt-live")
LABELS = {"spos": "SPOS (K=4)", "synflow": "RD-NAS (K=4), synflow teacher (the main suite's)",
          "gbt": "RD-NAS (K=4), gbt teacher fitted on 60 cells", "nar": "RD-NAS (K=4), NAR teacher fitted on 60 cells",
          "gbt-live": "RD-NAS (K=4), gbt teacher on the live cell fitted on 60 cells"}


def split(num_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(teacher cells, evaluation cells) of seed ``seed``: row indices into the benchmark table."""
    order = np.random.default_rng(1000 + seed).permutation(num_cells)
    cut = num_cells // TEACHER_FRACTION
    return np.sort(order[:cut]), np.sort(order[cut:])


def fit_teacher(method: str, archs, truth: np.ndarray, rows: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """The predictor's scores over the whole space (enumeration order) and its fit time."""
    started = time.perf_counter()
    kind, inputs, options = TEACHERS[method]
    predictor = get_predictor(kind)(features=ArchFeatures("nb201", **inputs), seed=seed, **options)
    predictor.fit(archs[rows], truth[rows])
    scores = predictor.predict(nb201.all_archs()).numpy()
    return scores, time.perf_counter() - started


def base_config() -> PipelineConfig:
    return PipelineConfig(space="nb201", out_dir=str(WORK), epochs=30, eval_every=10, teacher_proxies="synflow")


def run_one(context, method: str, seed: int) -> dict:
    config, archs, truth, index, synflow = context
    teacher_rows, eval_rows = split(len(archs), seed)
    teacher, fit_s = None, 0.0
    if method == "synflow":
        teacher = synflow
    elif method in TEACHERS:
        scores, fit_s = fit_teacher(method, archs, truth, teacher_rows, seed)
        teacher = Teacher(scores, config.groups, f"{method} fitted on {len(teacher_rows)} cells")
    teacher_tau = None if teacher is None else kendall_tau(teacher.scores.numpy()[index][eval_rows], truth[eval_rows])
    config.out_dir = str(WORK / method)
    result = train_and_rank(config, "spos" if method == "spos" else "rdnas", seed, archs, truth, teacher=teacher,
                            paths_per_step=4)
    estimates = np.asarray(result["estimates"])
    result.update(name=LABELS[method], teacher_rows=teacher_rows.tolist(), eval_rows=eval_rows.tolist(),
                  teacher_fit_s=fit_s, teacher_kendall_tau_eval=teacher_tau,
                  kendall_tau_eval=kendall_tau(estimates[eval_rows], truth[eval_rows]), truth=truth.tolist())
    return result


def progress_line(result: dict, seconds: float) -> str:
    teacher_tau = result["teacher_kendall_tau_eval"]
    teacher_text = "" if teacher_tau is None else f"teacher tau {teacher_tau:.3f}, "
    return (f"{teacher_text}supernet tau {result['kendall_tau_eval']:.3f} on the {len(result['eval_rows'])} "
            f"evaluation cells ({seconds:.0f} s)")


def run(args) -> int:
    def prepare():
        config = base_config()
        _, archs, truth = load_ground_truth(config)
        synflow = build_teacher(config) if "synflow" in args.methods else None  # one whole-space table, all seeds
        return config, archs, truth, nb201.SPACE.index(archs).numpy(), synflow

    jobs = [(method, seed) for method in args.methods for seed in args.seeds]
    return run_pending(jobs, lambda method, seed: RUNS / f"{method}_seed{seed}.json", run_one,
                       lambda method, seed: f"{method} seed {seed}", progress_line, dry_run=args.dry_run,
                       prepare=prepare)


def report(args) -> int:
    rows = {}
    for result in load_results(RUNS, "*_seed*.json"):
        rows.setdefault(result["name"], {})[result["seed"]] = (result["kendall_tau_eval"],
                                                               result["teacher_kendall_tau_eval"])
    if not rows:
        print("no runs yet: run `python benchmarks/learned_teacher_experiment.py run` first", file=sys.stderr)
        return 1
    spos = rows.get(LABELS["spos"], {})
    lines = ["| method | seeds | supernet Kendall tau on the evaluation cells, mean ± std | vs SPOS (K=4), paired: "
             "difference, p | the teacher's own tau there |", "|---|---:|---:|---:|---:|"]
    summary = []
    for name in [LABELS[m] for m in METHODS if LABELS[m] in rows]:
        runs = rows[name]
        taus = np.array([runs[s][0] for s in sorted(runs)])
        teacher = [runs[s][1] for s in sorted(runs) if runs[s][1] is not None]
        paired = [s for s in sorted(runs) if s in spos]
        versus, entry = "-", {}
        if name != LABELS["spos"] and len(paired) >= 2:
            mine, base = np.array([runs[s][0] for s in paired]), np.array([spos[s][0] for s in paired])
            p_value = float(ttest_rel(mine, base).pvalue)
            versus = f"{np.mean(mine - base):+.3f}, p = {p_value:.2f} ({len(paired)} pairs)"
            entry = {"vs_spos_k4_difference": float(np.mean(mine - base)), "vs_spos_k4_paired_t_p": p_value}
        spread = f" ± {taus.std(ddof=1):.3f}" if len(taus) > 1 else ""
        teacher_text = (f"{np.mean(teacher):.3f}" + (f" ± {np.std(teacher, ddof=1):.3f}" if len(teacher) > 1 else "")
                        if teacher else "-")
        lines.append(f"| {name} | {len(taus)} | {taus.mean():.3f}{spread} | {versus} | {teacher_text} |")
        summary.append({"name": name, "seeds": sorted(runs), "kendall_tau_eval": taus.tolist(),
                        "teacher_kendall_tau_eval": teacher, **entry})
    text = ("Kendall tau on each seed's 180 evaluation cells of the digits mini-benchmark (its 60 teacher cells "
            "excluded); std over seeds; paired t-test against SPOS (K=4) of the same seed.\n\n" + "\n".join(lines))
    print(text)
    write_text_atomic(RESULTS / "learned_teacher_experiment.json", json.dumps(summary, indent=1))
    return 0


def run_options(parser) -> None:
    parser.add_argument("--seeds", type=comma_list(int), default=list(range(7)), help="default 0-6")


if __name__ == "__main__":
    sys.exit(command_line(__doc__, run, report, "--methods", METHODS, run_options=run_options,
                          run_help="fit the teachers and train the RD-NAS supernets; resumable",
                          report_help="the Markdown table and benchmarks/results/learned_teacher_experiment.json"))

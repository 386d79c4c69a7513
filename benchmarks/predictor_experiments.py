"""Predictors on NAS-Bench-201's real ground truth, the TNASP / PINAT protocol (issue 18).

Train on N random cells (``rdnas.predictors.protocol.training_rows``: seed s gives training set s) with their
``cifar10_valid_acc``; score all 15,625 cells; Kendall tau against ``cifar10_test_acc`` over all of them (the
published protocol counts the training cells too), plus the transfer columns ``cifar100_test_acc`` and
``imagenet16_120_test_acc``. N in 78, 156, 469, 781, 1563 (0.5 % to 10 %), seeds 0-4 (>= 5 training sets).

NAR on the authors' input (``nar``, ``nar+zc``, ``nar-notiers``, ``nar-31tok``) trains on their batch size (128,
``NARPredictor.AUTHORS_BATCH_SIZE``), as those rows were measured; the ``-live`` models use rdnas's defaults
(batches of 64).
``nar-live``, ``nar-live+zc``, ``nar-notiers-live``, ``gbt-live``, ``gbt-live+zc``, ``mlp-live``, ``mlp-live+zc``: the
same models on the live cell (``edges="live"``: dead edges as ``none`` plus the path token; still structure only,
computed from the cell alone).

Models: ``nar`` (structure only: the information PINAT had; on NB201's 7 stage tokens, ``cells="stages"``, the
same information as the authors' 31 tokens at a fifth of the cost), ``nar+zc`` (plus the zero-cost proxy columns),
``nar-31tok`` (NAR on the authors' 31 tokens, for comparison; not in the default run), ``nar-notiers``
(``tier_weight=0``: the encoder and score head on the ranking loss alone, the ablation of NAR's tiers),
``gbt`` and ``mlp`` (same structure features), ``gbt+zc`` and ``mlp+zc``, and ``proxies`` (the rank average of the
proxy columns: no labels, the zero-shot floor; one result, recorded for every N and seed 0 only). The proxy
columns come from ``nb201_zc_proxies.csv`` (synflow, logsynflow, naswot, nregions, zen, jacov; CIFAR-10 versions)
and the ground truth's ``flops_M_cifar10`` and ``params_M_cifar10`` (no accuracy column: the ``suitezero_val_acc``
columns of the proxy table are trained accuracies and are left out). They are merged into
``runs/predictor_experiments/nb201_zc_features.csv`` (not committed).

One JSON per (model, N, seed) in benchmarks/results/predictors/; a finished one is skipped, so the script can be
stopped and restarted, and several processes can share the work (``--models`` / ``--n`` / ``--seeds``)::

    OMP_NUM_THREADS=1 python benchmarks/predictor_experiments.py run --models gbt,mlp --n 78,156 --seeds 0,1
    OMP_NUM_THREADS=1 python benchmarks/predictor_experiments.py run          # everything: every model, N, seed
    python benchmarks/predictor_experiments.py report   # Markdown table, benchmarks/results/predictor_experiments.json
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from experiment_harness import comma_list, command_line, load_results, run_pending
from rdnas.atomic_file import write_text_atomic
from rdnas.predictors import ArchFeatures, NARPredictor, ProxyFeatures
from rdnas.predictors.protocol import fit_on_table
from rdnas.rank import GroundTruth, kendall_tau, precision_at_top, spearman_rho

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = RESULTS / "predictors"
WORK = ROOT.parent / "runs" / "predictor_experiments"
DATA = ROOT.parent.parent / "shared" / "data"

TRAIN_COLUMN = "cifar10_valid_acc"
TEST_COLUMN = "cifar10_test_acc"
TRANSFER_COLUMNS = ("cifar100_test_acc", "imagenet16_120_test_acc")
SIZES = (78, 156, 469, 781, 1563)
SEEDS = (0, 1, 2, 3, 4)
PROXY_COLUMNS = ("synflow_cifar10", "logsynflow_cifar10", "naswot_cifar10", "nregions_cifar10", "zen_cifar10",
                 "jacov_nwotv1_cifar10")
COST_COLUMNS = ("flops_M_cifar10", "params_M_cifar10")
MODELS = ("nar-live", "nar-live+zc", "nar-notiers-live", "gbt-live", "gbt-live+zc", "mlp-live", "mlp-live+zc", "proxies",
          "nar", "nar+zc", "nar-notiers", "nar-31tok", "gbt", "gbt+zc", "mlp", "mlp+zc")  # the report's row order
DEFAULT_MODELS = tuple(m for m in MODELS if m != "nar-31tok")
# PINAT (Table 1 of its paper) and TNASP, Kendall tau on NB201 CIFAR-10 at the sizes above.
PUBLISHED = {"PINAT": (0.549, 0.631, 0.706, 0.761, 0.784), "TNASP": (0.539, 0.589, 0.640, 0.689, 0.724)}


def zc_table(gt_path: Path, zc_path: Path) -> Path:
    """The merged proxy-feature table (module docstring), written once."""
    out = WORK / "nb201_zc_features.csv"
    if out.exists():
        return out
    gt, zc = GroundTruth.load(gt_path), GroundTruth.load(zc_path)
    rows = zc.rows_of(gt.archs)
    if bool((rows < 0).any()):
        raise ValueError(f"{zc_path} does not cover every architecture of {gt_path}")
    columns = {name: zc.column(name)[rows.numpy()] for name in PROXY_COLUMNS}
    columns.update({name: gt.column(name) for name in COST_COLUMNS})
    lines = ["index,arch_str," + ",".join(columns)]
    for row in range(len(gt)):
        lines.append(f"{int(gt.indices[row])},{gt.space.to_string(gt.archs[row])},"
                     + ",".join(repr(float(values[row])) for values in columns.values()))
    WORK.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out


def result_path(model: str, size: int, seed: int) -> Path:
    return RUNS / f"{model.replace('+', '_')}_n{size}_seed{seed}.json"


def evaluate(scores: np.ndarray, gt: GroundTruth) -> dict:
    truth = gt.column(TEST_COLUMN)
    report = {"kendall_tau": kendall_tau(scores, truth), "spearman_rho": spearman_rho(scores, truth),
              "precision_at_top_5pct": precision_at_top(scores, truth, 5)}
    for column in TRANSFER_COLUMNS:
        report[f"kendall_tau_{column}"] = kendall_tau(scores, gt.column(column))
    return report


def run_one(model: str, size: int, seed: int, gt: GroundTruth, features_path: Path) -> dict:
    head, _, extra = model.partition("+")
    # "-31tok": the authors' 31 tokens; "-notiers": tier_weight 0; "-live": the live cell (edges="live")
    base, *variants = head.split("-")
    started = time.perf_counter()
    if model == "proxies":
        proxies = ProxyFeatures.from_table(features_path, PROXY_COLUMNS + COST_COLUMNS)
        scores = proxies(gt.archs).double().mean(1).numpy()  # rank average of the rank-normalised columns
        fit_s, predict_s, options, train_rows = 0.0, time.perf_counter() - started, {}, []
    else:
        cells = "stages" if base == "nar" and "31tok" not in variants else "all"
        options = {"tier_weight": 0.0} if "notiers" in variants else {}
        if base == "nar" and "live" not in variants:  # the authors'-input rows were measured at their batch size
            options["batch_size"] = NARPredictor.AUTHORS_BATCH_SIZE
        features = ArchFeatures("nb201", ProxyFeatures.from_table(features_path, PROXY_COLUMNS + COST_COLUMNS)
                                if extra == "zc" else None, cells=cells, edges="live" if "live" in variants else "all")
        predictor, rows = fit_on_table(base, gt, TRAIN_COLUMN, size, seed, features, progress=sys.stderr.isatty(),
                                       **options)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        scores = predictor.predict(gt.archs).numpy()
        predict_s = time.perf_counter() - started
        options, train_rows = predictor.options, rows.tolist()
    return {"model": model, "n": size, "seed": seed, "train_column": TRAIN_COLUMN, "test_column": TEST_COLUMN,
            "num_archs": len(gt), **evaluate(scores, gt), "fit_s": fit_s, "predict_s": predict_s,
            "options": options, "cells": None if model == "proxies" else features.cells,
            "edges": None if model == "proxies" else features.edges,
            "proxy_columns": list(PROXY_COLUMNS + COST_COLUMNS) if "zc" in model or model == "proxies" else [],
            "train_rows": train_rows, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine()}


def run(args) -> int:
    def prepare():
        return GroundTruth.load(args.gt), zc_table(Path(args.gt), Path(args.zc))

    def run_job(context, model, size, seed):
        return run_one(model, size, seed, *context)

    jobs = [(model, size, seed) for model in args.models for size in args.n for seed in args.seeds
            if model != "proxies" or seed == 0]
    return run_pending(jobs, result_path, run_job, lambda model, size, seed: f"{model:8} N={size:5} seed {seed}",
                       lambda result, seconds: f"Kendall tau {result['kendall_tau']:.4f} (fit {result['fit_s']:.1f} "
                       f"s, predict {result['predict_s']:.1f} s)", dry_run=args.dry_run, prepare=prepare, indent=1)


def report(args) -> int:
    results = load_results(RUNS)
    table = {}
    for result in results:
        table.setdefault(result["model"], {}).setdefault(result["n"], []).append(result)
    sizes = sorted({result["n"] for result in results})
    summary = {}
    lines = ["| model | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for model in [m for m in MODELS if m in table]:
        cells = []
        for n in sizes:
            runs = table[model].get(n, [])
            if not runs:
                cells.append("")
                continue
            taus = np.array([r["kendall_tau"] for r in runs])
            summary.setdefault(model, {})[n] = {
                "kendall_tau_mean": float(taus.mean()),
                "kendall_tau_std": float(taus.std(ddof=1)) if len(taus) > 1 else None,
                "seeds": sorted(r["seed"] for r in runs), "fit_s_mean": float(np.mean([r["fit_s"] for r in runs])),
                **{f"kendall_tau_{c}_mean": float(np.mean([r[f"kendall_tau_{c}"] for r in runs]))
                   for c in TRANSFER_COLUMNS}}
            spread = f" ± {taus.std(ddof=1):.3f}" if len(taus) > 1 else ""
            cells.append(f"{taus.mean():.3f}{spread} ({len(taus)})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for name, values in PUBLISHED.items():
        published = dict(zip(SIZES, values))
        lines.append(f"| {name} (published) | " + " | ".join(f"{published[n]:.3f}" if n in published else ""
                                                             for n in sizes) + " |")
    text = ("Kendall tau against cifar10_test_acc over all 15,625 NB201 cells, trained on N random cells' "
            "cifar10_valid_acc; mean ± std over training sets (count in brackets).\n\n" + "\n".join(lines))
    print(text)
    write_text_atomic(RESULTS / "predictor_experiments.json", json.dumps(summary, indent=1))
    return 0


def run_options(parser) -> None:
    parser.add_argument("--n", type=comma_list(int), default=list(SIZES), help="training sizes (default 78,...,1563)")
    parser.add_argument("--seeds", type=comma_list(int), default=list(SEEDS), help="training sets (default 0-4)")
    parser.add_argument("--gt", default=str(DATA / "nb201_gt.csv"))
    parser.add_argument("--zc", default=str(DATA / "nb201_zc_proxies.csv"))


if __name__ == "__main__":
    sys.exit(command_line(__doc__, run, report, "--models", MODELS, DEFAULT_MODELS, run_options=run_options,
                          run_help="fit and evaluate, one JSON per (model, N, seed); resumable",
                          report_help="the Markdown table and benchmarks/results/predictor_experiments.json",
                          choices_help=f"default: {','.join(DEFAULT_MODELS)}; also nar-31tok"))

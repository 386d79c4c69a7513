"""`rdnas demo`: the RD-NAS pipeline on the embedded default, end to end, in minutes on two CPU cores.

1. Ground truth: the shipped digits mini-benchmark (or ``--gt``).
2. Zero-cost proxies score the benchmark's architectures at initialisation; their rank consistency is reported.
3. The teacher (``--teacher``, default synflow) scores the whole space (15,625 cells) and is split into groups
   (``--space resnet48``: FLOPs over a seeded reference sample of 10,000 codes, groups at its quantiles).
4. Two supernets train with the same budget (K subnets per step, same epochs, optimiser and data): SPOS with K
   paths and no ranking loss, and RD-NAS (margin subnet sampler, group-distance margins, fused pairwise loss).
5. Each supernet ranks the benchmark's architectures by supernet accuracy (BN recalibrated per subnet) every few
   epochs; the report gives Kendall tau, Spearman rho and P@top-10% for every proxy and both supernets, a JSON
   file and two PNG plots (tau per epoch; supernet estimate against ground truth).

Under torchrun (``torchrun --nproc_per_node P -m rdnas demo``) the supernets train on the P processes
(:class:`rdnas.train.OneShotTrainer`: subnet- or batch-parallel, ``TrainConfig.parallel="auto"``) and the rank
evaluations split the architectures across them; rank 0 scores the proxies and a whole-space teacher (which reaches
the other ranks in one broadcast; a sampled teacher is built on every rank), writes every file and prints.
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rdnas import distributed
from rdnas.pipeline import (PipelineConfig, build_teacher, load_ground_truth, rank_quality, score_proxies,
                            train_and_rank)
from rdnas.spaces import get_space

METHOD_LABELS = {"spos": "SPOS", "rdnas": "RD-NAS"}
RESNET48_PROXIES = "flops,params,synflow,logsynflow,snip,grad_norm,naswot,zen,jacov,l2_norm"
RESNET48_EPOCHS = 15  # the ResNet48 suite of benchmarks/rdnas_experiments.py; keeps the demo within 10 minutes


def finite_for_ranking(scores: np.ndarray) -> np.ndarray:
    """Proxy scores [N] with -inf and NaN (a disconnected or failed cell) placed below every finite score and
    +inf above every one, so that rank statistics see the order the proxy means."""
    finite = scores[np.isfinite(scores)]
    low, high = (finite.min() - 1, finite.max() + 1) if finite.size else (-1.0, 1.0)
    return np.where(np.isposinf(scores), high, np.where(np.isfinite(scores), scores, low))


def _proxy_reports(config, archs, truth) -> dict:
    names = [n.strip() for n in config.proxies.split(",") if n.strip()]
    table = score_proxies(config, names, archs=archs)
    reports = {}
    # score_space may return rows in another order (NB201: enumeration order); align them with the ground truth's
    space = get_space(config.space)
    position = {arch: k for k, arch in enumerate(table.archs)}
    order = [position[space.to_string(a)] for a in archs]
    for name in names:
        scores = np.asarray(table.column(name))[order]
        reports[name] = rank_quality(finite_for_ranking(scores), truth, config.gt_column)
    return reports


def run_demo(config: PipelineConfig, seed: int = 0, progress: bool = True) -> dict:
    """Runs the pipeline and returns the report (JSON-serialisable); writes report.json and the plots to
    ``config.out_dir``. Several processes (an initialised default process group): every rank returns the report;
    rank 0 alone scores the proxies (and a whole-space teacher), writes and prints."""
    world = distributed.current()
    out = Path(config.out_dir)
    started = time.perf_counter()
    say = print if progress and world.is_main else (lambda *args, **kwargs: None)
    table, archs, truth = load_ground_truth(config)  # a bad table or column: before anything is written
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    say(f"[{time.perf_counter() - started:5.0f} s] ground truth: {len(archs)} architectures, column "
        f"{config.gt_column} of {table.path}")
    proxies = _proxy_reports(config, archs, truth) if world.is_main else None
    say(f"[{time.perf_counter() - started:5.0f} s] zero-cost proxies scored on those architectures")
    proxies = distributed.broadcast_object(proxies, world)
    if get_space(config.space).enumerable:  # a whole-space table, cached in out_dir: rank 0 scores it
        teacher = distributed.broadcast_object(build_teacher(config) if world.is_main else None, world)
    else:  # a seeded reference sample scored by a cost model: every rank builds the same, writing nothing
        teacher = build_teacher(config)
    scope = "all" if get_space(config.space).enumerable else "a reference sample of"
    say(f"[{time.perf_counter() - started:5.0f} s] teacher {teacher.name}: {scope} {len(teacher.scores)} "
        f"architectures, {teacher.num_groups} groups")
    runs = {}
    for method in ("spos", "rdnas"):
        runs[method] = train_and_rank(config, method, seed, archs, truth, teacher=teacher, progress=False,
                                      paths_per_step=config.paths_per_step)
        say(f"[{time.perf_counter() - started:5.0f} s] {METHOD_LABELS[method]} trained ({config.epochs} epochs, "
            f"K={config.paths_per_step}): Kendall tau {runs[method]['report']['kendall_tau']:.3f}")
    report = {"config": asdict(config), "seed": seed, "ground_truth": str(table.path),
              "num_archs": len(archs), "proxies": proxies,
              "supernets": {m: {k: r[k] for k in ("report", "history", "estimates", "seconds", "config")}
                            for m, r in runs.items()},
              "truth": truth.tolist(), "seconds": time.perf_counter() - started}
    if world.is_main:
        (out / "report.json").write_text(json.dumps(report, indent=2))
        _plots(report, out)
    return report


def _plots(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for method, run in report["supernets"].items():
        points = [(h["epoch"], h["kendall_tau"]) for h in run["history"]
                  if "kendall_tau" in h and h["kendall_tau"] == h["kendall_tau"]]  # NaN: ranking undefined
        if points:
            axis.plot(*zip(*points), marker="o", label=METHOD_LABELS.get(method, method))
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"Kendall tau ({report['num_archs']} architectures)")
    axis.set_title("supernet rank consistency during training")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "tau_per_epoch.png", dpi=120)
    plt.close(figure)

    methods = list(report["supernets"])
    figure, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.8), squeeze=False)
    for axis, method in zip(axes[0], methods):
        run = report["supernets"][method]
        axis.scatter(report["truth"], [100 * e for e in run["estimates"]], s=8, alpha=0.6)
        axis.set_xlabel(f"ground truth: {report['config']['gt_column']}")
        axis.set_ylabel("supernet accuracy (%)")
        axis.set_title(f"{METHOD_LABELS.get(method, method)}: tau {run['report']['kendall_tau']:.3f}")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "estimate_vs_truth.png", dpi=120)
    plt.close(figure)


def format_report(report: dict) -> str:
    rows = [(name, r) for name, r in report["proxies"].items()]
    rows += [(f"{METHOD_LABELS.get(m, m)} supernet", run["report"]) for m, run in report["supernets"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"rdnas demo: rank consistency on {report['num_archs']} architectures of {report['ground_truth']} "
             f"({report['config']['gt_column']})",
             f"  {'ranker':<{width}}  Kendall tau  Spearman rho  P@top-10%"]
    for name, r in rows:
        lines.append(f"  {name:<{width}}  {r['kendall_tau']:11.3f}  {r['spearman_rho']:12.3f}  "
                     f"{r['precision_at_top_10pct']:9.3f}")
    for m, run in report["supernets"].items():
        if "undefined" in run["report"]:
            lines.append(f"  {METHOD_LABELS.get(m, m)}: no ranking ({run['report']['undefined']})")
            continue
        low, high = run["report"]["kendall_tau_ci95"]
        lines.append(f"  {METHOD_LABELS.get(m, m)}: tau 95% bootstrap interval {low:.3f}..{high:.3f}; "
                     f"trained and evaluated in {run['seconds']:.0f} s")
    lines.append(f"  total {report['seconds']:.0f} s; report.json, tau_per_epoch.png and estimate_vs_truth.png in "
                 f"{report['config']['out_dir']}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    from rdnas.cli.arguments import device, input_file, int_at_least, non_negative_float, non_negative_int, positive_int
    from rdnas.spaces import space_names

    defaults = PipelineConfig()
    parser.add_argument("--space", choices=list(space_names()), default="nb201",
                        help="search space (default nb201); resnet48 runs against its shipped digits mini-benchmark")
    parser.add_argument("--out", default=defaults.out_dir, help=f"output folder (default {defaults.out_dir})")
    parser.add_argument("--data", default=defaults.data,
                        help="digits (default; the shipped mini-benchmark) or cifar10:<dir> with --gt")
    parser.add_argument("--gt", type=input_file, default="", help="ground-truth table (default: the shipped digits mini-benchmark)")
    parser.add_argument("--gt-column", default=None, help="ground-truth column (default digits_valid_acc, or "
                        "cifar10_valid_acc with --data cifar10:...)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"supernet epochs (default {defaults.epochs}; resnet48: {RESNET48_EPOCHS})")
    parser.add_argument("--paths", type=int_at_least(2, "RD-NAS ranks pairs of subnets"), default=defaults.paths_per_step,
                        help=f"K subnets per step (both methods; default {defaults.paths_per_step})")
    parser.add_argument("--teacher", default=None,
                        help=f"teacher proxies, rank-averaged (default {defaults.teacher_proxies}; resnet48: flops, "
                        "from its cost model, as the RD-NAS authors ran it)")
    parser.add_argument("--groups", type=int_at_least(2), default=defaults.groups,
                        help=f"G teacher groups (default {defaults.groups})")
    parser.add_argument("--margin", type=non_negative_float, default=defaults.margin,
                        help=f"m0, margin per group distance (default {defaults.margin})")
    parser.add_argument("--eval-every", type=positive_int, default=defaults.eval_every,
                        help=f"epochs between rank evaluations (default {defaults.eval_every}; the last is always "
                        "evaluated)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--quiet", action="store_true")


def config_from_args(args) -> PipelineConfig:
    """The PipelineConfig that ``rdnas demo`` runs for parsed arguments (space-dependent defaults resolved)."""
    config = PipelineConfig(space=args.space, out_dir=args.out, data=args.data, gt=args.gt,
                            paths_per_step=args.paths, groups=args.groups, margin=args.margin,
                            eval_every=args.eval_every, device=args.device)
    if args.space != "nb201":
        config.epochs, config.teacher_proxies, config.proxies = RESNET48_EPOCHS, "flops", RESNET48_PROXIES
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.teacher:
        config.teacher_proxies = args.teacher
    if args.data != "digits":
        if not args.gt:
            raise ValueError("--data other than digits needs --gt (a ground-truth table for that data)")
        # the benchmark's network on 32x32 images: the space's own defaults for that data (NB201: C=16, N=5)
        from rdnas.supernet import supernet_spec

        config.space_options = supernet_spec(config.space).options.defaults_for_data(config.data)
        config.image_size = 32
        config.gt_column = "cifar10_valid_acc"
    if args.gt_column:
        config.gt_column = args.gt_column
    return config


def main(args) -> int:
    """``rdnas demo``; under torchrun each rank joins the job (rdnas.distributed.init) and rank 0 prints."""
    world, _ = distributed.init(args.device)
    report = run_demo(config_from_args(args), seed=args.seed, progress=not args.quiet)
    if world.is_main:
        print(format_report(report))
    return 0

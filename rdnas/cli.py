"""Command-line front end: `rdnas <command>` (also `python -m rdnas <command>`)."""

import argparse
import sys

from rdnas.minibench.build import DATASETS, Recipe
from rdnas.spaces import space_names
from rdnas.train.trainer import MARGIN_MODES, METHODS, RANK_SAMPLERS, RANK_SCHEDULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdnas",
        description="Ranking distillation for one-shot neural architecture search (RD-NAS).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    demo = commands.add_parser(
        "demo",
        help="the RD-NAS pipeline end to end on the embedded default (digits, shipped mini-benchmark)",
        description="Zero-cost proxies, the teacher over the whole space, an SPOS and an RD-NAS supernet at the "
        "same budget, and their rank consistency against the shipped digits mini-benchmark: a table on stdout, "
        "OUT/report.json, OUT/tau_per_epoch.png and OUT/estimate_vs_truth.png. About 5 minutes on 2 CPU cores. "
        "With --data cifar10:<dir> --gt nb201_gt.csv it runs the paper's setting.",
    )
    from rdnas.demo import add_arguments

    add_arguments(demo)

    train = commands.add_parser(
        "train",
        help="train a one-shot supernet (checkpoints every epoch; --resume continues a run)",
        description="Train a weight-sharing supernet. Writes OUT/checkpoint.pt (atomically, every epoch), "
        "OUT/metrics.jsonl and OUT/config.json. Example: rdnas train --data digits --epochs 10 --out runs/spos",
    )
    train.add_argument("--space", choices=list(space_names()), default="nb201", help="search space (default nb201)")
    train.add_argument("--method", choices=list(METHODS), default="spos",
                       help="spos (uniform paths, default), rdnas (ranking distillation; nb201 needs --teacher-table), "
                       "fairnas (nb201), sandwich")
    train.add_argument("--teacher-table", default="", help="rdnas on nb201: a score table over the whole space "
                       "(rdnas proxies --out, without --gt)")
    train.add_argument("--teacher", default=None, help="rdnas: teacher column(s) of the table, rank-averaged "
                       "(nb201, default synflow); resnet48: a cost of its cost model (default flops)")
    train.add_argument("--teacher-samples", type=_positive_int, default=10000,
                       help="rdnas on non-enumerable spaces (resnet48): size of the teacher's seeded reference set "
                       "(default 10000)")
    train.add_argument("--min-hamming", type=_positive_int, default=33,
                       help="rdnas with --sampler min_hamming: least differing choices per pair (default 33)")
    train.add_argument("--distill", action="store_true", help="in-place distillation from the largest subnet "
                       "(sandwich rule: --method sandwich, or --method rdnas --sampler sandwich)")
    train.add_argument("--groups", type=int, default=5, help="rdnas: G teacher groups (default 5)")
    train.add_argument("--margin", type=float, default=0.1, help="rdnas: m0, margin per group distance")
    train.add_argument("--margin-mode", choices=list(MARGIN_MODES), default="group")
    train.add_argument("--sampler", choices=list(RANK_SAMPLERS), default="margin", help="rdnas: pair sampler")
    train.add_argument("--rank-schedule", choices=list(RANK_SCHEDULES), default="constant",
                       help="rdnas: lambda(epoch)")
    train.add_argument("--rank-weight", type=float, default=1.0, help="rdnas: multiplies lambda(epoch)")
    train.add_argument("--data", default="digits",
                       help="digits (scikit-learn's, no download), fashion_mnist[:<dir>] (Debian's "
                       "dataset-fashion-mnist by default), cifar10:<dir>, cifar100:<dir>, imagenet16:<dir> or "
                       "imagenet:<dir> (<dir>/train and <dir>/val, one folder per class)")
    train.add_argument("--image-size", type=int, default=16,
                       help="digits: resize the 8x8 images (default 16); imagenet: the crop side (use 224)")
    train.add_argument("--epochs", type=_non_negative_int, default=10)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=0.025)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--paths", type=int, default=1, help="K paths per step, losses summed (default 1)")
    train.add_argument("--channels", type=int, default=16, help="C, the first stage's width (default 16)")
    train.add_argument("--cells", type=int, default=5, help="N, cells per stage (default 5)")
    train.add_argument("--resnet-stem", choices=["imagenet", "small"], default=None,
                       help="resnet48: imagenet (7x7 stride 2 + max-pool, for 224 px) or small (3x3, no pooling; "
                       "default for the embedded small-image data)")
    train.add_argument("--width-divisor", type=int, choices=[1, 2, 4, 8], default=None,
                       help="resnet48: divide every channel count of the width table (default 1; 8 on small data)")
    train.add_argument("--no-bn-affine", action="store_true", help="BN without learnable scale and shift in cells")
    train.add_argument("--no-bn-running-stats", action="store_true", help="BN without running statistics")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", type=_device, default="cpu")
    train.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    train.add_argument("--out", default="runs/spos", help="output folder (default runs/spos)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser(
        "eval",
        help="rank architectures with a trained supernet and compare with ground truth",
        description="Supernet accuracy of sampled architectures on the run's validation split (K subnets per "
        "forward pass), and with --gt the rank consistency against a ground-truth table column. Example: rdnas "
        "eval --checkpoint runs/spos/checkpoint.pt --archs 1000 --gt nb201_gt.csv --column cifar10_valid_acc",
    )
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by rdnas train")
    evaluate.add_argument("--archs-json", help="evaluate exactly the architectures of a competition JSON file "
                          "(CVPR 2022 NAS Track 1: {\"arch1\": {\"acc\": 0, \"arch\": CODE}, ...}); with --out the "
                          "result is the same object with the estimate in \"acc\" (a submission)")
    evaluate.add_argument("--archs", type=_positive_int, default=1000, help="how many architectures to sample (default 1000)")
    evaluate.add_argument("--gt", help="ground-truth table (nb201_gt.csv format); architectures are drawn from it")
    evaluate.add_argument("--column", default="cifar10_valid_acc", help="ground-truth column (default cifar10_valid_acc)")
    evaluate.add_argument("--bn", choices=["recalibrate", "batch", "running"], default="recalibrate",
                          help="BN statistics: recalibrate per subnet on training batches (default), each "
                          "validation batch's own, or the supernet's running statistics")
    evaluate.add_argument("--calibration-steps", type=int, default=4)
    evaluate.add_argument("--subnets-per-pass", type=int, default=32, help="K, architectures per forward pass")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--valid-limit", type=int, default=0, help="use only this many validation images (0: all)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", type=_device, default="cpu")
    evaluate.add_argument("--out", help="write the results as JSON here")
    evaluate.add_argument("--quiet", action="store_true")

    proxies = commands.add_parser(
        "proxies",
        help="score every architecture with zero-cost proxies into a resumable CSV table",
        description="Scores the search space with zero-cost proxies on the supernet's weights at initialisation "
        "and writes OUT (index,arch,<proxy>,...; rows appended chunk by chunk) and OUT.meta.json. Run the same "
        "command again to resume an interrupted run; --shard i/n splits the work among processes (merge their "
        "tables with rdnas merge-tables). Example: rdnas proxies --proxy synflow,naswot --data "
        "npz:freerea_cifar10_train_minibatches.npz --gt nb201_gt.csv --out nb201_proxies.csv",
    )
    proxies.add_argument("--space", choices=["nb201", "resnet48"], default="nb201",
                         help="search space (default nb201); resnet48 needs --archs-file")
    proxies.add_argument("--archs-file", help="the architectures to score: one code per line, or a competition "
                         "JSON ({\"arch1\": {\"arch\": ...}}); table index = position in the file")
    proxies.add_argument("--resnet-stem", choices=["imagenet", "small"], help="resnet48: stem (default imagenet)")
    proxies.add_argument("--width-divisor", type=int, help="resnet48: channel divisor 1, 2, 4 or 8 (default 1)")
    proxies.add_argument("--proxy", type=_proxy_names, metavar="NAMES",
                         help="comma-separated proxy names, or 'all' (see --list)")
    proxies.add_argument("--out", help="the CSV table to write or resume ({shard} in the name becomes the shard)")
    proxies.add_argument("--data", default="random",
                         help="the minibatch: random (Gaussian, default), random:C,H,W,classes, npz:<path>, "
                         "cifar10:<dir>, cifar100:<dir>, imagenet16:<dir> or digits")
    proxies.add_argument("--batch-size", type=int, default=64, help="images in the minibatch (default 64)")
    proxies.add_argument("--batch-index", type=int, default=0, help="which batch of the source (default 0)")
    proxies.add_argument("--image-size", type=int, help="digits: the side (default 32); other sources: resize")
    proxies.add_argument("--init", choices=["pytorch", "kaiming_normal"], default="pytorch",
                         help="supernet initialisation (default pytorch)")
    proxies.add_argument("--seed", type=int, default=0, help="initialisation and data seed (default 0)")
    proxies.add_argument("--channels", type=int, default=16,
                         help="C of the scoring supernet's macro network (default 16, the benchmark's)")
    proxies.add_argument("--cells", type=int, default=5,
                         help="N, cells per stage of the scoring supernet (default 5, the benchmark's)")
    proxies.add_argument("--gt", help="ground-truth table (nb201_gt.csv format): index = official NB201 index "
                         "(without it: the enumeration index of rdnas.spaces.nb201)")
    proxies.add_argument("--limit", type=int, help="score only the first N architectures (quick runs)")
    proxies.add_argument("--archs-per-chunk", type=int, default=64,
                         help="architectures per proxy call and per write (default 64)")
    proxies.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n|env",
                         help="score only chunk c with c %% n == i; env: RANK/WORLD_SIZE of torchrun")
    proxies.add_argument("--device", type=_device, default="cpu", help="torch device (default cpu)")
    proxies.add_argument("--quiet", action="store_true", help="no progress bar")
    proxies.add_argument("--list", action="store_true", help="list the proxies and exit")
    proxies.set_defaults(usage_error=proxies.error)

    merge = commands.add_parser(
        "merge-tables",
        help="merge the shard tables of rdnas proxies into one table",
        description="Merges score tables into one sorted by index; differing columns, an index with different "
        "values in two tables, or (with --complete) missing architectures are errors. Example: rdnas "
        "merge-tables --out nb201_proxies.csv shard0.csv shard1.csv --complete",
    )
    merge.add_argument("tables", nargs="+", help="the tables to merge")
    merge.add_argument("--out", required=True, help="the merged table")
    merge.add_argument("--complete", action="store_true", help="require all 15,625 NB201 architectures")

    search = commands.add_parser(
        "search",
        help="search for the best architectures with a trained supernet (random or regularised evolution)",
        description="Finds the cells with the highest supernet accuracy on the run's validation split (BN "
        "recalibrated per subnet, many cells per forward pass) within a budget of evaluated cells, and prints the "
        "top k, with ground truth when --gt is given. Example: rdnas search --checkpoint runs/rdnas/checkpoint.pt "
        "--strategy evolution --budget 500 --gt nb201_gt.csv --column cifar10_valid_acc",
    )
    search.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by rdnas train")
    search.add_argument("--strategy", choices=["evolution", "random"], default="evolution")
    search.add_argument("--budget", type=int, default=500, help="cells to evaluate (default 500)")
    search.add_argument("--population", type=int, default=32, help="evolution: population size (default 32)")
    search.add_argument("--top-k", type=_positive_int, default=10)
    search.add_argument("--gt", help="ground-truth table to print the true accuracy of the top cells")
    search.add_argument("--column", default="cifar10_valid_acc", help="ground-truth column")
    search.add_argument("--subnets-per-pass", type=int, default=32)
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--device", type=_device, default="cpu")
    search.add_argument("--out", help="write the top cells as JSON here")

    arch = commands.add_parser(
        "arch", help="describe architectures: canonical string, parameters and FLOPs (one JSON line each)",
        description="Prints one JSON line per architecture with 'arch' (the canonical string), 'params', 'flops' "
        "and 'trainable_params'. resnet48: the CVPR 2022 Track 1 conventions (224 px, 1000 classes; paddle.flops: "
        "conv multiply-accumulates, BN 2 per output element, FC in x out; params count BN running statistics), "
        "trainable_params PyTorch's count. nb201: the benchmark network (C=16, N=5, 32x32, 10 classes), counted "
        "as the benchmark counts them (its table's flops_M and params_M times 1e6). Example: rdnas arch --space resnet48 "
        "1558511111111111111111111111111111111111111111111111",
    )
    arch.add_argument("--space", choices=list(space_names()), default="nb201", help="search space (default nb201)")
    arch.add_argument("codes", nargs="+", metavar="CODE", help="architectures as the space writes them")

    bench = commands.add_parser(
        "bench", help="build a mini-benchmark: stand-alone training of sampled architectures (ground truth)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="<bench command>")
    bench_build = bench_commands.add_parser(
        "build",
        help="train sampled architectures stand-alone with several seeds and write their accuracies as a table",
        description="Trains a seeded sample of distinct architectures of the space from scratch with one fixed "
        "recipe and S seeds each (NB201: many networks side by side per grouped-op stack), appending every finished run "
        "to OUT/runs.csv (rerun the same command to resume), then writes the seed-averaged table (nb201_gt.csv "
        "format) and the reliability between two independent builds (the first and second half of the seeds). "
        "Example: rdnas bench build --space nb201 --dataset digits --archs 240 --seeds 10 --out runs/bench",
    )
    bench_build.add_argument("--space", choices=list(space_names()), default="nb201", help="search space (default nb201)")
    bench_build.add_argument("--dataset", choices=list(DATASETS), default="digits",
                             help="digits (default) or fashion_mnist (Debian's dataset-fashion-mnist)")
    bench_build.add_argument("--archs", type=_positive_int, default=240, help="architectures to sample (default 240)")
    bench_build.add_argument("--seeds", type=int, default=10, help="training seeds per architecture (default 10)")
    bench_build.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture sample (default 0)")
    bench_build.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    bench_build.add_argument("--table", help="where to write the table (default OUT/<space>_<dataset>.csv)")
    recipe = Recipe()
    for name, kind, text in (("epochs", int, "epochs"), ("train_images", int, "training images (0: all)"),
                             ("valid_images", int, "validation images (0: all)"),
                             ("image_size", int, "image side"), ("channels", int, "nb201: C"),
                             ("cells_per_stage", int, "nb201: N"), ("width_divisor", int, "resnet48: width divisor"),
                             ("resnet_stem", str, "resnet48: stem"), ("lr", float, "learning rate"),
                             ("batch_size", int, "batch size"), ("networks_per_stack", int, "networks per stack")):
        bench_build.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(recipe, name),
                                 help=f"{text} (default {getattr(recipe, name)})")
    bench_build.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n",
                             help="train only every n-th (architecture, seed) run, from the i-th: n processes build "
                             "one benchmark side by side; each writes OUT/runs.<i>of<n>.csv and then the table of "
                             "every run finished so far")
    bench_build.add_argument("--device", type=_device, default="cpu", help="torch device (default cpu)")
    bench_build.add_argument("--quiet", action="store_true", help="no progress bar")
    bench_build.set_defaults(usage_error=bench_build.error)
    return parser


def _proxy_names(text: str) -> list[str]:
    """--proxy: comma-separated registered names, or 'all'."""
    from rdnas.proxies import PROXIES, get_proxy

    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(PROXIES)
    if not names:
        raise argparse.ArgumentTypeError(f"no proxy named; known proxies: {', '.join(sorted(PROXIES))}")
    for name in names:
        try:
            get_proxy(name)
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown proxy {name!r}; known proxies: "
                                             f"{', '.join(sorted(PROXIES))}") from None
    return names


def _device(text: str) -> str:
    """--device: any torch device string (cpu, cuda, cuda:1, ...)."""
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _json_output(path):
    """Checks an --out JSON path before the work starts (see prepare_output_file); None when there is none."""
    from rdnas.atomic_file import prepare_output_file

    return None if path is None else prepare_output_file(path, "--out")


def _write_json(path, value) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (a temporary file renamed over it)."""
    import json

    from rdnas.atomic_file import write_text_atomic

    write_text_atomic(path, json.dumps(value, indent=2))


def _shard(text: str):
    """--shard: i/n with 0 <= i < n, or env."""
    if text == "env":
        return text
    first, _, second = text.partition("/")
    try:
        i, n = int(first), int(second)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4) or env, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"needs 0 <= i < n, got {text!r}")
    return i, n


def run_train(args) -> int:
    from rdnas.train import OneShotTrainer, TrainConfig

    space_defaults = _space_train_defaults(args.space, args.data)
    options = {name: space_defaults[name] if getattr(args, name) is None else getattr(args, name)
               for name in ("teacher", "resnet_stem", "width_divisor")}
    config = TrainConfig(
        space=args.space, resnet_stem=options["resnet_stem"], width_divisor=options["width_divisor"],
        distill=args.distill, teacher_samples=args.teacher_samples, min_hamming=args.min_hamming, data=args.data, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, paths_per_step=args.paths, channels=args.channels,
        cells_per_stage=args.cells, bn_affine=not args.no_bn_affine,
        bn_track_running_stats=not args.no_bn_running_stats, seed=args.seed, device=args.device,
        amp=not args.no_amp, out_dir=args.out, method=args.method, teacher_table=args.teacher_table,
        teacher_proxies=options["teacher"], groups=args.groups, margin=args.margin, margin_mode=args.margin_mode,
        sampler=args.sampler, rank_schedule=args.rank_schedule, rank_weight=args.rank_weight)
    history = OneShotTrainer(config, progress=not args.quiet).fit(resume=args.resume)
    last = history[-1] if history else {}
    print(f"rdnas train: {len(history)} epochs in {args.out} (last: loss {last.get('train_loss', float('nan')):.4f}, "
          f"accuracy {last.get('train_acc', float('nan')):.3f})")
    return 0


def _space_train_defaults(space: str, data: str) -> dict:
    """Defaults of the space-specific train options: the teacher (nb201: synflow from a table; resnet48: FLOPs, as
    the RD-NAS authors ran it) and ResNet48's configuration (ImageNet-sized data: the competition's network;
    small images: the small stem, widths / 8)."""
    small_images = data.partition(":")[0] not in ("imagenet",)
    return {"teacher": "synflow" if space == "nb201" else "flops",
            "resnet_stem": "small" if small_images else "imagenet", "width_divisor": 8 if small_images else 1}


def run_arch(args) -> int:
    import json

    import torch

    from rdnas.spaces import get_space

    space = get_space(args.space)
    archs = torch.cat([space.from_string(code).unsqueeze(0) for code in args.codes])
    costs = {name: values.tolist() for name, values in space.cost(archs).items()}
    for k, arch in enumerate(archs):
        line = {"arch": space.to_string(arch)}
        line.update({name: _plain_number(values[k]) for name, values in costs.items()})
        print(json.dumps(line))
    return 0


def _plain_number(value: float):
    return int(value) if float(value).is_integer() else value


def _load_supernet(checkpoint, device):
    """(supernet on ``device``, its TrainConfig, its data splits) from a checkpoint written by rdnas train."""
    from rdnas.train import TrainConfig, load_checkpoint, load_data

    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    config.device = device
    data = load_data(config)
    supernet = config.build_supernet(data)
    supernet.load_state_dict(state["model"])
    return supernet.to(device), config, data


def run_search(args) -> int:
    import torch

    from rdnas.rank import GroundTruth, recalibrated_accuracy_fn
    from rdnas.search import evolution_search, random_search

    out = _json_output(args.out)
    supernet, config, data = _load_supernet(args.checkpoint, args.device)
    space = supernet.space
    fitness = recalibrated_accuracy_fn(supernet, data, args.device, calibration_batch_size=config.batch_size,
                                       seed=args.seed, subnets_per_pass=args.subnets_per_pass)

    if args.strategy == "random":
        history = random_search(fitness, args.budget, seed=args.seed, batch=args.subnets_per_pass, space=space)
    else:
        history = evolution_search(fitness, args.budget, seed=args.seed, population=args.population,
                                   batch=args.subnets_per_pass, space=space)
    table = GroundTruth.load(args.gt, space) if args.gt else None
    top = history.top(args.top_k)
    print(f"rdnas search: {args.strategy}, {len(history.archs)} cells evaluated by supernet accuracy on "
          f"{len(data.valid)} {data.valid.name} images; top {len(top)}:")
    rows = []
    for rank, (arch, score) in enumerate(top, start=1):
        row = {"rank": rank, "arch": space.to_string(arch), "supernet_accuracy": score}
        truth = ""
        if table is not None and table.rows_of(torch.tensor([arch]))[0] >= 0:
            row["ground_truth"] = float(table.values(torch.tensor([arch]), args.column)[0])
            truth = f"  {args.column} {row['ground_truth']:.2f}"
        rows.append(row)
        print(f"  {rank:2d}. {row['arch']}  supernet {100 * score:.2f} %{truth}")
    if table is not None and args.column in table.columns:
        best = float(table.column(args.column).max())
        found = [r["ground_truth"] for r in rows if "ground_truth" in r]
        if found:
            print(f"  best ground truth among the top {len(top)}: {max(found):.2f} (best in the table: {best:.2f})")
    if out:
        _write_json(out, {"strategy": args.strategy, "budget": args.budget, "evaluated": len(history.archs),
                          "top": rows})
    return 0


def run_eval(args) -> int:
    import torch

    from rdnas.data import DeviceBatches
    from rdnas.rank import GroundTruth, rank_report, supernet_accuracy

    out = _json_output(args.out)
    supernet, config, data = _load_supernet(args.checkpoint, args.device)
    space = supernet.space
    generator = torch.Generator().manual_seed(args.seed)
    table = GroundTruth.load(args.gt, space) if args.gt else None
    submission = _read_submission_archs(args.archs_json, space) if args.archs_json else None
    if submission is not None:
        archs = space.validate([arch for _, arch in submission])
    else:
        pool = table.archs if table is not None else space.enumerate() if space.enumerable else None
        archs = (pool[torch.randperm(len(pool), generator=generator)[:args.archs]] if pool is not None
                 else space.sample(args.archs, generator))
    valid = data.valid if not args.valid_limit else data.valid.subset(range(min(args.valid_limit, len(data.valid))))
    valid_batches = DeviceBatches(valid, args.batch_size, args.device, data.mean, data.std, shuffle=False)
    calibration = DeviceBatches(data.train, args.batch_size, args.device, data.mean, data.std, augment=False,
                                generator=torch.Generator().manual_seed(args.seed))
    accuracy = supernet_accuracy(supernet, archs, valid_batches, bn=args.bn, calibration_batches=calibration,
                                 calibration_steps=args.calibration_steps, subnets_per_pass=args.subnets_per_pass,
                                 progress=not args.quiet)
    result = {"checkpoint": str(args.checkpoint), "bn": args.bn, "num_archs": len(archs),
              "valid_images": len(valid), "archs": [space.to_string(a) for a in archs],
              "supernet_accuracy": accuracy.tolist()}
    print(f"rdnas eval: {len(archs)} architectures, supernet accuracy on {len(valid)} {valid.name} images "
          f"(BN: {args.bn}): mean {accuracy.mean():.4f}, best {accuracy.max():.4f}")
    status = 0
    if table is not None:
        truth = table.values(archs, args.column)
        result["ground_truth"] = truth.tolist()
        try:
            report = rank_report(accuracy.numpy(), truth, column=args.column, bootstrap_samples=200)
        except ValueError as error:  # e.g. every architecture got the same supernet accuracy
            report, status = None, 3
            result["rank_report_error"] = str(error)
            print(f"  no rank consistency against {args.column}: {error}")
    if table is not None and report is not None:
        result["rank_report"] = report
        low, high = report["kendall_tau_ci95"]
        print(f"  against {args.column} of {args.gt} ({report['num_archs']} architectures): Kendall tau "
              f"{report['kendall_tau']:.4f} (95% CI {low:.3f}..{high:.3f}), Spearman {report['spearman_rho']:.4f}, "
              f"Pearson {report['pearson_r']:.4f}, P@top-10% {report['precision_at_top_10pct']:.3f}")
    if out:
        if submission is not None:  # the competition's format: its keys, the estimate in "acc"
            result = {key: {"acc": float(value), "arch": space.to_string(arch)}
                      for (key, _), arch, value in zip(submission, archs, accuracy.tolist())}
        _write_json(out, result)
        print(f"  results written to {out}")
    return status


def _read_submission_archs(path, space) -> list[tuple[str, str]]:
    """(key, architecture string) pairs of a competition JSON file (``{"arch1": {"acc": ..., "arch": "..."}}``,
    the CVPR 2022 NAS Track 1 format), in the file's order."""
    import json
    from pathlib import Path

    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--archs-json: cannot read {path} as JSON ({error})") from None
    if not isinstance(entries, dict) or not entries or not all(
            isinstance(v, dict) and isinstance(v.get("arch"), str) for v in entries.values()):
        raise ValueError(f"--archs-json: {path} must be an object of entries {{\"arch\": <code>, \"acc\": ...}} "
                         "(the CVPR 2022 NAS Track 1 format)")
    return [(key, value["arch"]) for key, value in entries.items()]


def run_proxies(args) -> int:
    import numpy as np

    from rdnas.data import DatasetError
    from rdnas.proxies import PROXIES, load_minibatch, score_space

    if args.list:
        width = max(map(len, PROXIES))
        for name, proxy in PROXIES.items():
            kind = ("uses images" if proxy.needs_data else "no images") + (", batched" if proxy.batched else "")
            print(f"{name:<{width}}  {proxy.summary} [{kind}]")
        return 0
    if not args.proxy:
        args.usage_error("--proxy is required (or --list)")
    if not args.out:
        args.usage_error("--out is required")
    if args.space == "nb201":
        options = {"channels": args.channels, "cells_per_stage": args.cells}
    else:
        options = {name: value for name, value in (("resnet_stem", args.resnet_stem),
                                                   ("width_divisor", args.width_divisor)) if value is not None}
    try:
        archs = None
        if args.archs_file and args.archs_file.endswith(".json"):
            archs = [code for _, code in _read_submission_archs(args.archs_file, args.space)]
        elif args.archs_file:
            with open(args.archs_file) as handle:
                archs = [line.strip() for line in handle if line.strip()]
        minibatch = load_minibatch(args.data, args.batch_size, args.seed, args.batch_index, args.image_size)
        table = score_space(args.proxy, minibatch, space=args.space, archs=archs, gt=args.gt, limit=args.limit,
                            out=args.out, shard=args.shard, archs_per_chunk=args.archs_per_chunk, init=args.init,
                            seed=args.seed, device=args.device, progress=not args.quiet, **options)
    except (ValueError, OSError, DatasetError) as error:
        print(f"rdnas proxies: error: {error}", file=sys.stderr)
        return 1
    info = table.info
    shard = "" if info["shard"] == (0, 1) else f" (shard {info['shard'][0]}/{info['shard'][1]})"
    print(f"rdnas proxies: {len(table)} rows in {info['path']}{shard}: {info['written']} scored now in "
          f"{info['seconds']:.1f} s, {info['already_present']} already there")
    if args.space == "nb201":
        supernet = f"supernet C={args.channels}, N={args.cells}"
        index = "official NB201 (" + args.gt + ")" if args.gt else "rdnas enumeration order"
    else:
        supernet, index = f"{args.space} supernet {options}", f"position in {args.archs_file}"
    print(f"  data: {minibatch.source}, inputs {list(minibatch.inputs.shape)}; {supernet}, init {args.init}, "
          f"seed {args.seed}; index: {index}")
    for name in table.names:
        values = table.column(name)
        finite = values[np.isfinite(values)]
        spread = (f"min {finite.min():.6g}, median {np.median(finite):.6g}, max {finite.max():.6g}"
                  if len(finite) else "")
        print(f"  {name:<12} {len(finite)} finite of {len(values)}  {spread}")
    return 0


def run_merge_tables(args) -> int:
    from rdnas.proxies import merge_tables

    try:
        table = merge_tables(args.tables, args.out, expect_complete=args.complete)
    except (ValueError, FileNotFoundError) as error:
        print(f"rdnas merge-tables: error: {error}", file=sys.stderr)
        return 1
    print(f"rdnas merge-tables: {len(table)} rows from {len(args.tables)} tables written to {args.out} "
          f"(columns: {', '.join(table.names)})")
    return 0


def run_bench(args) -> int:
    import json
    from pathlib import Path

    import torch

    from rdnas.minibench import benchmark_table, build, read_all_runs, reliability, sample_architectures, write_table
    from rdnas.spaces import get_space

    if args.archs < 3 or args.seeds < 1:
        args.usage_error("--archs must be at least 3 and --seeds at least 1")
    recipe = Recipe(dataset=args.dataset, image_size=args.image_size, channels=args.channels,
                    cells_per_stage=args.cells_per_stage, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    train_images=args.train_images, networks_per_stack=args.networks_per_stack, space=args.space,
                    resnet_stem=args.resnet_stem, width_divisor=args.width_divisor, valid_images=args.valid_images)
    space = get_space(args.space)
    archs = sample_architectures(args.archs, seed=args.sample_seed, space=space)
    seeds = list(range(args.seeds))
    if args.shard == "env":
        args.usage_error("--shard env is for rdnas proxies; give i/n")
    build(args.out, archs, seeds, recipe, device=args.device, progress=not args.quiet, shard=args.shard)
    runs = read_all_runs(args.out)  # the other shards' runs too
    wanted = {space.to_string(torch.as_tensor(a)) for a in archs}
    runs = [r for r in runs if r["arch_str"] in wanted and r["seed"] in seeds]
    table_path = Path(args.table or Path(args.out) / f"{args.space}_{args.dataset}.csv")
    write_table(table_path, benchmark_table(runs, seeds), args.dataset)
    print(f"rdnas bench build: {len(archs)} architectures x {len(seeds)} seeds -> {table_path}")
    if len(seeds) >= 2:
        half = len(seeds) // 2
        try:
            result = reliability(runs, seeds[:half], seeds[half:2 * half])
        except ValueError as error:  # another shard has not finished its runs yet
            print(f"  reliability: not yet ({error})")
            return 0
        (Path(args.out) / "reliability.json").write_text(json.dumps(result, indent=2))
        print(f"  reliability, seeds {seeds[:half]} against {seeds[half:2 * half]} ({result['architectures']} "
              f"architectures): Kendall tau {result['kendall_tau_valid_acc']:.3f} on validation accuracy, "
              f"{result['kendall_tau_valid_loss']:.3f} on validation loss")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: the message names what was expected
        print(f"rdnas {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "demo":
        from rdnas.demo import main as demo_main

        return demo_main(args)
    if args.command == "train":
        return run_train(args)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "proxies":
        return run_proxies(args)
    if args.command == "merge-tables":
        return run_merge_tables(args)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "arch":
        return run_arch(args)
    if args.command == "search":
        return run_search(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())

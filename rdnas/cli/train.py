"""rdnas train: train a one-shot supernet."""

from rdnas.cli.arguments import (add_network_options, check_image_size, device, input_file, int_at_least, momentum,
                                 network_options, non_negative_float, non_negative_int, positive_float, positive_int)
from rdnas.spaces import space_names
from rdnas.train.trainer import BN_STATISTICS, MARGIN_MODES, METHODS, PARALLEL_MODES, RANK_SAMPLERS, RANK_SCHEDULES


def add_parser(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a one-shot supernet (checkpoints every epoch; --resume continues a run)",
        description="Train a weight-sharing supernet. Writes OUT/checkpoint.pt (atomically, every epoch), "
        "OUT/metrics.jsonl and OUT/config.json. Example: rdnas train --data digits --epochs 10 --out runs/spos. "
        "Under torchrun (torchrun --nproc_per_node P -m rdnas train ...) the P processes train one supernet, split "
        "by the step's subnets or by rows of every batch (--parallel); only rank 0 writes.",
    )
    train.add_argument("--space", choices=list(space_names()), default="nb201", help="search space (default nb201)")
    train.add_argument("--method", choices=list(METHODS), default="spos",
                       help="spos (uniform paths, default), rdnas (ranking distillation; nb201 needs --teacher-table), "
                       "fairnas (nb201), sandwich")
    train.add_argument("--teacher-table", type=input_file, default="",
                       help="rdnas on nb201: a score table over the whole space "
                       "(rdnas proxies --out, with or without --gt; rows are matched by architecture)")
    train.add_argument("--teacher", default=None, help="rdnas: teacher column(s) of the table, rank-averaged "
                       "(nb201, default synflow); resnet48: a cost of its cost model (default flops)")
    train.add_argument("--teacher-samples", type=int_at_least(2), default=10000,
                       help="rdnas on non-enumerable spaces (resnet48): size of the teacher's seeded reference set "
                       "(default 10000)")
    train.add_argument("--min-hamming", type=positive_int, default=33,
                       help="rdnas with --sampler min_hamming: least differing choices per pair (default 33)")
    train.add_argument("--distill", action="store_true", help="in-place distillation from the largest subnet "
                       "(sandwich rule: --method sandwich, or --method rdnas --sampler sandwich)")
    train.add_argument("--groups", type=int_at_least(2), default=5, help="rdnas: G teacher groups (default 5)")
    train.add_argument("--margin", type=non_negative_float, default=0.1,
                       help="rdnas: m0, margin per group distance (default 0.1)")
    train.add_argument("--margin-mode", choices=list(MARGIN_MODES), default="group")
    train.add_argument("--sampler", choices=list(RANK_SAMPLERS), default="margin", help="rdnas: pair sampler")
    train.add_argument("--rank-schedule", choices=list(RANK_SCHEDULES), default="constant",
                       help="rdnas: lambda(epoch)")
    train.add_argument("--rank-weight", type=non_negative_float, default=1.0,
                       help="rdnas: multiplies lambda(epoch) (default 1)")
    train.add_argument("--data", default="digits",
                       help="digits (scikit-learn's, no download), fashion_mnist[:<dir>] (Debian's "
                       "dataset-fashion-mnist by default), cifar10:<dir>, cifar100:<dir>, imagenet16:<dir> or "
                       "imagenet:<dir> (<dir>/train and <dir>/val, one folder per class)")
    train.add_argument("--image-size", type=positive_int, default=16,
                       help="digits: resize the 8x8 images (default 16); imagenet: the crop side (use 224)")
    train.add_argument("--epochs", type=positive_int, default=10)
    train.add_argument("--batch-size", type=positive_int, default=64)
    train.add_argument("--lr", type=positive_float, default=0.025)
    train.add_argument("--momentum", type=momentum, default=0.9)
    train.add_argument("--weight-decay", type=non_negative_float, default=5e-4)
    train.add_argument("--paths", type=positive_int, default=1, help="K paths per step, losses summed (default 1)")
    add_network_options(train, data_defaults=True)  # the options of each space's network (its NetworkOptions)
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--device", type=device, default="cpu",
                       help="cpu (default) or cuda; under torchrun, cuda gives each rank cuda:LOCAL_RANK (NCCL), cpu "
                       "uses gloo")
    train.add_argument("--bn-statistics", choices=list(BN_STATISTICS), default="global",
                       help="under torchrun: batch norm's training statistics over the global batch (global, "
                       "default: a single process's result) or each rank's share (per_rank: faster, not equal)")
    train.add_argument("--parallel", choices=list(PARALLEL_MODES), default="auto",
                       help="under torchrun: subnets (each rank runs its share of the step's K subnets on the whole "
                       "batch; needs P to divide K, or K to divide P), batch (each rank runs every subnet on "
                       "batch-size / P rows) or auto (default: subnets where P divides K, batch otherwise)")
    train.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    train.add_argument("--out", default="runs/spos", help="output folder (default runs/spos)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from rdnas import distributed, run_folder
    from rdnas.spaces import get_space
    from rdnas.train import OneShotTrainer, TrainConfig, make_teacher

    space_options = network_options(args, args.space, data=args.data)
    teacher_proxies = args.teacher or ("synflow" if get_space(args.space).enumerable else "flops")
    _check_inputs(args, space_options, teacher_proxies)  # before any work
    world, _ = distributed.init(args.device)
    config = TrainConfig(
        space=args.space, distill=args.distill, teacher_samples=args.teacher_samples, min_hamming=args.min_hamming,
        data=args.data, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, paths_per_step=args.paths,
        space_options=space_options, teacher_proxies=teacher_proxies, seed=args.seed, device=args.device,
        amp=not args.no_amp, out_dir=args.out, method=args.method, teacher_table=args.teacher_table,
        groups=args.groups, margin=args.margin, margin_mode=args.margin_mode,
        sampler=args.sampler, rank_schedule=args.rank_schedule, rank_weight=args.rank_weight,
        bn_statistics=args.bn_statistics, parallel=args.parallel)
    try:
        config.check()
    except ValueError as error:
        raise ValueError(_in_option_words(str(error), args)) from None
    try:
        teacher = make_teacher(config) if config.method == "rdnas" else None  # before the folder is claimed
    except ValueError as error:
        raise ValueError(f"--teacher-table: {error}" if config.teacher_table else str(error)) from None
    try:  # data, supernet, sampler: built (and refused, e.g. a batch larger than the data) before any write
        trainer = OneShotTrainer(config, progress=not args.quiet, teacher=teacher)
    except ValueError as error:
        raise ValueError(_in_option_words(str(error), args)) from None
    run_folder.claim_folder(args.out, "train", world)  # one writer per run folder: a second is refused
    history = trainer.fit(resume=args.resume)
    last = history[-1] if history else {}
    if not world.is_main:
        return 0
    print(f"rdnas train: {len(history)} epochs in {args.out} (last: loss {last.get('train_loss', float('nan')):.4f}, "
          f"accuracy {last.get('train_acc', float('nan')):.3f})")
    return 0


# TrainConfig fields set by an option of another name; the other fields are set by --<field-with-dashes>, the
# network options by the flags add_network_options derived (args.network_option_flags)
FIELD_OPTIONS = {"paths_per_step": "--paths", "teacher_proxies": "--teacher"}


def _in_option_words(message: str, args) -> str:
    """A TrainConfig message in the command's words: the fields it names become the options that set them
    ("method 'rdnas' needs paths_per_step >= 2" -> "--method 'rdnas' needs --paths >= 2")."""
    import re

    names = {name: "--" + name.replace("_", "-") for name in vars(args)
             if "_" in name or name in ("method", "sampler", "distill", "groups", "margin", "epochs")}
    names.update(FIELD_OPTIONS)
    names.update(args.network_option_flags)
    pattern = r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b"
    text = message.removeprefix("rdnas.train.TrainConfig: ")
    return re.sub(pattern, lambda match: names[match.group(1)], text)


def _check_inputs(args, options: dict, teacher_proxies: str) -> None:
    """Refuses, naming the option, what only the space or a file can tell is wrong: an image side the space's
    network cannot take, more teacher groups than architectures, a teacher table without the teacher's columns."""
    import csv
    import os

    from rdnas.spaces import get_space

    space = get_space(args.space)
    if args.data.partition(":")[0] in ("digits", "imagenet"):
        check_image_size(args.space, args.image_size, options)
    if args.method != "rdnas":
        return
    if args.sampler == "min_hamming" and args.min_hamming > space.width:
        raise ValueError(f"--min-hamming: {args.min_hamming} differing choices, but a {space.name} architecture has "
                         f"{space.width} (use 1..{space.width})")
    if space.enumerable:
        if args.groups > space.size:
            raise ValueError(f"--groups: {args.groups} teacher groups, but the {space.name} space has only "
                             f"{space.size} architectures")
    elif args.groups > args.teacher_samples:
        raise ValueError(f"--groups: {args.groups} teacher groups, but --teacher-samples draws only "
                         f"{args.teacher_samples} architectures to split into them")
    if space.enumerable and args.teacher_table:
        if not os.path.isfile(args.teacher_table):
            raise ValueError(f"--teacher-table: no such file: {args.teacher_table}")
        with open(args.teacher_table, newline="") as handle:
            header = next(csv.reader(handle), [])
        names = [name.strip() for name in teacher_proxies.split(",") if name.strip()]
        missing = [name for name in names if name not in header]
        if missing:
            scores = [name for name in header if name not in ("index", "arch", "arch_str")]
            raise ValueError(f"--teacher: {args.teacher_table} (--teacher-table) has no column "
                             f"{', '.join(map(repr, missing))}; its score columns: {', '.join(scores) or 'none'}")


"""rdnas dass: DaSS's KD machinery: train a task's teacher, build the KD mini-benchmark."""

from rdnas.cli.arguments import input_file, non_negative_int, positive_float, positive_int, shard

DEFAULT_OPTIONS = {"resnet_stem": "small"}
"""Network options a teacher gets unless told otherwise, where its space takes them (CPU-sized inputs)."""


def add_parser(commands) -> None:
    from rdnas.spaces import space_names

    dass = commands.add_parser("dass", help="DaSS: KD teachers and the KD mini-benchmark (distillation-aware NAS)")
    sub = dass.add_subparsers(dest="dass_command", required=True, metavar="<dass command>")

    teacher = sub.add_parser(
        "teacher", help="train a task's teacher (the space's largest network) and save it",
        description="Trains the largest network of the space on a task (a dataset spec, a class subset, a seeded "
        "train / validation split) with cross-entropy, label smoothing 0.1, SGD Nesterov and a cosine schedule, and "
        "saves it atomically with its validation accuracy and recipe. The task comes from --data and the split "
        "options, or from a tasks file (--tasks FILE --task NAME, whose teacher recipe is then used). Example: "
        "rdnas dass teacher --space resnet48 --data digits --classes 0,1,2,3,4 --train 600 --valid 300 "
        "--width-divisor 8 --epochs 10 --seed 0 --out t.pt")
    teacher.add_argument("--space", choices=list(space_names()), default="resnet48", help="search space (default resnet48)")
    teacher.add_argument("--data", metavar="SPEC",
                         help="dataset spec: fashion_mnist[:DIR], digits, glyphs or folder:DIR (an image folder "
                         "DIR/<class>/<images>)")
    teacher.add_argument("--classes", metavar="LIST",
                         help="comma-separated classes: labels 0..9 (fashion_mnist, digits; default all ten), "
                         "characters (glyphs; required), class-folder names (folder; default all)")
    teacher.add_argument("--image-size", type=positive_int, default=16, help="image side (default 16)")
    teacher.add_argument("--train", type=positive_int, default=2000, help="training images (default 2000)")
    teacher.add_argument("--valid", type=positive_int, default=1000, help="validation images (default 1000)")
    teacher.add_argument("--split-seed", type=non_negative_int, default=0, help="seed of the split (default 0)")
    teacher.add_argument("--channels", type=int, choices=(1, 3), help="image channels (default: the source's)")
    teacher.add_argument("--width-divisor", type=positive_int, help="network option width_divisor")
    teacher.add_argument("--network-option", action="append", default=[], metavar="NAME=VALUE",
                         help="another network option of the space (repeatable), e.g. resnet_stem=small (the default)")
    teacher.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    teacher.add_argument("--seed", type=non_negative_int, default=0, help="initial weights and data order (default 0)")
    teacher.add_argument("--lr", type=positive_float, default=0.05, help="learning rate (default 0.05)")
    teacher.add_argument("--tasks", type=input_file, metavar="FILE", help="a tasks.json; with --task, train that task's teacher")
    teacher.add_argument("--task", metavar="NAME", help="the task of --tasks")
    teacher.add_argument("--out", required=True, help="the teacher file to write")
    teacher.set_defaults(usage_error=teacher.error)

    bench = sub.add_parser(
        "bench", help="build the KD mini-benchmark: students of every task trained with and without KD",
        description="For every task of a tasks file: trains its teacher (OUT/teachers/<task>.pt, unless there), then "
        "each student of a seeded sample with S seeds per regime (kd: remapped from the teacher, KD loss against "
        "the teacher's cached logits; ce: fresh, cross-entropy; remap-ce: remapped, cross-entropy), appending every "
        "finished run to OUT/runs.csv (rerun the same command to resume: a finished run is never trained again); "
        "then writes OUT/kdbench.csv (task, split, teacher, arch_str, <regime>_valid_acc, ...) and "
        "OUT/embeddings.pt (last-stage maps of a fixed N(0, 1) probe through teacher, remapped and fresh students). "
        "Run with OMP_NUM_THREADS=1, one process per core with --shard i/n. Example: rdnas dass bench --tasks "
        "tasks.json --archs 48 --seeds 2 --out kdbench")
    bench.add_argument("--tasks", required=True, type=input_file, metavar="FILE", help="the tasks.json")
    bench.add_argument("--archs", type=positive_int, default=48, help="students per task (default 48)")
    bench.add_argument("--archs-file", type=input_file, metavar="FILE",
                       help="these students instead of a sample: one architecture string per line")
    bench.add_argument("--sample-seed", type=non_negative_int, default=0, help="seed of the student sample (default 0)")
    bench.add_argument("--seeds", type=positive_int, default=2, help="training seeds per student (default 2)")
    bench.add_argument("--regimes", default="kd,ce", help="comma-separated: kd, ce, remap-ce (default kd,ce)")
    bench.add_argument("--shard", type=shard, default=None, metavar="i/n",
                       help="train only every n-th run from the i-th (n processes side by side; each writes "
                       "OUT/runs.<i>of<n>.csv; with --teachers-only, every n-th task's teacher)")
    bench.add_argument("--teachers-only", action="store_true",
                       help="train the teachers (of this shard's tasks) and stop: run the shards' teachers first so "
                       "that no teacher is trained twice")
    bench.add_argument("--max-runs", type=positive_int, help="stop after this many new runs (rerun to continue)")
    bench.add_argument("--out", required=True, help="the build folder")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(usage_error=bench.error)


def run(args) -> int:
    if args.dass_command == "teacher":
        return _teacher(args)
    if args.dass_command == "bench":
        return _bench(args)
    raise AssertionError(f"unhandled dass command {args.dass_command}")


def _network_options(args, space) -> dict:
    from rdnas.supernet import supernet_spec

    names = supernet_spec(space).options
    options = {name: value for name, value in DEFAULT_OPTIONS.items() if name in names}
    for item in args.network_option:
        name, equals, value = item.partition("=")
        if not equals or name not in names:
            args.usage_error(f"--network-option: expected NAME=VALUE with NAME one of {', '.join(names)}, got {item!r}")
        options[name] = int(value) if value.lstrip("-").isdigit() else {"true": True, "false": False}.get(value, value)
    if args.width_divisor is not None:
        if "width_divisor" not in names:
            args.usage_error(f"--width-divisor: the {space} network has no width_divisor option")
        options["width_divisor"] = args.width_divisor
    return options


def _teacher(args) -> int:
    from rdnas.atomic_file import prepare_output_file
    from rdnas.kd.tasks import TaskSpec, read_tasks
    from rdnas.kd.teacher import save_teacher, train_teacher

    if (args.tasks is None) != (args.task is None):
        args.usage_error("--tasks and --task go together")
    if args.tasks and args.data:
        args.usage_error("give either --data (and the split options) or --tasks FILE --task NAME")
    if not args.tasks and not args.data:
        args.usage_error("--data SPEC is required (or --tasks FILE --task NAME)")
    prepare_output_file(args.out, "--out")
    if args.tasks:
        tasks = read_tasks(args.tasks)
        if tasks.space != args.space:
            args.usage_error(f"--tasks {args.tasks} is of the {tasks.space} space, --space is {args.space}")
        try:
            task = tasks.task(args.task)
        except ValueError as error:
            args.usage_error(f"--task: {error}")
    else:
        from rdnas.kd.data import parse_dataset

        try:
            kind, _ = parse_dataset(args.data)
        except ValueError as error:
            args.usage_error(f"--data: {error}")
        if args.classes is None:
            if kind == "glyphs":
                args.usage_error("--classes: a glyphs task needs its characters, e.g. --classes A,B,C,D,E")
            classes = list(range(10)) if kind in ("fashion_mnist", "digits") else []
        else:
            classes = [c.strip() for c in args.classes.split(",") if c.strip()]
            if kind in ("fashion_mnist", "digits"):
                if not all(c.isdigit() for c in classes):
                    args.usage_error(f"--classes: a {kind} task lists labels 0..9, got {args.classes!r}")
                classes = [int(c) for c in classes]
        values = {"name": "task", "dataset": args.data, "classes": classes, "image_size": args.image_size,
                  "train": args.train, "valid": args.valid, "seed": args.split_seed, "split": "meta-test",
                  **({"channels": args.channels} if args.channels else {}),
                  "teacher": {"options": _network_options(args, args.space), "epochs": args.epochs,
                              "seed": args.seed, "lr": args.lr}}
        try:
            task = TaskSpec.from_dict(values, "rdnas dass teacher", args.space)
        except ValueError as error:
            args.usage_error(str(error).replace("rdnas dass teacher.teacher.", "--").replace("rdnas dass teacher.", "--"))
    teacher = train_teacher(task, args.space)
    save_teacher(teacher, args.out)
    print(f"rdnas dass teacher: {args.space} largest network, {task.teacher.options}, on {task.dataset} "
          f"({len(teacher.task['classes']) or 'all'} classes, {task.train} + {task.valid} images at {task.image_size} px): "
          f"validation accuracy {teacher.valid_acc:.2f} % -> {args.out}")
    return 0


def _bench(args) -> int:
    from pathlib import Path

    from rdnas import distributed
    from rdnas.cli.arguments import read_archs_file
    from rdnas.kd import bench
    from rdnas.kd.tasks import read_tasks
    from rdnas.minibench.build import sample_architectures

    try:
        regimes = bench.check_regimes(r.strip() for r in args.regimes.split(","))
    except ValueError as error:
        args.usage_error(f"--regimes: {error}")
    tasks = read_tasks(args.tasks)
    shard = (0, 1) if args.shard is None else distributed.parse_shard(args.shard, "--shard")
    if args.teachers_only:
        teachers = bench.train_teachers(args.out, tasks, shard, progress=not args.quiet)
        print(f"rdnas dass bench: {len(teachers)} teachers in {Path(args.out) / 'teachers'}")
        return 0
    if args.archs_file:
        try:
            archs = read_archs_file(args.archs_file, tasks.space)
        except ValueError as error:
            args.usage_error(str(error))
    else:
        archs = sample_architectures(args.archs, seed=args.sample_seed, space=tasks.space)
    seeds = list(range(args.seeds))
    runs = bench.build(args.out, tasks, archs, seeds, regimes, shard, progress=not args.quiet,
                       max_runs=args.max_runs)
    rows = bench.kd_table(runs, tasks, seeds, regimes)
    table = Path(args.out) / "kdbench.csv"
    bench.write_kd_table(table, rows, regimes)
    embeddings = bench.write_embeddings(args.out, tasks, archs)
    expected = len(tasks.tasks) * len(archs)
    print(f"rdnas dass bench: {len(rows)} of {expected} (task, student) rows complete -> {table}; embeddings -> "
          f"{embeddings}")
    return 0

"""rdnas dass: DaSS's KD machinery: train a task's teacher, build the KD mini-benchmark."""

from rdnas.cli.arguments import (add_network_options, check_image_size, input_file, non_negative_int, positive_float,
                                 positive_int, shard)

DEFAULT_OPTIONS = {"resnet_stem": "small"}
"""Network options a teacher gets unless told otherwise, where its space takes them (CPU-sized inputs)."""


def _add_students(parser, default: int, seed_option: str, what: str, seed_help: str = "the student sample") -> None:
    """The student options of bench / rank / search: a seeded sample of ``--archs`` students or ``--archs-file``."""
    parser.add_argument("--archs", type=positive_int, default=default, help=f"{what} (default {default})")
    parser.add_argument(seed_option, type=non_negative_int, default=0, help=f"seed of {seed_help} (default 0)")
    parser.add_argument("--archs-file", type=input_file, metavar="FILE",
                        help="these students instead of a sample: one architecture string per line")


def _students(args, space, seed: int) -> list:
    """The students the options of :func:`_add_students` name (a usage error names a bad --archs-file)."""
    from rdnas.cli.arguments import read_archs_file
    from rdnas.minibench.build import sample_architectures

    if args.archs_file:
        try:
            return read_archs_file(args.archs_file, space)
        except ValueError as error:
            args.usage_error(str(error))
    return sample_architectures(args.archs, seed=seed, space=space)


def _add_model_and_teacher(parser) -> None:
    """The inputs of rank / search: a DaSS model and the new task's teacher (which brings the task's data)."""
    parser.add_argument("--model", required=True, type=input_file, help="a model file of rdnas dass fit")
    parser.add_argument("--teacher", required=True, type=input_file,
                        help="a teacher file of rdnas dass teacher (it records its task: data spec, classes, split)")
    parser.add_argument("--no-adapt", action="store_true", help="skip the teacher-guided step")


def _add_bench_folder(parser) -> None:
    """--bench, the KD benchmark folder of fit and evaluate."""
    parser.add_argument("--bench", required=True,
                        help="a folder written by rdnas dass bench, or 'shipped': the benchmark shipped with rdnas")


def add_meta_training_options(parser) -> None:
    """The meta-training options of rdnas.predictors.dass.fit (--episodes, --query, --eval-every, --width), shared
    by ``rdnas dass fit``, ``rdnas dass evaluate`` and benchmarks/dass_experiment.py."""
    parser.add_argument("--episodes", type=positive_int, default=1000, help="meta-training episodes (default 1000)")
    parser.add_argument("--query", type=positive_int, default=50, help="query students per episode (default 50)")
    parser.add_argument("--eval-every", type=positive_int, default=50, help="meta-valid check interval (default 50)")
    parser.add_argument("--width", type=positive_int, default=256, help="encoder features (default 256, DaSS's)")


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
    teacher.add_argument("--space", choices=list(space_names()), default="resnet48",
                         help="search space (default resnet48)")
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
    # the options of each space's network, derived from its NetworkOptions (--width-divisor, --resnet-stem, ...);
    # "channels" is this command's image channels, so a network option of that name has no flag here
    add_network_options(teacher, skip=("channels",), defaults=DEFAULT_OPTIONS)
    teacher.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    teacher.add_argument("--seed", type=non_negative_int, default=0, help="initial weights and data order (default 0)")
    teacher.add_argument("--lr", type=positive_float, default=0.05, help="learning rate (default 0.05)")
    teacher.add_argument("--tasks", type=input_file, metavar="FILE",
                         help="a tasks.json; with --task, train that task's teacher")
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
        "OUT/embeddings.pt (last-stage maps of a fixed N(0, 1) probe through teacher, remapped and randomly "
        "initialised students). "
        "Run with OMP_NUM_THREADS=1, one process per core with --shard i/n, or under torchrun (each rank trains "
        "every n-th teacher, then every n-th run; rank 0 writes the table). --ship writes the finished build as "
        "package data. Example: rdnas dass bench --tasks tasks.json --archs 48 --seeds 2 --out kdbench")
    bench.add_argument("--tasks", required=True, type=input_file, metavar="FILE", help="the tasks.json")
    _add_students(bench, 48, "--sample-seed", "students per task")
    bench.add_argument("--seeds", type=positive_int, default=2, help="training seeds per student (default 2)")
    bench.add_argument("--train-seeds", type=positive_int, metavar="T",
                       help="seeds per student on the meta-train and meta-valid tasks: the first T of --seeds "
                       "(default: all; the meta-test tasks always get --seeds, for their seed ceiling)")
    bench.add_argument("--regimes", default="kd,ce", help="comma-separated: kd, ce, remap-ce (default kd,ce)")
    bench.add_argument("--shard", type=shard, default=None, metavar="i/n",
                       help="train only every n-th run from the i-th (n processes side by side; each writes "
                       "OUT/runs.<i>of<n>.csv; with --teachers-only, every n-th task's teacher). Under torchrun "
                       "the ranks shard themselves (RANK/WORLD_SIZE): leave it out")
    bench.add_argument("--teachers-only", action="store_true",
                       help="train the teachers (of this shard's tasks) and stop: run the shards' teachers first so "
                       "that no teacher is trained twice")
    bench.add_argument("--max-runs", type=positive_int, help="stop after this many new runs (rerun to continue)")
    bench.add_argument("--ship", nargs="?", const="", metavar="DIR",
                       help="once the build is finished, write its package data (kdbench.csv, embeddings.pt, "
                       "runs.csv, bench.json, recipe.json; < 20 MiB) into DIR (default: the package's "
                       "rdnas/kd/shipped/, which rdnas.kd.bench.load_shipped reads); an unfinished build is refused")
    bench.add_argument("--out", required=True, help="the build folder")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(usage_error=bench.error)

    fit = sub.add_parser(
        "fit", help="meta-train the DaSS predictor on a KD benchmark's meta-train tasks",
        description="Meta-trains DaSS (S/T/A inputs, Meta-SGD teacher-guided step) on the meta-train tasks of a KD "
        "benchmark folder, one task per episode, keeping the episode with the best mean Spearman on its meta-valid "
        "tasks, and saves the model atomically. Resumable: every --checkpoint-every episodes and at the end the "
        "meta-training state is saved atomically in --checkpoint (default OUT.partial), and rerunning the same "
        "command continues from it, ending with the model an uninterrupted run writes (a checkpoint of other "
        "settings is refused, naming the option); it is removed once the model is written. Example: rdnas dass fit "
        "--bench kdbench --seed 0 --out dass.pt")
    _add_bench_folder(fit)
    fit.add_argument("--seed", type=non_negative_int, default=0, help="initialisation and episodes (default 0)")
    add_meta_training_options(fit)
    fit.add_argument("--label", choices=("kd", "ce", "remap-ce"), default="kd",
                     help="the regime whose accuracy is learned (default kd; ce: the no-KD baseline)")
    fit.add_argument("--no-adapt", action="store_true", help="ablation: no teacher-guided step")
    fit.add_argument("--embedding", choices=("remap", "random"), default="remap",
                     help="student maps of the remapped (default) or of randomly initialised students (ablation: "
                     "the students sliced from a freshly initialised supernet instead of the teacher)")
    fit.add_argument("--without", default="", metavar="LIST", help="ablation: inputs left out, some of s,t,a")
    fit.add_argument("--out", required=True, help="the model file to write")
    fit.add_argument("--checkpoint", metavar="CHECKPOINT",
                     help="the resumable meta-training state (default OUT.partial): rerun the same command to "
                     "continue a stopped fit from it")
    fit.add_argument("--checkpoint-every", type=positive_int, default=50,
                     help="episodes between checkpoints (default 50)")
    fit.add_argument("--max-episodes", type=positive_int,
                     help="stop after this many new episodes, checkpointed (rerun to continue)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(usage_error=fit.error)

    rank = sub.add_parser(
        "rank", help="rank students of a new task (a teacher trained by rdnas dass teacher) with a DaSS model",
        description="Adapts the model to the teacher (one step on the teacher's own embedding and accuracy), "
        "predicts the KD accuracy of each student remapped from it, and writes OUT (columns arch, score = the "
        "predicted KD validation accuracy in %%, best first). The dataset reaches DaSS only through its teacher. "
        "Example: rdnas dass rank --model dass.pt --teacher t.pt --archs 1000 --seed 0 --out ranking.csv")
    _add_model_and_teacher(rank)
    _add_students(rank, 1000, "--seed", "students to sample")
    rank.add_argument("--out", required=True, help="the ranking CSV to write")
    rank.set_defaults(usage_error=rank.error)

    search = sub.add_parser(
        "search", help="pick a student under a FLOPs cap with a DaSS model and KD-train it against a FLOPs-matched "
        "random pick and the best-by-proxy pick",
        description="On the teacher's task (its file records the data spec): from --archs candidates (a seeded "
        "sample), those with at most --max-flops FLOPs are eligible; picks the one DaSS predicts best, a random one "
        "with FLOPs within --flops-tolerance of it, and the best by a zero-cost proxy (--proxy, at a freshly "
        "initialised supernet on a minibatch of the task's training images); KD-trains each pick from its remapped "
        "start for --seeds seeds (journal OUT.runs.csv: rerun to resume) and writes OUT (JSON: picks, FLOPs, "
        "predictions, proxy scores, per-seed accuracies, mean and std) and OUT with .csv (one row per pick and "
        "seed). Example: rdnas dass search --model dass.pt --teacher t.pt --max-flops 2e6 --out search.json")
    _add_model_and_teacher(search)
    _add_students(search, 500, "--seed", "candidates to sample", "the candidate sample and of the random pick")
    search.add_argument("--max-flops", required=True, type=positive_float, help="the FLOPs cap of the picks")
    search.add_argument("--flops-tolerance", type=positive_float, default=0.1,
                        help="relative FLOPs window of the random pick around the DaSS pick (default 0.1)")
    search.add_argument("--proxy", default="synflow", help="the zero-cost proxy of the proxy pick (default synflow)")
    search.add_argument("--seeds", type=positive_int, default=3, help="KD training seeds per pick (default 3)")
    search.add_argument("--epochs", type=positive_int, default=5, help="KD epochs of each pick (default 5)")
    search.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default 64)")
    search.add_argument("--lr", type=positive_float, default=0.05, help="learning rate (default 0.05)")
    search.add_argument("--out", required=True, help="the JSON report to write (and OUT with .csv)")
    search.add_argument("--quiet", action="store_true", help="no per-run lines")
    search.set_defaults(usage_error=search.error)

    evaluate = sub.add_parser(
        "evaluate", help="judge DaSS, its ablations and its baselines on a KD benchmark's meta-test tasks",
        description="Meta-trains DaSS and every meta-trained method (its ablations: no adaptation, without S / T / A, "
        "random-init student embedding; DaSS on CE labels; a MetaD2A-style dataset-conditioned predictor; trees and "
        "an MLP on the pooled meta-train KD labels) with --seeds meta-training seeds, scores every meta-test task's "
        "students with them and with the seed-free baselines (FLOPs, params, zero-cost proxies on the task's "
        "minibatch, the remapped students' zero-shot accuracy, -KL to the teacher, cosine of student and teacher "
        "probe maps), and reports per method Spearman and Kendall against the KD accuracy, P@top-10 %%, the top-1 "
        "pick's regret, mean over tasks and spread over seeds, a Wilcoxon signed-rank test of DaSS against each "
        "method, the seed ceiling and the KD-vs-CE premise; writes OUT (JSON) and its Markdown table (--markdown, "
        "default OUT with .md). Each finished job (a task's baselines, a method's seed) is kept in --jobs (default OUT "
        "with .jobs): rerun the same command to resume. With --model, that DaSS model file is judged instead of "
        "meta-training DaSS (the other meta-trained methods then run only when --methods names them). Example: "
        "rdnas dass evaluate --bench kdbench --seeds 5 --out report.json")
    _add_bench_folder(evaluate)
    evaluate.add_argument("--model", type=input_file, help="judge this model file of rdnas dass fit as DaSS")
    evaluate.add_argument("--seeds", type=positive_int, default=5, help="meta-training seeds 0..N-1 (default 5)")
    evaluate.add_argument("--methods", metavar="LIST",
                          help="comma-separated meta-trained methods to run (default all, or none with --model): "
                          "dass, dass-no-adapt, dass-without-s, dass-without-t, dass-without-a, "
                          "dass-random-embedding, dass-ce, metad2a, gbt, mlp")
    evaluate.add_argument("--proxies", metavar="LIST",
                          help="zero-cost proxies scored (default every registered one; 'none' for none)")
    add_meta_training_options(evaluate)
    evaluate.add_argument("--split", choices=("meta-test", "meta-valid", "meta-train"), default="meta-test",
                          help="the tasks to judge (default meta-test)")
    evaluate.add_argument("--out", required=True, help="the JSON report to write")
    evaluate.add_argument("--markdown", help="the Markdown table to write (default: OUT with the suffix .md)")
    evaluate.add_argument("--jobs", metavar="DIR",
                          help="where each finished job (a task's baselines, a method's seed) is kept, so that a "
                          "rerun of the same command does only what is missing (default: OUT with the suffix .jobs)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress lines")
    evaluate.set_defaults(usage_error=evaluate.error)


def run(args) -> int:
    if args.dass_command == "teacher":
        return _teacher(args)
    if args.dass_command == "bench":
        return _bench(args)
    if args.dass_command == "fit":
        return _fit(args)
    if args.dass_command == "rank":
        return _rank(args)
    if args.dass_command == "search":
        return _search(args)
    if args.dass_command == "evaluate":
        return _evaluate(args)
    raise AssertionError(f"unhandled dass command {args.dass_command}")


def _network_options(args, space) -> dict:
    """The teacher's network options: :data:`DEFAULT_OPTIONS` where the space takes them, under the flags given."""
    from rdnas.cli.arguments import network_options
    from rdnas.supernet import supernet_spec

    names = supernet_spec(space).option_names
    try:
        given = network_options(args, space, given_only=True)
    except ValueError as error:
        args.usage_error(str(error))
    return {**{name: value for name, value in DEFAULT_OPTIONS.items() if name in names}, **given}


TEACHER_FLAGS = {"dataset": "--data", "seed": "--split-seed", "image_size": "--image-size", "teacher.seed": "--seed",
                 "teacher.epochs": "--epochs", "teacher.lr": "--lr"}
"""The flag of ``rdnas dass teacher`` behind each task field its errors name (the others: ``--<field>``)."""


def _teacher_flag(field: str, message: str, args) -> str:
    """The flag that set the task field ``field`` (``"classes"``, ``"teacher.options"``, ...) of a TaskSpec error:
    for a network option, the flag of the option the message names."""
    if field == "teacher.options":
        flags = getattr(args, "network_option_flags", {})
        named = [flag for name, flag in flags.items() if name in message]
        return named[0] if named else "the network options"
    return TEACHER_FLAGS.get(field, "--" + field.split(".")[-1].replace("_", "-"))


def _teacher(args) -> int:
    import re

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
            field = re.match(r"rdnas dass teacher\.((?:teacher\.)?\w+)", str(error))
            option = _teacher_flag(field.group(1), str(error), args) if field else "rdnas dass teacher"
            args.usage_error(f"{option}: {str(error).split(': ', 1)[-1]}")
    try:
        check_image_size(args.space, task.image_size, task.teacher.options,
                         option="--tasks" if args.tasks else "--image-size")
    except ValueError as error:
        args.usage_error(str(error))
    teacher = train_teacher(task, args.space)
    save_teacher(teacher, args.out)
    print(f"rdnas dass teacher: {args.space} largest network, {task.teacher.options}, on {task.dataset} "
          f"({len(teacher.task['classes']) or 'all'} classes, {task.train} + {task.valid} images at "
          f"{task.image_size} px): "
          f"validation accuracy {teacher.valid_acc:.2f} % -> {args.out}")
    return 0


def _bench(args) -> int:
    from pathlib import Path

    from rdnas import distributed
    from rdnas.cli.sharding import shard_and_world
    from rdnas.kd import bench
    from rdnas.kd.tasks import read_tasks
    from rdnas.run_folder import claim_folder

    try:
        regimes = bench.check_regimes(r.strip() for r in args.regimes.split(","))
    except ValueError as error:
        args.usage_error(f"--regimes: {error}")
    if args.train_seeds is not None and args.train_seeds > args.seeds:
        args.usage_error(f"--train-seeds: at most --seeds ({args.seeds}), got {args.train_seeds}")
    if args.ship is not None and (args.teachers_only or args.max_runs):
        args.usage_error("--ship writes a finished build: leave out --teachers-only and --max-runs")
    tasks = read_tasks(args.tasks)
    archs = None if args.teachers_only else _students(args, tasks.space, args.sample_seed)  # checked before work
    shard, world, _ = shard_and_world(args)
    claim_folder(args.out, "dass bench", shard=shard)  # one writer per (folder, shard): other shards run beside it
    progress = not args.quiet and world.is_main
    if args.teachers_only or world.distributed:  # under torchrun every teacher exists before any student run
        teachers = bench.train_teachers(args.out, tasks, shard, progress=progress)
        if args.teachers_only:
            print(f"rdnas dass bench: {len(teachers)} teachers in {Path(args.out) / 'teachers'}")
            return 0
        distributed.barrier(world)
    seeds = list(range(args.seeds))
    bench.build(args.out, tasks, archs, seeds, regimes, shard, progress=progress, max_runs=args.max_runs,
                train_seeds=args.train_seeds)
    distributed.barrier(world)  # the table below is every rank's runs
    if not world.is_main:
        return 0
    rows = bench.kd_table(bench.read_runs(args.out), tasks, seeds, regimes,  # every shard's runs finished so far
                          args.train_seeds)
    table = Path(args.out) / "kdbench.csv"
    bench.write_kd_table(table, rows, regimes)
    embeddings = bench.write_embeddings(args.out, tasks, archs)
    expected = len(tasks.tasks) * len(archs)
    print(f"rdnas dass bench: {len(rows)} of {expected} (task, student) rows complete -> {table}; embeddings -> "
          f"{embeddings}")
    if args.ship is not None:
        shipped = bench.ship(args.out, tasks, archs, seeds, regimes, args.ship or None, args.train_seeds)
        print(f"rdnas dass bench: package data -> {shipped}")
    return 0


def _bench_folder(args):
    """The folder ``--bench`` names (``shipped``: the package data); a usage error when nothing is shipped."""
    from rdnas.kd.bench import bench_folder

    try:
        return bench_folder(args.bench)
    except ValueError as error:
        args.usage_error(f"--bench: {error}")


FIT_FLAGS = {"episodes": "--episodes", "eval_every": "--eval-every", "seed": "--seed", "query": "--query",
             "adapt": "--no-adapt", "embedding": "--embedding", "width": "--width", "use_student": "--without",
             "use_teacher": "--without", "use_arch": "--without", "label": "--label", "tasks": "--bench",
             "channels": "--bench", "space": "--bench"}
"""The option of ``rdnas dass fit`` behind each setting a meta-training checkpoint records (a resume names it)."""


def _fit(args) -> int:
    from rdnas.atomic_file import prepare_output_file
    from rdnas.kd.bench import read_bench_tasks
    from rdnas.predictors import dass
    from rdnas.run_folder import claim_file

    left_out = {x.strip() for x in args.without.split(",") if x.strip()}
    if not left_out <= {"s", "t", "a"} or len(left_out) == 3:
        args.usage_error(f"--without: expected some (not all) of s, t, a, got {args.without!r}")
    args.bench = _bench_folder(args)
    out = prepare_output_file(args.out, "--out")
    checkpoint = prepare_output_file(args.checkpoint or f"{out}.partial", "--checkpoint")
    if checkpoint.resolve() == out.resolve():
        args.usage_error(f"--checkpoint: {checkpoint} is the --out model file; give the checkpoint another name")
    tasks, info = dass.read_bench(args.bench, args.label)
    bench_tasks = read_bench_tasks(args.bench)
    student_options = {repr(t.student_options): t.student_options for t in bench_tasks.tasks if t.name in tasks}
    net = dict(width=args.width, use_student="s" not in left_out, use_teacher="t" not in left_out,
               use_arch="a" not in left_out)
    claim_file(checkpoint, "dass fit")  # one writer per checkpoint: a second fit with this --out is refused
    try:
        model, report = dass.fit(tasks, info["space"], info["channels"], seed=args.seed, episodes=args.episodes,
                                 query=args.query, eval_every=args.eval_every, adapt=not args.no_adapt,
                                 embedding=args.embedding, progress=not args.quiet, checkpoint=checkpoint,
                                 checkpoint_every=args.checkpoint_every, max_new_episodes=args.max_episodes,
                                 settings={"label": args.label}, **net)
    except dass.CheckpointMismatch as error:
        args.usage_error(f"{FIT_FLAGS.get(error.name, '--checkpoint')}: {error}")
    if not report["finished"]:
        print(f"rdnas dass fit: stopped after {report['episode']} of {args.episodes} episodes (--max-episodes); "
              f"checkpoint -> {checkpoint} (rerun the same command to continue)")
        return 0
    features = model.net.arch_encoder.in_features
    config = {"channels": info["channels"], "arch_features": features, "width": args.width,
              "arch_width": model.net.arch_encoder.out_features, "hidden": model.net.hidden.out_features,
              "use_student": net["use_student"], "use_teacher": net["use_teacher"], "use_arch": net["use_arch"],
              "space": info["space"], "probe_seed": info["probe_seed"], "image_sides": info["image_sides"],
              "label": args.label, "adapt": not args.no_adapt, "embedding": args.embedding, "seed": args.seed,
              "episodes": args.episodes,
              "student_options": next(iter(student_options.values())) if len(student_options) == 1 else None,
              "best_episode": report["best_episode"], "best_valid_spearman": report["best_valid_spearman"],
              "bench": str(args.bench)}
    dass.save_model(args.out, model, config)
    checkpoint.unlink(missing_ok=True)  # the finished work is the model file now
    resumed = f", resumed at episode {report['resumed_from']}" if report["resumed_from"] else ""
    print(f"rdnas dass fit: {sum(t.split == 'meta-train' for t in tasks.values())} meta-train tasks, "
          f"{args.episodes} episodes{resumed}; kept episode {report['best_episode']} (meta-valid Spearman "
          f"{report['best_valid_spearman']:.3f}) -> {args.out}")
    return 0


def _rank(args) -> int:
    import csv

    import torch

    from rdnas.atomic_file import atomic_open, prepare_output_file
    from rdnas.kd.teacher import load_teacher
    from rdnas.predictors import dass

    prepare_output_file(args.out, "--out")
    model, config = dass.load_model(args.model)
    teacher = load_teacher(args.teacher, config["space"])
    archs = _students(args, config["space"], args.seed)
    names, scores = dass.predict_for_teacher(model, config, teacher, archs, not args.no_adapt, args.model,
                                             args.teacher)
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    with atomic_open(args.out, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "score"])
        for k in order:
            writer.writerow([names[k], f"{float(scores[k]):.4f}"])
    print(f"rdnas dass rank: {len(order)} students of {args.teacher} ranked -> {args.out} (best predicted "
          f"{float(scores[order[0]]):.2f} %)")
    return 0


def _search(args) -> int:
    import csv

    import torch

    from rdnas.atomic_file import atomic_open, prepare_output_file
    from rdnas.cli.arguments import write_json
    from rdnas.kd import search
    from rdnas.kd.teacher import load_teacher
    from rdnas.kd.train import StudentRecipe
    from rdnas.predictors import dass
    from rdnas.proxies import PROXIES
    from rdnas.run_folder import claim_file

    if args.proxy not in PROXIES:
        args.usage_error(f"--proxy: expected one of {', '.join(sorted(PROXIES))}, got {args.proxy!r}")
    out = prepare_output_file(args.out, "--out")
    table_path, journal = out.with_suffix(".csv"), out.with_suffix(".runs.csv")
    if table_path == out:
        args.usage_error(f"--out {out}: give the JSON report a name that does not end in .csv")
    model, config = dass.load_model(args.model)
    teacher = load_teacher(args.teacher, config["space"])
    archs = _students(args, config["space"], args.seed)
    claim_file(journal, "dass search")  # one writer per journal: a second search with this --out is refused
    if len(archs) < 2:
        args.usage_error(f"--archs: a search compares picks among at least 2 candidates, got {len(archs)}")
    recipe = StudentRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    options = config["student_options"] or {}
    names, predicted = dass.predict_for_teacher(model, config, teacher, archs, not args.no_adapt, args.model,
                                                args.teacher)
    costs = search.student_costs(teacher, names, options)
    eligible = costs["flops"] <= args.max_flops
    data = teacher.task_spec(options).data()
    proxy = torch.full((len(names),), float("-inf"), dtype=torch.float64)  # scored where eligible only
    if int(eligible.sum()) >= 2:
        chosen = torch.nonzero(eligible).flatten()
        proxy[chosen] = search.proxy_scores(teacher, [names[k] for k in chosen.tolist()], args.proxy, options, data)
    try:
        picks = search.choose(names, predicted.double(), proxy, costs["flops"], args.max_flops, args.seed,
                              args.flops_tolerance)
    except ValueError as error:
        args.usage_error(str(error))
    seeds = list(range(args.seeds))
    runs = search.train_picks(teacher, [names[k] for k in picks.values()], seeds, recipe, journal, options, data,
                              progress=not args.quiet)
    report = {"model": str(args.model), "teacher": str(args.teacher), "teacher_digest": teacher.digest(),
              "task": teacher.task, "max_flops": args.max_flops, "candidates": len(names),
              "eligible": int(eligible.sum()), "proxy": args.proxy, "flops_tolerance": args.flops_tolerance,
              "seeds": seeds, "recipe": recipe.to_dict(), "adapt": not args.no_adapt, "picks": {}}
    with atomic_open(table_path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pick", "arch", "flops", "params", "predicted", "proxy_score", "seed", "kd_valid_acc"])
        for pick, k in picks.items():
            accuracies = [runs[(names[k], s)]["valid_acc"] for s in seeds]
            report["picks"][pick] = {"arch": names[k], "flops": float(costs["flops"][k]),
                                     "params": float(costs["params"][k]), "predicted": float(predicted[k]),
                                     "proxy_score": float(proxy[k]), "kd_valid_acc": search.summary(accuracies)}
            for s, accuracy in zip(seeds, accuracies):
                writer.writerow([pick, names[k], f"{float(costs['flops'][k]):.0f}", f"{float(costs['params'][k]):.0f}",
                                 f"{float(predicted[k]):.4f}", f"{float(proxy[k]):.6g}", s, f"{accuracy:.4f}"])
    write_json(out, report)
    line = ", ".join(f"{pick} {p['kd_valid_acc']['mean']:.2f} ± {p['kd_valid_acc']['std']:.2f} %"
                     for pick, p in report["picks"].items())
    print(f"rdnas dass search: {report['eligible']} of {len(names)} candidates under {args.max_flops:g} FLOPs; KD "
          f"accuracy over {len(seeds)} seeds: {line} -> {out}, {table_path}")
    return 0


def _evaluate(args) -> int:
    from pathlib import Path

    from rdnas.atomic_file import prepare_output_file, write_text_atomic
    from rdnas.cli.arguments import json_output, write_json
    from rdnas.kd import evaluation
    from rdnas.kd import methods as kd_methods
    from rdnas.kd.baselines import proxy_names
    from rdnas.predictors import dass

    if args.methods is None:
        methods = [] if args.model else list(kd_methods.SEEDED_METHODS)
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in kd_methods.SEEDED_METHODS]
        if unknown or not methods:
            args.usage_error(f"--methods: expected some of {', '.join(kd_methods.SEEDED_METHODS)}, got "
                             f"{args.methods!r}")
    if args.model and "dass" in methods:
        args.usage_error("--methods: 'dass' is the --model file; leave it out of --methods or drop --model")
    if args.proxies is None:
        proxies = list(proxy_names())
    elif args.proxies.strip() == "none":
        proxies = []
    else:
        proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
        unknown = [p for p in proxies if p not in proxy_names()]
        if unknown or not proxies:
            args.usage_error(f"--proxies: expected 'none' or some of {', '.join(proxy_names())}, got "
                             f"{args.proxies!r}")
    args.bench = _bench_folder(args)
    json_output(args.out)
    if args.jobs and Path(args.jobs).exists() and not Path(args.jobs).is_dir():
        args.usage_error(f"--jobs: {args.jobs} exists and is not a folder")
    markdown = Path(args.markdown) if args.markdown else Path(args.out).with_suffix(".md")
    prepare_output_file(markdown, "--markdown")
    channels = dass.load_model(args.model)[1]["channels"] if args.model else None
    bench = kd_methods.EvaluationBench(args.bench, args.split, channels)
    settings = kd_methods.FitSettings(episodes=args.episodes, query=args.query, width=args.width,
                                      eval_every=args.eval_every)
    say = (lambda text: None) if args.quiet else (lambda text: print(f"rdnas dass evaluate: {text}", flush=True))
    if bench.ce is None and "dass-ce" in methods:
        if args.methods is not None:
            args.usage_error(f"--methods: dass-ce needs CE labels, and {args.bench} has none (build it with "
                             "--regimes kd,ce)")
        methods.remove("dass-ce")
        say(f"{args.bench} has no CE labels: dass-ce left out")
    jobs_folder = Path(args.jobs) if args.jobs else Path(args.out).with_suffix(".jobs")
    results = []
    if args.model:
        results.append(kd_methods.model_scores(bench, args.model))
    jobs = [("baselines", name) for name in bench.judged]
    jobs += [(method, seed) for method in methods for seed in range(args.seeds)]
    for job, key in jobs:
        result, kept = kd_methods.cached_job(jobs_folder, bench, job, key, settings, proxies)
        results.append(result)
        say(f"{job} {'of task' if job == 'baselines' else 'seed'} {key}: "
            f"{'done already' if kept else 'done'} ({kd_methods.job_path(jobs_folder, job, key)})")
    report = evaluation.build_report(bench, results)
    report["model"] = str(args.model) if args.model else None
    report["settings"] = settings.to_dict()
    write_json(args.out, report)
    write_text_atomic(markdown, evaluation.markdown_report(report))
    spearman = "undefined" if report.get("mean_spearman") is None else f"{report['mean_spearman']:.3f}"
    regret = report.get("mean_top1_regret")
    print(f"rdnas dass evaluate: {len(bench.judged)} {args.split} tasks ({len(report['ranked_tasks'])} with varying KD "
          f"accuracy), DaSS mean Spearman {spearman}, mean top-1 regret "
          f"{'undefined' if regret is None else f'{regret:.2f} points'}; {report['verdict']['text']} -> {args.out}, "
          f"{markdown}")
    return 0

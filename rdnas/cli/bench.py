"""rdnas bench build: build a mini-benchmark (stand-alone training of sampled architectures)."""

from rdnas.cli.arguments import (add_network_options, check_image_size, device, input_file, int_at_least,
                                 network_options, non_negative_int, positive_float, positive_int, read_archs, shard)
from rdnas.minibench.build import DATASETS, Recipe
from rdnas.spaces import space_names


def add_parser(commands) -> None:
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
    bench_build.add_argument("--archs", type=int_at_least(3, "the reliability ranks them"), default=240, help="architectures to sample (default 240)")
    bench_build.add_argument("--archs-file", type=input_file, metavar="FILE",
                             help="train these architectures instead of a sample: one architecture string per line "
                             "(blank lines and lines starting with # skipped), or a competition JSON "
                             "({\"arch1\": {\"arch\": ...}}); --archs and --sample-seed then do not apply")
    bench_build.add_argument("--seeds", type=positive_int, default=10,
                             help="training seeds per architecture (default 10)")
    bench_build.add_argument("--sample-seed", type=non_negative_int, default=0,
                             help="seed of the architecture sample (default 0)")
    bench_build.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    bench_build.add_argument("--table", help="where to write the table (default OUT/<space>_<dataset>.csv)")
    recipe = Recipe()
    own = (("epochs", positive_int, "epochs"), ("train_images", non_negative_int, "training images (0: all)"),
           ("valid_images", non_negative_int, "validation images (0: all)"),
           ("image_size", positive_int, "image side"), ("lr", positive_float, "learning rate"),
           ("batch_size", positive_int, "batch size"), ("networks_per_stack", positive_int, "networks per stack"))
    for name, kind, text in own:
        bench_build.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(recipe, name),
                                 help=f"{text} (default {getattr(recipe, name)})")
    add_network_options(bench_build, benchmark_defaults=True)  # flags derived from each space's NetworkOptions
    bench_build.add_argument("--shard", type=shard, default=None, metavar="i/n",
                             help="train only every n-th (architecture, seed) run, from the i-th: n processes build "
                             "one benchmark side by side; each writes OUT/runs.<i>of<n>.csv and then the table of "
                             "every run finished so far. Under torchrun the ranks shard themselves (RANK/WORLD_SIZE, "
                             "also --shard env) and rank 0 writes the table once every rank has finished")
    bench_build.add_argument("--device", type=device, default="cpu", help="torch device (default cpu)")
    bench_build.add_argument("--quiet", action="store_true", help="no progress bar")
    bench_build.set_defaults(usage_error=bench_build.error)


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    import torch

    from rdnas import distributed
    from rdnas.cli.sharding import shard_and_world
    from rdnas.minibench import benchmark_table, build, read_all_runs, reliability, sample_architectures, write_table
    from rdnas.run_folder import claim_folder
    from rdnas.spaces import get_space

    try:
        options = network_options(args, args.space, given_only=True)  # another space's option: refused by name
    except ValueError as error:
        args.usage_error(str(error))
    recipe = Recipe(dataset=args.dataset, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, train_images=args.train_images, networks_per_stack=args.networks_per_stack,
                    space=args.space, valid_images=args.valid_images, space_options=options)
    space = get_space(args.space)
    check_image_size(args.space, args.image_size, recipe.network_options())  # before any work
    if 0 < args.train_images < args.batch_size:
        args.usage_error(f"--train-images {args.train_images} make no batch of --batch-size {args.batch_size} (batches "
                         "drop the remainder): raise --train-images or lower --batch-size")
    if args.archs_file:
        try:
            archs = read_archs(args.archs_file, space)
        except ValueError as error:
            args.usage_error(str(error))
        if len(archs) < 3:
            args.usage_error(f"--archs-file: {args.archs_file} lists {len(archs)} architectures; the reliability "
                             "ranks at least 3")
    else:
        archs = sample_architectures(args.archs, seed=args.sample_seed, space=space)
    seeds = list(range(args.seeds))
    shard, world, device = shard_and_world(args)
    claim_folder(args.out, "bench build", shard=shard)  # one writer per (folder, shard): other shards run beside it
    if torch.get_num_threads() > 1 and world.is_main and not args.quiet:
        print(f"rdnas bench build: note: {torch.get_num_threads()} threads per process; results depend on the thread "
              "count (float64 too), and rdnas' shipped tables were trained with one (OMP_NUM_THREADS=1): set it to "
              "retrain rows bitwise (each start's threads are recorded in the folder's environment*.jsonl)",
              file=sys.stderr)
    build(args.out, archs, seeds, recipe, device=device, progress=not args.quiet and world.is_main, shard=shard)
    distributed.barrier(world)  # the table below is every rank's runs
    if not world.is_main:
        return 0
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


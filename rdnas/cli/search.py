"""rdnas search: search for the best architectures with a trained supernet."""

from rdnas.cli.arguments import device, json_output, positive_int, write_json
from rdnas.cli.checkpoint import load_supernet


def add_parser(commands) -> None:
    search = commands.add_parser(
        "search",
        help="search for the best architectures with a trained supernet (random or regularised evolution)",
        description="Finds the cells with the highest supernet accuracy on the run's validation split (BN "
        "recalibrated per subnet, many cells per forward pass) within a budget of evaluated cells, and prints the "
        "top k, with ground truth when --gt is given. Example: rdnas search --checkpoint runs/rdnas/checkpoint.pt "
        "--strategy evolution --budget 500 --gt nb201_gt.csv --column cifar10_valid_acc. Under torchrun every rank "
        "runs the same search and evaluates its share of each generation; rank 0 reports.",
    )
    search.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by rdnas train")
    search.add_argument("--strategy", choices=["evolution", "random"], default="evolution")
    search.add_argument("--budget", type=int, default=500, help="cells to evaluate (default 500)")
    search.add_argument("--population", type=int, default=32, help="evolution: population size (default 32)")
    search.add_argument("--top-k", type=positive_int, default=10)
    search.add_argument("--gt", help="ground-truth table to print the true accuracy of the top cells")
    search.add_argument("--column", default="cifar10_valid_acc", help="ground-truth column")
    search.add_argument("--subnets-per-pass", type=int, default=32)
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--device", type=device, default="cpu")
    search.add_argument("--out", help="write the top cells as JSON here")


def run(args) -> int:
    import torch

    from rdnas import distributed
    from rdnas.rank import GroundTruth, recalibrated_accuracy_fn
    from rdnas.search import evolution_search, random_search

    world, device = distributed.init(args.device)
    out = json_output(args.out)
    supernet, config, data = load_supernet(args.checkpoint, device)
    space = supernet.space
    fitness = recalibrated_accuracy_fn(supernet, data, device, calibration_batch_size=config.batch_size,
                                       seed=args.seed, subnets_per_pass=args.subnets_per_pass, distributed=True)

    if args.strategy == "random":
        history = random_search(fitness, args.budget, seed=args.seed, batch=args.subnets_per_pass, space=space)
    else:
        history = evolution_search(fitness, args.budget, seed=args.seed, population=args.population,
                                   batch=args.subnets_per_pass, space=space)
    if not world.is_main:
        return 0
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
        write_json(out, {"strategy": args.strategy, "budget": args.budget, "evaluated": len(history.archs),
                         "top": rows})
    return 0

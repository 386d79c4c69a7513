"""rdnas search: search for the best architectures with a trained supernet, a predictor or a score table, under cost
bounds, or for the front of accuracy against cost."""

from rdnas.cli.arguments import (device, input_file, int_at_least, json_output, non_negative_float, non_negative_int,
                                 positive_int, write_json)
from rdnas.cli.checkpoint import checkpoint_space, load_supernet, read_checkpoint, read_table
from rdnas.spaces import space_names

BOUNDED_COSTS = ("flops", "params")  # --max-<cost> / --min-<cost>, in space.cost's units


def add_parser(commands) -> None:
    search = commands.add_parser(
        "search",
        help="search for the best architectures (supernet, predictor or table as fitness; cost bounds; Pareto front)",
        description="Finds the cells with the highest fitness within a budget of evaluated cells, and prints the "
        "top k, with ground truth when --gt is given. The fitness is a trained supernet's accuracy on the run's "
        "validation split (--checkpoint; BN recalibrated per subnet, many cells per forward pass), a predictor's "
        "score (--predictor, a file of rdnas predictor fit) or a column of a table keyed by architecture (--table, "
        "--table-column: a proxies table, a ground-truth table). --max-flops / --max-params / --min-* bound the "
        "space's own cost model (rdnas arch prints it: NB201's CIFAR-10 network, ResNet48's ImageNet one); no cell "
        "outside them is evaluated. --pareto flops keeps the front of fitness against FLOPs (NSGA-II under "
        "--strategy evolution) and writes it as JSON lines and a PNG. Example: rdnas search --checkpoint "
        "runs/rdnas/checkpoint.pt --strategy evolution --budget 500 --max-flops 80e6 --gt nb201_gt.csv --column "
        "cifar10_valid_acc. Under torchrun every rank runs the same search and evaluates its share of each "
        "generation; rank 0 reports.",
    )
    search.add_argument("--checkpoint", type=input_file, help="fitness: a checkpoint.pt written by rdnas train")
    search.add_argument("--predictor", type=input_file, help="fitness: a model file written by rdnas predictor fit")
    search.add_argument("--table", type=input_file, help="fitness: a table keyed by architecture (arch_str or arch "
                        "column), e.g. an rdnas proxies output, nb201_zc_proxies.csv or shipped:nb201_digits_full; with "
                        "--table-column")
    search.add_argument("--table-column", help="--table: the column to maximise")
    search.add_argument("--space", choices=list(space_names()), default="nb201",
                        help="--table: the table's space (default nb201; a checkpoint and a predictor know theirs)")
    search.add_argument("--strategy", choices=["evolution", "random", "sampling"], default="evolution",
                        help="evolution (regularised; NSGA-II with --pareto), random, or sampling (NAR's sampling "
                        "search: a --sampler-model fitted on the evaluated cells picks the next ones)")
    search.add_argument("--sampler-model", choices=["gbt", "mlp", "nar"], default="gbt",
                        help="--strategy sampling: the predictor refitted each round (default gbt)")
    search.add_argument("--budget", type=positive_int, default=500, help="cells to evaluate (default 500)")
    search.add_argument("--population", type=int_at_least(8, "evolution draws tournaments of 8"), default=32,
                        help="evolution: population size (default 32)")
    search.add_argument("--top-k", type=positive_int, default=10)
    search.add_argument("--gt", type=input_file, help="ground-truth table to print the true accuracy of the top cells (a file, or a "
                        "shipped one: shipped:nb201_digits_full)")
    search.add_argument("--column", default="cifar10_valid_acc", help="ground-truth column")
    search.add_argument("--within-gt", action="store_true",
                        help="search only the architectures the --gt table has (e.g. a mini-benchmark's cells)")
    for bound in ("max", "min"):
        for cost in BOUNDED_COSTS:
            search.add_argument(f"--{bound}-{cost}", type=non_negative_float, metavar="N",
                                help=f"only cells with {cost} {'<=' if bound == 'max' else '>='} N (space.cost's "
                                "units, e.g. 80e6)")
    search.add_argument("--pareto", choices=["flops", "params", "trainable_params"],
                        help="keep the front of fitness against this cost; writes --front and --front-plot")
    search.add_argument("--front", help="--pareto: the front as JSON lines (default front.jsonl beside --out, else "
                        "./front.jsonl)")
    search.add_argument("--front-plot", help="--pareto: the PNG of the front (default: --front with .png)")
    search.add_argument("--journal", help="record every evaluation in this file; a search started again with the "
                        "same settings resumes from it")
    search.add_argument("--subnets-per-pass", type=positive_int, default=32)
    search.add_argument("--seed", type=non_negative_int, default=0)
    search.add_argument("--device", type=device, default="cpu")
    search.add_argument("--out", help="write the top cells as JSON here")


def _fitness(args, device):
    """(fitness, space, label, what the score is called, ground-truth table or None), every input checked."""
    import torch

    from rdnas.rank import recalibrated_accuracy_fn

    given = [name for name in ("checkpoint", "predictor", "table") if getattr(args, name)]
    if len(given) != 1:
        raise ValueError("give one fitness: --checkpoint (a supernet), --predictor (a model file) or --table with "
                         f"--table-column; got {', '.join('--' + g for g in given) or 'none'}")
    if bool(args.table) != bool(args.table_column):
        raise ValueError("--table and --table-column go together (a table and the column to maximise)")
    if args.checkpoint:
        state = read_checkpoint(args.checkpoint)
        space = checkpoint_space(state)
        table = read_table(args.gt, space, args.column, "--gt", args.checkpoint) if args.gt else None
        supernet, config, data = load_supernet(args.checkpoint, device, state=state)
        fitness = recalibrated_accuracy_fn(supernet, data, device, calibration_batch_size=config.batch_size,
                                           seed=args.seed, subnets_per_pass=args.subnets_per_pass, distributed=True)
        return (fitness, supernet.space, f"supernet accuracy on {len(data.valid)} {data.valid.name} images",
                "supernet_accuracy", table)
    if args.predictor:
        from rdnas.predictors import load_predictor

        try:
            predictor = load_predictor(args.predictor)
        except ValueError as error:
            raise ValueError(f"--predictor: {str(error).removeprefix('rdnas.predictors: ')}") from None
        space = predictor.space
        table = read_table(args.gt, space, args.column, "--gt") if args.gt else None
        return (lambda archs: predictor.predict(archs).double(), space,
                f"the {type(predictor).__name__} predictor {args.predictor}", "predictor_score", table)
    scores = read_table(args.table, args.space, args.table_column, "--table")
    table = read_table(args.gt, args.space, args.column, "--gt") if args.gt else None

    def lookup(archs):
        rows = scores.rows_of(archs)
        if bool((rows < 0).any()):
            missing = archs[(rows < 0).nonzero()[0, 0]]
            raise ValueError(f"--table: {args.table} has no row for {scores.space.to_string(missing)}")
        return torch.from_numpy(scores.column(args.table_column)[rows.numpy()]).double()

    lookup.table = scores
    return lookup, scores.space, f"{args.table_column} of {args.table}", "table_score", table


def _domain(args, space, fitness, table):
    """The architectures the search may propose: the --gt table's with --within-gt, a --table's own rows where it
    does not cover the space, else None (the whole space)."""
    if args.within_gt:
        if table is None:
            raise ValueError("--within-gt needs --gt (the table whose architectures the search keeps to)")
        return table.archs
    scores = getattr(fitness, "table", None)
    if scores is not None and not (space.enumerable and bool((scores.rows_of(space.enumerate()) >= 0).all())):
        return scores.archs
    return None


def run(args) -> int:
    from rdnas import distributed
    from rdnas.pareto import pareto_evolution
    from rdnas.search import CostConstraint, InfeasibleConstraint, SearchJournal, evolution_search, random_search

    world, device = distributed.init(args.device)
    out = json_output(args.out)
    fitness, space, label, score_name, table = _fitness(args, device)
    bounds = {kind: {cost: getattr(args, f"{kind}_{cost}") for cost in BOUNDED_COSTS
                     if getattr(args, f"{kind}_{cost}") is not None} for kind in ("max", "min")}
    try:
        constraint = CostConstraint(space, minimum=bounds["min"], maximum=bounds["max"])
    except ValueError as error:
        raise ValueError(str(error).replace("rdnas.search.CostConstraint: ", "--max-*/--min-*: ")) from None
    domain = _domain(args, space, fitness, table)
    try:
        constraint.check_reachable(domain)
    except InfeasibleConstraint as error:
        raise ValueError(f"{str(error).removeprefix('rdnas.search: ')} (--max-*/--min-* bounds)") from None
    front_path = plot_path = None
    if args.pareto:
        if args.pareto not in constraint.names():
            raise ValueError(f"--pareto: the space {space.name} has no cost {args.pareto!r}; its costs: "
                             f"{', '.join(constraint.names())}")
        from pathlib import Path

        from rdnas.atomic_file import prepare_output_file

        front_path = prepare_output_file(args.front or (Path(args.out).with_name("front.jsonl") if args.out
                                                        else "front.jsonl"), "--front")
        plot_path = prepare_output_file(args.front_plot or front_path.with_suffix(".png"), "--front-plot")
    journal = None
    if args.journal:
        import os

        from rdnas.rank.ground_truth import table_path

        fitness_file = os.path.abspath(table_path(args.checkpoint or args.predictor or args.table))
        settings = {"strategy": args.strategy, "seed": args.seed, "budget": args.budget,
                    "population": args.population, "space": space.name, "fitness": label,
                    "fitness_file": fitness_file, "subnets_per_pass": args.subnets_per_pass,
                    "constraint": str(constraint), "pareto": args.pareto, "within_gt": args.within_gt,
                    "sampler_model": args.sampler_model if args.strategy == "sampling" else None}
        journal = SearchJournal(args.journal, settings, space, write=world.is_main)
        distributed.barrier(world)  # every rank has read the journal before rank 0 adds to it
    common = dict(space=space, constraint=constraint, domain=domain, journal=journal)
    if args.strategy == "random":
        history = random_search(fitness, args.budget, seed=args.seed, batch=args.subnets_per_pass, **common)
    elif args.strategy == "sampling":
        from rdnas.predictors import get_predictor
        from rdnas.predictors.sampling_search import sampling_search

        history = sampling_search(fitness, args.budget, lambda: get_predictor(args.sampler_model)(space=space,
                                  seed=args.seed), seed=args.seed, **common)
    elif args.pareto:
        history = pareto_evolution(fitness, args.budget, cost=args.pareto, seed=args.seed,
                                   population=args.population, batch=args.subnets_per_pass, **common)
    else:
        history = evolution_search(fitness, args.budget, seed=args.seed, population=args.population,
                                   batch=args.subnets_per_pass, **common)
    if not world.is_main:
        return 0
    costs = _costs(constraint, history.archs)
    top = history.top(args.top_k)
    replayed = f" ({history.replayed} replayed from {args.journal})" if journal is not None else ""
    print(f"rdnas search: {args.strategy}, {len(history.archs)} cells evaluated{replayed} by {label}"
          f"{'' if not constraint.bounded else ', within ' + str(constraint)}; top {len(top)}:")
    rows = []
    for rank, (arch, score) in enumerate(top, start=1):
        row = {"rank": rank, "arch": space.to_string(arch), score_name: score}
        if costs is not None:
            row["cost"] = costs[arch]
        truth = _truth(table, arch, args.column)
        if truth is not None:
            row["ground_truth"] = truth
        rows.append(row)
        shown = f"supernet {100 * score:.2f} %" if score_name == "supernet_accuracy" else f"score {score:.6g}"
        print(f"  {rank:2d}. {row['arch']}  {shown}"
              + ("" if truth is None else f"  {args.column} {truth:.2f}"))
    if table is not None:
        reachable = table.archs[~space.is_trivial(table.archs) & constraint.admits(table.archs)]
        best = float(table.values(reachable, args.column).max()) if len(reachable) else float("nan")
        where = "in the table" if not constraint.bounded else "in the table within the bounds"
        found = [r["ground_truth"] for r in rows if "ground_truth" in r]
        if found:
            print(f"  best ground truth among the top {len(top)}: {max(found):.2f} (best {where}: {best:.2f})")
        else:
            print(f"  --gt: none of the top {len(top)} cells has a row in {args.gt} ({len(table)} rows): no ground "
                  "truth to compare")
    result = {"strategy": args.strategy, "budget": args.budget, "evaluated": len(history.archs), "top": rows}
    if args.pareto:
        result["front"] = _write_front(args, space, history, costs, constraint, domain, table, front_path, plot_path,
                                       label)
    if out:
        write_json(out, {"constraint": str(constraint), **result})
    return 0


def _costs(constraint, archs) -> dict | None:
    """{arch: {cost name: value}} for the evaluated architectures; None where the space has no cost model."""
    import torch

    if not archs:
        return {}
    try:
        values = constraint.costs(torch.tensor(archs, dtype=torch.long))
    except NotImplementedError:
        return None
    return {arch: {name: float(v[i]) for name, v in values.items()} for i, arch in enumerate(archs)}


def _truth(table, arch, column):
    import torch

    if table is None or int(table.rows_of(torch.tensor([arch]))[0]) < 0:
        return None
    return float(table.values(torch.tensor([arch]), column)[0])


def _write_front(args, space, history, costs, constraint, domain, table, front_path, plot_path, label) -> int:
    """Writes the front of everything evaluated (JSON lines, PNG) and prints it; returns its size."""
    import json

    import torch

    from rdnas.atomic_file import write_text_atomic
    from rdnas.pareto import pareto_front, plot_front

    cost = torch.tensor([costs[a][args.pareto] for a in history.archs], dtype=torch.float64)
    estimate = torch.tensor(history.scores, dtype=torch.float64)
    front = pareto_front(estimate, cost)
    lines, truths = [], []
    for i in front.tolist():
        arch = history.archs[i]
        line = {"arch": space.to_string(arch), "cost": float(cost[i]), "cost_name": args.pareto,
                "costs": costs[arch], "estimate": history.scores[i]}
        truth = _truth(table, arch, args.column)
        if truth is not None:
            line["ground_truth"] = truth
        truths.append(truth)
        lines.append(json.dumps(line))
    write_text_atomic(front_path, "\n".join(lines) + "\n")
    true_front = None
    if table is not None:  # the true front of the table's architectures inside the bounds
        archs = table.archs[~space.is_trivial(table.archs)]
        if domain is not None:
            wanted = {tuple(a) for a in space.validate(domain).tolist()}
            archs = archs[torch.tensor([tuple(a) in wanted for a in archs.tolist()], dtype=torch.bool)]
        archs = archs[constraint.admits(archs)]
        if len(archs):
            table_cost = constraint.costs(archs)[args.pareto]
            table_truth = torch.from_numpy(table.values(archs, args.column)).double()
            best = pareto_front(table_truth, table_cost)
            true_front = (table_cost[best], table_truth[best])
    shown = None if any(t is None for t in truths) or not truths else torch.tensor(truths)
    plot_front(plot_path, cost, estimate, front, cost_name=args.pareto, estimate_name="fitness",
               truth=shown, true_front=true_front, title=f"rdnas search --pareto {args.pareto}: {label}",
               truth_name=f"ground truth ({args.column})")
    print(f"  front: {len(front)} of {len(history.archs)} cells, {args.pareto} "
          f"{float(cost[front].min()):.4g}..{float(cost[front].max()):.4g}; written to {front_path} and {plot_path}")
    return len(front)

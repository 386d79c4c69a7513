"""rdnas predictor: fit a learned ranker on a few labelled architectures (fit), rank the whole space with it (rank)."""

import argparse

from rdnas.cli.arguments import input_file, int_at_least, non_negative_int
from rdnas.spaces import space_names


def _option(text: str) -> tuple[str, object]:
    """--option KEY=VALUE: a predictor option; the value as an int, else a float, else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. epochs=20), got {text!r}")
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        if number != number or number in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number for {key}, got {value!r}")
        return key, number
    return key, value


def add_parser(commands) -> None:
    predictor = commands.add_parser(
        "predictor",
        help="fit a learned ranker (NAR, trees, MLP) on labelled architectures; rank the space with it",
        description="fit: trains a predictor on --train-archs random architectures of a ground-truth table "
        "(seeded) and writes a model file. rank: scores every architecture of the model's space and writes "
        "arch,score (with --gt, the rank report against a column). Example: rdnas predictor fit --space nb201 "
        "--gt nb201_gt.csv --column cifar10_valid_acc --train-archs 156 --seed 0 --out model.pt; rdnas predictor "
        "rank --model model.pt --gt nb201_gt.csv --column cifar10_test_acc --out ranking.csv",
    )
    steps = predictor.add_subparsers(dest="predictor_command", required=True, metavar="<step>")
    fit = steps.add_parser("fit", help="train a predictor and write the model file")
    fit.add_argument("--space", choices=list(space_names()), default="nb201", help="search space (default nb201)")
    fit.add_argument("--gt", required=True, type=input_file, help="ground-truth table (nb201_gt.csv format, or a shipped one: shipped:nb201_digits_full)")
    fit.add_argument("--column", default="cifar10_valid_acc",
                     help="the accuracy column to learn (default cifar10_valid_acc)")
    fit.add_argument("--train-archs", type=int_at_least(2, "a ranker learns from pairs"), required=True,
                     help="how many random architectures of the table to train on (at least 2; nar: at least its "
                     "tiers, 5 by default)")
    fit.add_argument("--seed", type=non_negative_int, default=0, help="training-set draw and training seed (default 0)")
    fit.add_argument("--model", choices=["nar", "gbt", "mlp"],
                     help="the predictor (default: gbt with --feature-table, the best measured on proxy features: "
                     "Kendall tau 0.807 at N = 156 against NAR's 0.726 on the same features; nar otherwise)")
    fit.add_argument("--feature-table", type=input_file, help="a table keyed by architecture string with zero-cost proxy columns "
                     "(an rdnas proxies output, or nb201_zc_proxies.csv); it must cover the space")
    fit.add_argument("--features", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                     metavar="COL,COL,...", help="the --feature-table columns to use (rank-normalised)")
    add_feature_options(fit)
    fit.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                     help="a predictor option, repeatable (e.g. --option epochs=20 --option layers=2)")
    fit.add_argument("--out", required=True, help="the model file to write")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    rank = steps.add_parser("rank", help="score every architecture of the space with a model file")
    rank.add_argument("--model", required=True, type=input_file, help="a model file written by rdnas predictor fit")
    rank.add_argument("--gt", type=input_file, help="ground-truth table: print the rank report against --column")
    rank.add_argument("--column", default="cifar10_test_acc",
                      help="the ground-truth column of the report (default cifar10_test_acc)")
    rank.add_argument("--out", required=True, help="the CSV to write: arch,score, one row per architecture")
    rank.add_argument("--report", help="also write the rank report as JSON here (with --gt)")


def feature_option_names() -> list:
    """Every registered space's predictor input options (``SearchSpace.feature_options``), each once."""
    from rdnas.spaces import get_space

    return list(dict.fromkeys(option for name in space_names() for option in get_space(name).feature_options))


def add_feature_options(parser) -> None:
    """One flag per predictor input option of the registered spaces (``--cells``: NB201's ``cells``), its choices
    and help the space's (``feature_options``, ``feature_option_help``); unset means the space's default. An option
    of another space than ``--space`` is refused by ``ArchFeatures``, naming the spaces that take it."""
    from rdnas.spaces import get_space

    for option in feature_option_names():
        takers = [get_space(name) for name in space_names() if option in get_space(name).feature_options]
        choices = list(dict.fromkeys(value for space in takers for value in space.feature_options[option]))
        help_text = "; ".join(f"{space.name} input: {space.feature_option_help.get(option, '')}".rstrip(": ")
                              for space in takers)
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, choices=choices, help=help_text)


def run(args) -> int:
    return _fit(args) if args.predictor_command == "fit" else _rank(args)


def _fit(args) -> int:
    from rdnas.atomic_file import prepare_output_file
    from rdnas.cli.checkpoint import read_table
    from rdnas.predictors.protocol import fit_on_table, make_features

    table = read_table(args.gt, args.space, args.column, "--gt")
    if args.train_archs > len(table):
        raise ValueError(f"--train-archs: {args.train_archs} architectures, but {args.gt} has {len(table)} rows")
    features = make_features(args.space, args.feature_table, args.features,
                             **{option: getattr(args, option) for option in feature_option_names()})
    out = prepare_output_file(args.out, "--out")
    args.model = args.model or ("gbt" if args.feature_table else "nar")  # the measured best for each input
    predictor, rows = fit_on_table(args.model, table, args.column, args.train_archs, args.seed, features,
                                   progress=not args.quiet, **dict(args.option))
    predictor.save(out)
    extra = f" + {len(args.features)} proxy columns" if args.features else ""
    print(f"rdnas predictor fit: {args.model} on {len(rows)} architectures of {args.gt} ({args.column}, seed "
          f"{args.seed}; structure features{extra}) written to {out}")
    return 0


def _rank(args) -> int:

    from rdnas.atomic_file import atomic_open, prepare_output_file
    from rdnas.cli.arguments import write_json
    from rdnas.predictors import load_predictor
    from rdnas.cli.checkpoint import read_table
    from rdnas.rank import rank_report

    try:
        predictor = load_predictor(args.model)
    except ValueError as error:
        raise ValueError(f"--model: {str(error).removeprefix('rdnas.predictors: ')}") from None
    space = predictor.space
    table = None
    if args.gt:
        table = read_table(args.gt, space, args.column, "--gt")  # an unknown column fails before the scoring
    out = prepare_output_file(args.out, "--out")
    if space.enumerable:
        archs = space.enumerate()
    elif table is not None:
        archs = table.archs
    else:
        raise ValueError(f"the space {space.name} cannot be enumerated: give --gt, whose architectures are ranked")
    scores = predictor.predict(archs)
    with atomic_open(out) as handle:
        handle.write("arch,score\n")
        for arch, score in zip(archs, scores.tolist()):
            handle.write(f"{space.to_string(arch)},{score!r}\n")
    print(f"rdnas predictor rank: {len(archs):,} architectures scored by {args.model} ({predictor.name}), "
          f"written to {out}")
    if table is not None:
        rows = table.rows_of(archs)
        covered = rows >= 0
        truth = table.column(args.column)[rows[covered].numpy()]
        report = rank_report(scores[covered].numpy(), truth, column=args.column)
        print(f"  against {args.column} of {args.gt} ({report['num_archs']:,} architectures): Kendall tau "
              f"{report['kendall_tau']:.4f}, Spearman rho {report['spearman_rho']:.4f}, precision at top 5% "
              f"{report['precision_at_top_5pct']:.3f}")
        if args.report:
            write_json(prepare_output_file(args.report, "--report"), report)
    return 0

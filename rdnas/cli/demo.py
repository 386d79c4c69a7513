"""rdnas demo: the parser comes from rdnas.demo.add_arguments, the work from rdnas.demo.main."""


def add_parser(commands) -> None:
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


def run(args) -> int:
    from rdnas import distributed
    from rdnas.demo import config_from_args
    from rdnas.demo import main as demo_main
    from rdnas.pipeline import load_ground_truth
    from rdnas.run_folder import claim_folder

    load_ground_truth(config_from_args(args))  # a bad --gt, --gt-column or --data: refused before the folder claim
    world, _ = distributed.init(args.device)  # under torchrun: rank 0 alone holds the lock
    claim_folder(args.out, "demo", world)  # one writer per run folder: a second is refused
    return demo_main(args)

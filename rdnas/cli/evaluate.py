"""rdnas eval: rank architectures with a trained supernet and compare with ground truth."""

from rdnas.cli.arguments import (device, input_file, json_output, non_negative_int, positive_int,
                                 read_submission_archs, write_json)
from rdnas.cli.checkpoint import checkpoint_space, load_supernet, read_checkpoint, read_table


def add_parser(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="rank architectures with a trained supernet and compare with ground truth",
        description="Supernet accuracy of sampled architectures on the run's validation split (K subnets per "
        "forward pass), and with --gt the rank consistency against a ground-truth table column. Example: rdnas "
        "eval --checkpoint runs/spos/checkpoint.pt --archs 1000 --gt nb201_gt.csv --column cifar10_valid_acc. Under "
        "torchrun the ranks split the architectures (chunks of --subnets-per-pass) and rank 0 reports.",
    )
    evaluate.add_argument("--checkpoint", required=True, type=input_file, help="a checkpoint.pt written by rdnas train")
    evaluate.add_argument("--archs-json", type=input_file, help="evaluate exactly the architectures of a competition JSON file "
                          "(CVPR 2022 NAS Track 1: {\"arch1\": {\"acc\": 0, \"arch\": CODE}, ...}); with --out the "
                          "result is the same object with the estimate in \"acc\" (a submission)")
    evaluate.add_argument("--archs", type=positive_int, default=1000, help="how many architectures to sample (default 1000)")
    evaluate.add_argument("--gt", type=input_file, help="ground-truth table (nb201_gt.csv format, or a shipped one: shipped:nb201_digits_full); "
                          "architectures are drawn from it")
    evaluate.add_argument("--column", default="cifar10_valid_acc", help="ground-truth column (default cifar10_valid_acc)")
    evaluate.add_argument("--bn", choices=["recalibrate", "batch", "running"], default="recalibrate",
                          help="BN statistics: recalibrate per subnet on training batches (default), each "
                          "validation batch's own, or the supernet's running statistics")
    evaluate.add_argument("--calibration-steps", type=positive_int, default=4,
                          help="--bn recalibrate: training batches per subnet (default 4)")
    evaluate.add_argument("--subnets-per-pass", type=positive_int, default=32, help="K, architectures per forward pass")
    evaluate.add_argument("--batch-size", type=positive_int, default=256)
    evaluate.add_argument("--valid-limit", type=non_negative_int, default=0, help="use only this many validation images (0: all)")
    evaluate.add_argument("--seed", type=non_negative_int, default=0)
    evaluate.add_argument("--device", type=device, default="cpu")
    evaluate.add_argument("--out", help="write the results as JSON here")
    evaluate.add_argument("--quiet", action="store_true")


def run(args) -> int:
    import torch

    from rdnas import distributed
    from rdnas.rank import rank_report, supernet_accuracy
    from rdnas.spaces import get_space

    world, device = distributed.init(args.device)
    out = json_output(args.out)
    state = read_checkpoint(args.checkpoint)
    space = get_space(checkpoint_space(state))
    table = read_table(args.gt, space, args.column, "--gt", args.checkpoint) if args.gt else None
    submission = (read_submission_archs(args.archs_json, space, "--archs-json", against=f"; the checkpoint "
                                        f"{args.checkpoint} is a {space.name} supernet") if args.archs_json else None)
    generator = torch.Generator().manual_seed(args.seed)
    if submission is not None:
        archs = space.validate([arch for _, arch in submission])
    else:
        pool = table.archs if table is not None else space.enumerate() if space.enumerable else None
        archs = (pool[torch.randperm(len(pool), generator=generator)[:args.archs]] if pool is not None
                 else space.sample(args.archs, generator))
    if table is not None and submission is not None:
        missing = int((table.rows_of(archs) < 0).sum())
        if missing:  # found now, not after the evaluation
            raise ValueError(f"--gt: {args.gt} has no row for {missing} of the {len(archs)} architectures of "
                             f"--archs-json {args.archs_json}")
    supernet, config, data = load_supernet(args.checkpoint, device, state=state)
    valid_batches = data.evaluation_batches("valid", args.batch_size, device, limit=args.valid_limit)
    calibration = data.evaluation_batches("train", args.batch_size, device, shuffle=True,
                                          generator=torch.Generator().manual_seed(args.seed))
    num_valid = min(args.valid_limit, len(data.valid)) if args.valid_limit else len(data.valid)
    valid_name = getattr(data.valid, "name", "validation")
    accuracy = supernet_accuracy(supernet, archs, valid_batches, bn=args.bn, calibration_batches=calibration,
                                 calibration_steps=args.calibration_steps, subnets_per_pass=args.subnets_per_pass,
                                 progress=not args.quiet, distributed=True)
    if not world.is_main:
        return 0
    result = {"checkpoint": str(args.checkpoint), "bn": args.bn, "num_archs": len(archs),
              "valid_images": num_valid, "archs": [space.to_string(a) for a in archs],
              "supernet_accuracy": accuracy.tolist()}
    print(f"rdnas eval: {len(archs)} architectures, supernet accuracy on {num_valid} {valid_name} images "
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
        write_json(out, result)
        print(f"  results written to {out}")
    return status

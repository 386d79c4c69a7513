"""Command-line front end: `rdnas <command>` (also `python -m rdnas <command>`)."""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdnas",
        description="Ranking distillation for one-shot neural architecture search (RD-NAS).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    demo = commands.add_parser(
        "demo",
        help="demonstrate the fused ranking-loss ops (checks, speed, a miniature ranking distillation)",
        description="Checks the fused ops against their references, times the all-pairs loss against the naive "
        "N x N version, and distils a teacher ranking into free student scores, reporting Kendall tau.",
    )
    demo.add_argument("--n", type=int, default=2048, help="number of items in the all-pairs loss (default 2048)")
    demo.add_argument("--steps", type=int, default=150, help="distillation steps (default 150)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    demo.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")

    train = commands.add_parser(
        "train",
        help="train a one-shot supernet (checkpoints every epoch; --resume continues a run)",
        description="Train a weight-sharing supernet. Writes OUT/checkpoint.pt (atomically, every epoch), "
        "OUT/metrics.jsonl and OUT/config.json. Example: rdnas train --data digits --epochs 10 --out runs/spos",
    )
    train.add_argument("--space", choices=["nb201"], default="nb201", help="search space (default nb201)")
    train.add_argument("--method", choices=["spos"], default="spos",
                       help="training method: spos = uniform path sampling (default)")
    train.add_argument("--data", default="digits",
                       help="digits (scikit-learn's, no download), cifar10:<dir>, cifar100:<dir> or imagenet16:<dir>")
    train.add_argument("--image-size", type=int, default=16, help="digits only: resize the 8x8 images (default 16)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=0.025)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--paths", type=int, default=1, help="K paths per step, losses summed (default 1)")
    train.add_argument("--channels", type=int, default=16, help="C, the first stage's width (default 16)")
    train.add_argument("--cells", type=int, default=5, help="N, cells per stage (default 5)")
    train.add_argument("--no-bn-affine", action="store_true", help="BN without learnable scale and shift in cells")
    train.add_argument("--no-bn-running-stats", action="store_true", help="BN without running statistics")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
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
    evaluate.add_argument("--archs", type=int, default=1000, help="how many architectures to sample (default 1000)")
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
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--out", help="write the results as JSON here")
    evaluate.add_argument("--quiet", action="store_true")
    return parser


def run_train(args) -> int:
    from rdnas.train import SPOSTrainer, TrainConfig

    config = TrainConfig(
        data=args.data, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, paths_per_step=args.paths, channels=args.channels,
        cells_per_stage=args.cells, bn_affine=not args.no_bn_affine,
        bn_track_running_stats=not args.no_bn_running_stats, seed=args.seed, device=args.device,
        amp=not args.no_amp, out_dir=args.out)
    history = SPOSTrainer(config, progress=not args.quiet).fit(resume=args.resume)
    last = history[-1] if history else {}
    print(f"rdnas train: {len(history)} epochs in {args.out} (last: loss {last.get('train_loss', float('nan')):.4f}, "
          f"accuracy {last.get('train_acc', float('nan')):.3f})")
    return 0


def run_eval(args) -> int:
    import json

    import torch

    from rdnas.data import DeviceBatches
    from rdnas.rank import GroundTruth, rank_report, supernet_accuracy
    from rdnas.spaces import nb201
    from rdnas.supernet import NB201Supernet
    from rdnas.train import TrainConfig, load_checkpoint, load_data

    state = load_checkpoint(args.checkpoint)
    config = TrainConfig.from_dict(state["config"])
    config.device = args.device
    data = load_data(config)
    supernet = NB201Supernet(config.channels, config.cells_per_stage, data.train.num_classes, data.in_channels,
                             config.bn_affine, config.bn_track_running_stats)
    supernet.load_state_dict(state["model"])
    supernet.to(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    table = GroundTruth.load(args.gt) if args.gt else None
    pool = table.archs if table is not None else nb201.all_archs()
    archs = pool[torch.randperm(len(pool), generator=generator)[:args.archs]]
    valid = data.valid if not args.valid_limit else data.valid.subset(range(min(args.valid_limit, len(data.valid))))
    valid_batches = DeviceBatches(valid, args.batch_size, args.device, data.mean, data.std, shuffle=False)
    calibration = DeviceBatches(data.train, args.batch_size, args.device, data.mean, data.std, augment=False,
                                generator=torch.Generator().manual_seed(args.seed))
    accuracy = supernet_accuracy(supernet, archs, valid_batches, bn=args.bn, calibration_batches=calibration,
                                 calibration_steps=args.calibration_steps, subnets_per_pass=args.subnets_per_pass,
                                 progress=not args.quiet)
    result = {"checkpoint": str(args.checkpoint), "bn": args.bn, "num_archs": len(archs),
              "valid_images": len(valid), "archs": [nb201.to_string(tuple(a)) for a in archs.tolist()],
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
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"  results written to {args.out}")
    return status


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from rdnas.demo import main as demo_main

        return demo_main(args)
    if args.command == "train":
        return run_train(args)
    if args.command == "eval":
        return run_eval(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())

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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from rdnas.demo import main as demo_main

        return demo_main(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())

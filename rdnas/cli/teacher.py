"""rdnas teacher check: is a teacher worth distilling? Its tau on your labelled architectures beside the supernet's."""

from rdnas.cli.arguments import device, input_file, int_at_least, json_output, write_json
from rdnas.spaces import space_names


def add_parser(commands) -> None:
    teacher = commands.add_parser(
        "teacher", help="check a teacher before distilling it: its rank quality on your labelled architectures")
    teacher_commands = teacher.add_subparsers(dest="teacher_command", required=True, metavar="<teacher command>")
    check = teacher_commands.add_parser(
        "check",
        help="Kendall tau of a teacher table (and of a trained supernet) on a few labelled architectures",
        description="Reads the teacher's score of every architecture of --gt (a small table of architectures you "
        "have trained, with their accuracy) from --teacher-table, and reports the teacher's Kendall tau against that "
        "accuracy with a bootstrap interval over the architectures; with --checkpoint, the supernet's tau on the "
        "same architectures (BN recalibrated per subnet) and the paired difference. RD-NAS pays off only when the "
        "teacher ranks better than the supernet does by itself; the command then reads the gain curve rdnas ships "
        "(measured by benchmarks/teacher_curve_experiment.py on the whole-space digits table), prints what it gives "
        "at the teacher's tau, and ends with a verdict: the teacher clearly better than the supernet, clearly worse, "
        "or neither. "
        "Example: rdnas teacher check --teacher-table synflow.csv --teacher synflow --gt my_archs.csv --column "
        "valid_acc --checkpoint runs/spos/checkpoint.pt",
    )
    check.add_argument("--teacher-table", required=True, type=input_file,
                       help="a score table with an arch (or arch_str) column: rdnas proxies output, a predictor "
                       "ranking, any table of this space")
    check.add_argument("--teacher", help="the teacher's column (default: the table's only numeric column)")
    check.add_argument("--gt", required=True, type=input_file,
                       help="your labelled architectures: a table with an arch_str (or arch) column and accuracy")
    check.add_argument("--column", help="the accuracy column of --gt (default: its only numeric column)")
    check.add_argument("--checkpoint", type=input_file, help="a supernet checkpoint (rdnas train) to compare with")
    check.add_argument("--space", choices=list(space_names()), default=None,
                       help="search space of the tables (default: the checkpoint's, else nb201)")
    check.add_argument("--bootstrap", type=int_at_least(100), default=1000,
                       help="bootstrap resamples of the architectures (default 1000, at least 100)")
    check.add_argument("--device", type=device, default="cpu", help="torch device for the supernet (default cpu)")
    check.add_argument("--out", help="write the report as JSON here")
    check.set_defaults(usage_error=check.error)


def _numeric_column(table, name, option, path, usage_error):
    if name is not None:
        table.require_columns([name])
        return name
    candidates = [c for c in table.columns if c not in ("index", "trained", "seeds")]
    if len(candidates) != 1:
        usage_error(f"{option}: {path} has the columns {sorted(table.columns)}; name the one to use")
    return candidates[0]


def run(args) -> int:
    import json
    from importlib import resources
    from pathlib import Path

    from rdnas.cli.checkpoint import checkpoint_space, load_supernet, read_checkpoint, read_table
    from rdnas.rank.teacher_check import expected_gain, teacher_check, verdict

    out = json_output(args.out)
    state = read_checkpoint(args.checkpoint) if args.checkpoint else None
    space = checkpoint_space(state) if state is not None else (args.space or "nb201")
    if args.space and state is not None and args.space != space:
        args.usage_error(f"--space {args.space}: the checkpoint {args.checkpoint} is a {space} supernet")
    labelled = read_table(args.gt, space, args.column, "--gt", args.checkpoint)
    column = _numeric_column(labelled, args.column, "--column", args.gt, args.usage_error)
    teacher_table = read_table(args.teacher_table, space, args.teacher, "--teacher-table", args.checkpoint)
    teacher_column = _numeric_column(teacher_table, args.teacher, "--teacher", args.teacher_table, args.usage_error)
    archs = labelled.archs
    rows = teacher_table.rows_of(archs)
    missing = (rows < 0).nonzero().flatten().tolist()
    if missing:
        from rdnas.spaces import get_space

        example = get_space(space).to_string(archs[missing[0]])
        args.usage_error(f"--teacher-table: {args.teacher_table} has no row for {len(missing)} of the {len(archs)} "
                         f"architectures of {args.gt}, e.g. {example}")
    if len(archs) < 4:
        args.usage_error(f"--gt: {args.gt} has {len(archs)} architectures; at least 4 are needed for a rank check")
    teacher_scores = teacher_table.column(teacher_column)[rows.numpy()]
    truth = labelled.column(column)
    estimates = None
    if state is not None:
        from rdnas.rank import recalibrated_accuracy_fn

        supernet, config, data = load_supernet(args.checkpoint, args.device, state=state)
        estimates = recalibrated_accuracy_fn(supernet, data, args.device,
                                             calibration_batch_size=config.batch_size)(archs).numpy()
    report = teacher_check(teacher_scores, truth, estimates, bootstrap_samples=args.bootstrap)
    report.update(teacher_table=str(args.teacher_table), teacher_column=teacher_column, gt=str(args.gt),
                  column=column, checkpoint=str(args.checkpoint) if args.checkpoint else None)
    low, high = report["teacher_kendall_tau_ci95"]
    print(f"rdnas teacher check: {len(archs)} labelled architectures of {args.gt} ({column})")
    print(f"  teacher {teacher_column}: Kendall tau {report['teacher_kendall_tau']:.3f} (95% bootstrap "
          f"{low:.3f}..{high:.3f})")
    if estimates is not None:
        low, high = report["supernet_kendall_tau_ci95"]
        d_low, d_high = report["teacher_minus_supernet_ci95"]
        print(f"  supernet {args.checkpoint}: Kendall tau {report['supernet_kendall_tau']:.3f} (95% bootstrap "
              f"{low:.3f}..{high:.3f})")
        print(f"  teacher - supernet: {report['teacher_minus_supernet']:+.3f} (95% bootstrap {d_low:+.3f}..{d_high:+.3f}; "
              f"the teacher ranks better in {100 * report['teacher_better_share']:.0f}% of the resamples)")
    curve_path = Path(str(resources.files("rdnas.minibench") / "data" / "teacher_curve.json"))
    if curve_path.exists():
        prediction = expected_gain(json.loads(curve_path.read_text()), report["teacher_kendall_tau"])
        report["curve_prediction"] = prediction
        if prediction is not None:
            where = "" if prediction["within_measured_range"] else ", outside the measured teachers' taus"
            print(f"  the measured curve (NB201 on digits, {prediction['epochs']} epochs, SPOS's own tau "
                  f"{prediction['spos_kendall_tau']:.3f}): the line through its teachers gives a gain of "
                  f"{prediction['gain']:+.3f} in the supernet's tau for a teacher of this tau "
                  f"({prediction['slope']:+.3f} per unit of teacher tau{where})")
            for point in prediction["nearby"]:
                interval = point["gain_ci95"]
                print(f"    measured nearby: {point['teacher']} (tau {point['teacher_kendall_tau']:.3f}) gained "
                      f"{point['gain']:+.3f}" + (f" (95% bootstrap {interval[0]:+.3f}..{interval[1]:+.3f})"
                                                 if interval else ""))
    else:
        print("  this rdnas ships no measured gain curve (benchmarks/teacher_curve_experiment.py measures it)")
    report["verdict"] = verdict(report)
    print(f"  verdict: {report['verdict']}")
    if out:
        write_json(out, report)
    return 0

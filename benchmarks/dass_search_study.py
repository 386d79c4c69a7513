"""DaSS's search on unseen tasks (issue 26, section 3): on every meta-test task of the KD benchmark, ``rdnas dass
search`` picks a student under a FLOPs cap from 500 candidates and KD-trains it (3 seeds, the benchmark's student
recipe) beside a FLOPs-matched random pick and the best pick of a zero-cost proxy (synflow); repeated over several
candidate samples per task, so the comparison is paired over (task, sample).

Per (task, sample s): the candidates are ``sample_architectures(500, seed=1000 + s)`` at the model's student
options (written to ``<task>_sample<s>.archs``), the cap is their median FLOPs on the task (half of them eligible),
and the random pick is seeded with s. The DaSS model is ``rdnas dass fit --bench BENCH --seed 0`` (fitted once into
the results folder unless ``--model`` names one); every task's teacher is the benchmark's
(``BENCH/teachers/<task>.pt``, rebuilt by ``bash benchmarks/dass_build.sh`` where absent). A finished search (its
JSON) is never rerun, and an unfinished one resumes from its journal, so the script can be stopped and restarted::

    OMP_NUM_THREADS=1 python benchmarks/dass_search_study.py run                 # 5 tasks x 3 samples x 3 picks x 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/dass_search_study.py run --shard 0/2 &   # or two processes side by side
    OMP_NUM_THREADS=1 python benchmarks/dass_search_study.py run --shard 1/2 &   # (the model is fitted once)
    python benchmarks/dass_search_study.py report     # benchmarks/results/dass_search/summary.{json,md}

``report``: per task the mean KD validation accuracy of each pick over the samples, and over every (task, sample)
the paired difference of DaSS's pick against the random and the proxy pick (mean, std, Wilcoxon signed-rank p).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from experiment_harness import shard, shard_jobs
from rdnas.atomic_file import write_text_atomic

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BENCH = RESULTS / "dass_kdbench"
OUT = RESULTS / "dass_search"
PICKS = ("dass", "random", "proxy")


def read_bench(bench):
    """The benchmark's tasks file (``--bench``: a folder or ``shipped``): its tasks and its students' recipe."""
    from rdnas.kd.bench import bench_folder, read_bench_tasks

    return read_bench_tasks(bench_folder(bench))


def fitted_model(args) -> Path:
    """``--model``, or the study's own DaSS model (fitted once: ``rdnas dass fit --seed 0``; under an exclusive
    lock, so that shards side by side fit it once and the others wait for it)."""
    import fcntl

    from rdnas.cli import main as rdnas

    if args.model:
        return Path(args.model)
    model = args.out / "dass_seed0.pt"
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "dass_seed0.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model.exists() and rdnas(["dass", "fit", "--bench", str(args.bench), "--seed", "0", "--out",
                                         str(model), "--quiet"]) != 0:
            raise SystemExit("rdnas dass fit failed")
    return model


def run(args) -> int:
    from rdnas.cli import main as rdnas
    from rdnas.kd import search
    from rdnas.kd.teacher import load_teacher
    from rdnas.minibench.build import sample_architectures
    from rdnas.predictors import dass
    from rdnas.spaces import get_space

    built = read_bench(args.bench)
    tasks = [t.name for t in built.tasks if t.split == "meta-test"]
    if not tasks:
        raise SystemExit(f"{args.bench} has no meta-test task")
    teachers = {name: Path(args.teachers) / f"{name}.pt" for name in tasks}
    missing = [str(path) for path in teachers.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"no teacher file {', '.join(missing)}: rebuild the benchmark's teachers with "
                         "`bash benchmarks/dass_build.sh` (they are not committed) or pass --teachers")
    args.out.mkdir(parents=True, exist_ok=True)
    model = fitted_model(args)
    _, config = dass.load_model(model)
    recipe = built.student  # the picks train as the benchmark's students did
    space = get_space(config["space"])
    options = config["student_options"] or {}
    searches = shard_jobs([(name, sample) for name in tasks for sample in range(args.samples)], args.shard)
    for name in dict.fromkeys(task for task, _ in searches):  # the tasks of this shard's searches, in order
        teacher = load_teacher(teachers[name], config["space"])
        for sample in (sample for task, sample in searches if task == name):
            out = args.out / f"{name}_sample{sample}.json"
            if out.exists():
                print(f"{name} sample {sample}: done already ({out.name})")
                continue
            archs = sample_architectures(args.candidates, seed=1000 + sample, space=space)
            names = [space.to_string(a) for a in archs]
            archs_file = args.out / f"{name}_sample{sample}.archs"
            write_text_atomic(archs_file, "\n".join(names) + "\n")
            cap = float(np.median(search.student_costs(teacher, names, options)["flops"].numpy()))
            status = rdnas(["dass", "search", "--model", str(model), "--teacher", str(teachers[name]),
                            "--archs-file", str(archs_file), "--seed", str(sample), "--max-flops", repr(cap),
                            "--seeds", str(args.seeds), "--epochs", str(recipe.epochs), "--batch-size",
                            str(recipe.batch_size), "--lr", repr(recipe.lr), "--out", str(out), "--quiet"])
            if status != 0:
                raise SystemExit(f"rdnas dass search failed on {name} sample {sample}")
    return 0


def report(args) -> int:
    results = {}
    for path in sorted(args.out.glob("*_sample*.json")):
        task, sample = path.stem.rsplit("_sample", 1)
        values = json.loads(path.read_text())
        results[(task, int(sample))] = {pick: values["picks"][pick]["kd_valid_acc"]["mean"] for pick in PICKS}
        results[(task, int(sample))]["flops"] = {pick: values["picks"][pick]["flops"] for pick in PICKS}
        results[(task, int(sample))]["cap"] = values["max_flops"]
    if not results:
        print(f"no searches yet in {args.out}: run `python benchmarks/dass_search_study.py run` first",
              file=sys.stderr)
        return 1
    lines = ["| task | samples | DaSS pick | random pick (FLOPs-matched) | synflow pick | DaSS - random | DaSS - synflow |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    summary = {"tasks": {}, "pairs": len(results)}
    for task in sorted({t for t, _ in results}):
        mine = [r for (t, _), r in sorted(results.items()) if t == task]
        means = {pick: float(np.mean([r[pick] for r in mine])) for pick in PICKS}
        summary["tasks"][task] = {"samples": len(mine), **means}
        lines.append(f"| {task} | {len(mine)} | {means['dass']:.2f} | {means['random']:.2f} | {means['proxy']:.2f} | "
                     f"{means['dass'] - means['random']:+.2f} | {means['dass'] - means['proxy']:+.2f} |")
    lines.append("")
    for other, label in (("random", "the FLOPs-matched random pick"), ("proxy", "the synflow pick")):
        diff = np.array([r["dass"] - r[other] for r in results.values()])
        p = float(wilcoxon(diff).pvalue) if len(diff) > 1 and diff.any() else float("nan")
        spread = float(np.std(diff, ddof=1)) if len(diff) > 1 else float("nan")
        summary[f"dass_minus_{other}"] = {"mean": float(diff.mean()), "std": spread, "n": len(diff),
                                          "wilcoxon_p": p, "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}
        lines.append(f"DaSS's pick against {label}: {diff.mean():+.2f} ± {spread:.2f} points over {len(diff)} (task, "
                     f"sample) pairs, {int((diff > 0).sum())} wins / {int((diff < 0).sum())} losses, Wilcoxon p = "
                     f"{p:.3g}.")
    text = ("KD validation accuracy (%) of each pick, mean over its KD seeds, then over the candidate samples; "
            "every pick under the median FLOPs of its 500 candidates.\n\n" + "\n".join(lines))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "summary.md", text + "\n")
    write_text_atomic(args.out / "summary.json", json.dumps(summary, indent=1))
    return 0


def main(argv=None) -> int:
    from rdnas.cli.arguments import positive_int

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("run", "report"):
        step = steps.add_parser(name)
        step.add_argument("--out", type=Path, default=OUT, help=f"the searches' files (default {OUT})")
        if name == "run":
            step.add_argument("--bench", default=str(BENCH), help=f"the KD benchmark (default {BENCH}; or shipped)")
            step.add_argument("--teachers", default=None,
                              help="the folder of the meta-test tasks' teacher files (default BENCH/teachers)")
            step.add_argument("--model", default=None, help="a DaSS model file (default: fit one, seed 0)")
            step.add_argument("--samples", type=positive_int, default=3, help="candidate samples per task (default 3)")
            step.add_argument("--candidates", type=positive_int, default=500, help="candidates per sample (default 500)")
            step.add_argument("--seeds", type=positive_int, default=3, help="KD seeds per pick (default 3)")
            step.add_argument("--shard", type=shard, help="i/n: run only the searches at positions p with p mod n "
                              "= i of the (task, sample) order, e.g. two shards side by side, one per core")
    args = parser.parse_args(argv)
    if args.step == "run" and args.teachers is None:
        args.teachers = str(Path(args.bench) / "teachers")
    return {"run": run, "report": report}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())

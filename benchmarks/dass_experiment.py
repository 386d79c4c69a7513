"""DaSS against its baselines and ablations on the KD mini-benchmark's meta-test tasks (issue 26, section 3).

The benchmark is the folder ``benchmarks/dass_build.sh`` writes (``benchmarks/results/dass_kdbench``: kdbench.csv,
embeddings.pt, teachers/, runs*.csv). Jobs, one JSON each in ``benchmarks/results/dass/`` (written atomically when
the job ends; a finished job is never run again, so the script can be stopped and restarted at any time, and
several processes can share the work through ``--methods`` / ``--seeds``):

- ``baselines``: per meta-test task, every seed-free baseline (FLOPs, params, the zero-cost proxies on the task's
  minibatch, the remapped students' zero-shot accuracy, -KL to the teacher, the probe-map cosine):
  ``baselines_<task>.json``;
- per meta-trained method and meta-training seed (``<method>_seed<s>.json``): ``dass``; its ablations
  ``dass-no-adapt``, ``dass-without-s``, ``dass-without-t``, ``dass-without-a``, ``dass-random-embedding``; the
  learned baselines ``dass-ce`` (DaSS on no-KD labels), ``metad2a`` (dataset-conditioned, no teacher), ``gbt``
  and ``mlp`` (architecture only, pooled meta-train KD labels).

Every job records the benchmark's table digest and the meta-training settings; ``run`` refuses to add jobs to a
results folder made with another benchmark or other settings, and ``report`` refuses to mix them::

    OMP_NUM_THREADS=1 python benchmarks/dass_experiment.py run                         # everything, seeds 0-4
    OMP_NUM_THREADS=1 python benchmarks/dass_experiment.py run --methods dass,gbt --seeds 0,1
    OMP_NUM_THREADS=1 python benchmarks/dass_experiment.py run --shard 0/2 &       # two processes side by side,
    OMP_NUM_THREADS=1 python benchmarks/dass_experiment.py run --shard 1/2 &       # one per core
    python benchmarks/dass_experiment.py run --dry-run                                # what is done, what is left
    python benchmarks/dass_experiment.py report   # benchmarks/results/dass_report.{json,md}, the table printed

``report`` is :func:`rdnas.kd.evaluation.build_report` over the finished jobs, the same report ``rdnas dass
evaluate`` writes: per method Spearman / Kendall / P@top-10 % / top-1 regret (mean over tasks, spread over
seeds), Wilcoxon signed-rank tests of DaSS against each method, the seed ceiling and the KD-vs-CE premise.
"""

import json
import platform
import sys
from pathlib import Path

import torch

from experiment_harness import comma_list, command_line, load_results, run_pending, shard, shard_jobs
from rdnas.atomic_file import write_text_atomic
from rdnas.cli.dass import add_meta_training_options
from rdnas.kd import evaluation, methods
from rdnas.kd.baselines import proxy_names

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BENCH = RESULTS / "dass_kdbench"
RUNS = RESULTS / "dass"
SEEDS = (0, 1, 2, 3, 4)
CHOICES = ("baselines",) + methods.SEEDED_METHODS


def settings_of(args) -> methods.FitSettings:
    return methods.FitSettings(episodes=args.episodes, query=args.query, width=args.width,
                                  eval_every=args.eval_every)


def open_bench(args) -> methods.EvaluationBench:
    """The benchmark ``--bench`` names (``shipped``: the package data), or exit with the reason it cannot be read."""
    from rdnas.kd.bench import bench_folder

    try:
        return methods.EvaluationBench(bench_folder(args.bench))
    except ValueError as error:
        sys.exit(f"dass_experiment.py: --bench: {error}")


def run(args) -> int:
    runs = Path(args.results)
    bench = open_bench(args)
    settings = settings_of(args)
    proxies = list(proxy_names()) if args.proxies is None else [
        p for p in args.proxies if p != "none"]
    for path in sorted(runs.glob("*.json")):  # a resume adds to the same experiment, or is refused
        try:
            methods.check_job(path, json.loads(path.read_text()), bench.digest, settings,
                                 proxies if "baselines" in args.methods else None)
        except ValueError as error:
            sys.exit(f"dass_experiment.py: {error}")
    if bench.ce is None and "dass-ce" in args.methods:
        sys.exit(f"dass_experiment.py: dass-ce needs CE labels, and {args.bench} has none (built without the ce "
                 "regime); leave it out of --methods")
    jobs = [("baselines", task) for task in bench.judged if "baselines" in args.methods]
    jobs += [(method, seed) for method in methods.SEEDED_METHODS if method in args.methods for seed in args.seeds]
    jobs = shard_jobs(jobs, args.shard)

    def run_one(job: str, key) -> dict:
        return {**methods.run_job(bench, job, key, settings, proxies), "bench": str(args.bench),
                "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}

    return run_pending(jobs, lambda job, key: methods.job_path(runs, job, key), run_one,
                       lambda job, key: f"{job} {'task' if job == 'baselines' else 'seed'} {key}",
                       lambda result, seconds: f"{seconds:.1f} s", dry_run=args.dry_run)


def report(args) -> int:
    runs = Path(args.results)
    results = load_results(runs)
    if not results:
        sys.exit(f"dass_experiment.py: no results in {runs}; run first")
    digests = {r.get("bench_digest") for r in results}
    settings = {json.dumps(r["settings"], sort_keys=True) for r in results if r["kind"] == "seeded"}
    if len(digests) > 1 or len(settings) > 1:
        sys.exit(f"dass_experiment.py: {runs} mixes benchmarks {sorted(map(str, digests))} or meta-training settings "
                 f"{sorted(settings)}; report one experiment per folder")
    bench = open_bench(args)
    if digests != {bench.digest}:
        sys.exit(f"dass_experiment.py: the results were made with benchmark table {digests.pop()}, {args.bench} is "
                 f"{bench.digest}")
    full = evaluation.build_report(bench, results)
    full["settings"] = json.loads(settings.pop()) if settings else None
    full["jobs"] = len(results)
    text = evaluation.markdown_report(full)
    out = Path(args.out)
    write_text_atomic(out, json.dumps(full, indent=1))
    write_text_atomic(out.with_suffix(".md"), text)
    print(text)
    print(f"-> {out}, {out.with_suffix('.md')}")
    return 0


def common_options(parser) -> None:
    parser.add_argument("--bench", default=str(BENCH),
                        help=f"the KD benchmark folder, or 'shipped': the benchmark shipped with rdnas "
                        f"(default {BENCH})")
    parser.add_argument("--results", default=str(RUNS), help=f"the jobs' JSON folder (default {RUNS})")


def run_options(parser) -> None:
    common_options(parser)
    parser.add_argument("--seeds", type=comma_list(int), default=list(SEEDS), help="meta-training seeds (default 0-4)")
    add_meta_training_options(parser)
    parser.add_argument("--proxies", type=comma_list(), default=None,
                        help="zero-cost proxies of the baselines jobs (default every registered one; none: none)")
    parser.add_argument("--shard", type=shard, help="i/n: run only the jobs at positions p with p mod n = i, e.g. two "
                        "shards side by side, one per core")


def report_options(parser) -> None:
    common_options(parser)
    parser.add_argument("--out", default=str(RESULTS / "dass_report.json"),
                        help="the report (JSON; the Markdown beside it with .md)")


def main(argv=None) -> int:
    return command_line(__doc__, run, report, "--methods", CHOICES, run_options=run_options,
                        report_options=report_options,
                        run_help="score the baselines and meta-train every method per seed, one JSON per job; "
                        "resumable", report_help="the report and its Markdown table", argv=argv)


if __name__ == "__main__":
    sys.exit(main())

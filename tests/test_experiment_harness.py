"""benchmarks/experiment_harness.py, the run / report harness of the experiment scripts: finished runs are skipped
(and what they share is not even loaded), each result is one JSON written when its run ends, --dry-run runs
nothing, and a name outside the script's choices is a usage error."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from experiment_harness import command_line, comma_list, load_results, run_pending, shard  # noqa: E402


def test_run_pending_runs_each_job_once_and_loads_what_jobs_share_only_when_one_runs(tmp_path, capsys):
    calls = []

    def prepare():
        calls.append("prepare")
        return 10

    def run_one(context, name, seed):
        calls.append((name, seed))
        return {"name": name, "seed": seed, "value": context * seed}

    jobs = [("a", 1), ("b", 2)]
    arguments = (jobs, lambda name, seed: tmp_path / f"{name}_{seed}.json", run_one,
                 lambda name, seed: f"{name}/{seed}", lambda result, seconds: f"value {result['value']}")
    assert run_pending(*arguments, prepare=prepare) == 0
    assert calls == ["prepare", ("a", 1), ("b", 2)]
    assert json.loads((tmp_path / "b_2.json").read_text()) == {"name": "b", "seed": 2, "value": 20}
    assert "a/1: value 10" in capsys.readouterr().out
    assert run_pending(*arguments, prepare=prepare) == 0  # everything done: nothing runs, nothing is loaded
    assert calls == ["prepare", ("a", 1), ("b", 2)]
    assert capsys.readouterr().out.count("done already") == 2
    assert [r["name"] for r in load_results(tmp_path)] == ["a", "b"]


def test_dry_run_lists_and_runs_nothing(tmp_path, capsys):
    (tmp_path / "a.json").write_text("{}")
    ran = []
    run_pending([("a",), ("b",)], lambda name: tmp_path / f"{name}.json", lambda name: ran.append(name),
                lambda name: name, lambda result, seconds: "", dry_run=True)
    out = capsys.readouterr().out
    assert ran == [] and "a: done already" in out and "b: to run (b.json)" in out and "1 job(s) to run" in out
    assert not (tmp_path / "b.json").exists()


def test_a_failing_run_writes_no_result_and_keeps_the_finished_ones(tmp_path):
    def run_one(name):
        if name == "b":
            raise RuntimeError("boom")
        return {"name": name}

    with pytest.raises(RuntimeError, match="boom"):
        run_pending([("a",), ("b",)], lambda name: tmp_path / f"{name}.json", run_one, lambda name: name,
                    lambda result, seconds: "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_command_line_parses_choices_and_refuses_unknown_ones(capsys):
    seen = {}

    def run(args):
        seen.update(vars(args))
        return 0

    def options(parser):
        parser.add_argument("--seeds", type=comma_list(int), default=[0])

    assert command_line("doc", run, lambda args: 3, "--methods", ("x", "y"), ("x",), run_options=options,
                        argv=["run", "--methods", "y,x", "--seeds", "1,,2"]) == 0
    assert seen["methods"] == ["y", "x"] and seen["seeds"] == [1, 2] and seen["dry_run"] is False
    assert command_line("doc", run, lambda args: 3, "--methods", ("x", "y"), argv=["report"]) == 3
    with pytest.raises(SystemExit) as exit_info:
        command_line("doc", run, lambda args: 3, "--methods", ("x", "y"), argv=["run", "--methods", "z"])
    assert exit_info.value.code == 2
    assert "unknown method(s) ['z']; methods: x, y" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["2/2", "0/0", "-1/2", "1", "x/2", "", "1/2/3"])
def test_a_bad_shard_is_a_one_line_usage_error(text, capsys):
    """``--shard i/n`` (the harness's ``shard`` type, e.g. teacher_curve_experiment.py's): anything but 0 <= i < n is
    refused at parse time, exit 2, one line naming the option; nothing runs."""
    ran = []

    def options(parser):
        parser.add_argument("--shard", type=shard)

    assert command_line("doc", lambda args: ran.append(args.shard) or 0, lambda args: 3, "--methods", ("x",),
                        run_options=options, argv=["run", "--shard", "1/2"]) == 0
    assert ran == [(1, 2)]
    with pytest.raises(SystemExit) as exit_info:
        command_line("doc", lambda args: ran.append(args.shard) or 0, lambda args: 3, "--methods", ("x",),
                     run_options=options, argv=["run", "--shard", text])
    assert exit_info.value.code == 2 and ran == [(1, 2)]
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --shard:" in error and "Traceback" not in error


def test_the_teacher_curve_script_refuses_a_bad_shard_before_any_work(tmp_path, capsys):
    import teacher_curve_experiment

    with pytest.raises(SystemExit) as exit_info:
        teacher_curve_experiment.main(["run", "--shard", "3/2", "--runs", str(tmp_path / "runs"),
                                       "--work", str(tmp_path / "work")])
    assert exit_info.value.code == 2
    assert "argument --shard: shard (i, n) needs 0 <= i < n, got (3, 2)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_load_table_turns_a_missing_malformed_or_foreign_table_into_one_line(tmp_path):
    from experiment_harness import load_table

    with pytest.raises(SystemExit, match=r"^--gt: no such file: .*missing.csv$"):
        load_table(tmp_path / "missing.csv", "digits_valid_acc", "--gt")
    with pytest.raises(SystemExit, match=r"^--gt: no shipped table 'nothing'"):
        load_table("shipped:nothing", "digits_valid_acc", "--gt")
    broken = tmp_path / "broken.csv"
    broken.write_text("arch_str,digits_valid_acc\nnot-a-cell,90\n")
    with pytest.raises(SystemExit, match=r"^--gt: .*broken.csv:2: "):
        load_table(broken, "digits_valid_acc", "--gt")
    other = tmp_path / "other.csv"
    other.write_text("arch_str,acc\n|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|,90\n")
    with pytest.raises(SystemExit, match=r"^--digits-gt: .*other.csv has no column 'digits_valid_acc'"):
        load_table(other, "digits_valid_acc", "--digits-gt")
    assert load_table(other, "acc", "--gt").columns["acc"].tolist() == [90.0]


@pytest.mark.parametrize("path", ["/nowhere/table.csv", "shipped:nothing"])
def test_constrained_search_refuses_a_bad_digits_full_table_before_any_work(path, capsys):
    import constrained_search_experiments

    with pytest.raises(SystemExit) as exit_info:
        constrained_search_experiments.main(["report", "--on", "digits-full", "--digits-full-gt", path])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("is not a file" in error or "no shipped table 'nothing'" in error) and "Traceback" not in error


def test_shard_jobs_takes_every_nth_job_and_all_without_a_shard():
    from experiment_harness import shard_jobs

    jobs = [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0)]
    assert shard_jobs(jobs, (0, 2)) == [("a", 0), ("b", 0), ("c", 0)]
    assert shard_jobs(jobs, (1, 2)) == [("a", 1), ("b", 1)]
    assert shard_jobs(jobs, None) == jobs
    assert sorted(shard_jobs(jobs, (0, 3)) + shard_jobs(jobs, (1, 3)) + shard_jobs(jobs, (2, 3))) == sorted(jobs)


@pytest.mark.parametrize("script", ["dass_experiment", "dass_search_study"])
@pytest.mark.parametrize("text", ["3/2", "0/0", "-1/2", "x", ""])
def test_the_dass_scripts_refuse_a_bad_shard_before_any_work(script, text, tmp_path, capsys):
    import importlib

    module = importlib.import_module(script)
    folder = tmp_path / "out"
    argv = ["run", "--shard", text, "--results" if script == "dass_experiment" else "--out", str(folder)]
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --shard:" in error and "Traceback" not in error
    assert not folder.exists()

"""Bad input to every command is refused before any work, naming the command and the option (issue 24).

The options are read from the parsers themselves: every numeric option must be in NUMERIC with the classes of bad
values it refuses (a new numeric option without an entry, or without a checking type, fails here), and every input
file option must be in INPUT_FILES. Parse-time refusals run in-process through rdnas.cli.main, so the whole table
takes seconds.
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from rdnas.cli import build_parser, main
from rdnas.cli.arguments import input_file

BAD_VALUES = {"zero": "0", "negative": "-5", "nan": "nan", "inf": "inf"}
POSITIVE = {"zero", "negative", "nan", "inf"}  # counts, sizes, learning rates: all four refused
NON_NEGATIVE = {"negative", "nan", "inf"}  # seeds, indices, limits where 0 means all, weights that may be 0

NUMERIC = {
    "demo": {"--epochs": POSITIVE, "--paths": POSITIVE, "--groups": POSITIVE, "--margin": NON_NEGATIVE,
             "--eval-every": POSITIVE, "--seed": NON_NEGATIVE},
    "train": {"--teacher-samples": POSITIVE, "--min-hamming": POSITIVE, "--groups": POSITIVE,
              "--margin": NON_NEGATIVE, "--rank-weight": NON_NEGATIVE, "--image-size": POSITIVE,
              "--epochs": POSITIVE, "--batch-size": POSITIVE, "--lr": POSITIVE, "--momentum": NON_NEGATIVE,
              "--weight-decay": NON_NEGATIVE, "--paths": POSITIVE, "--channels": POSITIVE, "--cells": POSITIVE,
              "--width-divisor": POSITIVE, "--seed": NON_NEGATIVE},
    "eval": {"--archs": POSITIVE, "--calibration-steps": POSITIVE, "--subnets-per-pass": POSITIVE,
             "--batch-size": POSITIVE, "--valid-limit": NON_NEGATIVE, "--seed": NON_NEGATIVE},
    "proxies": {"--width-divisor": POSITIVE, "--batch-size": POSITIVE, "--batch-index": NON_NEGATIVE,
                "--image-size": POSITIVE, "--seed": NON_NEGATIVE, "--channels": POSITIVE, "--cells": POSITIVE,
                "--limit": POSITIVE, "--archs-per-chunk": POSITIVE},
    "search": {"--budget": POSITIVE, "--population": POSITIVE, "--top-k": POSITIVE, "--max-flops": NON_NEGATIVE,
               "--max-params": NON_NEGATIVE, "--min-flops": NON_NEGATIVE, "--min-params": NON_NEGATIVE,
               "--subnets-per-pass": POSITIVE, "--seed": NON_NEGATIVE},
    "bench build": {"--archs": POSITIVE, "--seeds": POSITIVE, "--sample-seed": NON_NEGATIVE, "--epochs": POSITIVE,
                    "--train-images": NON_NEGATIVE, "--valid-images": NON_NEGATIVE, "--image-size": POSITIVE,
                    "--channels": POSITIVE, "--cells": POSITIVE, "--lr": POSITIVE,
                    "--batch-size": POSITIVE, "--networks-per-stack": POSITIVE, "--width-divisor": POSITIVE},
    "predictor fit": {"--train-archs": POSITIVE, "--seed": NON_NEGATIVE},
    "dass teacher": {"--image-size": POSITIVE, "--train": POSITIVE, "--valid": POSITIVE,
                     "--split-seed": NON_NEGATIVE, "--channels": POSITIVE, "--width-divisor": POSITIVE,
                     "--cells": POSITIVE,
                     "--epochs": POSITIVE, "--seed": NON_NEGATIVE, "--lr": POSITIVE},
    "dass bench": {"--archs": POSITIVE, "--sample-seed": NON_NEGATIVE, "--seeds": POSITIVE, "--train-seeds": POSITIVE,
                   "--max-runs": POSITIVE},
    "dass fit": {"--seed": NON_NEGATIVE, "--episodes": POSITIVE, "--query": POSITIVE, "--eval-every": POSITIVE,
                 "--width": POSITIVE, "--checkpoint-every": POSITIVE, "--max-episodes": POSITIVE},
    "dass rank": {"--archs": POSITIVE, "--seed": NON_NEGATIVE},
    "dass evaluate": {"--seeds": POSITIVE, "--episodes": POSITIVE, "--query": POSITIVE, "--width": POSITIVE,
                      "--eval-every": POSITIVE},
    "dass search": {"--archs": POSITIVE, "--seed": NON_NEGATIVE, "--max-flops": POSITIVE,
                    "--flops-tolerance": POSITIVE, "--seeds": POSITIVE, "--epochs": POSITIVE,
                    "--batch-size": POSITIVE, "--lr": POSITIVE},
    "teacher check": {"--bootstrap": POSITIVE},
}

INPUT_FILES = {
    "demo": {"--gt"}, "train": {"--teacher-table"}, "eval": {"--checkpoint", "--archs-json", "--gt"},
    "proxies": {"--archs-file", "--gt"}, "merge-tables": {"tables"},
    "search": {"--checkpoint", "--predictor", "--table", "--gt"}, "bench build": {"--archs-file"},
    "predictor fit": {"--gt", "--feature-table"}, "predictor rank": {"--model", "--gt"},
    "dass teacher": {"--tasks"}, "dass bench": {"--tasks", "--archs-file"},
    "dass rank": {"--model", "--teacher", "--archs-file"}, "dass search": {"--model", "--teacher", "--archs-file"},
    "dass evaluate": {"--model"}, "teacher check": {"--teacher-table", "--gt", "--checkpoint"},
}


def _commands(parser, names=()):
    """(command as typed, its parser) for every leaf command ("train", "bench build", ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(names), parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, names + (name,))


COMMANDS = dict(_commands(build_parser()))


def _options(command):
    """The actions of a command that take a value (flags and --help left out), by option string or dest."""
    return {(a.option_strings[0] if a.option_strings else a.dest): a for a in COMMANDS[command]._actions
            if not isinstance(a, argparse._HelpAction) and a.nargs != 0}


def _is_numeric(action) -> bool:
    """Whether an option's type turns text into a number (it parses 1000 or 0.5 as one)."""
    if action.type in (int, float):
        return True
    for text in ("1000", "0.5"):
        try:
            value = action.type(text) if action.type is not None else None
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        if isinstance(value, (int, float)):
            return True
    return False


def _placeholder(action) -> list[str]:
    if action.choices:
        value = str(list(action.choices)[0])
    elif action.type is not None and _is_numeric(action):
        value = "8"
    else:
        value = "placeholder"
    return [value] if not action.option_strings else [action.option_strings[0], value]


def _base_argv(command, skip=None) -> list[str]:
    """The command with a placeholder for every required argument (except ``skip``): it parses."""
    argv = command.split()
    for name, action in _options(command).items():
        if action.required and name != skip:
            argv += _placeholder(action)
    return argv


def _refused(argv, capsys) -> str:
    """Runs ``rdnas argv`` in-process; asserts a usage error (exit status 2) and returns its one error line."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_every_numeric_option_is_in_the_table_and_checked():
    derived = {command: {name for name, action in _options(command).items() if _is_numeric(action)}
               for command in COMMANDS}
    derived = {command: names for command, names in derived.items() if names}
    assert derived == {command: set(options) for command, options in NUMERIC.items()}
    assert all(refused for options in NUMERIC.values() for refused in options.values())  # each refuses a class
    unchecked = [(command, name) for command in COMMANDS for name, action in _options(command).items()
                 if action.type in (int, float) and not action.choices]
    assert not unchecked, f"numeric options parsed with a bare int/float (nothing refused): {unchecked}"


def test_every_input_file_option_is_in_the_table():
    derived = {command: {name for name, action in _options(command).items() if action.type is input_file}
               for command in COMMANDS}
    assert {c: n for c, n in derived.items() if n} == INPUT_FILES
    # an option that says it takes a FILE is read as one
    for command in COMMANDS:
        for name, action in _options(command).items():
            if action.metavar == "FILE":
                assert action.type is input_file, (command, name)


NUMERIC_CASES = [(command, option, kind) for command, options in NUMERIC.items()
                 for option, refused in options.items() for kind in sorted(refused)]


@pytest.mark.parametrize("command, option, kind", NUMERIC_CASES)
def test_a_meaningless_number_is_a_usage_error_naming_the_option(command, option, kind, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    argv = _base_argv(command, skip=option) + [f"{option}={BAD_VALUES[kind]}"]
    line = _refused(argv, capsys)
    assert line.startswith(f"rdnas {command}: error: argument {option}"), line
    assert repr(BAD_VALUES[kind]) in line or BAD_VALUES[kind] in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("command, option, kind", [
    (command, option, kind) for command, options in NUMERIC.items() for option, refused in options.items()
    for kind in sorted(set(BAD_VALUES) - refused)])
def test_the_values_the_table_allows_are_accepted(command, option, kind):
    """The table is exact: a class it does not list is a meaningful value of that option (e.g. --seed 0)."""
    action = _options(command)[option]
    value = action.type(BAD_VALUES[kind])
    assert not action.choices or value in action.choices


FILE_CASES = [(command, option) for command, options in INPUT_FILES.items() for option in sorted(options)]


@pytest.mark.parametrize("command, option", FILE_CASES)
@pytest.mark.parametrize("kind", ["empty file", "folder"])
def test_an_empty_input_file_or_a_folder_is_a_usage_error_naming_the_option(command, option, kind, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = Path("given")
    if kind == "empty file":
        bad.write_text("")
    else:
        bad.mkdir()
    action = _options(command)[option]
    argv = _base_argv(command, skip=option) + ([option, str(bad)] if action.option_strings else [str(bad)])
    line = _refused(argv, capsys)
    assert line.startswith(f"rdnas {command}: error: argument {option}"), line
    assert ("given is empty" if kind == "empty file" else "got the folder given") in line, line
    assert [p.name for p in tmp_path.iterdir()] == ["given"]  # nothing written


# --- files of the wrong kind or space, refused before any work ---------------------------------------------------

SHIPPED = Path(__file__).resolve().parent.parent / "rdnas" / "minibench" / "data"
COMPETITION = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "resnet48_track1" / \
    "CVPR_2022_NAS_Track1_test.json"


def _checkpoint(path, space="nb201"):
    """A file with a checkpoint's layout (config + model state); the runs below stop before its weights are used."""
    import torch

    from rdnas.train import TrainConfig
    from rdnas.train.checkpoint import save_checkpoint

    save_checkpoint(path, {"config": asdict(TrainConfig(space=space)), "model": {"weight": torch.zeros(1)}})
    return str(path)


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("predictor") / "model.pt"
    assert main(["predictor", "fit", "--gt", str(SHIPPED / "nb201_digits.csv"), "--column", "digits_valid_acc",
                 "--train-archs", "12", "--model", "gbt", "--option", "n_estimators=5", "--out", str(path),
                 "--quiet"]) == 0
    return str(path)


def _error(argv, capsys) -> str:
    """Runs ``rdnas argv`` in-process; asserts exit status 2 and returns stderr (one line, no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("command", ["eval", "search"])
def test_a_predictor_file_is_not_a_checkpoint(command, predictor_file, tmp_path, capsys):
    err = _error([command, "--checkpoint", predictor_file, "--out", str(tmp_path / "o" / "r.json")], capsys)
    assert err.startswith(f"rdnas {command}: error: --checkpoint: ") and "is a predictor model file" in err
    assert "not a supernet checkpoint" in err


def test_a_checkpoint_is_not_a_predictor_file(tmp_path, capsys):
    err = _error(["predictor", "rank", "--model", _checkpoint(tmp_path / "checkpoint.pt"), "--out",
                  str(tmp_path / "ranking.csv")], capsys)
    assert err.startswith("rdnas predictor rank: error: --model: ") and "is a supernet checkpoint" in err
    assert not (tmp_path / "ranking.csv").exists()


@pytest.mark.parametrize("argv", [["predictor", "rank", "--model", "notes.txt", "--out", "r.csv"],
                                  ["eval", "--checkpoint", "notes.txt"], ["search", "--checkpoint", "notes.txt"]])
def test_a_file_torch_cannot_read_is_named_in_rdnas_words(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("some notes, not a model\n")
    err = _error(argv, capsys)
    assert "notes.txt is not a" in err and "weights_only" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _resnet48_codes(count=3):
    import torch

    from rdnas.spaces import get_space

    space = get_space("resnet48")
    return [space.to_string(a) for a in space.sample(count, torch.Generator().manual_seed(0))]


def test_resnet48_codes_for_an_nb201_checkpoint_name_both_spaces(tmp_path, capsys):
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps({f"arch{k}": {"acc": 0, "arch": c} for k, c in enumerate(_resnet48_codes())}))
    err = _error(["eval", "--checkpoint", _checkpoint(tmp_path / "c.pt"), "--archs-json", str(codes)], capsys)
    assert "--archs-json" in err and "holds resnet48 architectures" in err and "is a nb201 supernet" in err


def test_the_competition_file_with_an_nb201_checkpoint_is_a_short_error(tmp_path, capsys):
    if not COMPETITION.exists():
        pytest.skip(f"the competition file is not here ({COMPETITION}; see shared/data/README.md)")
    err = _error(["eval", "--checkpoint", _checkpoint(tmp_path / "c.pt"), "--archs-json", str(COMPETITION)], capsys)
    assert "holds resnet48 architectures" in err and len(err) < 600  # it was one 2.5 MB line listing every code


@pytest.mark.parametrize("command", ["proxies", "bench build"])
@pytest.mark.parametrize("archs", ["resnet48", "resnet48 json", "comments only"])
def test_an_archs_file_of_another_space_or_of_nothing_is_refused(command, archs, tmp_path, monkeypatch, capsys):
    """Both commands read --archs-file with one reader: one string per line, or a competition JSON."""
    monkeypatch.chdir(tmp_path)
    name = "archs.json" if archs.endswith("json") else "archs.txt"
    Path(name).write_text(json.dumps({f"arch{k}": {"acc": 0, "arch": c} for k, c in enumerate(_resnet48_codes())})
                          if archs.endswith("json") else
                          "\n".join(_resnet48_codes()) + "\n" if archs == "resnet48" else "# none\n\n")
    argv = command.split() + ["--archs-file", name, "--out", "out" if command != "proxies" else "t.csv"]
    argv += ["--proxy", "flops"] if command == "proxies" else ["--quiet"]
    if command == "bench build":
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
    else:
        err = _error(argv, capsys)
    assert err.startswith(f"rdnas {command}: error: ") and "--archs-file" in err
    assert ("holds resnet48 architectures" if archs.startswith("resnet48") else "lists no architecture") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("command", ["eval", "search"])
def test_a_ground_truth_column_that_is_not_there_is_refused_before_the_work(command, tmp_path, capsys):
    err = _error([command, "--checkpoint", _checkpoint(tmp_path / "c.pt"), "--gt", str(SHIPPED / "nb201_digits.csv"),
                  "--column", "nope"], capsys)
    assert err.startswith(f"rdnas {command}: error: --gt: ") and "no column 'nope'" in err
    assert "digits_valid_acc" in err  # the columns it has


def test_a_ground_truth_table_of_another_space_is_named(tmp_path, capsys):
    err = _error(["eval", "--checkpoint", _checkpoint(tmp_path / "c.pt"), "--gt",
                  str(SHIPPED / "resnet48_digits.csv")], capsys)
    assert "--gt" in err and "a table of resnet48 architectures, not nb201 ones" in err


def test_a_teacher_column_that_is_not_in_the_table_is_refused_before_training(tmp_path, capsys):
    table = tmp_path / "teacher.csv"
    table.write_text("index,arch,synflow\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.0\n")
    err = _error(["train", "--method", "rdnas", "--paths", "2", "--teacher-table", str(table), "--teacher", "snip",
                  "--out", str(tmp_path / "run")], capsys)
    assert err.startswith("rdnas train: error: --teacher: ") and "no column 'snip'" in err and "synflow" in err
    assert not (tmp_path / "run").exists()


def test_groups_on_nb201_name_nothing_of_the_sampled_teacher(tmp_path, capsys):
    err = _error(["train", "--method", "rdnas", "--paths", "2", "--groups", "20000", "--teacher-table",
                  str(SHIPPED / "nb201_digits.csv"), "--out", str(tmp_path / "run")], capsys)
    assert "--groups" in err and "teacher_samples" not in err and "teacher-samples" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, option", [
    (["train", "--image-size", "10"], "--image-size"),
    (["proxies", "--proxy", "synflow", "--image-size", "10", "--out", "t.csv"], "--image-size"),
    (["proxies", "--proxy", "synflow", "--data", "random:3,30,30,10", "--out", "t.csv"], "--data"),
    (["bench", "build", "--image-size", "10", "--out", "bench", "--quiet"], "--image-size"),
])
def test_an_image_size_the_network_cannot_take_is_refused_by_every_command(argv, option, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    command = "bench build" if argv[0] == "bench" else argv[0]
    err = _error(argv + (["--out", "run"] if argv[0] == "train" else []), capsys)
    assert err.startswith(f"rdnas {command}: error: {option}: ") and "does not fit the NB201 macro network" in err
    assert list(tmp_path.iterdir()) == []


def test_a_teacher_table_that_misses_architectures_is_refused_before_the_run_folder(tmp_path, capsys):
    err = _error(["train", "--method", "rdnas", "--paths", "2", "--teacher-table", str(SHIPPED / "nb201_digits.csv"),
                  "--teacher", "digits_valid_acc", "--out", str(tmp_path / "run")], capsys)
    assert err.startswith("rdnas train: error: --teacher-table: ") and "15625" in err
    assert not (tmp_path / "run").exists()


def test_a_demo_column_that_is_not_there_writes_nothing(tmp_path, capsys):
    err = _error(["demo", "--gt-column", "nope", "--out", str(tmp_path / "demo"), "--quiet"], capsys)
    assert err.startswith("rdnas demo: error: ") and "'nope'" in err
    assert not (tmp_path / "demo").exists()


def test_a_hamming_distance_beyond_the_space_width_is_refused(tmp_path, capsys):
    err = _error(["train", "--method", "rdnas", "--paths", "2", "--sampler", "min_hamming", "--min-hamming", "7",
                  "--teacher-table", str(SHIPPED / "nb201_digits.csv"), "--out", str(tmp_path / "run")], capsys)
    assert err.startswith("rdnas train: error: --min-hamming: ") and "has 6" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("gt, message", [("missing.csv", "--gt: no such file: missing.csv"),
                                         (str(SHIPPED / "resnet48_digits.csv"), "a table of resnet48 architectures")])
def test_proxies_check_the_ground_truth_table_before_scoring(gt, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _error(["proxies", "--proxy", "flops", "--gt", gt, "--out", "t.csv"], capsys)
    assert err.startswith("rdnas proxies: error: ") and message in err
    assert list(tmp_path.iterdir()) == []


def test_search_says_when_the_ground_truth_shares_no_architecture_with_it(tmp_path, capsys):
    from rdnas.rank import GroundTruth
    from rdnas.spaces import get_space

    space = get_space("nb201")
    fitness = GroundTruth.load(SHIPPED / "nb201_digits.csv", "nb201")
    others = [a for a in space.enumerate()[:400] if fitness.rows_of(a.unsqueeze(0))[0] < 0][:3]
    gt = tmp_path / "other.csv"
    gt.write_text("index,arch_str,acc\n" + "".join(f"{k},{space.to_string(a)},{50.0 + k}\n"
                                                   for k, a in enumerate(others)))
    assert main(["search", "--table", str(SHIPPED / "nb201_digits.csv"), "--table-column", "digits_valid_acc",
                 "--strategy", "random", "--budget", "20", "--top-k", "3", "--gt", str(gt), "--column", "acc"]) == 0
    out = capsys.readouterr().out
    assert "--gt: none of the top 3 cells has a row in" in out and "no ground truth to compare" in out


def test_dass_teacher_refuses_an_image_size_the_network_cannot_take(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["dass", "teacher", "--space", "nb201", "--data", "digits", "--image-size", "10", "--out", "t.pt"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rdnas dass teacher: error: --image-size: ") and "NB201 macro network" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--method", "rdnas", "--paths", "1"], "--method 'rdnas' needs --paths >= 2, got 1"),
    (["--method", "rdnas", "--sampler", "sandwich", "--paths", "3"], "--sampler 'sandwich' ranks"),
    (["--distill"], "--distill (in-place distillation"),
])
def test_train_settings_that_do_not_go_together_are_named_by_their_options(argv, message, tmp_path, capsys):
    err = _error(["train", *argv, "--out", str(tmp_path / "run")], capsys)
    assert err.startswith("rdnas train: error: ") and message in err and "TrainConfig" not in err
    assert not (tmp_path / "run").exists()


def test_bench_build_refuses_fewer_training_images_than_a_batch_before_writing(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "build", "--archs", "3", "--train-images", "10", "--batch-size", "64",
              "--out", str(tmp_path / "bench"), "--quiet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rdnas bench build: error: --train-images 10 make no batch of --batch-size 64")
    assert not (tmp_path / "bench").exists()  # no recipe.json, no runs.csv


def test_a_batch_larger_than_the_training_data_is_refused_before_the_run_folder(tmp_path, capsys):
    err = _error(["train", "--image-size", "8", "--channels", "4", "--cells", "1", "--batch-size", "5000",
                  "--out", str(tmp_path / "run")], capsys)
    assert err.startswith("rdnas train: error: --batch-size 5000 exceeds the ") and "training images" in err
    assert not (tmp_path / "run").exists()

"""Resumable DaSS meta-training (``rdnas dass fit``): a checkpoint every N episodes and at the end, and a stopped or
killed fit, rerun, ends with bitwise the model of an uninterrupted one; a checkpoint of other settings is refused
naming the option that differs."""

import copy
import csv
import random
import shutil

import numpy as np
import pytest
import torch

from rdnas.cli import main
from rdnas.predictors import dass
from tiny_kd_bench import build_tiny_bench

TASKS = [("digits-a", "meta-train", [0, 1, 2]), ("digits-b", "meta-train", [3, 4, 5]),
         ("digits-c", "meta-valid", [6, 7, 8])]
FIT = dict(episodes=7, query=2, eval_every=3, width=8)  # checks at 3, 6 and 7


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """A finished tiny KD build (tests/tiny_kd_bench.py): two meta-train tasks and one meta-valid task."""
    return build_tiny_bench(tmp_path_factory.mktemp("dass_fit_resume"), TASKS)[0]


def _fit(tasks, info, **options):
    settings = {**FIT, **options}
    return dass.fit(tasks, info["space"], info["channels"], seed=0, **settings)


def _assert_same_model(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_stopped_or_killed_fit_resumes_to_bitwise_the_uninterrupted_model(tiny_bench, tmp_path, monkeypatch):
    tasks, info = dass.read_bench(tiny_bench)
    reference, expected = _fit(tasks, info)
    assert expected["finished"] and expected["resumed_from"] == 0 and expected["episode"] == 7
    assert [h[0] for h in expected["history"]] == [3, 6, 7]

    # stopped by an episode budget after 4 episodes, then the same call again
    checkpoint = tmp_path / "stopped.partial"
    model, report = _fit(tasks, info, checkpoint=checkpoint, checkpoint_every=2, max_new_episodes=4)
    assert not report["finished"] and report["episode"] == 4 and checkpoint.is_file()
    model, report = _fit(tasks, info, checkpoint=checkpoint, checkpoint_every=2)
    assert report["finished"] and report["resumed_from"] == 4
    _assert_same_model(model, reference)
    assert {k: report[k] for k in ("best_episode", "best_valid_spearman", "history")} == \
        {k: expected[k] for k in ("best_episode", "best_valid_spearman", "history")}

    # killed in episode 6 (an exception out of the episode): the checkpoint of episode 4 (every 2) survives
    checkpoint = tmp_path / "killed.partial"
    calls, real_loss = [], dass.episode_loss

    def dying_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt("killed")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(dass, "episode_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        _fit(tasks, info, checkpoint=checkpoint, checkpoint_every=2)
    monkeypatch.setattr(dass, "episode_loss", real_loss)
    assert torch.load(checkpoint, weights_only=True)["episode"] == 4
    model, report = _fit(tasks, info, checkpoint=checkpoint, checkpoint_every=5)  # the interval may change
    assert report["resumed_from"] == 4 and report["history"] == expected["history"]
    _assert_same_model(model, reference)
    # the end is checkpointed too: a rerun trains nothing and gives the same model
    assert torch.load(checkpoint, weights_only=True)["episode"] == 7
    model, report = _fit(tasks, info, checkpoint=checkpoint)
    assert report["resumed_from"] == 7 and report["best_episode"] == expected["best_episode"]
    _assert_same_model(model, reference)


def test_the_checkpoint_restores_the_global_torch_numpy_and_python_generators(tmp_path):
    def run(checkpoint, max_new=None):
        torch.manual_seed(1), np.random.seed(1), random.seed(1)  # noqa: B018 - the same start for every call
        model = torch.nn.Linear(3, 1)
        generator = torch.Generator().manual_seed(2)

        def loss():  # draws from every generator the checkpoint keeps
            x = torch.randn(4, 3) + torch.rand(1, generator=generator) + float(np.random.rand()) + random.random()
            return model(x).pow(2).mean()

        report = dass.run_episodes(model, loss, None, 6, 0.1, 2, checkpoint=checkpoint, checkpoint_every=1,
                                   generators=(generator,), max_new_episodes=max_new)
        return model, report

    reference, _ = run(None)
    checkpoint = tmp_path / "toy.partial"
    run(checkpoint, max_new=3)
    model, report = run(checkpoint)  # the globals were re-seeded: only the checkpoint's states give equality
    assert report["resumed_from"] == 3
    _assert_same_model(model, reference)


def test_a_checkpoint_of_other_settings_is_refused_naming_the_setting(tiny_bench, tmp_path):
    tasks, info = dass.read_bench(tiny_bench)
    checkpoint = tmp_path / "x.partial"
    _fit(tasks, info, checkpoint=checkpoint, max_new_episodes=2)
    for change, name in [({"query": 3}, "query"), ({"episodes": 8}, "episodes"), ({"adapt": False}, "adapt"),
                         ({"width": 16}, "width"), ({"use_teacher": False}, "use_teacher"), ({"lr": 1e-3}, "lr")]:
        with pytest.raises(dass.CheckpointMismatch, match=f"with {name}=") as error:
            _fit(tasks, info, checkpoint=checkpoint, **change)
        assert error.value.name == name
    relabelled = {**tasks}
    first = next(iter(relabelled))
    relabelled[first] = copy.copy(tasks[first])
    relabelled[first].labels = tasks[first].labels + 0.01
    with pytest.raises(dass.CheckpointMismatch, match="on other meta-training tasks") as error:
        _fit(relabelled, info, checkpoint=checkpoint)
    assert error.value.name == "tasks"
    assert torch.load(checkpoint, weights_only=True)["episode"] == 2  # a refused run changes nothing
    for bad in ({"checkpoint_every": 0}, {"max_new_episodes": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive number of episodes"):
            _fit(tasks, info, checkpoint=checkpoint, **bad)
    (tmp_path / "junk.partial").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a DaSS meta-training checkpoint"):
        _fit(tasks, info, checkpoint=tmp_path / "junk.partial")


def test_dass_fit_cli_resumes_from_out_partial_and_refuses_other_options(tiny_bench, tmp_path, capsys):
    argv = ["dass", "fit", "--bench", str(tiny_bench), "--episodes", "7", "--query", "2", "--eval-every", "3",
            "--width", "8", "--checkpoint-every", "2", "--quiet"]
    whole, model = tmp_path / "whole.pt", tmp_path / "dass.pt"
    partial = tmp_path / "dass.pt.partial"
    assert main(argv + ["--out", str(whole)]) == 0
    assert not (tmp_path / "whole.pt.partial").exists()  # removed once the model is written
    capsys.readouterr()
    assert main(argv + ["--out", str(model), "--max-episodes", "5"]) == 0
    assert "stopped after 5 of 7 episodes" in capsys.readouterr().out
    assert partial.is_file() and not model.exists()
    # another option than the checkpoint's: refused, naming the option; the checkpoint is kept
    for extra, flag, shown in [(["--seed", "1"], "--seed", "seed=0"), (["--without", "s"], "--without", "use_student"),
                               (["--no-adapt"], "--no-adapt", "adapt=True")]:
        with pytest.raises(SystemExit) as exit_:
            main(argv + ["--out", str(model)] + extra)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"rdnas dass fit: error: {flag}: the checkpoint {partial}" in err, err
        assert shown in err
    # another benchmark (one label changed): --bench
    other = tmp_path / "other_bench"
    shutil.copytree(tiny_bench, other)
    rows = list(csv.DictReader(open(other / "kdbench.csv")))
    rows[0]["kd_valid_acc"] = str(float(rows[0]["kd_valid_acc"]) + 1.0)
    with open(other / "kdbench.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SystemExit):
        main(["dass", "fit", "--bench", str(other)] + argv[4:] + ["--out", str(model)])
    assert "error: --bench: the checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(model), "--checkpoint", str(model)])
    assert "--checkpoint: " in capsys.readouterr().err
    # the same command again: continues at episode 6 and writes the uninterrupted run's model
    assert main(argv + ["--out", str(model)]) == 0
    assert "resumed at episode 5" in capsys.readouterr().out
    assert not partial.exists()
    ours, config = dass.load_model(model)
    theirs, whole_config = dass.load_model(whole)
    _assert_same_model(ours, theirs)
    assert config == whole_config
    assert model.read_bytes() == whole.read_bytes()  # the file itself, byte for byte

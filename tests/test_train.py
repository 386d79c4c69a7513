"""SPOS training: checkpoints, resume after SIGKILL, K paths; evaluation with the K-subnet forward."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rdnas.data import DeviceBatches
from rdnas.rank import supernet_accuracy
from rdnas.spaces import nb201
from rdnas.train import OneShotTrainer, TrainConfig, UniformSampler, load_checkpoint, load_data, save_checkpoint

TINY = dict(data="digits", image_size=8, channels=4, cells_per_stage=1, batch_size=128)


def tiny_config(out_dir, **overrides):
    return TrainConfig(**{**TINY, "out_dir": str(out_dir), **overrides})


def test_checkpoint_is_written_atomically(tmp_path):
    path = tmp_path / "deep" / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 3, "weights": torch.arange(4)})
    assert not (tmp_path / "deep" / "checkpoint.pt.tmp").exists()
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["weights"], torch.arange(4))
    with pytest.raises(FileNotFoundError, match=r"rdnas.train: no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_sampler_is_uniform_and_reproducible():
    sampler = UniformSampler(num_paths=3, seed=5)
    first = sampler.sample()
    assert first.shape == (3, 6) and first.dtype == torch.long and first.device.type == "cpu"
    state = sampler.state_dict()
    second = sampler.sample()
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample(), second)
    draws = torch.cat([sampler.sample() for _ in range(2000)]).flatten()
    counts = torch.bincount(draws, minlength=5).double() / draws.numel()
    assert torch.all((counts - 0.2).abs() < 0.02)


def test_block_sampling_serves_the_same_draws_and_resumes_mid_block():
    blocked = UniformSampler(num_paths=2, seed=3, device="cpu", block_steps=4)
    first = [blocked.sample() for _ in range(5)]
    assert all(a.shape == (2, 6) and a.device.type == "cpu" for a in first)
    state = blocked.state_dict()  # three draws of the second block are still unused
    rest = [blocked.sample() for _ in range(6)]
    resumed = UniformSampler(num_paths=2, seed=99, device="cpu", block_steps=4)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, [resumed.sample() for _ in range(6)]))
    with pytest.raises(ValueError, match=r"block_steps must be positive, got 0"):
        UniformSampler(device="cpu", block_steps=0)


def test_resuming_the_uniform_sampler_on_another_kind_of_device_is_a_clear_error():
    """A spos run on a GPU draws on a CUDA generator, whose state does not fit a CPU one (torch's own error names
    neither the sampler nor the fix)."""
    state = UniformSampler(num_paths=2, seed=3).state_dict()
    state.update(generator=torch.zeros(16, dtype=torch.uint8), device_type="cuda")  # a CUDA generator's state
    with pytest.raises(ValueError, match=r"UniformSampler.load_state_dict: the checkpoint's sampler drew its "
                                         r"architectures on cuda, this one on cpu; resume on the same kind"):
        UniformSampler(num_paths=2, seed=3).load_state_dict(state)


def test_training_writes_metrics_and_learns(tmp_path):
    history = OneShotTrainer(tiny_config(tmp_path, epochs=4, image_size=16, channels=8), progress=False).fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4] and lines == history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 4
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 4


def test_k_paths_per_step(tmp_path):
    trainer = OneShotTrainer(tiny_config(tmp_path, epochs=1, paths_per_step=3), progress=False)
    images, labels = next(iter(trainer.batches))
    result = trainer.train_step(images, labels)
    assert torch.isfinite(result["loss"]) and 0 <= float(result["accuracy"]) <= 1


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path):
    """Without resume, a finished run's folder is left alone (it used to lose its metrics at once, then its
    checkpoint after an epoch)."""
    OneShotTrainer(tiny_config(tmp_path, epochs=1), progress=False).fit()
    before = {name: (tmp_path / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl", "config.json")}
    with pytest.raises(ValueError, match=r"rdnas.train: .* already holds a run \(checkpoint.pt\); resume it"):
        OneShotTrainer(tiny_config(tmp_path, epochs=2), progress=False).fit()
    assert before == {name: (tmp_path / name).read_bytes() for name in before}
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"rdnas.train: out_dir .*file is a file, expected a folder"):
        OneShotTrainer(tiny_config(tmp_path / "file", epochs=1), progress=False).fit()


def test_resume_refuses_a_different_run(tmp_path):
    OneShotTrainer(tiny_config(tmp_path, epochs=1), progress=False).fit()
    with pytest.raises(ValueError, match=r"cannot resume: the checkpoint has seed=0, this run 1"):
        OneShotTrainer(tiny_config(tmp_path, epochs=1, seed=1), progress=False).fit(resume=True)


@pytest.mark.parametrize("change", [dict(lr=1.0), dict(image_size=16), dict(bn_affine=False), dict(grad_clip=1.0)])
def test_resume_refuses_any_setting_but_device_output_and_amp(tmp_path, change):
    """Only device, out_dir, amp and the teacher table's path may differ on resume: a changed learning rate or
    image size used to resume silently (and record the new values), a BN option failed deep in load_state_dict."""
    OneShotTrainer(tiny_config(tmp_path, epochs=1), progress=False).fit()
    (name, value), = change.items()
    with pytest.raises(ValueError, match=rf"cannot resume: the checkpoint has {name}="):
        OneShotTrainer(tiny_config(tmp_path, epochs=1, **change), progress=False).fit(resume=True)
    OneShotTrainer(tiny_config(tmp_path, epochs=1, amp=False), progress=False).fit(resume=True)


@pytest.mark.parametrize("change, message", [
    (dict(epochs=-1), "epochs must be a non-negative integer, got -1"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(image_size=0), "image_size must be a positive integer, got 0"),
    (dict(device="nonsense"), "device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'nonsense'"),
    (dict(batch_size=100_000), "batch_size 100000 exceeds the 898 training images of 'digits'"),
])
def test_bad_settings_are_named_before_any_training(tmp_path, change, message):
    with pytest.raises(ValueError, match=r"rdnas.train.TrainConfig: " + re.escape(message)):
        OneShotTrainer(tiny_config(tmp_path, **change), progress=False)


@pytest.mark.parametrize("content", [b"garbage", "truncated"])
def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    if content == "truncated":
        save_checkpoint(tmp_path / "whole.pt", {"weights": torch.ones(1000)})
        content = (tmp_path / "whole.pt").read_bytes()[:300]
    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"rdnas.train.load_checkpoint: .*checkpoint.pt is not a readable rdnas "
                                         r"checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    epochs = 6
    uninterrupted = OneShotTrainer(tiny_config(tmp_path / "straight", epochs=epochs), progress=False)
    uninterrupted.fit()

    run = tmp_path / "killed"
    command = [sys.executable, "-m", "rdnas", "train", "--data", "digits", "--image-size", "8", "--channels", "4",
               "--cells", "1", "--batch-size", "128", "--epochs", str(epochs), "--out", str(run), "--quiet"]
    process = subprocess.Popen(command, cwd=Path(__file__).parent, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert killed_at < epochs, "the run finished before it could be killed; the test proves nothing"

    resumed = OneShotTrainer(tiny_config(run, epochs=epochs), progress=False)
    resumed.fit(resume=True)
    assert resumed.epoch == epochs
    for (name, a), (_, b) in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epochs + 1))


def test_supernet_accuracy_modes_agree_with_separate_evaluation(tmp_path):
    trainer = OneShotTrainer(tiny_config(tmp_path, epochs=2, image_size=16, channels=8), progress=False)
    trainer.fit()
    data = load_data(trainer.config)
    valid = DeviceBatches(data.valid, 300, mean=data.mean, std=data.std, shuffle=False)
    archs = torch.tensor([[3, 3, 3, 1, 3, 2], [1, 0, 0, 0, 0, 1], [2, 4, 1, 3, 0, 2]])
    batch_mode = supernet_accuracy(trainer.model, archs, valid, bn="batch", subnets_per_pass=2)
    running = supernet_accuracy(trainer.model, archs, valid, bn="running")
    recalibrated = supernet_accuracy(trainer.model, archs, valid, bn="recalibrate",
                                     calibration_batches=DeviceBatches(data.train, 300, mean=data.mean, std=data.std))
    for mode, accuracy in (("batch", batch_mode), ("running", running), ("recalibrate", recalibrated)):
        assert accuracy.shape == (3,) and torch.all((accuracy >= 0) & (accuracy <= 1)), mode
    # "running" is exactly model.eval() evaluated one architecture at a time.
    trainer.model.eval()
    with torch.no_grad():
        for arch, value in zip(archs, running):
            correct = sum(int((trainer.model(x, arch).argmax(1) == y).sum()) for x, y in valid)
            assert value.item() == pytest.approx(correct / len(data.valid))


def test_supernet_accuracy_errors(tmp_path):
    trainer = OneShotTrainer(tiny_config(tmp_path, epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"bn must be one of"):
        supernet_accuracy(trainer.model, torch.zeros(1, 6, dtype=torch.long), [], bn="frozen")
    with pytest.raises(ValueError, match=r"bn='recalibrate' needs calibration_batches"):
        supernet_accuracy(trainer.model, torch.zeros(1, 6, dtype=torch.long), [])


def test_unknown_data_source(tmp_path):
    with pytest.raises(ValueError, match=r"rdnas.data.load_data: unknown data 'mnist'"):
        load_data(tiny_config(tmp_path, data="mnist"))


def test_eval_cli_reports_rank_consistency(tmp_path):
    run = tmp_path / "run"
    OneShotTrainer(tiny_config(run, epochs=3, image_size=16, channels=8, batch_size=32, lr=0.05), progress=False).fit()
    table = tmp_path / "gt.csv"
    connected = nb201.all_archs()[nb201.connected(nb201.all_archs())]
    archs = connected[torch.randperm(len(connected), generator=torch.Generator().manual_seed(0))[:60]]
    rows = [f"{k},{nb201.to_string(tuple(a))},{float(k % 7)}" for k, a in enumerate(archs.tolist())]
    table.write_text("index,arch_str,score\n" + "\n".join(rows) + "\n")
    out = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, "-m", "rdnas", "eval", "--checkpoint", str(run / "checkpoint.pt"),
                             "--archs", "40", "--gt", str(table), "--column", "score", "--bn", "batch",
                             "--valid-limit", "400", "--out", str(out), "--quiet"],
                            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Kendall tau" in result.stdout and "against score" in result.stdout
    report = json.loads(out.read_text())
    assert report["num_archs"] == 40 and len(report["supernet_accuracy"]) == 40
    assert report["rank_report"]["num_archs"] == 40 and report["rank_report"]["ground_truth_column"] == "score"


def test_eval_cli_says_why_without_a_ranking(tmp_path):
    run = tmp_path / "run"
    OneShotTrainer(tiny_config(run, epochs=1), progress=False).fit()
    table = tmp_path / "gt.csv"
    rows = [f"{k},{nb201.to_string(tuple(a))},1.0" for k, a in enumerate(nb201.all_archs()[:30].tolist())]
    table.write_text("index,arch_str,score\n" + "\n".join(rows) + "\n")  # a constant ground truth
    result = subprocess.run([sys.executable, "-m", "rdnas", "eval", "--checkpoint", str(run / "checkpoint.pt"),
                             "--archs", "30", "--gt", str(table), "--column", "score", "--bn", "batch",
                             "--valid-limit", "50", "--quiet"],
                            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3
    assert "no rank consistency against score: rdnas.rank.rank_report: every" in result.stdout
    assert "a rank correlation with a constant is undefined" in result.stdout

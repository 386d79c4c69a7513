"""score_space, ScoreTable, merge_tables, load_minibatch and `rdnas proxies`: exact CSV round trips, resuming
after SIGKILL or from any truncation point, shards merging to the unsharded table, and the error messages.

Cheap proxies only (params, flops, l2_norm, synflow on tens to hundreds of cells; naswot and snip on a few with
an 8x8 minibatch of 8), one OpenMP thread (on a busy 2-core machine several threads spin against each other).
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rdnas.proxies import (PROXIES, Minibatch, ScoreTable, load_minibatch, merge_tables, score_space,
                           scoring_supernet)
from rdnas.proxies.scoring import meta_path
from rdnas.spaces import nb201
from rdnas.data import CIFAR_MEAN, CIFAR_STD

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MINIBATCHES = DATA / "cifar_minibatches"
needs_minibatches = pytest.mark.skipif(not MINIBATCHES.is_dir(),
                                       reason=f"the FreeREA CIFAR minibatches are not at {MINIBATCHES}")
CHEAP = ["params", "flops", "l2_norm", "synflow"]
SPEC = "random:3,8,8,10"
FEW = [(3, 3, 3, 1, 3, 2), (1, 4, 2, 0, 3, 1), (0, 0, 0, 0, 0, 0), (2, 2, 0, 3, 0, 4)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minibatch():
    return load_minibatch(SPEC, batch_size=8)


def run_cli(*args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rdnas", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def data_rows(path: Path) -> int:
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0


def score(out, minibatch, proxies=CHEAP, **kwargs):
    """score_space of the first 40 cells in chunks of 8 (unless overridden)."""
    return score_space(proxies, minibatch, out=out, **{"limit": 40, "archs_per_chunk": 8, "progress": False, **kwargs})


# ------------------------------------------------------------------------------------------------- the table


def test_csv_round_trip_is_exact(tmp_path):
    values = np.array([0.1 + 0.2, -0.0, 5.9e66, 5e-324, float("inf"), float("-inf"), float("nan"), 1 / 3])
    table = ScoreTable(torch.arange(len(values)), [nb201.to_string(nb201.from_enumeration_index(i))
                                                   for i in range(len(values))],
                       {"a": values, "b": -values[::-1]})
    table.write(tmp_path / "t.csv")
    again = ScoreTable.read(tmp_path / "t.csv")
    assert again.identical_to(table)
    assert np.signbit(again.column("a")[1])  # -0.0 stays negative
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "index,arch,a,b"
    assert [line.split(",")[2:] for line in lines[5:8]] == [["inf", "-5e-324"], ["-inf", "-5.9e+66"], ["nan", "0.0"]]


def test_written_table_equals_the_in_memory_one(tmp_path, minibatch):
    written = score(tmp_path / "t.csv", minibatch)
    in_memory = score(None, minibatch)
    assert written.identical_to(in_memory) and ScoreTable.read(tmp_path / "t.csv").identical_to(in_memory)
    assert written.indices.tolist() == list(range(40))  # enumeration indices, increasing
    assert written.archs == [nb201.to_string(nb201.from_enumeration_index(i)) for i in range(40)]
    assert written.info["written"] == 40 and written.info["already_present"] == 0
    with pytest.raises(KeyError, match="no column 'snip'; columns: \\['params', 'flops', 'l2_norm', 'synflow'\\]"):
        written.column("snip")


def test_scores_equal_the_proxies_called_directly(minibatch):
    supernet = scoring_supernet(init="kaiming_normal", seed=3)
    table = score_space(["naswot", "snip", "params"], minibatch, archs=FEW, init="kaiming_normal", seed=3,
                        archs_per_chunk=3, progress=False)
    order = sorted(FEW, key=nb201.enumeration_index)
    assert table.archs == [nb201.to_string(a) for a in order]
    for name in ("naswot", "snip", "params"):
        expected = PROXIES[name].score(supernet, order, minibatch).numpy()
        np.testing.assert_array_equal(table.column(name), expected)
    assert table.column("snip")[order.index((0, 0, 0, 0, 0, 0))] == float("-inf")


def test_a_given_supernet_is_left_unchanged(minibatch):
    supernet = scoring_supernet()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    table = score_space(["snip", "naswot", "synflow"], minibatch, archs=FEW, supernet=supernet, progress=False)
    assert len(table) == len(FEW)
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())


def test_a_smaller_macro_network_is_scored_with_its_own_supernet(minibatch):
    table = score_space(["params", "snip"], minibatch, archs=FEW, channels=8, cells_per_stage=1, seed=2,
                        archs_per_chunk=4, progress=False)
    supernet = scoring_supernet(channels=8, cells_per_stage=1, seed=2)
    order = sorted(FEW, key=nb201.enumeration_index)
    for name in ("params", "snip"):
        np.testing.assert_array_equal(table.column(name), PROXIES[name].score(supernet, order, minibatch).numpy())
    assert table.info["settings"]["supernet"]["config"]["channels"] == 8
    default = score_space("params", minibatch, archs=FEW, progress=False)
    assert (table.column("params") < default.column("params"))[np.isfinite(default.column("params"))].all()
    with pytest.raises(ValueError, match="scoring_supernet: channels must be a positive integer, got 0"):
        score_space("params", minibatch, archs=FEW, channels=0, progress=False)
    with pytest.raises(ValueError, match="scoring_supernet: cells_per_stage must be a positive integer, got 1.5"):
        score_space("params", minibatch, archs=FEW, cells_per_stage=1.5, progress=False)


def test_official_order_comes_from_the_ground_truth_table(tmp_path, minibatch):
    cells = [(3, 3, 3, 1, 3, 2), (1, 1, 1, 1, 1, 1), (2, 2, 0, 3, 0, 4)]
    gt = tmp_path / "gt.csv"
    gt.write_text("index,arch_str,acc\n" + "".join(f"{i},{nb201.to_string(a)},{50 + i}\n"
                                                   for i, a in zip((7, 2, 5), cells)))
    table = score_space("params", minibatch, gt=gt, progress=False)
    assert table.indices.tolist() == [2, 5, 7]
    assert table.archs == [nb201.to_string(cells[k]) for k in (1, 2, 0)]
    subset = score_space("params", minibatch, gt=gt, archs=[nb201.to_string(cells[0])], progress=False)
    assert subset.indices.tolist() == [7]
    with pytest.raises(ValueError, match="gt: .* has no row for"):
        score_space("params", minibatch, gt=gt, archs=[(4, 4, 4, 4, 4, 4)], progress=False)


@pytest.mark.skipif(not (DATA / "nb201_gt.csv").is_file(), reason=f"nb201_gt.csv not found in {DATA}")
def test_official_indices_of_the_real_ground_truth_table(minibatch):
    from rdnas.rank import GroundTruth

    gt = GroundTruth.load(DATA / "nb201_gt.csv")
    table = score_space("params", minibatch, gt=gt, limit=6, progress=False)
    assert table.indices.tolist() == list(range(6))
    assert table.archs == [nb201.to_string(gt.arch_of_index(i)) for i in range(6)]
    np.testing.assert_allclose(table.column("params"), gt.column("params_M_cifar10")[:6] * 1e6, rtol=0, atol=0.5)


def test_argument_errors(minibatch):
    with pytest.raises(ValueError, match="unknown proxy 'bogus'; known proxies: .*synflow"):
        score_space("params,bogus", minibatch, limit=1, progress=False)
    with pytest.raises(ValueError, match="proxies \\['snip'\\] use images; pass a minibatch"):
        score_space("snip", None, limit=1, progress=False)
    with pytest.raises(ValueError, match="unknown space 'darts'"):
        score_space("params", minibatch, space="darts", limit=1, progress=False)
    with pytest.raises(ValueError, match="shard \\(i, n\\) needs 0 <= i < n, got \\(2, 2\\)"):
        score_space("params", minibatch, shard=(2, 2), limit=1, progress=False)
    with pytest.raises(ValueError, match=r"archs lists an architecture more than once \(\|nor_conv_3x3~0\|"):
        score_space("params", minibatch, archs=[FEW[1], FEW[0], FEW[0]], progress=False)
    with pytest.raises(ValueError, match=r"rdnas.proxies.score_space: archs: .*bogus"):
        score_space("params", minibatch, archs=["|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|"], progress=False)
    for limit in (2.5, "3", -1, True):
        with pytest.raises(ValueError, match=r"limit must be a non-negative integer or None, got "):
            score_space("params", minibatch, limit=limit, progress=False)
    with pytest.raises(ValueError, match="the minibatch has 100 classes and 3 channels but the supernet has 10"):
        score_space("params", Minibatch(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), 100),
                    supernet=scoring_supernet(), limit=1, progress=False)


# -------------------------------------------------------------------------------------------------- resuming


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    command = ["proxies", "--proxy", "params,flops,synflow", "--data", "random:3,32,32,10", "--batch-size", "8",
               "--limit", "320", "--archs-per-chunk", "8", "--quiet"]
    reference = run_cli(*command, "--out", "reference.csv", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    env = dict(os.environ, OMP_NUM_THREADS="1")
    killed = tmp_path / "killed.csv"
    process = subprocess.Popen([sys.executable, "-m", "rdnas", *command, "--out", killed.name], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while data_rows(killed) < 40 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    rows_at_kill = data_rows(killed)
    assert 40 <= rows_at_kill < 320, "the run must be killed part-way through"

    resumed = run_cli(*command, "--out", killed.name, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{320 - rows_at_kill} scored now" in resumed.stdout and f"{rows_at_kill} already there" in resumed.stdout
    assert killed.read_bytes() == (tmp_path / "reference.csv").read_bytes()
    settings = [json.loads(meta_path(tmp_path / name).read_text())["settings"]
                for name in ("reference.csv", killed.name)]
    assert settings[0] == settings[1]


def test_resume_from_any_truncation_point(tmp_path, minibatch):
    full = tmp_path / "full.csv"
    score(full, minibatch)
    data = full.read_bytes()
    newlines = [k + 1 for k, byte in enumerate(data) if byte == ord("\n")]
    cuts = {0, 5, newlines[0], newlines[0] + 7, newlines[3], newlines[8] - 1, newlines[8], newlines[8] + 1,
            newlines[20] + 30, newlines[-2], len(data) - 1}  # in the header, at row/chunk ends, mid-row, ...
    for cut in sorted(cuts):
        path = tmp_path / f"cut{cut}.csv"
        path.write_bytes(data[:cut])
        shutil.copy(meta_path(full), meta_path(path))
        table = score(path, minibatch)
        assert path.read_bytes() == data, f"resumed from byte {cut}"
        complete_rows = max(0, data[:cut].count(b"\n") - 1)
        assert table.info["already_present"] == complete_rows and table.info["written"] == 40 - complete_rows


def test_partial_last_line_is_cut_off(tmp_path, minibatch):
    path = tmp_path / "t.csv"
    score(path, minibatch)
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last row loses its end
    with pytest.raises(ValueError, match="ends with an incomplete line .* resume it"):
        ScoreTable.read(path)
    table = score(path, minibatch)
    assert (table.info["written"], table.info["already_present"]) == (1, 39)
    assert path.read_bytes() == data


def test_other_settings_or_columns_are_refused(tmp_path, minibatch):
    path = tmp_path / "t.csv"
    score(path, minibatch, limit=16)
    path.write_bytes(path.read_bytes()[:-3])  # a partial line: a refused resume must leave it alone
    before = path.read_bytes()
    with pytest.raises(ValueError, match='was written with proxies=\\["params", "flops", "l2_norm", "synflow"\\]; '
                                         'this run has proxies=\\["params"\\]; pass a new --out or the same'):
        score(path, minibatch, limit=16, proxies=["params"])
    with pytest.raises(ValueError, match="was written with seed=0; this run has seed=1"):
        score(path, minibatch, limit=16, seed=1)
    with pytest.raises(ValueError, match="was written with minibatch.source='random:3,8,8,10 \\(seed 0, batch 0\\)'"):
        score(path, load_minibatch(SPEC, batch_size=8, batch_index=1), limit=16)
    with pytest.raises(ValueError, match="was written with archs.count=16; this run has archs.count=24"):
        score(path, minibatch, limit=24)
    with pytest.raises(ValueError, match="was written with archs_per_chunk=8; this run has archs_per_chunk=4"):
        score(path, minibatch, limit=16, archs_per_chunk=4)
    with pytest.raises(ValueError, match="has columns \\['params', 'flops', 'l2_norm', 'synflow'\\] but this run "
                                         "asks for \\['flops', 'params'\\]"):
        score(path, minibatch, limit=16, proxies=["flops", "params"], metadata=False)
    assert path.read_bytes() == before
    meta_path(path).unlink()
    with pytest.raises(ValueError, match="exists but its metadata .*t.csv.meta.json does not"):
        score(path, minibatch, limit=16)


# ---------------------------------------------------------------------------------------- shards and merging


def test_shards_merge_to_the_unsharded_table(tmp_path, minibatch, monkeypatch):
    whole = score(tmp_path / "whole.csv", minibatch, limit=44)
    shards = [score(tmp_path / f"shard{i}.csv", minibatch, limit=44, shard=(i, 2)) for i in range(2)]
    assert [len(s) for s in shards] == [24, 20]  # chunks 0, 2, 4 (8 + 8 + 8) and 1, 3, 5 (8 + 8 + 4)
    assert shards[0].indices.tolist()[8:10] == [16, 17]
    merged = merge_tables([tmp_path / "shard1.csv", tmp_path / "shard0.csv"], tmp_path / "merged.csv")
    assert merged.identical_to(whole)
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    whole_settings = json.loads(meta_path(tmp_path / "whole.csv").read_text())["settings"]
    assert json.loads(meta_path(tmp_path / "merged.csv").read_text())["settings"] == whole_settings
    assert score(tmp_path / "merged.csv", minibatch, limit=44).info["written"] == 0  # resumes as the unsharded run

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    from_env = score(tmp_path / "env{shard}of{num_shards}.csv", minibatch, limit=44, shard="env")
    assert from_env.info["path"].endswith("env1of2.csv") and from_env.identical_to(shards[1])
    with pytest.raises(ValueError, match="every rank would write .*; put \\{shard\\} in the path"):
        score(tmp_path / "same.csv", minibatch, limit=44, shard="env")
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="shard='env' reads RANK and WORLD_SIZE .* RANK is not set"):
        score(tmp_path / "x{shard}.csv", minibatch, limit=44, shard="env")


def test_merge_reports_conflicts_and_missing_indices(tmp_path):
    def table(name, indices, values, columns=("a",)):
        path = tmp_path / name
        ScoreTable(indices, [nb201.to_string(nb201.from_enumeration_index(i)) for i in indices],
                   {c: np.asarray(values, dtype=np.float64) for c in columns}).write(path)
        return path

    first = table("first.csv", [0, 1, 3], [1.0, float("nan"), 3.0])
    same = table("same.csv", [1, 2], [float("nan"), 2.0])  # index 1 repeated with the same (NaN) value: fine
    merged = merge_tables([first, same])
    assert merged.indices.tolist() == [0, 1, 2, 3] and np.isnan(merged.column("a")[1])
    other = table("other.csv", [3], [3.5])
    with pytest.raises(ValueError, match="index 3 appears in .*first.csv and .*other.csv with different values of "
                                         "\\['a'\\]"):
        merge_tables([first, other])
    wide = table("wide.csv", [4], [4.0], columns=("a", "b"))
    with pytest.raises(ValueError, match="wide.csv has columns \\['a', 'b'\\] but .*first.csv has \\['a'\\]"):
        merge_tables([first, wide])
    with pytest.raises(ValueError, match="expect_complete \\(--complete\\) needs every table's .meta.json sidecar"):
        merge_tables([first, same], expect_complete=True)  # no sidecars: nothing says what complete is
    with pytest.raises(ValueError, match="misses 1 of 5 expected indices \\(4\\)"):
        merge_tables([first, same], expect_complete=True, expected_indices=range(5))
    assert len(merge_tables([first, same], expect_complete=True, expected_indices=range(4))) == 4


def test_an_output_folder_is_made_and_a_folder_as_output_is_refused_before_writing(tmp_path, minibatch):
    table = score(tmp_path / "new" / "deeper" / "t.csv", minibatch, proxies=["params"], limit=8)
    assert len(table) == 8 and data_rows(tmp_path / "new" / "deeper" / "t.csv") == 8
    for call in (lambda: score(tmp_path / "new", minibatch, proxies=["params"], limit=8),
                 lambda: merge_tables([tmp_path / "new" / "deeper" / "t.csv"], out=tmp_path / "new")):
        with pytest.raises(ValueError, match=r"out must be a file path, got the folder .*new"):
            call()
    assert not meta_path(tmp_path / "new").exists()  # no stray sidecar beside the folder


@pytest.mark.parametrize("sidecar", ["{}", "{bad", '{"settings": [1]}', b"\xff\xfe"])
def test_a_broken_sidecar_is_a_clear_error_when_resuming_and_merging(tmp_path, minibatch, sidecar):
    out = tmp_path / "t.csv"
    score(out, minibatch, proxies=["params"], limit=8)
    write = meta_path(out).write_bytes if isinstance(sidecar, bytes) else meta_path(out).write_text
    write(sidecar)
    message = r"t.csv.meta.json is not a score-table sidecar \((expected JSON|its 'settings' is a list)"
    with pytest.raises(ValueError, match=r"rdnas.proxies.score_space: .*" + message):
        score(out, minibatch, proxies=["params"], limit=8)
    with pytest.raises(ValueError, match=r"rdnas.proxies.merge_tables: .*" + message):
        merge_tables([out])


def test_merge_refuses_shards_of_different_runs(tmp_path, minibatch):
    score(tmp_path / "a.csv", minibatch, limit=16, shard=(0, 2))
    score(tmp_path / "b.csv", minibatch, limit=16, shard=(1, 2), init="kaiming_normal")
    with pytest.raises(ValueError, match="a.csv was written with init='pytorch' but .*b.csv with "
                                         "init='kaiming_normal'; merge only the shards of one run"):
        merge_tables([tmp_path / "a.csv", tmp_path / "b.csv"])


# ----------------------------------------------------------------------------------------------- minibatches


def test_random_and_digits_minibatches():
    first = load_minibatch("random:1,6,5,7", batch_size=4, seed=2)
    assert list(first.inputs.shape) == [4, 1, 6, 5] and first.num_classes == 7 and first.targets.max() < 7
    again = load_minibatch("random:1,6,5,7", batch_size=4, seed=2)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.inputs, load_minibatch("random:1,6,5,7", batch_size=4, seed=2, batch_index=1).inputs)
    assert list(load_minibatch("random", batch_size=2).inputs.shape) == [2, 3, 32, 32]
    digits = load_minibatch("digits", batch_size=8, image_size=12)
    assert list(digits.inputs.shape) == [8, 3, 12, 12] and digits.num_classes == 10
    assert torch.equal(digits.inputs[:, 0], digits.inputs[:, 2])
    with pytest.raises(ValueError, match="load_minibatch: spec 'random:3,32': expected random:C,H,W,classes"):
        load_minibatch("random:3,32")
    with pytest.raises(ValueError, match="load_minibatch: unknown spec 'cifar'; expected one of random, "):
        load_minibatch("cifar")


def test_npz_minibatches(tmp_path):
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, size=(3, 8, 3, 4, 4), dtype=np.uint8)
    labels = generator.integers(0, 10, size=(3, 8))
    np.savez(tmp_path / "batches.npz", x_b8=images, y_b8=labels)
    batch = load_minibatch(f"npz:{tmp_path / 'batches.npz'}", batch_size=8, batch_index=2)
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    expected = (torch.from_numpy(images[2]).float() / 255 - mean) / std
    assert torch.equal(batch.inputs, expected) and torch.equal(batch.targets, torch.from_numpy(labels[2]))
    assert batch.num_classes == 10 and "x_b8[2]" in batch.source

    np.savez(tmp_path / "mine_cifar100.npz", x_b8=images, y_b8=labels)
    assert load_minibatch(f"npz:{tmp_path / 'mine_cifar100.npz'}", batch_size=8).num_classes == 100
    many = labels.copy()
    many[1, 3] = 42  # another batch's label says the archive has 100 classes
    np.savez(tmp_path / "many.npz", x_b8=images, y_b8=many)
    assert load_minibatch(f"npz:{tmp_path / 'many.npz'}", batch_size=8).num_classes == 100
    np.savez(tmp_path / "flat.npz", x=images.reshape(24, 3, 4, 4), y=labels.reshape(24))
    flat = load_minibatch(f"npz:{tmp_path / 'flat.npz'}", batch_size=8, batch_index=2)
    assert torch.equal(flat.inputs, expected)

    with pytest.raises(FileNotFoundError, match="load_minibatch: no minibatch archive at .*absent.npz"):
        load_minibatch(f"npz:{tmp_path / 'absent.npz'}")
    with pytest.raises(ValueError, match="has no batches of batch_size 64 \\(no key 'x_b64'\\); it holds batch "
                                         "sizes \\[8\\]"):
        load_minibatch(f"npz:{tmp_path / 'batches.npz'}")
    with pytest.raises(ValueError, match="batch_index 3 is out of range: .* holds 3 batches of 8"):
        load_minibatch(f"npz:{tmp_path / 'batches.npz'}", batch_size=8, batch_index=3)
    np.savez(tmp_path / "nolabels.npz", x_b8=images)
    with pytest.raises(ValueError, match="has 'x_b8' but no labels 'y_b8'"):
        load_minibatch(f"npz:{tmp_path / 'nolabels.npz'}", batch_size=8)
    np.savez(tmp_path / "other.npz", images=images)
    with pytest.raises(ValueError, match="has neither x_b<batch size>/y_b<batch size> nor x/y keys"):
        load_minibatch(f"npz:{tmp_path / 'other.npz'}", batch_size=8)
    np.savez(tmp_path / "mislabelled.npz", x_b4=images, y_b4=labels)  # its batches hold 8 images, not 4
    with pytest.raises(ValueError, match=r"expected x_b4 of shape \[M, 4, C, H, W\] .* got \[3, 8, 3, 4, 4\]"):
        load_minibatch(f"npz:{tmp_path / 'mislabelled.npz'}", batch_size=4)
    np.save(tmp_path / "plain.npy", images)
    with pytest.raises(ValueError, match=r"plain.npy is a single .npy array, not a .npz archive"):
        load_minibatch(f"npz:{tmp_path / 'plain.npy'}", batch_size=8)


def test_cifar_folder_minibatch(tmp_path):
    generator = np.random.default_rng(1)
    for k in range(1, 6):
        with open(tmp_path / f"data_batch_{k}", "wb") as handle:
            pickle.dump({"data": generator.integers(0, 256, size=(4, 3 * 32 * 32), dtype=np.uint8),
                         "labels": list(generator.integers(0, 10, size=4))}, handle)
    batch = load_minibatch(f"cifar10:{tmp_path}", batch_size=8, seed=5, batch_index=1)
    assert list(batch.inputs.shape) == [8, 3, 32, 32] and batch.num_classes == 10
    assert batch.source.startswith(f"cifar10:{tmp_path} cifar10-train (seed 5, batch 1 of 8)")
    with pytest.raises(ValueError, match="batch_index 2 is out of range: cifar10-train has 20 images, 2 batches"):
        load_minibatch(f"cifar10:{tmp_path}", batch_size=8, batch_index=2)
    with pytest.raises(FileNotFoundError, match="no dataset folder at .*nowhere"):
        load_minibatch(f"cifar100:{tmp_path / 'nowhere'}")


@needs_minibatches
def test_the_freerea_minibatches_load():
    for dataset, classes in (("cifar10", 10), ("cifar100", 100)):
        path = MINIBATCHES / f"freerea_{dataset}_train_minibatches.npz"
        batch = load_minibatch(f"npz:{path}", batch_size=64, batch_index=9)
        assert list(batch.inputs.shape) == [64, 3, 32, 32] and batch.num_classes == classes
        assert abs(float(batch.inputs.mean())) < 0.5 and 0.5 < float(batch.inputs.std()) < 1.5
        assert list(load_minibatch(f"npz:{path}", batch_size=32).inputs.shape) == [32, 3, 32, 32]
        with pytest.raises(ValueError, match="it holds batch sizes \\[32, 64\\]"):
            load_minibatch(f"npz:{path}", batch_size=16)


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_lists_the_proxies(tmp_path):
    result = run_cli("proxies", "--list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == list(PROXIES)
    assert "SynFlow" in result.stdout


def test_cli_rejects_an_unknown_proxy(tmp_path):
    result = run_cli("proxies", "--proxy", "synflow,bogus", "--out", "t.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown proxy 'bogus'; known proxies: fisher, flops, grad_norm" in result.stderr
    assert not (tmp_path / "t.csv").exists()
    result = run_cli("proxies", "--proxy", "synflow", cwd=tmp_path)
    assert result.returncode == 2 and "--out is required" in result.stderr


def test_cli_scores_merges_and_resumes(tmp_path):
    command = ["proxies", "--proxy", "params,flops,naswot,snip", "--data", SPEC, "--batch-size", "8", "--limit", "20",
               "--archs-per-chunk", "8", "--quiet"]
    result = run_cli(*command, "--out", "t.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "20 rows in t.csv: 20 scored now" in result.stdout and "naswot" in result.stdout
    table = ScoreTable.read(tmp_path / "t.csv")
    assert table.indices.tolist() == list(range(20)) and table.names == ["params", "flops", "naswot", "snip"]
    archs = [nb201.from_enumeration_index(i) for i in range(20)]
    np.testing.assert_array_equal(table.column("params"), PROXIES["params"].score(scoring_supernet(), archs).numpy())

    small = run_cli(*command, "--channels", "8", "--cells", "1", "--out", "small.csv", cwd=tmp_path)
    assert small.returncode == 0, small.stderr
    assert "nb201 supernet channels=8, cells_per_stage=1," in small.stdout
    np.testing.assert_array_equal(ScoreTable.read(tmp_path / "small.csv").column("params"),
                                  PROXIES["params"].score(scoring_supernet(channels=8, cells_per_stage=1), archs).numpy())

    refused = run_cli(*command, "--seed", "1", "--out", "t.csv", cwd=tmp_path)
    assert refused.returncode == 1 and "t.csv was written with seed=0; this run has seed=1" in refused.stderr

    for shard in ("0/2", "1/2"):
        assert run_cli(*command, "--shard", shard, "--out", f"s{shard[0]}.csv", cwd=tmp_path).returncode == 0
    merged = run_cli("merge-tables", "--out", "merged.csv", "s0.csv", "s1.csv", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert "20 rows from 2 tables written to merged.csv" in merged.stdout
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "t.csv").read_bytes()
    # --complete: the run's architectures (the sidecars record 20 of them), not the whole space
    complete = run_cli("merge-tables", "--out", "all.csv", "s0.csv", "s1.csv", "--complete", cwd=tmp_path)
    assert complete.returncode == 0, complete.stderr
    missing = len(ScoreTable.read(tmp_path / "s1.csv"))
    incomplete = run_cli("merge-tables", "--out", "part.csv", "s0.csv", "--complete", cwd=tmp_path)
    assert incomplete.returncode == 1, incomplete.stdout
    assert f"misses {missing} of the run's 20 nb201 architectures" in incomplete.stderr
    assert not (tmp_path / "part.csv").exists()

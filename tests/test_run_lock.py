"""One writer per run folder (rdnas.run_folder): a second writer is refused naming the holder, a lock left by a
killed process is taken over, every command that writes a run folder or resumable file takes its lock (train,
demo, bench build per shard, proxies per output file), and killing torchrun's whole process group with kill -9
stops its workers, after which a one-process resume finds the folder consistent.

Processes started here are tiny nb201 digits runs, waited for with time limits and killed (by pid) at the end.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rdnas import run_folder
from rdnas.cli import main
from rdnas.run_folder import RunFolderInUse, claim_file, claim_folder, folder_lock_path, release_claims
from spawning import free_port

RDNAS_ROOT = Path(run_folder.__file__).resolve().parent.parent
TINY = ["--data", "digits", "--image-size", "8", "--channels", "4", "--cells", "1", "--batch-size", "64", "--quiet"]
HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def no_claims_left():
    yield
    release_claims()


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{RDNAS_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1"}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def holder_pid(lock: Path) -> int | None:
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


# ------------------------------------------------------------------------------------------- the lock itself


def test_a_second_lock_on_a_folder_is_refused_and_released_locks_are_free_again(tmp_path):
    first = claim_folder(tmp_path / "run", "train")
    record = json.loads(folder_lock_path(tmp_path / "run").read_text())
    assert record["pid"] == os.getpid() and record["host"] == HOST and record["command"] == "rdnas train"
    with pytest.raises(RunFolderInUse, match=rf"^{tmp_path / 'run'} is in use by pid {os.getpid()} on host "
                       rf"{HOST} \(started .+\); wait for it or stop it$") as refused:
        claim_folder(tmp_path / "run", "train")
    assert refused.value.holder.pid == os.getpid()
    first.release()
    assert not folder_lock_path(tmp_path / "run").exists()
    claim_folder(tmp_path / "run", "train")  # free again


def test_shards_of_one_folder_lock_separately_and_a_file_lock_guards_one_file(tmp_path):
    claim_folder(tmp_path, "bench build", shard=(0, 2))
    claim_folder(tmp_path, "bench build", shard=(1, 2))  # another shard writes another file: no conflict
    with pytest.raises(RunFolderInUse, match=r"\(shard 1/2\) is in use by pid"):
        claim_folder(tmp_path, "bench build", shard=(1, 2))
    claim_file(tmp_path / "a.csv", "proxies")
    claim_file(tmp_path / "b.csv", "proxies")
    with pytest.raises(RunFolderInUse, match="a.csv is in use by pid"):
        claim_file(tmp_path / "a.csv", "proxies")


def test_under_torchrun_rank_0_alone_takes_the_lock_and_every_rank_gets_its_outcome(tmp_path, monkeypatch):
    from rdnas import distributed

    sent = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda value, world: sent.append(value) or value)
    assert claim_folder(tmp_path, "train", distributed.World(0, 2)).held and sent == [None]
    with pytest.raises(RunFolderInUse, match="is in use by pid") as refused:
        claim_folder(tmp_path, "train", distributed.World(0, 2))
    assert sent[-1] is refused.value  # rank 0 sends its refusal to the others
    monkeypatch.setattr(distributed, "broadcast_object", lambda value, world: RunFolderInUse("rank 0's refusal"))
    with pytest.raises(RunFolderInUse, match="rank 0's refusal"):
        claim_folder(tmp_path / "other", "train", distributed.World(1, 2))
    assert not folder_lock_path(tmp_path / "other").exists()  # rank 1 never takes a lock
    monkeypatch.setattr(distributed, "broadcast_object", lambda value, world: None)
    assert claim_folder(tmp_path / "other", "train", distributed.World(1, 2)) is None


def test_a_file_where_the_run_folder_should_be_is_a_clear_error(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(ValueError, match=f"--out {tmp_path / 'x'} is a file, expected a folder"):
        claim_folder(tmp_path / "x", "train")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_without_flock_the_record_decides_a_dead_pid_of_this_host_is_taken_over(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = folder_lock_path(tmp_path)
    stale = {"pid": dead_pid(), "host": HOST, "started": "then", "command": "rdnas train"}
    lock.write_text(json.dumps(stale))
    taken = claim_folder(tmp_path, "train")
    assert taken.previous.pid == stale["pid"] and holder_pid(lock) == os.getpid()
    with pytest.raises(RunFolderInUse, match=rf"is in use by pid {os.getpid()} .*this file system has no flock: "
                       rf"if that process is gone, remove {lock}"):
        claim_folder(tmp_path, "train")
    taken.release()
    lock.write_text(json.dumps({**stale, "host": "another-host"}))  # cannot tell whether it runs: refused
    with pytest.raises(RunFolderInUse, match=f"in use by pid {stale['pid']} on host another-host"):
        claim_folder(tmp_path, "train")


# --------------------------------------------------------------------------------------------- the commands


def test_a_second_rdnas_train_on_a_running_folder_is_refused_and_a_killed_holder_s_lock_is_taken_over(
        tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "200", "--resume", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "rdnas", *args], env=child_env(), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: holder_pid(folder_lock_path(out)) == first.pid or first.poll() is not None, 120,
                 "the first run's lock")
        assert first.poll() is None, "the first run ended before the second started"
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"rdnas train: error: {out} is in use by pid {first.pid} on host {HOST} (started " in err
        assert err.rstrip().endswith("wait for it or stop it")
        assert first.poll() is None and holder_pid(folder_lock_path(out)) == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        kill(first)
    assert holder_pid(folder_lock_path(out)) == first.pid  # killed: the record stays, its flock is gone
    taken = claim_folder(out, "train")
    assert taken.previous.pid == first.pid
    assert f"rdnas train: note: {out} was left locked by pid {first.pid} on host {HOST}" in capsys.readouterr().err


def test_demo_bench_build_and_proxies_refuse_what_another_process_writes(tmp_path, capsys):
    claim_folder(tmp_path / "demo", "demo")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert f"rdnas demo: error: {tmp_path / 'demo'} is in use by pid {os.getpid()}" in capsys.readouterr().err

    bench = tmp_path / "bench"
    claim_folder(bench, "bench build", shard=(1, 2))
    assert main(["bench", "build", "--archs", "3", "--seeds", "1", "--shard", "1/2", "--out", str(bench)]) == 2
    assert f"rdnas bench build: error: {bench} (shard 1/2) is in use by pid {os.getpid()}" in capsys.readouterr().err
    assert not list(bench.glob("runs*.csv"))

    table = tmp_path / "scores.{shard}.csv"
    claim_file(tmp_path / "scores.1.csv", "proxies")
    assert main(["proxies", "--proxy", "params", "--limit", "2", "--shard", "1/2", "--out", str(table)]) == 2
    assert f"rdnas proxies: error: {tmp_path / 'scores.1.csv'} is in use by pid {os.getpid()}" in \
        capsys.readouterr().err
    assert main(["proxies", "--proxy", "params", "--limit", "2", "--shard", "0/2", "--out", str(table),
                 "--quiet"]) == 0  # shard 0 writes another file
    assert (tmp_path / "scores.0.csv").exists() and not (tmp_path / ".scores.0.csv.lock").exists()


# ------------------------------------------------------------------------------------------------ no orphans


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; its new parent reaps it


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc (Linux)")
def test_kill_9_of_torchrun_s_process_group_stops_its_workers_and_a_resume_finds_the_run_consistent(tmp_path, capsys):
    from rdnas.train import load_checkpoint

    epochs = 4
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", str(epochs), "--out", str(out)]
    log = tmp_path / "torchrun.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()), "-m", "rdnas", *args]
    workers = []
    with open(log, "w") as handle, tempfile.TemporaryDirectory() as outside:
        launcher = subprocess.Popen(command, env=child_env(), cwd=outside, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group, as a shell job would be
        try:
            wait_for(lambda: (out / "checkpoint.pt").exists() or launcher.poll() is not None, 180,
                     "the first checkpoint")
            assert launcher.poll() is None, log.read_text()[-3000:]
            workers = children_of(launcher.pid)
            assert len(workers) == 2 and all(os.getsid(w) == w for w in workers)  # torchrun: a session each
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's whole group; the workers are not in it
            launcher.wait(timeout=30)
            wait_for(lambda: not any(map(running, workers)), 15, "the workers to stop after their launcher died")
        finally:
            kill(launcher)
            for pid in workers:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    # the first rank to notice stops; the other may instead fail on its lost gloo peer, which ends it too
    assert f"the launcher (pid {launcher.pid}) is gone; stopping" in text, text[-3000:]
    # rank 0 held the folder: stopped by the watch its lock is stale now; failing first on its lost peer, it released it
    rank0 = holder_pid(folder_lock_path(out))
    assert rank0 is None or rank0 in workers
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] < epochs, "the job finished before it was killed"

    assert main([*args, "--resume"]) == 0  # one process, the same folder
    if rank0 is not None:
        assert f"was left locked by pid {rank0} on host {HOST}" in capsys.readouterr().err
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == epochs and state["world_size"] == 1  # the last checkpoint is the resume's
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    assert not folder_lock_path(out).exists()  # released at the command's end

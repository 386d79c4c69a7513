"""One writer per run folder, and no orphans.

Every command that writes a run folder or a resumable file takes a lock on it first (``rdnas train --out``,
``rdnas demo --out``, ``rdnas bench build --out`` per shard, ``rdnas proxies --out`` per output file), so two
processes never write the same files: the second is refused with
``rdnas train: error: runs/x is in use by pid 1234 on host h (started 2026-12-06 05:10:00 UTC); wait for it or
stop it`` (exit 2; ``rdnas proxies`` exits 1, its code for input errors).

The lock is a file beside what it guards (``<folder>/.rdnas.lock``, ``<folder>/.rdnas.<i>of<n>.lock`` for shard i
of n, ``<dir>/.<name>.lock`` for a single file) holding the holder's pid, host, start time and command. The file is
created with ``O_CREAT | O_EXCL`` and held with ``fcntl.flock``: the kernel drops an flock when its process dies,
however it dies (``kill -9`` included), so a lock file whose flock is free was left by a dead process and the next
command takes it over (and says whose it was). On a file system without flock (``ENOLCK``, ``EOPNOTSUPP``:
some network mounts) the file's existence is the lock: a record of this host whose pid no longer runs is taken
over, any other is refused.

Under torchrun a folder that the whole job writes (``train``) is locked by rank 0 alone, its only writer, and
every rank gets the same outcome; per-rank files (``bench build``'s shards, ``proxies --shard env``) are locked by
the rank that writes them.

:func:`exit_with_launcher` is the other half: torchrun starts its workers in sessions of their own, so killing
the launcher's process group leaves them running and writing. Each worker watches its parent (the launcher) and
exits when it is gone; the lock then covers the rest (a resume waits until the last writer has stopped).
"""

import atexit
import errno
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".rdnas.lock"

# flock errors that mean "this file system has no flock", not "someone holds it"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunFolderInUse(ValueError):
    """Another live process holds the lock; ``holder`` is its :class:`Holder` (None when its record was
    unreadable). A ValueError, so that the CLI reports it as ``rdnas <command>: error: ...`` like other refused
    input."""

    def __init__(self, message: str, holder: "Holder | None" = None):
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """What a lock file records about the process that took it."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        """``"pid 1234 on host h (started 2026-12-06 05:10:00 UTC)"``."""
        return f"pid {self.pid} on host {self.host} (started {self.started})"

    def is_dead_here(self) -> bool:
        """True when the holder ran on this host and its pid no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def folder_lock_path(folder, shard: tuple[int, int] | None = None) -> Path:
    """The lock file of ``folder`` (``.rdnas.lock``), or of shard ``(i, n)`` of it (``.rdnas.<i>of<n>.lock``;
    ``(0, 1)`` is the whole folder)."""
    if shard is None or tuple(shard) == (0, 1):
        return Path(folder) / LOCK_NAME
    i, n = shard
    return Path(folder) / f".rdnas.{i}of{n}.lock"


def file_lock_path(path) -> Path:
    """The lock file of the single output file ``path``: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class RunLock:
    """An exclusive lock on a run folder or output file, held from :meth:`acquire` to :meth:`release` (or the
    process's end, however it ends).

    Args:
        lock_path (path): the lock file (:func:`folder_lock_path`, :func:`file_lock_path`); its folder is created.
        what (str): what it guards, for messages (``"runs/x"``, ``"runs/bench (shard 0/2)"``).
        command (str): the command taking it, for messages and the record (``"train"``).
    """

    def __init__(self, lock_path, what: str, command: str):
        self.path = Path(lock_path)
        self.what = what
        self.command = command
        self.previous: Holder | None = None  # the dead holder whose stale lock this one took over
        self._fd: int | None = None
        self._flock = True
        self._record: Holder | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Takes the lock or raises :class:`RunFolderInUse` naming the holder. A lock left by a dead process is
        taken over: ``self.previous`` is then its record. Returns self."""
        if self.held:
            raise RuntimeError(f"rdnas.run_folder: {self.path} is already held by this RunLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # another try only when the file is removed or replaced between our open and flock
            fd = self._open()
            if fd is None:
                continue
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd, wait=True)
                os.close(fd)
                raise RunFolderInUse(self._in_use(holder), holder) from None
            except OSError as error:
                os.close(fd)
                if error.errno not in _NO_FLOCK:
                    raise
                return self._acquire_without_flock()
            if not _same_file(fd, self.path):  # its holder released it (removed the file) after our open
                os.close(fd)
                continue
            self.previous = _read_holder(fd)  # a record in a free lock: its process died holding it
            self._write_record(fd)
            self._fd = fd
            return self
        raise RuntimeError(f"rdnas.run_folder: could not take {self.path}: it was replaced 100 times in a row")

    def release(self) -> None:
        """Removes the lock file and drops the lock (nothing when not held)."""
        if self in _CLAIMS:
            _CLAIMS.remove(self)
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            mine = self.record().pid == os.getpid()  # not a forked child's copy of the lock
            if mine and (self._flock or _read_holder(fd) == self.record()):
                self.path.unlink(missing_ok=True)  # while still holding it: a waiting opener sees another inode
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _open(self) -> int | None:
        """The lock file's descriptor: created (``O_EXCL``) when absent, else the existing one; None when it
        vanished in between."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                return os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return None

    def _write_record(self, fd: int) -> None:
        record = self.record()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record.__dict__) + "\n").encode(), 0)
        os.fsync(fd)

    def record(self) -> Holder:
        """This process's record (pid, host, start time, command), fixed at the first call."""
        if self._record is None:
            self._record = Holder(os.getpid(), socket.gethostname(), _started(), f"rdnas {self.command}")
        return self._record

    def _acquire_without_flock(self) -> "RunLock":
        """The existence of the lock file is the lock (file systems without flock)."""
        self._flock = False
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                holder = _read_holder(fd, wait=True)
                os.close(fd)
                if holder is None or not holder.is_dead_here():
                    raise RunFolderInUse(self._in_use(holder) + (
                        f" (this file system has no flock: if that process is gone, remove {self.path})"), holder) \
                        from None
                self.previous = holder
                self.path.unlink(missing_ok=True)
                continue
            self._write_record(fd)
            self._fd = fd
            return self
        raise RuntimeError(f"rdnas.run_folder: could not take {self.path}: it was replaced 100 times in a row")

    def _in_use(self, holder: "Holder | None") -> str:
        by = holder.describe() if holder else "another process (its record in " + str(self.path) + " is unreadable)"
        return f"{self.what} is in use by {by}; wait for it or stop it"


def claim_folder(folder, command: str, world=None, shard: tuple[int, int] | None = None) -> RunLock | None:
    """Locks the run folder ``folder`` (or its shard ``(i, n)``) for ``rdnas <command>`` until the command ends
    (:func:`release_claims`, called by the CLI) or the process does. Refused: :class:`RunFolderInUse`. A lock left
    by a dead process is taken over with a note on stderr naming it.

    ``world`` (:class:`rdnas.distributed.World`, several processes): rank 0 alone takes the lock and every rank
    raises the same error; the other ranks return None. ``folder`` is created; a file there is a ValueError."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file, expected a folder")
    what = str(folder) if shard is None or tuple(shard) == (0, 1) else f"{folder} (shard {shard[0]}/{shard[1]})"
    return _claim(RunLock(folder_lock_path(folder, shard), what, command), world)


def claim_file(path, command: str, world=None) -> RunLock | None:
    """Locks the single output file ``path`` (a resumable table) for ``rdnas <command>``; as :func:`claim_folder`."""
    path = Path(path)
    return _claim(RunLock(file_lock_path(path), str(path), command), world)


_CLAIMS: list[RunLock] = []


def release_claims() -> None:
    """Releases every lock :func:`claim_folder` / :func:`claim_file` took in this process, newest first (the end
    of a command; also run at exit)."""
    while _CLAIMS:
        _CLAIMS.pop().release()


def _claim(lock: RunLock, world) -> RunLock | None:
    if world is None or not world.distributed:
        lock.acquire()
        _CLAIMS.append(lock)
        _note_takeover(lock)
        return lock
    from rdnas import distributed

    error = None
    if world.is_main:
        try:
            lock.acquire()
            _CLAIMS.append(lock)
            _note_takeover(lock)
        except RunFolderInUse as refused:
            error = refused
    error = distributed.broadcast_object(error, world)
    if error is not None:
        raise error
    return lock if world.is_main else None


def _note_takeover(lock: RunLock) -> None:
    if lock.previous is not None:
        print(f"rdnas {lock.command}: note: {lock.what} was left locked by {lock.previous.describe()}, which is no "
              "longer running; taking it over", file=sys.stderr, flush=True)


def _read_holder(fd: int, wait: bool = False) -> Holder | None:
    """The record in the lock file, or None (empty, or being written: with ``wait``, read again for up to 1 s)."""
    for attempt in range(20 if wait else 1):
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode())
            return Holder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if attempt + 1 < (20 if wait else 1):
                time.sleep(0.05)
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _started() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


atexit.register(release_claims)


# --------------------------------------------------------------------------------------------- no orphans

_WATCHING: list[threading.Thread] = []


def exit_with_launcher(command: str, interval_s: float = 0.5) -> None:
    """Stops this process when its parent (torchrun's agent, which started it) is gone: a daemon thread checks
    ``os.getppid()`` every ``interval_s`` seconds and, once it has changed (the process was re-parented), prints
    ``rdnas <command>: rank r of P: the launcher (pid N) is gone; stopping`` and ends the process at once
    (``os._exit``: files are written atomically, so the run folder keeps its last complete checkpoint).

    torchrun starts each worker in a session of its own, so ``kill -9`` of the launcher's process group does not
    reach them; without this watch they would keep training and writing to ``--out``. Polling rather than
    ``PR_SET_PDEATHSIG``: it is portable, prints why, and does not fire when the launcher's spawning thread (not
    the launcher) ends. Started once per process (later calls do nothing)."""
    if _WATCHING:
        return
    launcher = os.getppid()
    label = f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}"

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != launcher:
                print(f"rdnas {command}: {label}: the launcher (pid {launcher}) is gone; stopping", file=sys.stderr,
                      flush=True)
                os._exit(1)

    thread = threading.Thread(target=watch, name="rdnas-launcher-watch", daemon=True)
    thread.start()
    _WATCHING.append(thread)

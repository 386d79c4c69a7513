"""The sum over ranks of rdnas's CPU jobs, through shared memory when every rank is on one machine.

A subnet-parallel training step on the CPU ends in one all-reduce of every gradient (about 100,000 floats for the
digits network). Through gloo that took 1.27 ms in the median on a 2-core machine: the data goes through the
kernel's TCP loopback, and the process that arrived first sleeps and must be woken. Through a shared memory arena it
took 0.11 ms (``benchmarks/bench_shared_memory_sum.py``, ``docs/results/distributed.md``): each rank copies its
tensor into its slot, publishes a counter, spins until every rank has published, and adds the slots in rank order,
so every rank gets the same bits. The summing step is native (``rdnas._C.shared_memory_sum``,
``csrc/shared_memory_sum.cpp``): it waits with atomic loads and without the GIL.

:func:`all_reduce_sum_` is the entry point (``rdnas.distributed`` routes its per-step sums through it). It uses
shared memory when all of these hold, and ``torch.distributed.all_reduce`` otherwise:

- the default process group is gloo (CPU tensors);
- every rank runs on the same machine (same host name and boot id) and has ``RDNAS_SHARED_MEMORY_SUM`` unset or
  ``auto`` (``off`` turns it off; checked once per process group, on every rank together);
- ``/dev/shm`` takes the arena (created by rank 0 and reserved with ``posix_fallocate``, so a full ``/dev/shm``
  means gloo, never a crash; 2 x P slots of the largest tensor summed so far);
- the tensor is float32 or float64 (anything else goes through gloo; the choice depends only on what every rank
  has alike, so the ranks always take the same path).

The arena's file is unlinked as soon as every rank has mapped it: nothing is left in ``/dev/shm`` after the job,
however it ends. A rank that waits longer than the timeout (``RDNAS_DIST_TIMEOUT``, as for gloo) raises
``TimeoutError`` naming the rank it waited for; Ctrl-C interrupts the wait.
"""

import mmap
import os
import socket
import uuid
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

MODE_VARIABLE = "RDNAS_SHARED_MEMORY_SUM"
MODES = ("auto", "off")
SUMMED_DTYPES = (torch.float32, torch.float64)  # what the native sum adds; anything else goes through gloo
RECORD_BYTES = 64  # one header record per rank (csrc/shared_memory_sum.cpp)
SHM_FOLDER = "/dev/shm"


def mode() -> str:
    """``RDNAS_SHARED_MEMORY_SUM``: ``auto`` (the default: shared memory where every rank is on one machine) or
    ``off`` (always gloo). Raises ValueError naming the variable for anything else."""
    value = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, got {os.environ[MODE_VARIABLE]!r}")
    return value


def _machine_identity() -> str:
    """Host name and boot id: equal for processes of one running machine (the boot id tells apart containers or
    hosts that share a name)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"


@dataclass
class _Arena:
    """One mapped arena: ``size`` header records, then 2 x ``size`` slots of ``stride`` bytes."""

    mapping: mmap.mmap
    view: Tensor  # uint8 over the whole mapping: keeps the buffer exported while its address is in use
    stride: int
    calls: int = 0

    @property
    def address(self) -> int:
        return self.view.data_ptr()


@dataclass
class _GroupState:
    """What one process group decided and holds: whether shared memory is usable (``reason`` says why not) and
    the current arena."""

    group: weakref.ref  # the process group; a weak reference, so that the group is torn down when torch
    # destroys it and not at the interpreter's exit (a gloo group destroyed that late aborts the process)
    usable: bool
    reason: str
    arena: _Arena | None = None
    sums: int = 0


_STATES: dict = {}  # (process id, id of the default process group) -> _GroupState


def _state() -> _GroupState:
    """This process group's state; on its first use (a collective: every rank calls it at the same point), the
    ranks agree on whether shared memory is usable."""
    group = dist.distributed_c10d._get_default_group()
    key = (os.getpid(), id(group))
    state = _STATES.get(key)
    if state is not None and state.group() is not group:  # a new group that reuses a destroyed one's id
        state = None
    if state is None:
        for old in [k for k, v in _STATES.items() if v.group() is None]:
            del _STATES[old]
        group_ref = weakref.ref(group)
        if dist.get_backend() != "gloo":
            state = _GroupState(group_ref, False, f"the backend is {dist.get_backend()}, not gloo")
        else:
            try:
                mine = (mode(), _machine_identity(), os.path.isdir(SHM_FOLDER))
            except ValueError as error:  # every rank must still join the gather below
                mine, problem = ("invalid", "", False), error
            else:
                problem = None
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, mine)
            if problem is not None:
                raise problem
            if any(m[0] == "off" or m[0] == "invalid" for m in everyone):
                state = _GroupState(group_ref, False, f"{MODE_VARIABLE}=off")
            elif len({m[1] for m in everyone}) > 1:
                state = _GroupState(group_ref, False, "the ranks are on several machines")
            elif not all(m[2] for m in everyone):
                state = _GroupState(group_ref, False, f"{SHM_FOLDER} is missing")
            else:
                state = _GroupState(group_ref, True, "")
        _STATES[key] = state
    return state


def _new_arena(state: _GroupState, stride: int) -> None:
    """Every rank together: rank 0 creates and reserves the file, every rank maps it and checks the token rank 0
    wrote, then rank 0 unlinks it. On any failure on any rank, every rank falls back to gloo for good."""
    rank, size = dist.get_rank(), dist.get_world_size()
    total = size * RECORD_BYTES + 2 * size * stride
    state.arena = None  # the old mapping is released when its last reference goes
    offer = [None]
    if rank == 0:
        path = os.path.join(SHM_FOLDER, f"rdnas-sum-{os.getpid()}-{uuid.uuid4().hex[:16]}")
        token = uuid.uuid4().bytes
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(handle, 0, total + len(token))
                os.pwrite(handle, token, total)
            finally:
                os.close(handle)
            offer = [(path, token)]
        except OSError as error:
            offer = [("", str(error))]
            try:
                os.unlink(path)
            except OSError:
                pass
    dist.broadcast_object_list(offer, src=0)
    path, token = offer[0]
    mapped, problem = None, None
    if path:
        try:
            handle = os.open(path, os.O_RDWR)
            try:
                mapping = mmap.mmap(handle, total + len(token))
            finally:
                os.close(handle)
            if mapping[total:] != token:
                raise OSError(f"{path} is not the file rank 0 wrote (another /dev/shm?)")
            mapped = _Arena(mapping, torch.frombuffer(mapping, dtype=torch.uint8), stride)
        except OSError as error:
            problem = str(error)
    else:
        problem = f"rank 0 could not create the arena in {SHM_FOLDER}: {token}"
    outcomes = [None] * size
    dist.all_gather_object(outcomes, problem)  # also: every rank has mapped it before rank 0 unlinks it
    if rank == 0 and path:
        os.unlink(path)
    failed = next((f"rank {q}: {p}" for q, p in enumerate(outcomes) if p is not None), None)
    if failed is not None:
        state.usable, state.reason = False, failed
        return
    state.arena = mapped


def _stride_for(nbytes: int, current: int = 0) -> int:
    """A slot size in bytes for ``nbytes``: a multiple of 64, at least twice the current one when growing."""
    need = max(nbytes, 2 * current, RECORD_BYTES)
    return -(-need // RECORD_BYTES) * RECORD_BYTES


def transport() -> str:
    """How :func:`all_reduce_sum_` sums in this process group: ``"shared memory"``, ``"gloo (<why not shared
    memory>)"``, or ``"none"`` outside a process group. A collective the first time (every rank must call it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return "none"
    state = _state()
    if state.usable:
        return "shared memory"
    return f"{dist.get_backend()} ({state.reason})"


def all_reduce_sum_(tensor: Tensor, timeout_s: float) -> Tensor:
    """Sums ``tensor`` (any shape; the same shape, dtype and device on every rank) over the ranks of the default
    process group, in place, and returns it. Every rank must call it at the same point, like
    ``torch.distributed.all_reduce``. Shared memory where usable (module docstring; float32 / float64 CPU tensors),
    else ``torch.distributed.all_reduce``. Every rank gets the same bits.

    Args:
        tensor (Tensor[*]): this rank's addend; holds the sum afterwards.
        timeout_s (float): how long a rank waits for the others before ``TimeoutError``.
    """
    state = _state()
    if not state.usable or tensor.dtype not in SUMMED_DTYPES or tensor.device.type != "cpu":
        dist.all_reduce(tensor)
        return tensor
    itemsize = tensor.element_size()
    nbytes = tensor.numel() * itemsize
    if state.arena is None or nbytes > state.arena.stride:
        _new_arena(state, _stride_for(nbytes, state.arena.stride if state.arena is not None else 0))
        if state.arena is None:  # could not be made: gloo from now on, on every rank
            dist.all_reduce(tensor)
            return tensor
    arena = state.arena
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    arena.calls += 1
    from rdnas import _C

    _C.shared_memory_sum(arena.address, dist.get_world_size(), dist.get_rank(), arena.calls, arena.stride,
                         work.data_ptr(), work.numel(), itemsize, float(timeout_s))
    if work is not tensor:
        tensor.copy_(work)
    state.sums += 1
    return tensor

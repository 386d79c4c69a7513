"""rdnas on several processes: ``torchrun`` / ``torch.distributed``, in one place.

Every long job of rdnas runs unchanged on one process or many (``torchrun --nproc_per_node P -m rdnas <command>``):

- ``rdnas train``: one supernet. Every rank draws the same K subnets from the one seeded sampler (no
  communication) and generates the same global batch; :func:`step_layout` then splits the step's work
  (``TrainConfig.parallel``):

  - ``"subnets"``: rank r runs its K / P of the subnets on the whole global batch (each subnet's batch norm sees
    exactly the rows it sees in one process: no BN communication at all); which ones, every step, by the
    subnets' estimated costs (:meth:`StepLayout.balanced`, :func:`subnet_costs`: the same deal on every rank,
    no communication), so that the ranks finish together; where P > K, the processes form K groups of P / K, one
    subnet per group, and each group splits the batch as below.
  - ``"batch"``: every rank runs every subnet on its share of the global batch (``batch_size / P`` rows); with
    ``bn_statistics="global"`` batch norm normalises with the global batch's statistics (:class:`GlobalBatchNorm`,
    two all-reduces per BN layer).

  Either way the per-subnet losses (and distillation terms and accuracies) of the global batch reach every rank in
  one small all-reduce (:func:`gather_subnet_means`: K floats), so the RD-NAS ranking term, its gradient with
  respect to each subnet's loss, and the logged metrics are a single process's; the ranks' gradients are summed in
  one flat all-reduce (:func:`sum_gradients`) so that every rank takes the same optimiser step. Result: the weights
  of a one-process run with the same global batch, up to floating-point rounding (docs/guides/distributed.md).
- ``rdnas eval`` / ``rdnas search`` / the pipeline's rank evaluation: the architectures are split across ranks in
  chunks (:func:`my_chunks`) and the estimates gathered on every rank (:func:`sum_disjoint`): identical to one process.
- ``rdnas bench build`` and ``rdnas proxies --shard env``: (architecture, seed) runs or scoring chunks are sharded
  from ``RANK`` / ``WORLD_SIZE`` (:func:`parse_shard`) into per-rank files that merge into one table.

Backends: NCCL when the job's device is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on the CPU. Only rank 0
writes checkpoints, logs and outputs; a rank that fails prints ``rdnas <command>: rank r of P failed: ...`` and
exits non-zero, after which torchrun stops the others (gloo peers also fail at once on the lost connection; any
collective gives up after ``RDNAS_DIST_TIMEOUT`` seconds, default 1800).
"""

import contextlib
import os
import sys
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from rdnas import shared_memory_sum

DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes (``local_rank`` on its machine).

    A single process is ``World()`` (rank 0 of 1); then every collective below is the identity and costs nothing.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def collective_device(self) -> torch.device:
        """Where tensors must be for this job's collectives (NCCL: this rank's GPU; gloo: the CPU)."""
        if self.distributed and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def label(self) -> str:
        """``"rank 1 of 2"`` (for messages)."""
        return f"rank {self.rank} of {self.size}"


def current() -> World:
    """The World of the initialised default process group, or ``World()`` when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def env_rank_and_size(owner: str, what: str = "shard='env'") -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment torchrun sets; ValueError naming ``owner`` and ``what`` (the
    option that asked) when one is missing or not an integer."""
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except KeyError as missing:
        raise ValueError(f"{owner}: {what} reads RANK and WORLD_SIZE (set by torchrun), but "
                         f"{missing.args[0]} is not set") from None
    except ValueError:
        raise ValueError(f"{owner}: {what}: RANK and WORLD_SIZE must be integers, got "
                         f"{os.environ['RANK']!r} and {os.environ['WORLD_SIZE']!r}") from None


def parse_shard(shard, owner: str) -> tuple[int, int]:
    """The one shard parser: ``(i, n)``, ``"i/n"`` or ``"env"`` (``RANK`` / ``WORLD_SIZE``) -> ``(i, n)`` with
    ``0 <= i < n``; ValueError naming ``owner`` otherwise."""
    if shard == "env":
        return env_rank_and_size(owner)
    if isinstance(shard, str):
        first, _, second = shard.partition("/")
        try:
            shard = (int(first), int(second))
        except ValueError:
            raise ValueError(f"{owner}: shard must be (i, n), 'i/n' or 'env', got {shard!r}") from None
    try:
        i, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: shard must be (i, n), 'i/n' or 'env', got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"{owner}: shard (i, n) needs 0 <= i < n, got ({i}, {n})")
    return i, n


def launched_size() -> int:
    """``WORLD_SIZE`` when torchrun (or another launcher setting it) started this process, else 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"rdnas.distributed: WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") \
            from None


def init(device: str = "cpu", timeout_s: float | None = None, backend: str | None = None) -> tuple[World, str]:
    """Joins the process group the launcher describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``: torchrun sets them all) and returns ``(world, this rank's device)``.

    Without a launcher (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) nothing is initialised: ``(World(), device)``. The
    backend follows ``device``: NCCL for ``cuda`` (each rank then takes ``cuda:LOCAL_RANK``), gloo otherwise;
    ``backend`` overrides it (``rdnas bench build`` uses gloo: its ranks only meet at the end). A process group that
    is already initialised is kept. Collectives give up after ``timeout_s`` (default: ``RDNAS_DIST_TIMEOUT`` or
    1800 s).
    """
    kind = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        world = current()
        return world, rank_device(device, world)
    size = launched_size()
    if size <= 1:
        return World(), device
    rank, _ = env_rank_and_size("rdnas.distributed.init", "a launch with WORLD_SIZE > 1")
    shared_memory_sum.mode()  # a bad RDNAS_SHARED_MEMORY_SUM is an error before the job writes anything
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = World(rank, size, local_rank)
    if kind.type == "cuda":
        if kind.index is not None:
            raise ValueError(f"--device {device} names one GPU, but WORLD_SIZE={size} processes share the job; give "
                             "--device cuda (each rank takes cuda:LOCAL_RANK) and choose GPUs with "
                             "CUDA_VISIBLE_DEVICES")
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ValueError(f"--device cuda: {world.label()} (LOCAL_RANK={local_rank}) has no GPU of its own: "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} visible; start at most "
                             "that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    if timeout_s is None:
        timeout_s = collective_timeout_s()
    backend = backend or ("nccl" if kind.type == "cuda" else "gloo")
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return world, rank_device(device, world)


def collective_timeout_s() -> float:
    """How long a collective waits for the other ranks: ``RDNAS_DIST_TIMEOUT`` seconds, default 1800."""
    return float(os.environ.get("RDNAS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def sum_over_ranks_(tensor: Tensor, group=None) -> Tensor:
    """Sums ``tensor`` over the ranks in place and returns it; every rank gets the same bits. The default group:
    through shared memory where every rank is on one machine and the backend is gloo
    (:mod:`rdnas.shared_memory_sum`; ``RDNAS_SHARED_MEMORY_SUM=off`` turns it off), else
    ``torch.distributed.all_reduce``; another ``group``: ``torch.distributed.all_reduce`` on it."""
    if group is not None:
        dist.all_reduce(tensor, group=group)
        return tensor
    return shared_memory_sum.all_reduce_sum_(tensor, collective_timeout_s())


def rank_device(device: str, world: World) -> str:
    """This rank's device: ``cuda`` -> ``cuda:LOCAL_RANK`` in a job of several processes; anything else unchanged."""
    kind = torch.device(device)
    if world.distributed and kind.type == "cuda" and kind.index is None:
        return f"cuda:{world.local_rank}"
    return device


def shutdown(finished: bool = False) -> None:
    """Leaves the process group, if any (the end of a command). ``finished``: this rank's work ended normally, so
    it first waits at a barrier for the others, and no rank tears its connections down while another still uses
    them (a gloo rank was seen once to abort with SIGABRT in teardown under load without it). After a failure no
    barrier: the other ranks may never arrive, and torchrun stops them."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def failure_named(command: str):
    """Around a rank's work: an exception is reported as ``rdnas <command>: rank r of P failed: <type>: <message>``
    on stderr and re-raised (the process exits non-zero; torchrun then stops the other ranks and names this one
    too). In a single process it passes through untouched."""
    try:
        yield
    except BaseException as error:
        world = current()
        if world.distributed and not isinstance(error, (SystemExit, KeyboardInterrupt)):
            print(f"rdnas {command}: {world.label()} failed: {type(error).__name__}: {error}", file=sys.stderr,
                  flush=True)
        raise


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(value, world: World):
    """``value`` of rank 0 on every rank (pickled; for small control data and checkpoints at resume)."""
    if not world.distributed:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------------------ training collectives


PARALLEL_MODES = ("auto", "subnets", "batch")


@dataclass(frozen=True)
class StepLayout:
    """How a training step's K subnets and global batch of B rows are split over the P processes.

    The processes form ``subnet_groups`` (S) groups of ``batch_ranks`` (Q = P / S) consecutive ranks: this rank's
    group (``group``: g) runs ``members``, its subnets of the step (positions in 0..K-1, ascending; about K / S of
    them), and each of its ranks takes B / Q rows of the global batch (``batch_rank``: which share).
    :func:`step_layout` gives group g the contiguous positions ``[g K / S, (g + 1) K / S)``; :meth:`balanced`
    re-deals them for one step by the subnets' estimated costs, keeping every group's count. ``mode`` is the resolved
    one: ``"subnets"`` (S > 1) or ``"batch"`` (S = 1: every rank runs every subnet on its share). ``batch_group``:
    the process group of this rank's group where it is neither one process nor every process (for
    :class:`GlobalBatchNorm`), else None.
    """

    mode: str
    subnet_groups: int
    batch_ranks: int
    group: int
    members: tuple
    batch_rank: int
    batch_group: object = None

    @property
    def first(self) -> int:
        """This rank's first (lowest) subnet position; 0 exactly when it runs subnet 0."""
        return self.members[0]

    @property
    def stop(self) -> int:
        """One past this rank's last subnet position."""
        return self.members[-1] + 1

    @property
    def contiguous(self) -> bool:
        """Whether this rank's subnets are consecutive positions (always so before :meth:`balanced`)."""
        return self.stop - self.first == len(self.members)

    @property
    def subnets(self):
        """This rank's subnets, to index the step's LongTensor[K, width]: a slice where they are contiguous, else a
        LongTensor of positions (ascending)."""
        return slice(self.first, self.stop) if self.contiguous else torch.tensor(self.members)

    def pad(self, values: Tensor, total: int, offset: int = 0) -> Tensor:
        """``values`` (Tensor[n], one entry per subnet of this rank from position ``offset`` on: n = the members
        ``m`` with ``m + offset >= 0``) at positions ``m + offset`` of a zero Tensor[total] (differentiable, exact;
        e.g. ``offset=-1`` for the distillation terms of subnets 1..K-1)."""
        positions = [m + offset for m in self.members if m + offset >= 0]
        if len(positions) != len(values):
            raise ValueError(f"rdnas.distributed.StepLayout.pad: {len(values)} values for the {len(positions)} "
                             f"positions {positions} of this rank")
        if self.contiguous:
            start = positions[0] if positions else 0
            before = values.new_zeros(start)
            after = values.new_zeros(total - start - len(values))
            return torch.cat([before, values, after])
        index = torch.tensor(positions, device=values.device)
        return values.new_zeros(total).index_copy(0, index, values)

    def shares(self, k: int) -> list:
        """The number of subnets each of the S groups runs (:func:`step_layout`'s split of K)."""
        return [(g + 1) * k // self.subnet_groups - g * k // self.subnet_groups for g in range(self.subnet_groups)]

    def balanced(self, costs) -> "StepLayout":
        """This layout for one step whose K subnets have the estimated ``costs`` (Tensor[K] or K numbers; e.g.
        :func:`subnet_costs`; None: unchanged): the subnets dealt to the groups so that the groups' summed costs are
        about equal, each group keeping its number of subnets (:func:`balanced_shares`, deterministic: every rank
        computes the same deal from the same costs, no communication). Where nothing can move (one group, or one
        subnet per group) the layout itself."""
        if costs is None or self.subnet_groups == 1:
            return self
        k = len(costs)
        counts = self.shares(k)
        if max(counts) <= 1:  # one subnet per group (P >= K): nothing to balance
            return self
        deal = balanced_shares([float(c) for c in costs], counts)
        return replace(self, members=tuple(deal[self.group]))


def step_layout(parallel: str, k: int, world: World) -> StepLayout:
    """The :class:`StepLayout` of ``parallel`` (one of PARALLEL_MODES) for K subnets per step on ``world``.

    ``"auto"``: subnets when the P processes divide K, batch otherwise. ``"subnets"``: P <= K: each rank a
    contiguous share of the subnets (K / P of them; where P does not divide K, some ranks one more: the step then
    waits for the largest share) on the whole batch; P > K: K groups of P / K ranks, one subnet each, the batch
    split within the group, which needs K to divide P (otherwise a ValueError naming both numbers). ``"batch"``:
    every rank every subnet, B / P rows (also what ``"subnets"`` comes to for K = 1). A single process: one group
    with every subnet and the whole batch. Creates the groups' process groups (every rank must call this, in the
    same order), only where P > K > 1.
    """
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"rdnas.train.TrainConfig: parallel must be one of {PARALLEL_MODES}, got {parallel!r}")
    size, rank = world.size, world.rank
    if parallel == "auto":
        parallel = "subnets" if k % size == 0 else "batch"
    if parallel == "batch" or size == 1 or k == 1:  # one group: every rank runs every subnet
        return StepLayout("batch" if size > 1 else parallel, 1, size, 0, tuple(range(k)), rank)
    if size <= k:  # contiguous shares; uneven (floor or ceil of K / P) where P does not divide K
        return StepLayout("subnets", size, 1, rank, tuple(range(rank * k // size, (rank + 1) * k // size)), 0)
    if size % k:
        raise ValueError(f"rdnas.train.TrainConfig: parallel 'subnets' on more processes than subnets (WORLD_SIZE="
                         f"{size}, K = {k}) gives each subnet a group of P / K processes, so K must divide P; use "
                         f"parallel 'batch' (or 'auto'), or a multiple of {k} processes")
    per_group = size // k
    groups = [dist.new_group(list(range(g * per_group, (g + 1) * per_group))) for g in range(k)]
    group = rank // per_group
    return StepLayout("subnets", k, per_group, group, (group,), rank % per_group, groups[group])


def balanced_shares(costs: list, counts: list) -> list:
    """Deals K items of ``costs`` (K floats) to len(``counts``) groups, group g taking exactly ``counts[g]`` items,
    so that the largest summed cost is small: longest processing time first (the costliest item to the cheapest
    group that still has room; ties by position), which for two groups of two is the best split. Deterministic.
    Returns each group's item positions, ascending."""
    if sum(counts) != len(costs):
        raise ValueError(f"rdnas.distributed.balanced_shares: the counts {counts} do not add up to the "
                         f"{len(costs)} items")
    loads = [0.0] * len(counts)
    deal = [[] for _ in counts]
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        group = min((g for g in range(len(counts)) if len(deal[g]) < counts[g]), key=lambda g: (loads[g], g))
        deal[group].append(item)
        loads[group] += costs[item]
    return [sorted(items) for items in deal]


def subnet_costs(supernet, space, archs) -> list | None:
    """Estimated relative costs of training each of the step's subnets (LongTensor[K, space.width]), as K Python
    floats, for :meth:`StepLayout.balanced`: the supernet's own estimate where it has one (``supernet.subnet_costs
    (archs)``, e.g. NB201's per-op costs of the live edges), else the space's cost model's FLOPs
    (``space.cost(archs)["flops"]``), else None (no estimate: the contiguous split). Only the deal of subnets to
    processes depends on them, never a result; every rank must compute the same numbers from the same architectures
    (integer-valued FLOPs and sums of constants do)."""
    estimate = getattr(supernet, "subnet_costs", None)
    if estimate is not None:
        return [float(c) for c in estimate(archs)]
    try:
        return [float(c) for c in space.cost(archs)["flops"]]
    except NotImplementedError:
        return None


def rows_of_first_group(rows: Tensor | None, layout: StepLayout, world: World, like: Tensor) -> Tensor:
    """What the ranks of the first subnet's group (the group that runs subnet 0 this step) computed on their shares
    of the batch (``rows``: Tensor[B / Q, *] there, None elsewhere), on every rank for its own share (``like``: a
    tensor of that shape, dtype and device). E.g. the largest subnet's logits for in-place distillation. One
    all-reduce of [Q, B / Q, *] that only that group fills: exact. With one group (batch-parallel) every rank has its
    rows: returned as they are."""
    if layout.subnet_groups == 1 or not world.distributed:
        return rows
    buffer = like.new_zeros((layout.batch_ranks, *like.shape))
    if rows is not None:
        buffer[layout.batch_rank] = rows
    staged = buffer.to(world.collective_device)
    sum_over_ranks_(staged)
    return staged[layout.batch_rank].to(like.device)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient is summed over ranks too (each rank's input feeds every rank's result)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        sum_over_ranks_(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone()
        sum_over_ranks_(total)
        return total


class _GlobalMean(torch.autograd.Function):
    """Mean over ranks for a value every rank then feeds into the same objective: the gradient reaching each rank
    is the same, so the backward needs no communication (each rank passes on 1/P of it; :func:`sum_gradients`
    then adds the ranks' parts)."""

    @staticmethod
    def forward(ctx, tensor: Tensor, size: int) -> Tensor:
        total = tensor.clone()
        sum_over_ranks_(total)
        ctx.size = size
        return total / size

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad / ctx.size, None


def gather_subnet_means(parts: list, world: World, batch_ranks: int) -> Tensor:
    """Every rank's entries of a step's per-subnet values, on every rank, as the global batch's means.

    ``parts`` are zero-padded vectors of the same lengths on every rank (e.g. Tensor[K] of per-subnet mean losses,
    this rank's subnets in their positions, zeros elsewhere; see :class:`StepLayout`); the result is their
    concatenation summed over ranks and divided by ``batch_ranks`` (the processes that share each subnet's batch):
    with one rank per subnet an exact gather (x + 0 = x), with ``batch_ranks = P`` the global mean of
    :func:`global_mean`. One all-reduce; differentiable on the condition that every rank computes the same
    objective from the result and the ranks' gradients are then summed (:func:`sum_gradients`): the backward needs
    no communication. A single process: the concatenation itself.
    """
    merged = torch.cat(parts)
    if not world.distributed:
        return merged
    return _GlobalMean.apply(merged, batch_ranks)


def global_mean(tensor: Tensor, world: World) -> Tensor:
    """The mean over ranks of ``tensor`` (any shape; e.g. per-subnet mean losses Tensor[K] of each rank's equal share
    of the batch: the global batch's means), differentiable on the condition that every rank computes the same
    objective from the result and the ranks' gradients are then summed (:func:`sum_gradients`). Identity in a single
    process."""
    if not world.distributed:
        return tensor
    return _GlobalMean.apply(tensor, world.size)


def sum_gradients(parameters, world: World, same_subnets: bool = True, riders: Tensor | None = None) -> int:
    """Sums the gradients of ``parameters`` over ranks in one all-reduce of one flat buffer, in place.

    Only parameters that have a gradient take part (a sampled subnet leaves the others at ``None``, and they stay
    ``None``, so SGD's weight decay and momentum skip them exactly as in one process). ``same_subnets=True`` (every
    rank ran the same subnets, on its share of the batch): every rank has gradients for the same parameters in the
    same order; the buffer's length is checked in the same all-reduce (a rank that differs makes every rank raise).
    ``same_subnets=False`` (subnet-parallel: each rank ran its own subnets): the buffer holds every parameter (zeros
    where this rank has no gradient) and a flag per parameter, so a parameter gets a gradient exactly when some rank
    has one, as in one process that ran every subnet. Returns the number of elements reduced.

    The buffer is allocated once per layout of parameters (shapes, dtype, device) and reused by every later call;
    gradients go in and out of it with one multi-tensor copy each (``torch._foreach_copy_``), so a step pays a few
    operations, not a few per parameter. The summed gradients are copied into the parameters' own ``grad``
    tensors (a parameter that only another rank used gets a new one): nothing returned aliases the buffer.

    ``riders`` (Tensor[R] of the parameters' dtype and device, the same R on every rank; ``same_subnets=False``
    only): values summed over ranks in the same all-reduce, in place (e.g. a step's per-subnet losses, each rank's
    in its positions and zeros elsewhere), so a step that needs them only after its backward pays no collective of
    its own. Not counted in the returned number of gradient elements.
    """
    if not world.distributed:
        return 0
    parameters = list(parameters)
    if not same_subnets:
        return _sum_gradients_of_any(parameters, world, riders)
    if riders is not None:
        raise ValueError("rdnas.distributed.sum_gradients: riders need same_subnets=False (subnet-parallel steps)")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0
    sizes = [g.numel() for g in grads]
    total = sum(sizes)
    flat = _flat_layout(parameters)[0][:total + 1]  # this step's gradients, then the rank count
    torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_ones(1)], out=flat)
    sum_over_ranks_(flat)
    if int(flat[-1]) != world.size:  # cannot happen when the buffers have the same length on every rank
        raise RuntimeError("rdnas.distributed.sum_gradients: the ranks' gradient buffers differ; the ranks sampled "
                           "different subnets")
    torch._foreach_copy_(grads, [piece.view_as(g) for piece, g in zip(flat[:total].split(sizes), grads)])
    return total


_FLAT_BUFFERS: dict = {}  # parameter layout -> (flat buffer, each parameter's view of it), see _flat_layout
_FLAT_BUFFERS_KEPT = 4


def _flat_layout(parameters: list, riders: int = 0) -> tuple:
    """sum_gradients's buffer for ``parameters``: ``(flat, views)``, one flat Tensor[sum of numel + one per
    parameter + ``riders``] of their dtype and device and each parameter's view of its segment (the parameter's
    shape); made on the first call for this layout (shapes, dtype, device, riders) and returned again after (the last
    few layouts kept)."""
    like = parameters[0]
    key = (like.dtype, like.device, tuple(tuple(p.shape) for p in parameters), riders)
    found = _FLAT_BUFFERS.pop(key, None)
    if found is None:
        sizes = [p.numel() for p in parameters]
        flat = like.new_empty(sum(sizes) + len(parameters) + riders)
        views = [piece.view(p.shape) for piece, p in zip(flat[:sum(sizes)].split(sizes), parameters)]
        found = (flat, views)
        while len(_FLAT_BUFFERS) >= _FLAT_BUFFERS_KEPT:
            del _FLAT_BUFFERS[next(iter(_FLAT_BUFFERS))]
    _FLAT_BUFFERS[key] = found  # (re)inserted last: the most recently used
    return found


def _sum_gradients_of_any(parameters: list, world: World, riders: Tensor | None = None) -> int:
    """sum_gradients where the ranks' sets of parameters with a gradient differ: [every gradient or zeros, one flag
    per parameter, the riders] summed in one all-reduce."""
    if not parameters:
        return 0
    extra = 0 if riders is None else riders.numel()
    flat, views = _flat_layout(parameters, extra)
    end = len(flat) - extra
    flags = flat[end - len(parameters):end]
    have = [i for i, p in enumerate(parameters) if p.grad is not None]
    flat.zero_()
    if have:
        torch._foreach_copy_([views[i] for i in have], [parameters[i].grad for i in have])
        flags.index_fill_(0, torch.tensor(have, device=flat.device), 1)
    if riders is not None:
        flat[end:].copy_(riders.reshape(-1))
    sum_over_ranks_(flat)
    if riders is not None:
        riders.copy_(flat[end:].view_as(riders))
    summed = [i for i, flag in enumerate(flags.tolist()) if flag > 0]
    if have:
        torch._foreach_copy_([parameters[i].grad for i in have], [views[i] for i in have])
    for i in summed:
        if parameters[i].grad is None:  # only another rank's subnets used it
            parameters[i].grad = views[i].clone()
    return sum(views[i].numel() for i in summed)


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm over the ranks' shares together, forward and backward in closed form (the formulas
    of ``F.batch_norm`` and SyncBatchNorm; autograd through the statistics instead loses digits on channels of
    near-zero variance). ``x`` [N, C, *]; statistics float64 from one all-reduce of [sum, centred sum of squares +
    correction, count] per rank; the backward all-reduces [sum g, sum g * xhat] per channel."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group=None):
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        xc = x.to(compute)
        channels, dims = x.shape[1], [0] + list(range(2, x.dim()))
        shape = (1, channels) + (1,) * (x.dim() - 2)
        count = x.numel() // channels
        local_mean = xc.mean(dims)
        local_m2 = (xc - local_mean.view(shape)).square().sum(dims).double()
        local_mean = local_mean.double()
        total = torch.cat([local_mean * count, local_m2 + count * local_mean.square(),
                           local_mean.new_full((1,), float(count))])
        sum_over_ranks_(total, group)
        n = float(total[-1])
        mean = total[:channels] / n
        var = (total[channels:2 * channels] / n - mean.square()).clamp_min(0)
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_((var * (n / max(n - 1, 1))).to(running_var.dtype), alpha=momentum)
        invstd = (var + eps).rsqrt().to(compute)
        xhat = (xc - mean.to(compute).view(shape)) * invstd.view(shape)
        out = xhat if weight is None else xhat * weight.to(compute).view(shape)
        if bias is not None:
            out = out + bias.to(compute).view(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.count, ctx.has_bias, ctx.input_dtype, ctx.group = n, bias is not None, x.dtype, group
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        xhat, invstd, weight = ctx.saved_tensors
        channels, dims = xhat.shape[1], [0] + list(range(2, xhat.dim()))
        shape = (1, channels) + (1,) * (xhat.dim() - 2)
        g = grad.to(xhat.dtype)
        sum_g, sum_gx = g.sum(dims), (g * xhat).sum(dims)  # this rank's: the parameters' gradients
        total = torch.cat([sum_g, sum_gx]).double()
        sum_over_ranks_(total, ctx.group)
        mean_g = (total[:channels] / ctx.count).to(xhat.dtype).view(shape)
        mean_gx = (total[channels:] / ctx.count).to(xhat.dtype).view(shape)
        scale = invstd.view(shape) if weight is None else (invstd * weight.to(xhat.dtype)).view(shape)
        grad_x = ((g - mean_g - xhat * mean_gx) * scale).to(ctx.input_dtype)
        grad_weight = None if weight is None else sum_gx.to(weight.dtype)
        grad_bias = sum_g.to(grad.dtype) if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class GlobalBatchNorm(TorchFunctionMode):
    """Within this mode every training-mode ``F.batch_norm`` (``nn.BatchNorm2d``, ``SubnetBatchNorm``'s per-subnet
    pass, ResNet48's ``ElasticBatchNorm2d`` slices: they all call it) normalises with the statistics of the global
    batch, i.e. of every rank's share together (SyncBatchNorm's semantics, for any space without touching its
    layers).

    Per call: one all-reduce of each rank's per-channel sum, centred sum of squares and count (float64 [2C + 1]);
    mean and biased variance of the global batch from them; running statistics (when given) updated with the
    unbiased variance, as ``F.batch_norm`` does. The backward is SyncBatchNorm's: one all-reduce of [sum g,
    sum g * xhat] (float64 [2C]); the affine parameters get this rank's part (:func:`sum_gradients` adds the
    ranks'). Input ``[N, C, *]`` in any float dtype, statistics in float32 (half / bfloat16 inputs) or the input's
    dtype, output in the input's dtype. Evaluation-mode calls pass through unchanged. ``group``: the process group
    whose shares make up the batch (default: every process; subnet-parallel training with P > K: a subnet group).
    """

    def __init__(self, world: World, group=None):
        super().__init__()
        self.world = world
        self.group = group

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.batch_norm:
            return func(*args, **kwargs)
        return self._batch_norm(*args, **kwargs)

    def _batch_norm(self, input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5):
        if not training:
            return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return _GlobalBatchNormFunction.apply(input, weight, bias, running_mean, running_var, momentum, eps,
                                              self.group)


def batch_norm_scope(world: World, statistics: str, layout: "StepLayout | None" = None):
    """The context a training forward runs in: :class:`GlobalBatchNorm` for ``statistics="global"`` when several
    processes share each subnet's batch (every process in batch-parallel training; ``layout``'s batch group in
    subnet-parallel training with P > K), otherwise nothing (``"per_rank"``: each rank's share, DDP without
    SyncBatchNorm; subnet-parallel with P <= K: every rank has the whole batch)."""
    if layout is not None and layout.batch_ranks == 1:
        return contextlib.nullcontext()
    if world.distributed and statistics == "global":
        return GlobalBatchNorm(world, None if layout is None else layout.batch_group)
    return contextlib.nullcontext()


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (BN running statistics) on every rank, as DDP does; with per-rank batch statistics the ranks'
    running statistics drift apart otherwise."""
    if not world.distributed:
        return
    for buffer in module.buffers():
        staged = buffer.detach().to(world.collective_device).clone()
        dist.broadcast(staged, src=0)
        buffer.copy_(staged.to(buffer.device))


def check_replicas(module: torch.nn.Module, world: World, when: str) -> None:
    """Raises RuntimeError when the ranks' copies of ``module`` (parameters and buffers) are no longer bitwise
    equal, naming the first tensor that differs; one small all-reduce pair (a float64 sum per tensor), so it is
    cheap enough for once an epoch. ``when`` says where in the run (for the message)."""
    if not world.distributed:
        return
    names, sums = [], []
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if tensor.is_floating_point():
            names.append(name)
            sums.append(tensor.detach().double().sum())
    if not sums:
        return
    local = torch.stack(sums).to(world.collective_device)
    high, low = local.clone(), local.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    differs = (high != low) & ~(torch.isnan(high) & torch.isnan(low))
    if bool(differs.any()):
        first = names[int(differs.nonzero()[0])]
        raise RuntimeError(f"rdnas.distributed: the ranks' supernets differ {when} (first: {first}); the ranks must "
                           "sample the same subnets and see the same parameters (same seed, same GPU model)")


# ------------------------------------------------------------------------------- evaluation: split and gather


def my_chunks(count: int, chunk: int, world: World) -> range:
    """Start offsets of this rank's chunks of ``count`` items taken ``chunk`` at a time: chunk c goes to rank
    c mod P, so every item is evaluated in exactly the chunk a single process would give it (same K-subnet pass,
    same result). One process: ``range(0, count, chunk)``."""
    return range(world.rank * chunk, count, chunk * world.size)


def sum_disjoint(values: Tensor, world: World) -> Tensor:
    """``values`` with every rank's entries, on every rank: each rank filled only its own entries (zeros elsewhere),
    so the sum over ranks is exact (x + 0 = x) and equals a single process's result bit for bit. Same dtype and
    device as ``values``."""
    if not world.distributed:
        return values
    gathered = values.to(world.collective_device).clone()
    sum_over_ranks_(gathered)
    return gathered.to(values.device)

"""One-shot training of a supernet of any registered space: SPOS, RD-NAS and the baselines, in one trainer.

``TrainConfig.space`` names the search space (``nb201`` by default, ``resnet48``); the supernet is built through
the registry (:func:`rdnas.supernet.build_supernet`) with ``TrainConfig.space_options``, the options of the space's
network (its spec's :class:`rdnas.spaces.NetworkOptions`; the ones left out at their defaults).

Methods (``TrainConfig.method``), all with the same optimiser, schedule and data:

- ``spos``: uniform single-path sampling (SPOS); with ``paths_per_step = K`` the K paths' losses are summed
  (SPOS with K paths, the same compute as RD-NAS and no ranking loss).
- ``rdnas``: ranking distillation. Each step samples K >= 2 subnets (``sampler``: the margin subnet sampler by
  default), computes each subnet's cross-entropy on the batch, and adds
  ``lambda(epoch) * rdnas.ops.pairwise_margin_rank_loss(-losses, teacher, m0, groups)``: the subnet the teacher
  ranks better must have the lower loss, by ``m0 * |group distance|`` (``margin_mode``). The authors' comparison:
  ``sampler="hamming"`` or ``"adaptive_hamming"`` with ``margin_mode="none"``.
  ``sampler="sandwich"``: the sandwich rule's subnets, the ranking term over its K - 2 random ones (the RD-NAS
  authors' form in the ResNet48 space, with ``distill=True``, ``margin_mode="none"``, ``rank_schedule="warmup"``
  and a FLOPs teacher); ``sampler="min_hamming"``: the authors' ZenScore variant, pairs at least
  ``min_hamming`` choices apart.
- ``fairnas``: FairNAS's strict fairness (NB201: five subnets per step, every op of every edge once).
- ``sandwich``: the space's largest and smallest architecture and K - 2 uniform ones per step.

``distill=True`` (in-place distillation, with the sandwich rule: method ``sandwich`` or sampler ``sandwich``): the
largest subnet learns from the labels and every other subnet from the largest's detached soft predictions
(soft cross-entropy), as in BigNAS / OFA.

A non-enumerable space (ResNet48) has no whole-space teacher table: the RD-NAS teacher is a
:class:`rdnas.train.SampledTeacher` over ``teacher_samples`` architectures drawn with ``seed``, scored by the
named proxies that score without a network (``rdnas.proxies.cost_scorer``: flops, params), or read from
``teacher_table`` (a score table of such a reference set, keyed by architecture string).

Defaults follow the NB201 one-shot recipe used by the RD-NAS authors: SGD (lr 0.025, momentum 0.9, weight decay
5e-4, Nesterov), cosine annealing to 0 over the run, gradient-norm clipping at 5. A step with K >= 2 subnets runs
them in one ``forward_subnets`` pass (each subnet normalised with its own batch statistics; running BN statistics
are then not updated, and evaluation recalibrates them per subnet). Every epoch ends with an atomic checkpoint and
a JSONL metrics line; ``fit(resume=True)`` continues from the last checkpoint, and on the CPU a run killed and
resumed ends with exactly the weights of an uninterrupted one.

Several processes (``torchrun --nproc_per_node P -m rdnas train ...``, or any caller that has initialised the
default process group, e.g. with :func:`rdnas.distributed.init`): every rank draws the same K subnets and the same
global batch; ``parallel`` says how the step is split (:func:`rdnas.distributed.step_layout`): ``"subnets"``, rank r
runs its K / P subnets on the whole global batch (where P > K: groups of P / K ranks per subnet, splitting the
batch); ``"batch"``, every rank runs every subnet on its ``batch_size / P`` rows, with ``bn_statistics="global"``
(default) batch norm over the global batch; ``"auto"`` (default): subnets where P divides K, batch otherwise. The
per-subnet losses of the global batch reach every rank before the objective and the gradients are summed (see
:mod:`rdnas.distributed`), so the run ends with a single process's weights up to rounding. Only rank 0 writes
files; a checkpoint resumes on any number of processes and in either mode.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from rdnas import distributed
from rdnas.atomic_file import write_text_atomic
from rdnas.data import load_data
from rdnas.ops import pairwise_margin_rank_loss
from rdnas.spaces import get_space, space_names
from rdnas.supernet import build_supernet, move_legacy_network_options, supernet_spec, taking_space_options
from rdnas.train.checkpoint import config_from_dict, load_checkpoint, save_checkpoint
from rdnas.train.samplers import (FairSampler, HammingPairSampler, MarginSubnetSampler, MinHammingPairSampler,
                                  SandwichSampler, UniformSampler)
from rdnas.train.teacher import SampledTeacher, Teacher

METHODS = ("spos", "rdnas", "fairnas", "sandwich")
RANK_SAMPLERS = ("margin", "random", "hamming", "adaptive_hamming", "sandwich", "min_hamming")
MARGIN_MODES = ("group", "constant", "none")
RANK_SCHEDULES = ("constant", "warmup", "sine", "multistage")
BN_STATISTICS = ("global", "per_rank")
PARALLEL_MODES = distributed.PARALLEL_MODES


@taking_space_options
@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    space: str = "nb201"  # a registered search space (rdnas.spaces.space_names())
    data: str = "digits"  # see rdnas.data.DATA_KINDS: digits, fashion_mnist[:<dir>], cifar10:<dir>, ..., imagenet:<dir>
    image_size: int = 16  # digits: the 8x8 images are resized to this; imagenet: the crop size
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    paths_per_step: int = 1  # K: subnets per step, their losses summed (fairnas: always 5)
    # The options of the space's network, {name: value} (its SupernetSpec's NetworkOptions dataclass: nb201
    # channels, cells_per_stage, ...; resnet48 resnet_stem, width_divisor, ...); the ones left out take the class's
    # defaults. Keyword arguments that are not fields go here: TrainConfig(space="resnet48", width_divisor=8).
    space_options: dict = field(default_factory=dict)
    distill: bool = False  # in-place distillation from the largest subnet (sandwich rule only)
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on the CPU
    out_dir: str = "runs/spos"
    method: str = "spos"  # see METHODS
    # RD-NAS (method "rdnas"): the teacher, the pairs and the ranking term.
    teacher_table: str = ""  # a table over the whole space, rows matched by architecture; "" to pass a Teacher
    teacher_proxies: str = "synflow"  # column(s) of teacher_table; several are rank-averaged
    groups: int = 5  # G
    margin: float = 0.1  # m0: margin per unit of group distance ("group") or per pair ("constant")
    margin_mode: str = "group"  # see MARGIN_MODES
    sampler: str = "margin"  # see RANK_SAMPLERS
    rank_schedule: str = "constant"  # lambda(epoch), see RANK_SCHEDULES
    rank_weight: float = 1.0  # multiplies lambda(epoch)
    teacher_samples: int = 10000  # non-enumerable spaces: size of the teacher's seeded reference set
    min_hamming: int = 33  # sampler "min_hamming": least number of differing choices between paired subnets
    # Several processes (torchrun): batch norm's training statistics over the global batch ("global": a single
    # process's result) or over each rank's share ("per_rank": DDP without SyncBatchNorm, one all-reduce fewer per
    # BN layer, not equal to one process). Ignored in a single process.
    bn_statistics: str = "global"
    # Several processes: how a step's K subnets and global batch are split (see PARALLEL_MODES and
    # rdnas.distributed.step_layout): "subnets" (each rank its K / P subnets on the whole batch), "batch" (each rank
    # every subnet on batch_size / P rows) or "auto" (subnets where P divides K). Ignored in a single process.
    parallel: str = "auto"

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config a checkpoint or config.json saved. Files written before ``space_options`` existed hold every
        space's network options as top-level fields: the run's space's ones move into ``space_options``, the
        others (which held their defaults and never reached the network) are dropped."""
        return config_from_dict(cls, move_legacy_network_options(values, cls.space), "rdnas.train.TrainConfig")

    def check(self) -> None:
        """Raises ValueError naming the field and what was expected."""
        for name, value, allowed in (("space", self.space, space_names()), ("method", self.method, METHODS),
                                     ("margin_mode", self.margin_mode, MARGIN_MODES),
                                     ("sampler", self.sampler, RANK_SAMPLERS),
                                     ("rank_schedule", self.rank_schedule, RANK_SCHEDULES),
                                     ("bn_statistics", self.bn_statistics, BN_STATISTICS),
                                     ("parallel", self.parallel, PARALLEL_MODES)):
            if value not in allowed:
                raise ValueError(f"rdnas.train.TrainConfig: {name} must be one of {allowed}, got {value!r}")
        if self.space in space_names():
            self.network_options()  # the space's own checks of its options
        for name in ("epochs", "batch_size", "image_size", "paths_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                expected = "a non-negative integer" if name == "epochs" else "a positive integer"
                raise ValueError(f"rdnas.train.TrainConfig: {name} must be {expected}, got {value!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"rdnas.train.TrainConfig: device must be a torch device such as 'cpu', 'cuda' or "
                             f"'cuda:1', got {self.device!r}") from error
        if self.method in ("rdnas", "sandwich") and self.paths_per_step < 2:
            raise ValueError(f"rdnas.train.TrainConfig: method {self.method!r} needs paths_per_step >= 2, "
                             f"got {self.paths_per_step}")
        if self.method == "rdnas" and self.sampler == "sandwich" and self.paths_per_step < 4:
            raise ValueError("rdnas.train.TrainConfig: sampler 'sandwich' ranks the K - 2 random subnets, so it "
                             f"needs paths_per_step >= 4, got {self.paths_per_step}")
        if self.distill and not (self.method == "sandwich" or (self.method == "rdnas" and self.sampler == "sandwich")):
            raise ValueError("rdnas.train.TrainConfig: distill (in-place distillation from the largest subnet) needs "
                             "the sandwich rule: method 'sandwich', or method 'rdnas' with sampler 'sandwich'")
        if self.teacher_samples < self.groups and not get_space(self.space).enumerable:  # sampled teachers only
            raise ValueError(f"rdnas.train.TrainConfig: teacher_samples must be at least groups ({self.groups}), "
                             f"got {self.teacher_samples}")
        space = get_space(self.space)
        needs = {"fairnas": ("fair_paths", lambda: space.fair_paths(torch.Generator())),
                 "sandwich": ("largest / smallest", lambda: (space.largest(), space.smallest()))}
        wanted = self.method if self.method in needs else "sandwich" if self.sampler == "sandwich" and \
            self.method == "rdnas" else None
        if wanted is not None:
            try:
                needs[wanted][1]()
            except NotImplementedError as error:
                raise ValueError(f"rdnas.train.TrainConfig: {wanted} needs the space's {needs[wanted][0]}: "
                                 f"{error}") from None
        spec = supernet_spec(self.space)
        if spec.check_image_size is not None and self.data.partition(":")[0] == "digits":
            spec.check_image_size(self.image_size, self.supernet_options())
        if self.groups < 2:
            raise ValueError(f"rdnas.train.TrainConfig: groups must be at least 2, got {self.groups}")
        if self.margin < 0:
            raise ValueError(f"rdnas.train.TrainConfig: margin must be non-negative, got {self.margin}")

    def network_options(self):
        """``space_options`` as the space's NetworkOptions (the missing ones at their defaults), checked:
        ValueError naming the option and what was expected."""
        if not isinstance(self.space_options, dict):
            raise ValueError(f"rdnas.train.TrainConfig: space_options must be a dict of the {self.space} network's "
                             f"options, got {self.space_options!r}")
        return supernet_spec(self.space).check_options(self.space_options, "rdnas.train.TrainConfig")

    def supernet_options(self) -> dict:
        """Every option this run's supernet is built with, {name: value} (``space_options`` and the defaults)."""
        return self.network_options().as_dict()

    def build_supernet(self, data):
        """A freshly initialised supernet of this run's space and options for ``data`` (a DataSplits: its classes
        and input channels), on the CPU. The trainer and every command that loads a checkpoint build it here."""
        return build_supernet(self.space, data.train.num_classes, data.in_channels, **self.supernet_options())


# The only settings a resumed run may change: where it runs and writes, (CUDA only) bfloat16 autocast, where
# the teacher table lies (its scores are compared instead) and (several processes) where BN statistics come from
# and how a step is split over the processes. Any other difference (learning rate, image size, BN options, ...)
# would continue a different run than the one saved. The number of processes is not a setting: a checkpoint resumes
# on any number.
RESUMABLE_CHANGES = ("device", "out_dir", "amp", "teacher_table", "bn_statistics", "parallel")


def rank_weight(schedule: str, epoch: float, epochs: int) -> float:
    """lambda(epoch) of the ranking term; ``epoch`` counts from 0 and may be fractional (progress in epochs).

    constant: 1. warmup: min(2, epoch / 10). sine: 2 sin(0.8 pi epoch / E). multistage: 0.5 in the first third of
    the run, 1 in the second, 2 in the last (rdnas's choice; the authors' stages are not published).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "warmup":
        return min(2.0, epoch / 10.0)
    if schedule == "sine":
        return 2.0 * math.sin(0.8 * math.pi * epoch / max(epochs, 1))
    if schedule == "multistage":
        third = epoch * 3 / max(epochs, 1)
        return 0.5 if third < 1 else 1.0 if third < 2 else 2.0
    raise ValueError(f"rdnas.train.rank_weight: schedule must be one of {RANK_SCHEDULES}, got {schedule!r}")


def make_teacher(config: TrainConfig):
    """The RD-NAS teacher a config names.

    Enumerable spaces: a table :class:`Teacher` from ``teacher_table`` (a whole-space score table from `rdnas
    proxies`), ``teacher_proxies`` rank-averaged. Other spaces: a :class:`SampledTeacher` over ``teacher_samples``
    architectures drawn from the space with a generator seeded by ``seed``, scored by the proxies that need no
    network (:func:`rdnas.proxies.cost_scorer`), which also score architectures outside the set on demand.
    """
    space = get_space(config.space)
    if space.enumerable:
        if not config.teacher_table:
            raise ValueError("rdnas.train: method 'rdnas' needs a teacher: set teacher_table (a score table over "
                             "the whole space from `rdnas proxies`) or pass teacher=Teacher(...)")
        return Teacher.from_table(config.teacher_table, config.teacher_proxies, config.groups, space)
    if config.teacher_table:
        raise ValueError(f"rdnas.train: teacher_table is for enumerable spaces; the {space.name} teacher is scored "
                         "on a reference sample (teacher_proxies, teacher_samples)")
    from rdnas.proxies import cost_scorer

    scorer = cost_scorer(space, config.teacher_proxies)
    reference = space.sample(config.teacher_samples, torch.Generator().manual_seed(config.seed))
    return SampledTeacher(reference, scorer(reference), config.groups, config.teacher_proxies, space, scorer)


def _widened(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the losses: float32 (from bfloat16 autocast), float64 kept as it is."""
    return logits if logits.dtype == torch.float64 else logits.float()


class OneShotTrainer:
    """Trains the supernet of ``config.space`` with ``config.method``. Files in ``config.out_dir``: ``checkpoint.pt`` (after every
    epoch, atomically), ``metrics.jsonl`` (one line per epoch) and ``config.json``.

    Args:
        config (TrainConfig): the run.
        progress (bool): a progress bar and a line per epoch.
        teacher (Teacher or SampledTeacher, optional): the RD-NAS teacher; default: built from the config
            (:func:`make_teacher`).
        evaluate (callable, optional): ``evaluate(trainer) -> dict`` run after every epoch; its result is added to
            that epoch's metrics (e.g. Kendall tau against a ground-truth table).
        dtype (torch.dtype, optional): for tests only: the supernet's and the batches' dtype (default float32).
            ``torch.float64`` keeps rounding near 1e-12 over many steps, so that one process and several can be
            compared tightly (tests/test_distributed.py); not a setting of the run (not saved in the checkpoint).
    """

    def __init__(self, config: TrainConfig, progress: bool = True, teacher=None, evaluate=None,
                 dtype: torch.dtype = torch.float32):
        config.check()
        self.config = config
        self.dtype = dtype
        self.progress = progress
        self.evaluate = evaluate
        self.out_dir = Path(config.out_dir)
        self.world = distributed.current()
        self.device = torch.device(distributed.rank_device(config.device, self.world))
        self.data = load_data(config)
        if config.batch_size > len(self.data.train):
            raise ValueError(f"rdnas.train.TrainConfig: batch_size {config.batch_size} exceeds the "
                             f"{len(self.data.train)} training images of {config.data!r} (batches drop the remainder)")
        self.space = get_space(config.space)
        torch.manual_seed(config.seed)
        self.model = config.build_supernet(self.data).to(self.device)
        if dtype != torch.float32:
            self.model.to(dtype)
        self.teacher = teacher
        if config.method == "rdnas" and teacher is None:
            self.teacher = make_teacher(config)
        self.sampler = self._make_sampler()
        self.layout = distributed.step_layout(config.parallel, self.sampler.num_paths, self.world)
        shares = self.layout.batch_ranks
        if config.batch_size % shares:
            among = (f"WORLD_SIZE={self.world.size} processes" if shares == self.world.size else
                     f"the {shares} processes of each subnet group")
            raise ValueError(f"rdnas.train.TrainConfig: batch_size {config.batch_size} (the global batch) does not "
                             f"split into equal shares for {among}; use a multiple of {shares}")
        self.data_generator = torch.Generator().manual_seed(config.seed + 2)
        self.batches = self.data.training_batches(config.batch_size, self.device, self.data_generator,
                                                  share=(self.layout.batch_rank, shares))
        # foreach: the multi-tensor update (torch's default on CUDA, not on the CPU), bitwise the per-tensor one's
        # weights (tests/test_distributed.py) and 1.7x faster on the CPU; every rank repeats this step
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=True, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, config.epochs * len(self.batches)), eta_min=0.0)
        self.epoch = 0
        self.history = []

    def _make_sampler(self):
        config, seed = self.config, self.config.seed + 1
        k = config.paths_per_step
        uniform_device = self.device if self.device.type == "cuda" else None
        space = self.space
        if config.method == "spos":
            return UniformSampler(k, seed=seed, device=uniform_device, space=space)
        if config.method == "fairnas":
            return FairSampler(seed=seed, space=space)
        if config.method == "sandwich" or config.sampler == "sandwich":
            return SandwichSampler(k, seed=seed, space=space)
        if config.sampler == "margin":
            return MarginSubnetSampler(self.teacher, k, seed=seed)
        if config.sampler == "random":
            return UniformSampler(k, seed=seed, space=space)
        if config.sampler == "min_hamming":
            return MinHammingPairSampler(k, seed=seed, min_distance=config.min_hamming, space=space)
        return HammingPairSampler(k, seed=seed, adaptive=config.sampler == "adaptive_hamming", space=space)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "epoch": self.epoch, "model": self.model.state_dict(),
                "teacher": None if self.teacher is None else self.teacher.state(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(), "data_generator": self.data_generator.get_state(),
                "history": self.history, "world_size": self.world.size}

    def load_state_dict(self, state: dict) -> None:
        saved = TrainConfig.from_dict(state["config"])
        values = {name: getattr(saved, name) for name in (f.name for f in fields(TrainConfig))}
        ours = {name: getattr(self.config, name) for name in values}
        if saved.space == self.config.space:  # the network options, the defaults filled in
            values.update(saved.supernet_options())
            ours.update(self.config.supernet_options())
        for name in (name for name in values if name not in RESUMABLE_CHANGES + ("space_options",)):
            if values[name] != ours[name]:
                raise ValueError(f"rdnas.train: cannot resume: the checkpoint has {name}={values[name]!r}, "
                                 f"this run {ours[name]!r}")
        saved_teacher = state.get("teacher")
        if (saved_teacher is None) != (self.teacher is None) or (
                saved_teacher is not None and not self.teacher.same_as(saved_teacher)):
            raise ValueError("rdnas.train: cannot resume: the checkpoint's teacher differs from this run's")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.data_generator.set_state(state["data_generator"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])

    def _autocast(self):
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, images, labels, progress: float | None = None) -> dict:
        """One SGD step on the method's K sampled subnets.

        Args:
            images (Tensor[B, C, H, W]), labels (LongTensor[B]): the batch, on the trainer's device (several
                processes: this rank's B = batch_size / Q rows of the global batch, Q the processes that share each
                subnet's batch: 1 subnet-parallel, P batch-parallel).
            progress (float, optional): the run's position in epochs (fractional), for lambda(epoch) and adaptive
                samplers; default: the current epoch.

        Returns a dict of 0-dim tensors (no host synchronisation): ``loss`` (mean cross-entropy of the subnets),
        ``accuracy`` (their mean batch accuracy) and, for RD-NAS, ``rank_loss`` and ``rank_weight``; several
        processes: over the global batch and every subnet, the same on every rank.
        """
        self.model.train()
        epoch = float(self.epoch if progress is None else progress)
        if hasattr(self.sampler, "set_progress"):
            self.sampler.set_progress(epoch / max(self.config.epochs, 1))
        with record_function("rdnas.sample"):
            archs = self.sampler.sample()
        self.optimizer.zero_grad(set_to_none=True)
        world, layout = self.world, self.layout
        if layout.subnet_groups > 1:  # this step's subnets dealt to the processes by their estimated costs
            layout = layout.balanced(distributed.subnet_costs(self.model, self.space, archs))
        if images.dtype != self.dtype:
            images = images.to(self.dtype)
        k, mine = len(archs), layout.subnets  # every subnet of the step; this rank's (all in one process)
        with self._autocast():
            with distributed.batch_norm_scope(world, self.config.bn_statistics, layout):
                if k == 1:
                    logits = self.model(images, archs[0]).unsqueeze(0)
                else:  # [K_mine, B, classes]; one subnet of several still in batch mode (no running statistics)
                    logits = self.model.forward_subnets(images, archs[mine])
            n, b = logits.shape[:2]
            losses = F.cross_entropy(_widened(logits).flatten(0, 1), labels.repeat(n), reduction="none")
            losses = losses.view(n, b).mean(1)
        distilled = None
        if self.config.distill:  # subnet 0 is the sandwich's largest: the others learn its soft predictions
            top = logits[0].detach() if layout.first == 0 else None
            top = distributed.rows_of_first_group(top, layout, world, logits[0])
            soft = _widened(top).softmax(-1)
            students = logits[1:] if layout.first == 0 else logits
            distilled = -(soft * _widened(students).log_softmax(-1)).sum(-1).mean(1)
        # subnet-parallel SPOS / FairNAS (no term across subnets before the backward, whole batch on each rank): the
        # objective is this rank's own losses, and the logged means ride along with the gradients' one all-reduce
        riders = None
        if world.distributed:  # per-subnet batch accuracies of this rank's subnets
            hits = (logits.argmax(-1) == labels).to(losses.dtype).mean(1)
        if world.distributed and layout.batch_ranks == 1 and layout.subnet_groups > 1 and distilled is None and \
                self.config.method != "rdnas":
            riders = torch.cat([layout.pad(losses.detach(), k), layout.pad(hits, k)])
        elif world.distributed:  # every subnet's global-batch means, in one all-reduce: [K losses, K - 1 distilled,
            # K accuracies], this rank's entries in place, zeros elsewhere
            parts = [layout.pad(losses, k)] + ([layout.pad(distilled, k - 1, -1)] if distilled is not None else []) + \
                [layout.pad(hits.detach(), k)]
            merged = distributed.gather_subnet_means(parts, world, layout.batch_ranks)
            losses, accuracy = merged[:k], merged[-k:].mean()
            distilled = merged[k:-k] if distilled is not None else None
        else:
            accuracy = (logits.argmax(-1) == labels).to(losses.dtype).mean()
        objective = losses[0] + distilled.sum() if distilled is not None else losses.sum()
        result = {}
        if self.config.method == "rdnas":
            with record_function("rdnas.rank_term"):  # teacher lookup and the fused all-pairs margin loss
                weight = self.config.rank_weight * rank_weight(self.config.rank_schedule, epoch, self.config.epochs)
                ranked = slice(2, None) if self.config.sampler == "sandwich" else slice(None)  # sandwich: random ones
                ranks, groups = self.teacher.lookup(archs[ranked])
                teacher = ranks.to(self.device, losses.dtype)
                groups = groups.to(self.device) if self.config.margin_mode == "group" else None
                margin = 0.0 if self.config.margin_mode == "none" else self.config.margin
                rank = pairwise_margin_rank_loss(-losses[ranked], teacher, margin, groups)
                objective = objective + weight * rank
            result.update(rank_loss=rank.detach(), rank_weight=torch.tensor(weight))
        objective.backward()
        distributed.sum_gradients(self.model.parameters(), world, same_subnets=layout.subnet_groups == 1,
                                  riders=riders)
        if riders is not None:  # every subnet's loss and accuracy, summed over the ranks with the gradients
            losses, accuracy = riders[:k], riders[k:].mean()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        result.update(loss=losses.detach().mean(), accuracy=accuracy.detach())
        return result

    def fit(self, resume: bool = False) -> list:
        """Trains until ``config.epochs``; with ``resume``, first restores ``checkpoint.pt`` if it exists.
        Without ``resume``, a folder that already holds a checkpoint is an error (starting afresh would overwrite
        its metrics and then its checkpoint): resume it, or pass another ``out_dir``. Returns the per-epoch
        metrics. Several processes: rank 0 reads the checkpoint and hands it to the others (no shared folder
        needed), and only rank 0 writes; every rank returns the same metrics."""
        world = self.world
        if world.distributed:  # rank 0 decides; every rank then raises the same error or resumes the same state
            outcome = None
            if world.is_main:
                try:
                    outcome = (None, self._open_out_dir(resume))
                except (ValueError, FileNotFoundError) as error:
                    outcome = (error, None)
            error, state = distributed.broadcast_object(outcome, world)
            if error is not None:
                raise error
        else:
            state = self._open_out_dir(resume)
        if state is not None:
            self.load_state_dict(state)
        if world.is_main:
            write_text_atomic(self.out_dir / "config.json", json.dumps(asdict(self.config), indent=2))
            self._rewrite_metrics()
        distributed.check_replicas(self.model, world, "at the start")
        from tqdm.auto import tqdm

        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            steps = []
            bar = tqdm(self.batches, desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                       disable=not (self.progress and world.is_main), leave=False)
            for step, (images, labels) in enumerate(bar):
                steps.append(self.train_step(images, labels, self.epoch + step / len(self.batches)))
            record = {"epoch": self.epoch + 1, "train_loss": float(torch.stack([s["loss"] for s in steps]).mean()),
                      "train_acc": float(torch.stack([s["accuracy"] for s in steps]).mean()),
                      "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - start}
            if "rank_loss" in steps[0]:
                record["rank_loss"] = float(torch.stack([s["rank_loss"] for s in steps]).mean())
                record["rank_weight"] = float(steps[-1]["rank_weight"])
            self.epoch += 1
            if self.config.bn_statistics == "per_rank":
                distributed.broadcast_buffers(self.model, world)
            distributed.check_replicas(self.model, world, f"after epoch {self.epoch}")
            if self.evaluate is not None:
                record.update(self.evaluate(self))
            self.history.append(record)
            if world.is_main:
                save_checkpoint(self.checkpoint_path, self.state_dict())
                self._rewrite_metrics()
            if self.progress and world.is_main:
                print(f"epoch {record['epoch']}/{self.config.epochs}: loss {record['train_loss']:.4f}, "
                      f"accuracy {record['train_acc']:.3f}, {record['seconds']:.1f} s", flush=True)
        distributed.barrier(world)  # every rank returns once rank 0's last checkpoint is written
        return self.history

    def _open_out_dir(self, resume: bool) -> dict | None:
        """Creates ``out_dir``; returns the checkpoint to resume from, or None for a fresh run."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"rdnas.train: out_dir {self.out_dir} is a file, expected a folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.checkpoint_path.exists():
            return None
        if not resume:
            raise ValueError(f"rdnas.train: {self.out_dir} already holds a run ({self.checkpoint_path.name}); "
                             "resume it (--resume) or choose another --out, so that its finished epochs are not "
                             "overwritten")
        return load_checkpoint(self.checkpoint_path)

    def _rewrite_metrics(self) -> None:
        """metrics.jsonl holds exactly the epochs of the checkpoint (rewritten atomically after each checkpoint, so
        a run killed between the two leaves it one epoch behind at most, and resuming makes it consistent)."""
        lines = "".join(json.dumps(record) + "\n" for record in self.history)
        write_text_atomic(self.out_dir / "metrics.jsonl", lines)

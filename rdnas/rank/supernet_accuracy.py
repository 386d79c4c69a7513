"""Supernet accuracy of many architectures on a validation split, K subnets per forward pass."""

import torch
from torch import Tensor

from rdnas.distributed import World, my_chunks, sum_disjoint
from rdnas.distributed import current as current_world
from rdnas.supernet import BNStatistics, NB201Supernet

BN_MODES = ("batch", "recalibrate", "running")
PATHS = ("auto", "shared", "subnets")
SHARED_PATHS = {}  # supernet class -> (chunk class, order): see register_shared_path


def register_shared_path(supernet_class, chunk, order) -> None:
    """Registers a faster recalibrated evaluation for ``supernet_class`` (exact type): ``chunk(supernet, archs)``
    with ``calibrate(images)`` per calibration batch, then ``logits(images) -> Tensor[K, B, classes]``, equal to
    ``forward_subnets`` with per-subnet recalibrated statistics; ``order(archs) -> LongTensor[A]``, the order in
    which chunks share the most work. (NB201's: :mod:`rdnas.rank.nb201_accuracy`.)"""
    SHARED_PATHS[supernet_class] = (chunk, order)


@torch.no_grad()
def supernet_accuracy(supernet: NB201Supernet, archs: Tensor, valid_batches, *, bn: str = "recalibrate",
                      calibration_batches=None, calibration_steps: int = 4, subnets_per_pass: int = 32,
                      progress: bool = False, distributed: bool = False, path: str = "auto") -> Tensor:
    """Top-1 accuracy (in [0, 1]) of each architecture with the supernet's weights.

    Args:
        supernet (NB201Supernet): trained weights.
        archs (LongTensor[A, 6]): the architectures, on the CPU.
        valid_batches: iterable of (images, labels) on the supernet's device.
        bn (str): where BN statistics come from. "recalibrate" (default): per subnet, recomputed on
            ``calibration_steps`` batches of ``calibration_batches`` (training data) before evaluation, the usual
            protocol for weight-sharing supernets. "batch": each subnet's statistics of each validation batch
            (training-mode BN). "running": the supernet's shared running statistics.
        subnets_per_pass (int): K, architectures evaluated together by ``forward_subnets``.
        distributed (bool): in a job of several processes (an initialised default process group), every rank
            calls this with the same arguments; chunk c of ``subnets_per_pass`` architectures is evaluated by rank
            c mod P and the accuracies are gathered on every rank, identical to a single process's. Ignored in a
            single process.
        path (str): "subnets": every chunk through ``supernet.forward_subnets``. "shared": the supernet's registered
            shared path (:func:`register_shared_path`; NB201: the stem and first-cell prefixes computed once per
            chunk, chunks ordered by cell plan), equal up to float rounding; needs ``bn="recalibrate"``. "auto"
            (default): "shared" where it applies, else "subnets".

    Returns:
        Tensor[A]: accuracy per architecture (float64).
    """
    if bn not in BN_MODES:
        raise ValueError(f"rdnas.rank.supernet_accuracy: bn must be one of {BN_MODES}, got {bn!r}")
    if bn == "recalibrate" and calibration_batches is None:
        raise ValueError("rdnas.rank.supernet_accuracy: bn='recalibrate' needs calibration_batches (training data)")
    if path not in PATHS:
        raise ValueError(f"rdnas.rank.supernet_accuracy: path must be one of {PATHS}, got {path!r}")
    shared = SHARED_PATHS.get(type(supernet)) if bn == "recalibrate" else None
    if path == "shared" and shared is None:
        raise ValueError(f"rdnas.rank.supernet_accuracy: path='shared' needs bn='recalibrate' and a supernet with a "
                         f"shared path (registered: {sorted(c.__name__ for c in SHARED_PATHS)}), got bn={bn!r} and "
                         f"{type(supernet).__name__}")
    if path == "subnets":
        shared = None
    valid = list(valid_batches)
    calibration = []
    if bn == "recalibrate":
        for step, batch in enumerate(calibration_batches):
            if step >= calibration_steps:
                break
            calibration.append(batch)
    supernet.eval()
    correct = torch.zeros(len(archs), dtype=torch.float64)
    total = sum(int(labels.numel()) for _, labels in valid)
    from tqdm.auto import tqdm

    world = current_world() if distributed else World()
    order = shared[1](torch.as_tensor(archs)) if shared is not None else None
    ordered = torch.as_tensor(archs)[order] if order is not None else archs
    starts = my_chunks(len(archs), subnets_per_pass, world)
    for start in tqdm(starts, disable=not (progress and world.is_main), desc="architectures"):
        chunk = ordered[start:start + subnets_per_pass]
        if shared is not None:
            evaluator = shared[0](supernet, chunk)
            for images, _ in calibration:
                evaluator.calibrate(images)
            for images, labels in valid:
                logits = evaluator.logits(images)  # [K, B, classes]
                correct[start:start + len(chunk)] += (logits.argmax(-1) == labels).sum(-1).double().cpu()
            continue
        if bn == "recalibrate":
            stats = BNStatistics("calibrate", len(chunk))
            for images, _ in calibration:
                supernet.forward_subnets(images, chunk, bn=stats)
            stats.freeze()
        else:
            stats = bn
        for images, labels in valid:
            logits = supernet.forward_subnets(images, chunk, bn=stats)  # [K, B, classes]
            correct[start:start + len(chunk)] += (logits.argmax(-1) == labels).sum(-1).double().cpu()
    accuracy = sum_disjoint(correct, world) / max(total, 1)
    if order is not None:
        accuracy = torch.empty_like(accuracy).index_copy_(0, order, accuracy)
    return accuracy


def recalibrated_accuracy_fn(supernet: NB201Supernet, data, device, *, calibration_batch_size: int,
                             calibration_steps: int = 4, seed: int = 0, subnets_per_pass: int = 32,
                             distributed: bool = False, path: str = "auto"):
    """``archs (LongTensor[A, 6]) -> Tensor[A]``: :func:`supernet_accuracy` on ``data.valid`` with BN recalibrated
    per subnet on ``calibration_steps`` unaugmented batches of ``data.train`` (shuffled with ``seed``); ``data``
    is a run's splits (``rdnas.train.load_data``). The calibration batches are drawn once, here, so every call
    (a search calls it once per generation) recalibrates on the same images and its accuracies are comparable.
    ``distributed``: split across the ranks of the job; ``path``: "auto" (the supernet's shared path where it has
    one), "shared" or "subnets" (see :func:`supernet_accuracy`)."""
    valid = data.evaluation_batches("valid", 512, device)
    shuffled = data.evaluation_batches("train", calibration_batch_size, device, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))
    calibration = [batch for _, batch in zip(range(calibration_steps), shuffled)]

    def accuracy(archs: Tensor) -> Tensor:
        return supernet_accuracy(supernet, archs, valid, bn="recalibrate", calibration_batches=calibration,
                                 calibration_steps=calibration_steps, subnets_per_pass=subnets_per_pass,
                                 distributed=distributed, path=path)

    return accuracy

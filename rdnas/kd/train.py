"""Training one student on one task, with knowledge distillation from cached teacher logits or with plain
cross-entropy, and evaluating it.

The teacher's logits on the training images are computed once per task (:func:`teacher_logits`, eval mode, no
augmentation), so a KD run costs what a cross-entropy run costs. With ``augment`` the student sees randomly shifted
and (where the data allow) flipped images while the cached logits stay those of the clean image (no augmentation on
the teacher side).
"""

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.data.pipeline import random_crop
from rdnas.kd.loss import ALPHA, TEMPERATURE, kd_loss
from rdnas.train.checkpoint import config_from_dict


@dataclass(frozen=True)
class StudentRecipe:
    """How a student is trained (DaSS: SGD Nesterov 0.05, cosine, batch 64, 50 epochs; CPU-sized here)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float = ALPHA
    temperature: float = TEMPERATURE
    augment: bool = False  # student side only: a shift of up to 1/8 of the side and (where the data allow) a flip
    label_smoothing: float = 0.0  # of the cross-entropy of runs without a teacher (teachers: 0.1)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"rdnas.kd.StudentRecipe: {name} must be a positive int, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "alpha", "temperature", "label_smoothing"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value \
                    or value in (float("inf"), float("-inf")) or value < 0:
                raise ValueError(f"rdnas.kd.StudentRecipe: {name} must be a finite non-negative number, got {value!r}")
        if self.alpha > 1 or self.temperature == 0 or self.lr == 0 or self.label_smoothing >= 1:
            raise ValueError(f"rdnas.kd.StudentRecipe: needs alpha <= 1, temperature > 0, lr > 0 and "
                             f"label_smoothing < 1, got alpha={self.alpha}, temperature={self.temperature}, "
                             f"lr={self.lr}, label_smoothing={self.label_smoothing}")

    @classmethod
    def from_dict(cls, values: dict) -> "StudentRecipe":
        """From a JSON object (a tasks file's ``student``); an unknown field or a bad value is a ValueError."""
        return config_from_dict(cls, values, "rdnas.kd.StudentRecipe")

    def to_dict(self) -> dict:
        """The recipe as a JSON object (every field)."""
        return asdict(self)


@torch.no_grad()
def predict_logits(network: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """Logits [N, C] of ``network`` in eval mode on ``images`` [N, C_in, H, W] (float32, normalised), batch by
    batch; the network's train/eval mode is restored."""
    was_training = network.training
    network.eval()
    try:
        return torch.cat([network(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])
    finally:
        network.train(was_training)


def teacher_logits(teacher: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """The teacher's logits [N, C] on the unaugmented training images [N, C_in, H, W]: computed once per task and
    reused by every KD student."""
    return predict_logits(teacher, images, batch_size)


@torch.no_grad()
def evaluate(network: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> dict:
    """``{"valid_acc": %, "valid_loss": mean cross-entropy}`` of ``network`` (eval mode) on one split."""
    logits = predict_logits(network, images, batch_size)
    return {"valid_acc": 100.0 * float((logits.argmax(1) == labels).double().mean()),
            "valid_loss": float(F.cross_entropy(logits.double(), labels))}


def train_student(student: nn.Module, train_x: Tensor, train_y: Tensor, valid_x: Tensor, valid_y: Tensor,
                  recipe: StudentRecipe, seed: int, cached_teacher_logits: Tensor | None = None,
                  flip: bool = True) -> dict:
    """Trains ``student`` in place and returns its result.

    Args:
        student (nn.Module): the network (remapped or freshly initialised), on the data's device.
        train_x, valid_x (Tensor[N, C_in, H, W] float32, normalised), train_y, valid_y (LongTensor[N]).
        recipe (StudentRecipe): optimiser, schedule, KD weights.
        seed (int): the data order and augmentation come from ``torch.Generator().manual_seed(seed)``.
        cached_teacher_logits (Tensor[N_train, C], optional): the teacher's logits on ``train_x``
            (:func:`teacher_logits`); given, the loss is :func:`rdnas.kd.kd_loss`, otherwise cross-entropy
            (with the recipe's label smoothing).
        flip (bool): with ``recipe.augment``, flip images horizontally too (half of them); False for data whose
            classes a mirror image changes (digits, characters: :func:`rdnas.kd.data.flips_keep_labels`). The
            random draws are the same either way.

    Returns ``{"valid_acc", "valid_loss", "train_loss" (last epoch's mean), "seconds" (wall clock, training and
    evaluation), "cpu_seconds" (this process's CPU time over the same span, all threads)}``.
    """
    if cached_teacher_logits is not None and cached_teacher_logits.shape[0] != len(train_x):
        raise ValueError(f"rdnas.kd.train_student: cached_teacher_logits has {cached_teacher_logits.shape[0]} rows "
                         f"for {len(train_x)} training images")
    steps = len(train_x) // recipe.batch_size
    if steps == 0:
        raise ValueError(f"rdnas.kd.train_student: {len(train_x)} training images make no batch of batch_size "
                         f"{recipe.batch_size}")
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps)
    padding, flip_images = max(1, train_x.shape[-1] // 8), bool(flip)
    start, cpu_start = time.perf_counter(), time.process_time()
    student.train()
    epoch_loss = 0.0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train_x), generator=generator).to(train_x.device)
        epoch_loss = torch.zeros((), dtype=torch.float64, device=train_x.device)
        for step in range(steps):
            index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            images, labels = train_x[index], train_y[index]
            if recipe.augment:
                images = random_crop(images, padding, generator)
                flipped = (torch.rand(len(images), generator=generator) < 0.5).to(images.device).view(-1, 1, 1, 1)
                if flip_images:
                    images = torch.where(flipped, images.flip(-1), images)
            logits = student(images)
            if cached_teacher_logits is None:
                loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
            else:
                loss = kd_loss(logits, cached_teacher_logits[index], labels, recipe.alpha, recipe.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.detach()
    result = evaluate(student, valid_x, valid_y)
    result["train_loss"] = float(epoch_loss) / steps
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu_start  # this process's CPU time: the cost on a shared machine
    return result

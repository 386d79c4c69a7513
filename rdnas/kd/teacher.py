"""A task's teacher: the space's largest network trained on the task, saved with its validation accuracy, its
recipe and the task it was trained on.

Teacher files (``torch.save`` of plain data, read with ``weights_only=True``) have ``kind``
``"rdnas-dass-teacher"``; :func:`load_teacher` checks the kind, the version and (when asked) the space before it
builds anything, with errors that name the file.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rdnas.atomic_file import atomic_open
from rdnas.kd.data import TaskData, flips_keep_labels
from rdnas.kd.files import load_kinded_file
from rdnas.kd.remap import largest_network
from rdnas.kd.tasks import TaskSpec, TeacherRecipe
from rdnas.kd.train import train_student

TEACHER_KIND = "rdnas-dass-teacher"


@dataclass
class Teacher:
    """A trained teacher.

    Attributes:
        network (nn.Module): the space's largest network (eval mode), ``network.config`` its options.
        space (str): the space's name.
        task (dict): the fields that define its images (:meth:`rdnas.kd.tasks.TaskSpec.data_dict`).
        recipe (TeacherRecipe): how it was trained.
        valid_acc (float): validation accuracy, %; valid_loss (float): validation cross-entropy.
        mean, std (tuples): the normalisation of its inputs.
    """

    network: nn.Module
    space: str
    task: dict
    recipe: TeacherRecipe
    valid_acc: float
    valid_loss: float
    mean: tuple
    std: tuple

    def task_spec(self, student_options: dict | None = None, split: str = "meta-test") -> TaskSpec:
        """The task this teacher was trained on as a :class:`TaskSpec` (its data, its recipe), with the students'
        network options ``student_options`` (e.g. ``{"width_divisor": 8}``; default: the teacher's own)."""
        return TaskSpec.from_dict({**self.task, "split": split, "teacher": self.recipe.to_dict(),
                                   "student_options": dict(student_options or {})}, "teacher file: task", self.space)

    def digest(self) -> str:
        """12 hex digits of a SHA-256 over the network's state (names, shapes, bytes): tells teachers apart."""
        hasher = hashlib.sha256()
        for name, tensor in sorted(self.network.state_dict().items()):
            hasher.update(name.encode())
            hasher.update(str(list(tensor.shape)).encode())
            hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return hasher.hexdigest()[:12]


def train_teacher(task: TaskSpec, space, data: TaskData | None = None) -> Teacher:
    """Trains the largest network of ``space`` on ``task`` with ``task.teacher`` (cross-entropy with its label
    smoothing; initial weights and data order from its seed; augmentation flips only where a mirror image keeps the
    class, :func:`rdnas.kd.data.flips_keep_labels`) and returns it in eval mode."""
    from rdnas.spaces import get_space

    space = get_space(space)
    data = task.data() if data is None else data
    recipe = task.teacher
    network = largest_network(space, data.num_classes, data.in_channels, seed=recipe.seed, **recipe.options)
    result = train_student(network, data.train_x, data.train_y, data.valid_x, data.valid_y, recipe.training(),
                           seed=recipe.seed, flip=flips_keep_labels(task.dataset))
    return Teacher(network.eval(), space.name, task.data_dict(), recipe, result["valid_acc"], result["valid_loss"],
                   data.mean, data.std)


def save_teacher(teacher: Teacher, path) -> None:
    """Writes a teacher file atomically (the old file, if any, stays whole until the new one is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": TEACHER_KIND, "version": 1, "space": teacher.space, "config": dict(teacher.network.config),
               "arch": teacher.network.arch if hasattr(teacher.network, "arch") else None,
               "state_dict": {k: v.detach().cpu() for k, v in teacher.network.state_dict().items()},
               "task": teacher.task, "recipe": teacher.recipe.to_dict(), "valid_acc": float(teacher.valid_acc),
               "valid_loss": float(teacher.valid_loss), "mean": list(teacher.mean), "std": list(teacher.std)}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_teacher(path, space=None) -> Teacher:
    """A teacher file written by :func:`save_teacher` (``rdnas dass teacher``).

    Args:
        path: the file.
        space (optional): the space it must belong to (a name or SearchSpace).

    Raises ValueError naming the file when it is missing, not a torch file, not a teacher file (``kind``), of
    another version, or of another space.
    """
    from rdnas.spaces import get_space
    from rdnas.supernet import supernet_spec

    path = Path(path)
    payload = load_kinded_file(path, TEACHER_KIND, "a teacher file", "rdnas dass teacher")
    if payload.get("version") != 1:
        raise ValueError(f"{path}: teacher file version {payload.get('version')!r}, expected 1")
    if space is not None and payload["space"] != get_space(space).name:
        raise ValueError(f"{path} is a teacher of the {payload['space']} space, expected one of the "
                         f"{get_space(space).name} space")
    spec = supernet_spec(payload["space"])
    arch = payload["arch"] if payload["arch"] is not None else get_space(payload["space"]).largest()
    network = spec.network(arch, **payload["config"])
    network.load_state_dict(payload["state_dict"])
    recipe = TeacherRecipe.from_dict(payload["recipe"], f"{path}: recipe", payload["space"])
    return Teacher(network.eval(), payload["space"], payload["task"], recipe, payload["valid_acc"],
                   payload["valid_loss"], tuple(payload["mean"]), tuple(payload["std"]))

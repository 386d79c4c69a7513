"""KD tasks and the ``tasks.json`` file that lists them.

A task is (a dataset, a class subset, an image size, a seeded train / validation split, a teacher recipe): DaSS's
(dataset, teacher) pair, with the teacher rebuilt from its recipe. ``tasks.json``::

    {
      "kind": "rdnas-dass-tasks", "version": 1,
      "space": "resnet48",
      "student": {"epochs": 5, "batch_size": 64, "lr": 0.05},          # StudentRecipe fields (optional)
      "probe_seed": 0,                                                   # the functional embeddings' N(0, 1) probe
      "tasks": [
        {"name": "fmnist-0", "split": "meta-train", "dataset": "fashion_mnist", "classes": [0, 3, 4, 7, 9],
         "image_size": 16, "train": 2000, "valid": 1000, "seed": 0,
         "teacher": {"options": {"resnet_stem": "small", "width_divisor": 4}, "epochs": 10, "seed": 0},
         "student_options": {"width_divisor": 8}},
        ...
      ]
    }

``split`` is ``meta-train``, ``meta-valid`` or ``meta-test``; ``channels`` (1 or 3) is optional; ``teacher`` takes
the :class:`TeacherRecipe` fields (``options``: the space's network options, :func:`rdnas.supernet.supernet_spec`);
``student_options`` overrides the teacher's network options for the students (a narrower student family).
:func:`read_tasks` checks every field before any work starts; its errors name the file and the field, e.g.
``tasks.json: tasks[2].classes: ...``.
"""

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from rdnas.kd.data import TaskData, check_classes, load_task_data, parse_dataset
from rdnas.kd.train import StudentRecipe

TASKS_KIND = "rdnas-dass-tasks"
SPLITS = ("meta-train", "meta-valid", "meta-test")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _number(value, name: str, kind=int, low=None, allow_equal=True):
    ok = not isinstance(value, bool) and (isinstance(value, int) if kind is int else isinstance(value, (int, float)))
    if ok and kind is float:
        ok = math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if allow_equal else value > low
    if not ok:
        bound = "" if low is None else f" {'>=' if allow_equal else '>'} {low}"
        raise ValueError(f"{name}: expected {'an integer' if kind is int else 'a finite number'}{bound}, got {value!r}")
    return value


def check_network_options(space, options, name: str) -> dict:
    """``options`` as a dict of the space's network options (:func:`rdnas.supernet.supernet_spec`), checked by
    building the space's smallest network with them; ValueError starting with ``name``."""
    from rdnas.spaces import get_space
    from rdnas.supernet import supernet_spec

    if not isinstance(options, dict):
        raise ValueError(f"{name}: expected an object of network options, got {options!r}")
    spec = supernet_spec(space)
    unknown = sorted(set(options) - set(spec.option_names))
    if unknown:
        raise ValueError(f"{name}: the {spec.space} network takes the options {', '.join(spec.option_names)}; got "
                         f"{', '.join(unknown)}")
    if spec.network is not None:
        try:
            spec.network(get_space(space).smallest(), num_classes=2, in_channels=1, **options)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{name}: {error}") from None
    return dict(options)


@dataclass(frozen=True)
class TeacherRecipe:
    """How a task's teacher (the space's largest network) is trained: its network ``options`` (e.g.
    ``{"resnet_stem": "small", "width_divisor": 4}``), SGD Nesterov with a cosine schedule, cross-entropy with
    label smoothing 0.1, random shifts and (where a mirror image keeps the class,
    :func:`rdnas.kd.data.flips_keep_labels`) flips; ``seed`` gives its initial weights and data order."""

    options: dict = field(default_factory=dict)
    epochs: int = 10
    seed: int = 0
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True

    def training(self) -> StudentRecipe:
        """The recipe as the training loop's :class:`rdnas.kd.StudentRecipe` (cross-entropy, no teacher)."""
        return StudentRecipe(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                             weight_decay=self.weight_decay, augment=self.augment,
                             label_smoothing=self.label_smoothing)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values, name: str, space) -> "TeacherRecipe":
        """From a JSON object; ValueError naming ``name`` and the field."""
        if not isinstance(values, dict):
            raise ValueError(f"{name}: expected an object with the fields {', '.join(f.name for f in fields(cls))}, "
                             f"got {values!r}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{name}.{unknown[0]}: unknown field; a teacher recipe has "
                             f"{', '.join(f.name for f in fields(cls))}")
        recipe = cls(**{**values, "options": check_network_options(space, values.get("options", {}),
                                                                   f"{name}.options")})
        for f in ("epochs", "batch_size"):
            _number(getattr(recipe, f), f"{name}.{f}", int, 1)
        _number(recipe.seed, f"{name}.seed", int, 0)
        for f in ("lr", "momentum", "weight_decay", "label_smoothing"):
            _number(getattr(recipe, f), f"{name}.{f}", float, 0.0, allow_equal=f != "lr")
        if recipe.label_smoothing >= 1:
            raise ValueError(f"{name}.label_smoothing: expected a value below 1, got {recipe.label_smoothing}")
        if not isinstance(recipe.augment, bool):
            raise ValueError(f"{name}.augment: expected true or false, got {recipe.augment!r}")
        return recipe


@dataclass(frozen=True)
class TaskSpec:
    """One KD task (see the module docstring)."""

    name: str
    dataset: str
    classes: tuple
    image_size: int
    train: int
    valid: int
    seed: int = 0
    split: str = "meta-train"
    channels: int | None = None
    teacher: TeacherRecipe = field(default_factory=TeacherRecipe)
    student_options: dict = field(default_factory=dict)

    def data(self) -> TaskData:
        """The task's normalised splits (:func:`rdnas.kd.data.load_task_data`)."""
        return load_task_data(self.dataset, self.classes, self.image_size, self.train, self.valid, self.seed,
                              self.channels)

    def data_dict(self) -> dict:
        """The fields that define the task's images (what a teacher file records)."""
        return {"name": self.name, "dataset": self.dataset, "classes": list(self.classes),
                "image_size": self.image_size, "train": self.train, "valid": self.valid, "seed": self.seed,
                "channels": self.channels}

    def to_dict(self) -> dict:
        return {**self.data_dict(), "split": self.split, "teacher": self.teacher.to_dict(),
                "student_options": dict(self.student_options)}

    def student_network_options(self) -> dict:
        """The students' network options: the teacher's, overridden by ``student_options``."""
        return {**self.teacher.options, **self.student_options}

    @classmethod
    def from_dict(cls, values, name: str, space) -> "TaskSpec":
        """From a JSON object; ValueError naming ``name`` (e.g. ``tasks.json: tasks[2]``) and the field."""
        if not isinstance(values, dict):
            raise ValueError(f"{name}: expected an object, got {values!r}")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"{name}.{unknown[0]}: unknown field; a task has {', '.join(sorted(allowed))}")
        for required in ("name", "dataset", "classes", "image_size", "train", "valid"):
            if required not in values:
                raise ValueError(f"{name}.{required}: missing (required)")
        task_name = values["name"]
        if not isinstance(task_name, str) or not _NAME.fullmatch(task_name):
            raise ValueError(f"{name}.name: expected letters, digits, '_', '.', '-' (a file name), got {task_name!r}")
        dataset = values["dataset"]
        try:
            parse_dataset(dataset)
        except ValueError as error:
            raise ValueError(f"{name}.dataset: {error}") from None
        try:
            classes = check_classes(dataset, values["classes"])
        except ValueError as error:
            raise ValueError(f"{name}.classes: {error}") from None
        _number(values["image_size"], f"{name}.image_size", int, 4)
        _number(values["train"], f"{name}.train", int, 1)
        _number(values["valid"], f"{name}.valid", int, 1)
        _number(values.get("seed", 0), f"{name}.seed", int, 0)
        if classes and (values["train"] < len(classes) or values["valid"] < len(classes)):
            raise ValueError(f"{name}.train: train and valid need at least one image per class ({len(classes)}), "
                             f"got {values['train']} and {values['valid']}")
        split = values.get("split", "meta-train")
        if split not in SPLITS:
            raise ValueError(f"{name}.split: expected one of {', '.join(SPLITS)}, got {split!r}")
        channels = values.get("channels")
        if channels not in (None, 1, 3):
            raise ValueError(f"{name}.channels: expected 1 or 3, got {channels!r}")
        teacher = TeacherRecipe.from_dict(values.get("teacher", {}), f"{name}.teacher", space)
        student_options = check_network_options(space, values.get("student_options", {}), f"{name}.student_options")
        check_network_options(space, {**teacher.options, **student_options}, f"{name}.student_options")
        return cls(task_name, dataset, classes, values["image_size"], values["train"], values["valid"],
                   values.get("seed", 0), split, channels, teacher, student_options)


@dataclass(frozen=True)
class TaskFile:
    """A ``tasks.json``: the space, the students' training recipe, the probe's seed and the tasks."""

    space: str
    tasks: tuple
    student: StudentRecipe = StudentRecipe()
    probe_seed: int = 0

    def task(self, name: str) -> TaskSpec:
        """The task called ``name``; ValueError listing the tasks' names when there is none."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise ValueError(f"no task named {name!r}; the tasks are {', '.join(t.name for t in self.tasks)}")

    def to_dict(self) -> dict:
        return {"kind": TASKS_KIND, "version": 1, "space": self.space, "student": self.student.to_dict(),
                "probe_seed": self.probe_seed, "tasks": [task.to_dict() for task in self.tasks]}


def _image_source(task: TaskSpec) -> str:
    """Which image collection a task draws from (the same collection under two spellings is one source)."""
    import os

    from rdnas.data.datasets import FASHION_MNIST_DIR

    kind, folder = parse_dataset(task.dataset)
    if kind == "fashion_mnist":
        folder = folder or str(FASHION_MNIST_DIR)
    return f"{kind}:{os.path.normpath(os.path.abspath(folder))}" if folder else kind


def check_meta_test_unseen(tasks, where: str) -> None:
    """Refuses a meta-test task that shares a class of the same image source with a meta-train or meta-valid task
    (its images, or its class, would have been seen in meta-training): ValueError naming both tasks and the class.
    A task of an image folder that lists no classes takes every class of the folder."""
    seen = {}
    for i, task in enumerate(tasks):
        if task.split != "meta-test":
            seen.setdefault(_image_source(task), []).append((i, task))
    for i, task in enumerate(tasks):
        if task.split != "meta-test":
            continue
        for j, other in seen.get(_image_source(task), []):
            shared = sorted(set(task.classes) & set(other.classes), key=str)
            if shared or not task.classes or not other.classes:
                what = f"class {shared[0]!r}" if shared else "its classes (a task that lists none takes them all)"
                raise ValueError(f"{where}: tasks[{i}]: meta-test task {task.name!r} shares {what} of "
                                 f"{task.dataset} with {other.split} task {other.name!r} (tasks[{j}]): a meta-test "
                                 "task must be unseen in meta-training; use other classes or another dataset")


def parse_tasks(values, where: str) -> TaskFile:
    """A :class:`TaskFile` from the JSON value of a tasks file; errors start with ``where`` (the file name)."""
    from rdnas.spaces import get_space, space_names

    if not isinstance(values, dict) or values.get("kind") != TASKS_KIND:
        got = values.get("kind") if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{where}: kind: expected {TASKS_KIND!r} (a DaSS tasks file), got {got!r}")
    if values.get("version") != 1:
        raise ValueError(f"{where}: version: expected 1, got {values.get('version')!r}")
    unknown = sorted(set(values) - {"kind", "version", "space", "student", "probe_seed", "tasks"})
    if unknown:
        raise ValueError(f"{where}: {unknown[0]}: unknown field; a tasks file has kind, version, space, student, "
                         "probe_seed, tasks")
    space = values.get("space")
    if space not in space_names():
        raise ValueError(f"{where}: space: expected one of {', '.join(space_names())}, got {space!r}")
    try:
        student = StudentRecipe.from_dict(values.get("student", {}))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: student: {error}") from None
    probe_seed = _number(values.get("probe_seed", 0), f"{where}: probe_seed", int, 0)
    tasks = values.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{where}: tasks: expected a non-empty list of tasks, got {tasks!r}")
    parsed, seen = [], {}
    for i, task in enumerate(tasks):
        spec = TaskSpec.from_dict(task, f"{where}: tasks[{i}]", get_space(space))
        if spec.name in seen:
            raise ValueError(f"{where}: tasks[{i}].name: {spec.name!r} repeats tasks[{seen[spec.name]}]")
        seen[spec.name] = i
        parsed.append(spec)
    check_meta_test_unseen(parsed, where)
    return TaskFile(space, tuple(parsed), student, probe_seed)


def read_tasks(path) -> TaskFile:
    """The tasks of a ``tasks.json`` (see the module docstring), every field checked; ValueError naming the file
    and the field."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"{path}: cannot read the tasks file ({error.strerror or error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    return parse_tasks(values, str(path))


def write_tasks(path, tasks: TaskFile) -> None:
    """Writes a tasks file atomically."""
    from rdnas.atomic_file import write_text_atomic

    write_text_atomic(path, json.dumps(tasks.to_dict(), indent=2) + "\n")

"""The images of a KD task: a dataset spec, a class subset, a seeded stratified train / validation split.

Dataset specs (:data:`DATASET_SPECS`):

- ``fashion_mnist`` or ``fashion_mnist:<dir>``: Fashion-MNIST's 60,000 training images (Debian's
  ``dataset-fashion-mnist`` by default); classes are labels 0..9.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images); classes are labels 0..9.
- ``glyphs``: synthetic glyphs (:mod:`rdnas.data.glyphs`) rendered at the task's image size with the task's
  seed; classes are single characters.
- ``folder:<dir>``: an image folder ``<dir>/<class>/<images>`` read with rdnas's image-folder reader (every format
  Pillow opens); classes are class-folder names (all of them when the task lists none).

A task takes ``train`` and ``valid`` images in total, spread over its classes as evenly as possible (the first
classes get one more), drawn without overlap from each class's distinct images in a seeded order (an exact copy of
an earlier image is left out, :func:`first_copies`); labels are the classes'
positions in the task's list. Images are resized to the task's side (area averaging down, bilinear up), scaled to
[0, 1] and normalised with the training images' per-channel mean and standard deviation.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rdnas.data.datasets import FASHION_MNIST_DIR, DatasetError, ImageSet, load_digits, read_fashion_mnist
from rdnas.data.image_folder import find_images, load_rgb, mix_seed

DATASET_SPECS = ("fashion_mnist[:<dir>]", "digits", "glyphs", "folder:<dir>")


@dataclass
class TaskData:
    """One task's splits: ``train_x`` / ``valid_x`` float32 [N, C, S, S] normalised, ``train_y`` / ``valid_y`` int64
    [N] in 0..num_classes-1; ``mean`` / ``std`` (C floats each) of the normalisation; ``class_names``."""

    train_x: Tensor
    train_y: Tensor
    valid_x: Tensor
    valid_y: Tensor
    mean: tuple
    std: tuple
    class_names: tuple

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]


def flips_keep_labels(spec: str) -> bool:
    """Whether a horizontal flip keeps an image's class for the dataset spec ``spec``: True for Fashion-MNIST and
    image folders (natural images), False for digits and glyphs (a mirrored character is another character or
    none: ``<`` and ``>`` are each other's mirror image). Augmentation flips only where this is True."""
    return parse_dataset(spec)[0] in ("fashion_mnist", "folder")


def parse_dataset(spec: str) -> tuple[str, str]:
    """(kind, folder) of a dataset spec; ValueError naming the spec and the accepted forms."""
    kind, _, folder = str(spec).partition(":")
    if kind not in ("fashion_mnist", "digits", "glyphs", "folder") or (kind in ("digits", "glyphs") and folder) \
            or (kind == "folder" and not folder):
        raise ValueError(f"rdnas.kd: unknown dataset spec {spec!r}; expected one of {', '.join(DATASET_SPECS)}")
    return kind, folder


def check_classes(spec: str, classes) -> tuple:
    """The task's classes for ``spec`` as a tuple (ints for fashion_mnist and digits, single characters for
    glyphs, folder names for folder; folder may list none = every class folder); ValueError saying what fits."""
    kind, _ = parse_dataset(spec)
    if not isinstance(classes, (list, tuple)):
        raise ValueError(f"classes must be a list, got {type(classes).__name__}")
    classes = tuple(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct, got {list(classes)}")
    if kind in ("fashion_mnist", "digits"):
        if len(classes) < 2 or not all(type(c) is int and 0 <= c <= 9 for c in classes):
            raise ValueError(f"a {kind} task lists at least 2 labels in 0..9, got {list(classes)}")
    elif kind == "glyphs":
        if len(classes) < 2 or not all(isinstance(c, str) and len(c) == 1 and not c.isspace() for c in classes):
            raise ValueError(f"a glyphs task lists at least 2 single printable characters, got {list(classes)}")
    elif not all(isinstance(c, str) and c for c in classes) or len(classes) == 1:
        raise ValueError(f"a folder task lists at least 2 class-folder names, or none (every class), got "
                         f"{list(classes)}")
    return classes


def _pool(kind: str, folder: str, classes: tuple, image_size: int, per_class: int, seed: int) -> tuple:
    """(images uint8 [N, C, H, W], labels int64 [N] as positions in ``classes``, class names)."""
    if kind == "glyphs":
        from rdnas.data.glyphs import render_glyphs

        images = render_glyphs("".join(classes), per_class, side=image_size, seed=seed)
        return images.images, images.labels, tuple(classes)
    if kind in ("fashion_mnist", "digits"):
        source = read_fashion_mnist(folder or FASHION_MNIST_DIR, True) if kind == "fashion_mnist" else load_digits()
        position = torch.full((10,), -1, dtype=torch.long)
        position[list(classes)] = torch.arange(len(classes))
        keep = position[source.labels] >= 0
        return source.images[keep], position[source.labels[keep]], tuple(str(c) for c in classes)
    found = read_image_folder(folder, image_size, classes)
    return found.images, found.labels, tuple(found.name.split("\n"))


def read_image_folder(root, image_size: int, classes=()) -> ImageSet:
    """The images of an image folder ``root/<class>/<images>`` (rdnas's image-folder reader: every format Pillow
    opens, converted to RGB) resized to ``image_size`` x ``image_size`` without cropping (box filter down, bilinear
    up): an ImageSet of uint8 [N, 3, S, S] whose labels are positions in ``classes`` (class-folder names; all of
    them, sorted, when empty) and whose ``name`` is those class names joined by newlines."""
    names, samples = find_images(root)
    wanted = list(classes) or names
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise DatasetError(f"rdnas.kd: image folder {root} has no class folder {missing[0]!r} (it has "
                           f"{', '.join(names)})")
    position = {name: k for k, name in enumerate(wanted)}
    chosen = [(path, position[names[label]]) for path, label in samples if names[label] in position]
    images = torch.stack([torch.from_numpy(np.asarray(_resized(load_rgb(path), image_size), dtype=np.uint8).copy())
                          .permute(2, 0, 1) for path, _ in chosen])
    labels = torch.tensor([label for _, label in chosen], dtype=torch.long)
    return ImageSet(images.contiguous(), labels, len(wanted), "\n".join(wanted))


def _resized(image: Image.Image, side: int) -> Image.Image:
    if image.size == (side, side):
        return image
    method = Image.Resampling.BOX if min(image.size) >= side else Image.Resampling.BILINEAR
    return image.resize((side, side), method)


def first_copies(images: Tensor) -> Tensor:
    """BoolTensor[N]: True for the first occurrence of each distinct image of ``images`` [N, ...] (in order), False
    for its exact copies, so that a copy never lands in both splits (an image folder may hold the same file twice,
    even under two classes). The bundled sources have no copies."""
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.bool)
    _, group = torch.unique(images.reshape(len(images), -1), dim=0, return_inverse=True)
    first = torch.full((int(group.max()) + 1,), len(images), dtype=torch.long)
    first.scatter_reduce_(0, group, torch.arange(len(images)), reduce="amin")
    return first[group] == torch.arange(len(images))


def split_counts(total: int, classes: int) -> list[int]:
    """``total`` spread over ``classes`` as evenly as possible, the first classes one more."""
    return [total // classes + (k < total % classes) for k in range(classes)]


def load_task_data(dataset: str, classes, image_size: int, train: int, valid: int, seed: int = 0,
                   channels: int | None = None) -> TaskData:
    """The task's normalised splits (see the module docstring).

    Args:
        dataset (str): a dataset spec (:data:`DATASET_SPECS`).
        classes (list): the task's classes (see :func:`check_classes`).
        image_size (int): side S of the square images.
        train, valid (int): images in the training and validation splits (in total over the classes).
        seed (int): the split's seed (and the glyphs' rendering seed).
        channels (int, optional): 1 or 3; a source of the other count is averaged or repeated (default: the
            source's own: 1 for fashion_mnist, digits and glyphs, 3 for image folders).
    """
    kind, folder = parse_dataset(dataset)
    classes = check_classes(dataset, classes)
    if image_size < 4 or train < 1 or valid < 1:
        raise ValueError(f"rdnas.kd.load_task_data: needs image_size >= 4 and positive train and valid, got "
                         f"{image_size}, {train}, {valid}")
    if channels not in (None, 1, 3):
        raise ValueError(f"rdnas.kd.load_task_data: channels must be 1 or 3, got {channels!r}")
    count = len(classes) if classes else None
    per_class = math.ceil((train + valid) / count) + 1 if count else 0
    images, labels, names = _pool(kind, folder, classes, image_size, per_class, seed)
    first = first_copies(images)
    train_counts, valid_counts = split_counts(train, len(names)), split_counts(valid, len(names))
    train_index, valid_index = [], []
    for k, name in enumerate(names):
        members = ((labels == k) & first).nonzero().flatten()
        if len(members) < train_counts[k] + valid_counts[k]:
            raise DatasetError(f"rdnas.kd: {dataset} has {len(members)} distinct images of class {name!r}, the task "
                               f"asks for {train_counts[k]} training and {valid_counts[k]} validation images of it")
        order = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(mix_seed(seed, k)))]
        train_index.append(order[:train_counts[k]])
        valid_index.append(order[train_counts[k]:train_counts[k] + valid_counts[k]])
    train_index, valid_index = torch.cat(train_index), torch.cat(valid_index)
    pixels = images.float() / 255.0
    if channels is not None and pixels.shape[1] != channels:
        pixels = pixels.mean(1, keepdim=True) if channels == 1 else pixels.repeat(1, channels, 1, 1)
    if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
        mode = "area" if pixels.shape[-1] >= image_size else "bilinear"
        pixels = F.interpolate(pixels, size=(image_size, image_size), mode=mode,
                               **({} if mode == "area" else {"align_corners": False}))
    train_x, valid_x = pixels[train_index], pixels[valid_index]
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    normalise = lambda x: (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
    return TaskData(normalise(train_x).contiguous(), labels[train_index], normalise(valid_x).contiguous(),
                    labels[valid_index], tuple(mean.tolist()), tuple(std.tolist()), tuple(names))


def class_folder_name(k: int, name: str) -> str:
    """The folder of class ``k`` in :func:`write_image_folder`: ``<k:03d>-<name>`` with characters that are not
    letters or digits written as ``U+XXXX`` (sorted folder names keep the class order)."""
    safe = "".join(c if c.isascii() and c.isalnum() else f"U+{ord(c):04X}" for c in str(name))
    return f"{k:03d}-{safe}"


def write_image_folder(images: ImageSet, root, class_names) -> Path:
    """Writes an ImageSet as an image folder ``root/<class folder>/<i:05d>.png`` (lossless PNG, grey for one
    channel, RGB for three; class folders named by :func:`class_folder_name`) and returns ``root``. The folder then
    makes a task with the dataset spec ``folder:<root>``."""
    root = Path(root)
    names = list(class_names)
    if len(names) != images.num_classes:
        raise ValueError(f"rdnas.kd.write_image_folder: {images.num_classes} classes but {len(names)} class names")
    channels = images.images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"rdnas.kd.write_image_folder: images need 1 or 3 channels, got {channels}")
    folders = [root / class_folder_name(k, name) for k, name in enumerate(names)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images.images, images.labels.tolist())):
        array = image[0].numpy() if channels == 1 else image.permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(array), mode="L" if channels == 1 else "RGB").save(
            folders[label] / f"{i:05d}.png")
    return root

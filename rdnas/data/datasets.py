"""Image datasets as uint8 tensors: CIFAR-10/100 and ImageNet16-120 readers, NB201's official splits, and the
scikit-learn digits bundled with scikit-learn (the one real image dataset every machine here has).

Every reader returns an ``ImageSet``: images uint8 [N, C, H, W] and labels int64 [N], in the file's order.
"""

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class DatasetError(ValueError):
    """A dataset folder or file that is missing or not in the expected format; the message names the path."""


@dataclass
class ImageSet:
    """Images and labels: ``images`` uint8 Tensor[N, C, H, W], ``labels`` int64 Tensor[N]."""

    images: Tensor
    labels: Tensor
    num_classes: int
    name: str

    def __post_init__(self):
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise DatasetError(f"{self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                               f"{list(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.name}: {self.images.shape[0]} images but labels of shape {list(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices, name: str | None = None) -> "ImageSet":
        """The images at ``indices`` (a sequence or LongTensor), in that order."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise DatasetError(f"{self.name}: split indices must lie in 0..{len(self) - 1}")
        return ImageSet(self.images[indices], self.labels[indices], self.num_classes, name or self.name)


def _unpickle(path: Path) -> dict:
    if not path.exists():
        raise DatasetError(f"missing dataset file {path}")
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable Python pickle ({error})") from None


def _rows_to_images(path: Path, data, side: int) -> Tensor:
    array = np.asarray(data, dtype=np.uint8)
    if array.ndim != 2 or array.shape[1] != 3 * side * side:
        raise DatasetError(f"{path}: expected 'data' of shape [N, {3 * side * side}], got {list(array.shape)}")
    return torch.from_numpy(array.reshape(-1, 3, side, side).copy())


def read_cifar(folder, train: bool = True, num_classes: int = 10) -> ImageSet:
    """CIFAR-10 (``cifar-10-batches-py``: data_batch_1..5 / test_batch) or CIFAR-100 (``cifar-100-python``:
    train / test, fine labels) in the standard python-pickle format."""
    folder = Path(folder)
    if num_classes == 10:
        files = [folder / f"data_batch_{k}" for k in range(1, 6)] if train else [folder / "test_batch"]
        label_key = "labels"
    elif num_classes == 100:
        files = [folder / ("train" if train else "test")]
        label_key = "fine_labels"
    else:
        raise DatasetError(f"read_cifar: num_classes must be 10 or 100, got {num_classes}")
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        if "data" not in batch or label_key not in batch:
            raise DatasetError(f"{path}: expected keys 'data' and {label_key!r}, got {sorted(batch)}")
        images.append(_rows_to_images(path, batch["data"], 32))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.long))
    name = f"cifar{num_classes}-{'train' if train else 'test'}"
    return ImageSet(torch.cat(images), torch.cat(labels), num_classes, name)


def read_imagenet16(folder, train: bool = True, num_classes: int = 120) -> ImageSet:
    """ImageNet16 (``train_data_batch_1..10`` / ``val_data``, 16x16, labels 1..1000) restricted, as NB201 does, to
    the images whose label is at most ``num_classes`` (labels shifted to 0-based)."""
    folder = Path(folder)
    files = [folder / f"train_data_batch_{k}" for k in range(1, 11)] if train else [folder / "val_data"]
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise DatasetError(f"{path}: expected keys 'data' and 'labels', got {sorted(batch)}")
        label = torch.as_tensor(batch["labels"], dtype=torch.long)
        keep = label <= num_classes
        images.append(_rows_to_images(path, batch["data"], 16)[keep])
        labels.append(label[keep] - 1)
    return ImageSet(torch.cat(images), torch.cat(labels), num_classes,
                    f"imagenet16-{num_classes}-{'train' if train else 'valid'}")


def read_split(path) -> dict[str, Tensor]:
    """An NB201 split file (``{name: ["int", [indices as strings]]}``) as {name: LongTensor}."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"missing split file {path}")
    try:
        raw = json.loads(path.read_text())
        return {name: torch.tensor([int(v) for v in value[1]], dtype=torch.long) for name, value in raw.items()}
    except (json.JSONDecodeError, TypeError, IndexError, ValueError) as error:
        raise DatasetError(f"{path}: not an NB201 split file ({error})") from None


def load_digits(side: int = 8, channels: int = 1) -> ImageSet:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; no download), as uint8 images
    scaled to 0..255, optionally resized (bilinear) to ``side`` x ``side`` and repeated to ``channels``."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)  # [N, 1, 8, 8]
    if side != 8:
        images = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).repeat(1, channels, 1, 1)
    return ImageSet(images, torch.from_numpy(bunch.target.astype(np.int64)), 10, f"digits{side}")

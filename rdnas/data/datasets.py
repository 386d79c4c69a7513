"""Image datasets as uint8 tensors: CIFAR-10/100, ImageNet16-120 and (Fashion-)MNIST readers, NB201's official
splits, and the scikit-learn digits bundled with scikit-learn (the one real image dataset every machine here has).

Every reader returns an ``ImageSet``: images uint8 [N, C, H, W] and labels int64 [N], in the file's order.
"""

import gzip
import json
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package puts the four gzipped idx files."""


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


# idx type codes -> (name, big-endian numpy dtype, torch dtype)
_IDX_TYPES = {
    0x08: ("unsigned byte", ">u1", torch.uint8),
    0x09: ("signed byte", ">i1", torch.int8),
    0x0B: ("short", ">i2", torch.int16),
    0x0C: ("int", ">i4", torch.int32),
    0x0D: ("float", ">f4", torch.float32),
    0x0E: ("double", ">f8", torch.float64),
}


def _read_bytes(path: Path, caller: str) -> bytes:
    if not path.is_file():
        raise DatasetError(f"{caller}: missing file {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{caller}: {path} is not a readable{' gzip' if path.suffix == '.gz' else ''} file "
                           f"({error})") from None


def read_idx(path) -> Tensor:
    """An array in the idx format of (Fashion-)MNIST (``*-idx1-ubyte``, ``*-idx3-ubyte``, optionally gzipped when
    the name ends in ``.gz``).

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions D, then D big-endian uint32 sizes; the data follow, big-endian, row-major.

    Returns a Tensor[d1, ..., dD] of the matching torch dtype, in native byte order. Raises ``DatasetError``
    (naming the file and what was expected) on a missing or unreadable file, a bad magic number, an unknown type
    code, or a data length that does not match the header.
    """
    path = Path(path)
    raw = _read_bytes(path, "read_idx")
    if len(raw) < 4:
        raise DatasetError(f"read_idx: {path} has {len(raw)} bytes, expected at least a 4-byte idx header")
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"read_idx: {path} has magic number 0x{raw[:4].hex()}, expected an idx file "
                           f"(0x0000 followed by a type code and the number of dimensions)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} ({name})" for c, (name, _, _) in _IDX_TYPES.items())
        raise DatasetError(f"read_idx: {path} has type code 0x{code:02X}, expected one of {known}")
    if ndim == 0:
        raise DatasetError(f"read_idx: {path} declares 0 dimensions, expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"read_idx: {path} has {len(raw)} bytes, expected a {header}-byte header for "
                           f"{ndim} dimensions")
    dims = [int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)]
    _, np_dtype, torch_dtype = _IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * np.dtype(np_dtype).itemsize
    if len(raw) != expected:
        raise DatasetError(f"read_idx: {path} has {len(raw)} bytes, expected {expected} for dimensions {dims} "
                           f"of {_IDX_TYPES[code][0]} (file truncated or not idx)")
    array = np.frombuffer(raw, dtype=np_dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(np.dtype(np_dtype).newbyteorder("="), copy=True))


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"read_fashion_mnist: missing {folder / stem} (or {stem}.gz)")


def read_fashion_mnist(folder=FASHION_MNIST_DIR, train: bool = True) -> ImageSet:
    """Fashion-MNIST (or MNIST, which uses the same file names) from ``folder``: ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte``, or the ``t10k-`` pair for ``train=False``; each raw or gzipped (``.gz``).

    Returns an ImageSet with images uint8 [N, 1, 28, 28] (N = 60,000 / 10,000 for the real files), labels int64
    [N] in 0..9, 10 classes. Raises ``DatasetError`` when a file is missing or malformed, images are not
    uint8 [N, 28, 28], labels not uint8 [N], the two counts differ, or a label lies outside 0..9.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"read_fashion_mnist: folder {folder} does not exist")
    prefix = "train" if train else "t10k"
    image_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DatasetError(f"read_fashion_mnist: {image_path} holds {images.dtype} {list(images.shape)}, expected "
                           f"uint8 [N, 28, 28]")
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise DatasetError(f"read_fashion_mnist: {label_path} holds {labels.dtype} {list(labels.shape)}, expected "
                           f"uint8 [N]")
    if len(labels) != len(images):
        raise DatasetError(f"read_fashion_mnist: {image_path} has {len(images)} images but {label_path} has "
                           f"{len(labels)} labels, expected the same count")
    if len(labels) and int(labels.max()) > 9:
        raise DatasetError(f"read_fashion_mnist: {label_path} has label {int(labels.max())}, expected 0..9")
    return ImageSet(images.unsqueeze(1).contiguous(), labels.long(), 10, f"fashion-mnist-{prefix}")


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

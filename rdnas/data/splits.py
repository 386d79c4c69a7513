"""Named datasets as training and validation splits: what ``TrainConfig.data`` names, with their normalisation."""

from dataclasses import dataclass
from pathlib import Path

import torch

from rdnas.data.datasets import (FASHION_MNIST_DIR, ImageSet, load_digits, read_cifar, read_fashion_mnist,
                                  read_imagenet16, read_split)
from rdnas.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderBatches, ImageFolderDataset
from rdnas.data.pipeline import DeviceBatches

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET16_MEAN, IMAGENET16_STD = (0.4811, 0.4575, 0.4078), (0.2605, 0.2533, 0.2683)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)  # its 60,000 training images
DATA_KINDS = ("digits", "fashion_mnist[:<dir>]", "cifar10:<dir>", "cifar100:<dir>", "imagenet16:<dir>",
              "imagenet:<dir>")


@dataclass
class DataSplits:
    """A dataset's training and validation splits: ImageSets held in memory, or (``imagenet:<dir>``) image
    folders decoded by DataLoader workers; ``mean`` / ``std`` per channel."""

    train: ImageSet | ImageFolderDataset
    valid: ImageSet | ImageFolderDataset
    mean: tuple
    std: tuple
    in_channels: int

    def training_batches(self, batch_size: int, device, generator: torch.Generator, workers: int = 0,
                         share: tuple[int, int] = (0, 1)):
        """Shuffled, augmented training batches (incomplete last batch dropped), reproducible from ``generator``:
        in-memory sets on the device with a random crop (padding 1/8 of the side) and flip (DeviceBatches); image
        folders with RandomResizedCrop and flip (ImageFolderBatches). ``share=(i, n)``: rank i's rows of each
        global batch of ``batch_size`` (n must divide it). Yields (float32 [B / n, C, H, W], int64 [B / n])."""
        if isinstance(self.train, ImageFolderDataset):
            return ImageFolderBatches(self.train, batch_size, device, workers, shuffle=True, drop_last=True,
                                      generator=generator, share=share)
        return DeviceBatches(self.train, batch_size, device, self.mean, self.std, augment=True,
                             padding=max(1, self.train.images.shape[-1] // 8), drop_last=True, generator=generator,
                             share=share)

    def evaluation_batches(self, split: str, batch_size: int, device, shuffle: bool = False,
                           generator: torch.Generator | None = None, limit: int = 0):
        """Unaugmented batches of ``split`` ("train" or "valid"; the first ``limit`` images, 0: all) for
        evaluation and BN calibration, in order or shuffled with ``generator``. Image folders decode with their
        split's transforms (a training folder keeps its random crops: calibration then sees training-like
        images) and take no ``limit``. Yields (float32 [B, C, H, W], int64 [B]) on ``device``."""
        if split not in ("train", "valid"):
            raise ValueError(f"rdnas.data.DataSplits.evaluation_batches: split must be 'train' or 'valid', got "
                             f"{split!r}")
        images = self.train if split == "train" else self.valid
        if isinstance(images, ImageFolderDataset):
            if limit:
                raise ValueError("rdnas.data.DataSplits.evaluation_batches: limit applies to in-memory datasets, "
                                 "not to image folders")
            return ImageFolderBatches(images, batch_size, device, shuffle=shuffle, generator=generator)
        if limit:
            images = images.subset(range(min(limit, len(images))))
        return DeviceBatches(images, batch_size, device, self.mean, self.std, shuffle=shuffle, generator=generator)


def load_data(config) -> DataSplits:
    """The training and validation sets named by ``config.data`` (a :class:`rdnas.train.TrainConfig` or any object
    with ``data`` and ``image_size``). CIFAR-10 uses NB201's cifar-valid protocol
    when the folder holds ``cifar-split.txt`` (train on its 25k "train" half, validate on the 25k "valid" half),
    otherwise the test batch; digits are split in two halves by a fixed permutation; Fashion-MNIST (default folder:
    Debian's ``dataset-fashion-mnist``) trains on its 60,000 training images and validates on the 10,000 test
    images; ``imagenet:<dir>`` reads ``<dir>/train`` and ``<dir>/val`` (one folder per class) at ``image_size``
    pixels (224 for ImageNet)."""
    kind, _, folder = config.data.partition(":")
    if kind == "fashion_mnist":
        folder = folder or FASHION_MNIST_DIR
        return DataSplits(read_fashion_mnist(folder, True), read_fashion_mnist(folder, False), FASHION_MNIST_MEAN,
                          FASHION_MNIST_STD, 1)
    if kind == "imagenet":
        if not folder:
            raise ValueError("rdnas.data.load_data: data 'imagenet:' names no folder; expected imagenet:<dir> with "
                             "<dir>/train and <dir>/val")
        train = ImageFolderDataset(Path(folder) / "train", True, config.image_size, normalize=False)
        valid = ImageFolderDataset(Path(folder) / "val", False, config.image_size, normalize=False)
        return DataSplits(train, valid, IMAGENET_MEAN, IMAGENET_STD, 3)
    if kind == "digits":
        digits = load_digits(side=config.image_size, channels=1)
        order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
        half = len(digits) // 2
        mean = (digits.images.float().mean().item() / 255,)
        std = (digits.images.float().std().item() / 255,)
        return DataSplits(digits.subset(order[:half], "digits-train"), digits.subset(order[half:], "digits-valid"),
                          mean, std, 1)
    if kind in ("cifar10", "cifar100"):
        classes = 10 if kind == "cifar10" else 100
        train = read_cifar(folder, train=True, num_classes=classes)
        split_file = Path(folder) / "cifar-split.txt"
        if classes == 10 and split_file.exists():
            split = read_split(split_file)
            return DataSplits(train.subset(split["train"], "cifar10-train"), train.subset(split["valid"], "cifar10-valid"),
                              CIFAR_MEAN, CIFAR_STD, 3)
        return DataSplits(train, read_cifar(folder, train=False, num_classes=classes), CIFAR_MEAN, CIFAR_STD, 3)
    if kind == "imagenet16":
        return DataSplits(read_imagenet16(folder, True), read_imagenet16(folder, False), IMAGENET16_MEAN,
                          IMAGENET16_STD, 3)
    raise ValueError(f"rdnas.data.load_data: unknown data {config.data!r}; expected one of {', '.join(DATA_KINDS)}")

"""Named datasets as training and validation splits: what ``TrainConfig.data`` names, with their normalisation."""

from dataclasses import dataclass
from pathlib import Path

import torch

from rdnas.data.datasets import ImageSet, load_digits, read_cifar, read_imagenet16, read_split

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET16_MEAN, IMAGENET16_STD = (0.4811, 0.4575, 0.4078), (0.2605, 0.2533, 0.2683)


@dataclass
class DataSplits:
    train: ImageSet
    valid: ImageSet
    mean: tuple
    std: tuple
    in_channels: int


def load_data(config) -> DataSplits:
    """The training and validation sets named by ``config.data`` (a :class:`rdnas.train.TrainConfig` or any object
    with ``data`` and ``image_size``). CIFAR-10 uses NB201's cifar-valid protocol
    when the folder holds ``cifar-split.txt`` (train on its 25k "train" half, validate on the 25k "valid" half),
    otherwise the test batch; digits are split in two halves by a fixed permutation."""
    kind, _, folder = config.data.partition(":")
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
    raise ValueError(f"rdnas.data.load_data: unknown data {config.data!r}; expected digits, cifar10:<dir>, cifar100:<dir> "
                     "or imagenet16:<dir>")

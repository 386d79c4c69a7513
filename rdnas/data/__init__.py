"""Datasets (CIFAR-10/100, ImageNet16-120, scikit-learn digits), NB201 splits, and the on-device batch pipeline."""

from rdnas.data.datasets import (
    DatasetError,
    ImageSet,
    load_digits,
    read_cifar,
    read_imagenet16,
    read_split,
)
from rdnas.data.pipeline import DeviceBatches

__all__ = ["DatasetError", "DeviceBatches", "ImageSet", "load_digits", "read_cifar", "read_imagenet16", "read_split"]

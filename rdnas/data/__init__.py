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
from rdnas.data.splits import CIFAR_MEAN, CIFAR_STD, IMAGENET16_MEAN, IMAGENET16_STD, DataSplits, load_data

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "DataSplits", "DatasetError", "DeviceBatches", "IMAGENET16_MEAN", "IMAGENET16_STD",
           "load_data", "ImageSet", "load_digits", "read_cifar", "read_imagenet16", "read_split"]

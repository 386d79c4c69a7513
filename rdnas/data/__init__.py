"""Datasets (CIFAR-10/100, ImageNet16-120, (Fashion-)MNIST idx files, ImageNet-style image folders, scikit-learn
digits), NB201 splits, the on-device batch pipeline and the image-folder batch pipeline."""

from rdnas.data.datasets import (
    FASHION_MNIST_DIR,
    DatasetError,
    ImageSet,
    load_digits,
    read_cifar,
    read_fashion_mnist,
    read_idx,
    read_imagenet16,
    read_split,
)
from rdnas.data.image_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderBatches,
    ImageFolderDataset,
    image_folder_batches,
)
from rdnas.data.pipeline import DeviceBatches
from rdnas.data.splits import (CIFAR_MEAN, CIFAR_STD, DATA_KINDS, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET16_MEAN,
                               IMAGENET16_STD, DataSplits, load_data)

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "DATA_KINDS", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "DataSplits", "DatasetError", "DeviceBatches", "FASHION_MNIST_DIR",
           "IMAGENET16_MEAN", "IMAGENET16_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderBatches",
           "ImageFolderDataset", "ImageSet", "image_folder_batches", "load_data", "load_digits", "read_cifar",
           "read_fashion_mnist", "read_idx", "read_imagenet16", "read_split"]

"""An on-device batch pipeline: the whole dataset resident on the device, batches drawn, augmented (random crop
with zero padding, horizontal flip) and normalised there, so data loading never starves a step."""

import torch
from torch import Tensor

from rdnas.data.datasets import ImageSet


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Each image [B, C, H, W] shifted by up to ``padding`` pixels in each direction (a random crop of the image
    zero-padded by ``padding``), on the images' device; the offsets come from ``generator`` (on the CPU)."""
    b, _, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(device)
    rows = (offsets[0].unsqueeze(1) + torch.arange(h, device=device)).view(b, 1, h, 1)
    cols = (offsets[1].unsqueeze(1) + torch.arange(w, device=device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=device).view(b, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def check_share(share, batch_size: int, owner: str) -> tuple[int, int]:
    """``share=(i, n)`` of a batch pipeline: 0 <= i < n and n divides ``batch_size``; ValueError naming ``owner``."""
    i, n = share
    if not 0 <= i < n:
        raise ValueError(f"{owner}: share (i, n) needs 0 <= i < n, got {share!r}")
    if batch_size % n:
        raise ValueError(f"{owner}: batch_size {batch_size} does not split into {n} equal shares (one per rank); "
                         f"use a multiple of {n}")
    return i, n


def share_bounds(batch: int, share: tuple[int, int]) -> tuple[int, int]:
    """Rows [start, stop) of share (i, n) of a batch of ``batch`` rows."""
    i, n = share
    return i * batch // n, (i + 1) * batch // n


class DeviceBatches:
    """Iterates over shuffled minibatches of an ImageSet held on ``device``.

    Args:
        data (ImageSet): uint8 images [N, C, H, W] and labels.
        batch_size (int): images per batch.
        device: where the data lives and batches are made.
        mean, std (sequence of C floats): normalisation, applied to images scaled to [0, 1].
        augment (bool): random crop (``padding`` zero pixels each side) and horizontal flip per image.
        shuffle (bool): a new permutation every epoch (from ``generator``).
        drop_last (bool): drop the last incomplete batch.
        generator (torch.Generator, optional): on the CPU; makes shuffling and augmentation reproducible.
        share ((i, n)): yield only rows [i B / n, (i + 1) B / n) of each batch (B divisible by n): rank i's share of
            a global batch of n ranks; every batch is drawn and augmented whole first, so the shares together
            are exactly the batches of ``share=(0, 1)``.

    Yields (images float32 [B / n, C, H, W], labels int64 [B / n]) on ``device``.
    """

    def __init__(self, data: ImageSet, batch_size: int, device="cpu", mean=None, std=None, augment=False,
                 padding=4, shuffle=True, drop_last=False, generator: torch.Generator | None = None,
                 share: tuple[int, int] = (0, 1)):
        if batch_size < 1:
            raise ValueError(f"rdnas.data.DeviceBatches: batch_size must be positive, got {batch_size}")
        self.share = check_share(share, batch_size, "rdnas.data.DeviceBatches")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        channels = self.images.shape[1]
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"rdnas.data.DeviceBatches: mean and std need {channels} values, got {len(mean)} and {len(std)}")
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.batch_size, self.augment, self.padding = batch_size, augment, padding
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _augment(self, images: Tensor) -> Tensor:
        cropped = random_crop(images, self.padding, self.generator)
        flip = (torch.rand(len(images), generator=self.generator) < 0.5).to(self.device).view(-1, 1, 1, 1)
        return torch.where(flip, cropped.flip(-1), cropped)

    def __iter__(self):
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            if self.drop_last and len(index) < self.batch_size:
                break
            images = self.images[index].float().div_(255.0)
            if self.augment:
                images = self._augment(images)
            labels = self.labels[index]
            if self.share[1] > 1:
                part = slice(*share_bounds(len(index), self.share))
                images, labels = images[part], labels[part]
            yield (images - self.mean) / self.std, labels

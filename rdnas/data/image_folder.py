"""ImageNet-style image folders: ``root/<class name>/<image files>``, decoded with Pillow, transformed with Pillow
and torch (no torchvision), and batched by a DataLoader whose randomness is a pure function of a seed.

Training images get a random resized crop (scale 0.08..1 of the area, aspect ratio 3/4..4/3) to
``image_size`` x ``image_size`` and a horizontal flip with probability 1/2; evaluation images are resized so their
short side is ``round(image_size / 0.875)`` and centre-cropped to ``image_size``. Both are then scaled to [0, 1] and
normalised with ``IMAGENET_MEAN`` / ``IMAGENET_STD``.

Reproducibility: the random transform of a sample draws from its own generator, seeded from the epoch's seed and
the sample's index, so results do not depend on the number of DataLoader workers nor on which worker loads what.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from rdnas.data.datasets import DatasetError
from rdnas.data.pipeline import check_share, share_bounds

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel (R, G, B) mean of ImageNet images scaled to [0, 1]."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel (R, G, B) standard deviation of ImageNet images scaled to [0, 1]."""

EVAL_CROP_FRACTION = 0.875
"""Evaluation resizes the short side to ``image_size / EVAL_CROP_FRACTION`` before the centre crop."""

_CROP_ATTEMPTS = 10
_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser over each in turn): the same in every process and run,
    unlike ``hash()``; used for the epoch seed from (seed, epoch) and each sample's seed from (epoch seed, index)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state >> 1


def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of every image format Pillow can open here."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def find_images(root) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes and samples of an image folder: one sub-folder per class (label = position of its name in
    sorted order; hidden folders skipped), holding image files (any format Pillow opens, found recursively, sorted
    by path).

    Returns (class names, [(path, label)]). Raises ``DatasetError`` when ``root`` is not a folder, holds no class
    folder, or a class folder holds no image file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"rdnas.data.ImageFolderDataset: root {root} is not an existing folder")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DatasetError(f"rdnas.data.ImageFolderDataset: root {root} has no class sub-folders, expected "
                           f"root/<class name>/<image files>")
    extensions = image_extensions()
    samples = []
    for label, name in enumerate(classes):
        files = []
        for folder, subfolders, names in os.walk(root / name, followlinks=True):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            files.extend(Path(folder) / f for f in names
                         if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions)
        if not files:
            raise DatasetError(f"rdnas.data.ImageFolderDataset: class folder {root / name} has no image files "
                               f"(expected extensions such as .jpg, .jpeg, .png)")
        samples.extend((path, label) for path in sorted(files))
    return classes, samples


def load_rgb(path) -> Image.Image:
    """The image at ``path`` decoded and converted to RGB (grey, grey+alpha, RGBA, palette, CMYK, ... inputs; an
    alpha channel is dropped). Raises ``DatasetError`` naming the file when Pillow cannot read it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DatasetError(f"rdnas.data.ImageFolderDataset: cannot read image file {path} ({error})") from None


def random_resized_box(width: int, height: int, uniforms: list[float], scale=(0.08, 1.0),
                       ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A random crop box (left, top, right, bottom) covering ``scale`` of the image's area with aspect ratio
    (width / height) in ``ratio`` (log-uniform), from ``4 * 10`` uniforms in [0, 1): up to 10 attempts, each
    drawing area, log-ratio and the two offsets. When no attempt fits, the largest centred box whose ratio is
    ``ratio`` clamped."""
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for attempt in range(_CROP_ATTEMPTS):
        u_area, u_ratio, u_top, u_left = uniforms[4 * attempt:4 * attempt + 4]
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_low + (log_high - log_low) * u_ratio)
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u_top * (height - h + 1)), height - h)
            left = min(int(u_left * (width - w + 1)), width - w)
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(image: Image.Image, image_size: int, generator: torch.Generator) -> Image.Image:
    """A random resized crop of ``image`` to ``image_size`` x ``image_size`` (bilinear), flipped horizontally with
    probability 1/2; all randomness from ``generator`` (41 uniforms)."""
    uniforms = torch.rand(4 * _CROP_ATTEMPTS + 1, generator=generator, dtype=torch.float64).tolist()
    box = random_resized_box(image.width, image.height, uniforms[:-1])
    crop = image.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if uniforms[-1] < 0.5 else crop


def eval_transform(image: Image.Image, image_size: int) -> Image.Image:
    """``image`` resized (bilinear, aspect kept) so its short side is ``round(image_size / 0.875)``, then the
    centred ``image_size`` x ``image_size`` crop."""
    short = round(image_size / EVAL_CROP_FRACTION)
    if image.width <= image.height:
        size = (short, max(short, round(image.height * short / image.width)))
    else:
        size = (max(short, round(image.width * short / image.height)), short)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    return image.crop((left, top, left + image_size, top + image_size))


def to_uint8_tensor(image: Image.Image) -> Tensor:
    """An RGB Pillow image as uint8 Tensor[3, H, W]."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def normalize(images: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """uint8 images Tensor[..., 3, H, W] as float32 scaled to [0, 1], minus ``mean``, over ``std`` (per channel)."""
    mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images.float().div_(255.0) - mean).div_(std)


class ImageFolderDataset(torch.utils.data.Dataset):
    """An image folder ``root/<class>/<images>`` as a torch Dataset.

    Args:
        root: the folder; classes are its sub-folders in sorted order (labels 0..C-1).
        train (bool): random resized crop + flip (seeded) if True, resize + centre crop otherwise.
        image_size (int): the side S of the square output.
        seed (int): the training transform of sample ``i`` at epoch ``e`` draws from a generator seeded with
            ``mix_seed(mix_seed(seed, e), i)``; set the epoch with ``set_epoch``.
        normalize (bool): return float32 normalised with ``mean``/``std`` (default) or the uint8 pixels.
        mean, std (3 floats): normalisation of images scaled to [0, 1]; default ImageNet's.

    ``dataset[i]`` is (image float32 Tensor[3, S, S] (uint8 if ``normalize=False``), label int). ``dataset[(i, s)]``
    uses ``s`` as the sample's seed instead (what ``ImageFolderBatches`` passes, so workers need no epoch state).
    Attributes: ``classes`` (names), ``class_to_idx``, ``samples`` ([(path, label)]), ``labels`` (int64 [N]).
    """

    def __init__(self, root, train: bool, image_size: int = 224, seed: int = 0, normalize: bool = True,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if image_size < 1:
            raise ValueError(f"rdnas.data.ImageFolderDataset: image_size must be positive, got {image_size}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"rdnas.data.ImageFolderDataset: mean and std need 3 values, got {len(mean)} and "
                             f"{len(std)}")
        self.root = Path(root)
        self.train, self.image_size, self.seed, self.normalize = train, image_size, seed, normalize
        self.mean, self.std = tuple(mean), tuple(std)
        self.classes, self.samples = find_images(self.root)
        self.class_to_idx = {name: label for label, name in enumerate(self.classes)}
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose random transforms plain ``dataset[i]`` draws."""
        self.epoch = epoch

    def sample_seed(self, index: int, epoch_seed: int | None = None) -> int:
        """The seed of sample ``index``'s random transform: from ``epoch_seed`` (default ``mix_seed(seed, epoch)``)."""
        epoch_seed = mix_seed(self.seed, self.epoch) if epoch_seed is None else epoch_seed
        return mix_seed(epoch_seed, index)

    def __getitem__(self, key) -> tuple[Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not -len(self) <= index < len(self):
            raise IndexError(f"rdnas.data.ImageFolderDataset: index {index} out of range for {len(self)} images")
        index %= len(self)
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.train:
            seed = self.sample_seed(index) if seed is None else seed
            image = train_transform(image, self.image_size, torch.Generator().manual_seed(seed))
        else:
            image = eval_transform(image, self.image_size)
        pixels = to_uint8_tensor(image)
        return (normalize(pixels, self.mean, self.std) if self.normalize else pixels), label


def _collate(items):
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


class ImageFolderBatches:
    """Minibatches of an ImageFolderDataset decoded by ``workers`` DataLoader processes and normalised on
    ``device``; the same iteration interface as ``DeviceBatches``.

    Every pass (``iter``) draws one 63-bit epoch seed from ``generator`` (on the CPU); the shuffled order and every
    sample's transform follow from it, so ``generator.get_state()`` / ``set_state()`` resume the sequence exactly
    and the result is the same for any ``workers``. ``set_epoch(e)`` instead reseeds ``generator`` with
    ``mix_seed(seed, e)``, making epoch ``e`` a pure function of (seed, e).

    Args:
        dataset (ImageFolderDataset): with ``normalize=False`` (uint8 pixels travel; normalisation happens on the
            device with the dataset's ``mean``/``std``).
        batch_size (int): images per batch.
        device: where batches go.
        workers (int): DataLoader worker processes (0: load in this process).
        seed (int): for ``set_epoch`` and the default ``generator``.
        shuffle (bool): a new order every pass.
        drop_last (bool): drop the last incomplete batch.
        generator (torch.Generator, optional): on the CPU; default seeded with ``seed``.
        share ((i, n)): decode and yield only rows [i B / n, (i + 1) B / n) of each batch (B divisible by n): rank
            i's share of a global batch of n ranks (each sample's transform follows from its key, so the shares
            together are exactly the batches of ``share=(0, 1)``).

    Yields (images float32 [B / n, 3, S, S], labels int64 [B / n]) on ``device``; ``len()`` is the batches per pass.
    """

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, device="cpu", workers: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, generator: torch.Generator | None = None,
                 share: tuple[int, int] = (0, 1)):
        if batch_size < 1:
            raise ValueError(f"rdnas.data.ImageFolderBatches: batch_size must be positive, got {batch_size}")
        self.share = check_share(share, batch_size, "rdnas.data.ImageFolderBatches")
        if workers < 0:
            raise ValueError(f"rdnas.data.ImageFolderBatches: workers must be >= 0, got {workers}")
        if dataset.normalize:
            raise ValueError("rdnas.data.ImageFolderBatches: dataset must have normalize=False (uint8 pixels are "
                             "normalised on the device)")
        self.dataset, self.batch_size, self.workers, self.seed = dataset, batch_size, workers, seed
        self.device = torch.device(device)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(dataset.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(dataset.std, device=self.device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` of this seed (reseeds ``generator`` with ``mix_seed(seed, epoch)``)."""
        self.generator.manual_seed(mix_seed(self.seed, epoch))

    def batch_keys(self, epoch_seed: int) -> list[list[tuple[int, int]]]:
        """The pass's batches as lists of (sample index, sample seed), from the epoch seed."""
        n = len(self.dataset)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed)) if self.shuffle
                 else torch.arange(n)).tolist()
        stop = n - n % self.batch_size if self.drop_last else n
        return [[(i, mix_seed(epoch_seed, i)) for i in order[start:start + self.batch_size]]
                for start in range(0, stop, self.batch_size)]

    def __iter__(self):
        epoch_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self.generator))
        keys = self.batch_keys(epoch_seed)
        if self.share[1] > 1:
            keys = [batch[slice(*share_bounds(len(batch), self.share))] for batch in keys]
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=keys,
                                             num_workers=self.workers, collate_fn=_collate,
                                             pin_memory=self.device.type == "cuda")
        batches, failure = iter(loader), None
        try:
            for images, labels in batches:
                images = images.to(self.device, non_blocking=True).float().div_(255.0)
                yield (images - self.mean) / self.std, labels.to(self.device, non_blocking=True)
        except Exception as error:
            # The traceback holds the loader iterator's frames; kept, its workers would outlive the error and be
            # shut down only by the cycle collector (seconds of join timeouts). The message names the file.
            failure = error.with_traceback(None)
        del batches
        if failure is not None:
            raise failure


def image_folder_batches(root, train: bool, batch_size: int, image_size: int = 224, workers: int = 0, seed: int = 0,
                         device="cpu", drop_last: bool | None = None,
                         generator: torch.Generator | None = None) -> ImageFolderBatches:
    """Batches of the image folder ``root`` (see ``ImageFolderDataset`` and ``ImageFolderBatches``): shuffled,
    randomly cropped and flipped when ``train``, in file order with the centre crop otherwise. ``drop_last``
    defaults to ``train``.

    Yields (images float32 [B, 3, image_size, image_size] normalised with ImageNet's mean/std, labels int64 [B])
    on ``device``.
    """
    dataset = ImageFolderDataset(root, train, image_size, seed=seed, normalize=False)
    return ImageFolderBatches(dataset, batch_size, device, workers, seed, shuffle=train,
                              drop_last=train if drop_last is None else drop_last, generator=generator)

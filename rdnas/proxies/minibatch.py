"""The minibatch a zero-cost proxy sees, loaded from a short spec string (``rdnas proxies --data``).

Specs:

- ``random`` or ``random:C,H,W,classes`` (e.g. ``random:3,8,8,10``): Gaussian N(0, 1) images (3x32x32, 10 classes
  by default) and uniform labels, drawn from a generator seeded with ``seed``; ``batch_index`` k takes the k-th
  batch of that stream.
- ``npz:<path>``: a NumPy archive of ready-made minibatches, such as ``../shared/data/cifar_minibatches/
  freerea_cifar10_train_minibatches.npz``. Keys ``x_b{batch_size}`` (Tensor[M, batch_size, C, H, W]) and
  ``y_b{batch_size}`` (Tensor[M, batch_size]); ``batch_index`` picks one of the M batches. An archive with plain
  ``x`` ([N, C, H, W]) and ``y`` ([N]) keys is cut into consecutive batches of ``batch_size`` instead. uint8
  images are scaled by 1/255 and normalised with the CIFAR mean and std of :mod:`rdnas.train.trainer` (the constants
  rdnas trains with); floating-point images are taken as already normalised. The number of classes is 100 when
  the file name contains ``cifar100`` or any label of the archive is 10 or more, else 10 (``num_classes``
  overrides it).
- ``cifar10:<dir>``, ``cifar100:<dir>``, ``imagenet16:<dir>``: one batch of training images drawn without
  replacement by a permutation seeded with ``seed`` (batch ``batch_index`` of that permutation), no augmentation,
  normalised with the dataset's mean and std.
- ``digits``: scikit-learn's 8x8 digits resized to ``image_size`` (32 by default), repeated to 3 channels, drawn
  as for CIFAR and normalised with the digits' own mean and std.

``image_size``, when given, also resizes (bilinear) the images of the file-backed specs and sets H = W of
``random``.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rdnas.proxies.base import Minibatch

SPECS = ("random", "random:C,H,W,classes", "npz:<path>", "cifar10:<dir>", "cifar100:<dir>", "imagenet16:<dir>",
         "digits")
_WHERE = "rdnas.proxies.load_minibatch"


def _fail(message: str) -> ValueError:
    return ValueError(f"{_WHERE}: {message}")


def _normalised(images: Tensor, mean, std) -> Tensor:
    """uint8 [B, C, H, W] -> float32, scaled to [0, 1] and normalised per channel."""
    x = images.float().div_(255.0)
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _resized(images: Tensor, image_size: int | None) -> Tensor:
    if image_size is None or tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    return F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)


def _batch_positions(count: int, batch_size: int, seed: int, batch_index: int, name: str) -> Tensor:
    batches = count // batch_size
    if batch_index >= batches:
        raise _fail(f"batch_index {batch_index} is out of range: {name} has {count} images, {batches} batches of "
                    f"batch_size {batch_size}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[batch_index * batch_size:(batch_index + 1) * batch_size]


def _random(arguments: str, batch_size: int, seed: int, batch_index: int, image_size: int | None) -> Minibatch:
    channels, height, width, classes = 3, 32, 32, 10
    if arguments:
        try:
            channels, height, width, classes = (int(v) for v in arguments.split(","))
        except ValueError:
            raise _fail(f"spec 'random:{arguments}': expected random:C,H,W,classes with four positive integers, "
                        "e.g. random:3,32,32,10") from None
        if min(channels, height, width, classes) < 1:
            raise _fail(f"spec 'random:{arguments}': C, H, W and classes must be positive")
    if image_size is not None:
        height = width = image_size
    generator = torch.Generator().manual_seed(seed)
    for _ in range(batch_index + 1):  # batch k is the k-th draw of the seeded stream
        inputs = torch.randn(batch_size, channels, height, width, generator=generator)
        targets = torch.randint(0, classes, (batch_size,), generator=generator)
    source = f"random:{channels},{height},{width},{classes} (seed {seed}, batch {batch_index})"
    return Minibatch(inputs, targets, classes, source)


def _npz(path_text: str, batch_size: int, batch_index: int, image_size: int | None,
         num_classes: int | None) -> Minibatch:
    from rdnas.data import CIFAR_MEAN, CIFAR_STD

    path = Path(path_text)
    if not path_text:
        raise _fail("spec 'npz:' names no file; expected npz:<path to a .npz archive>")
    if not path.is_file():
        raise FileNotFoundError(f"{_WHERE}: no minibatch archive at {path} (spec 'npz:{path_text}')")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise _fail(f"{path} is not a readable .npz archive ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _fail(f"{path} is a single .npy array, not a .npz archive; expected keys x_b<B>/y_b<B> or x/y "
                    "(numpy.savez)")
    with archive:
        keys = set(archive.files)
        x_key, y_key = f"x_b{batch_size}", f"y_b{batch_size}"
        if x_key in keys:
            if y_key not in keys:
                raise _fail(f"{path} has {x_key!r} but no labels {y_key!r} (keys: {sorted(keys)})")
            images, labels = archive[x_key], archive[y_key]
            if images.ndim != 5 or images.shape[1] != batch_size or labels.shape != images.shape[:2]:
                raise _fail(f"{path}: expected {x_key} of shape [M, {batch_size}, C, H, W] and {y_key} of shape "
                            f"[M, {batch_size}], got {list(images.shape)} and {list(labels.shape)}")
            if not 0 <= batch_index < images.shape[0]:
                raise _fail(f"batch_index {batch_index} is out of range: {path} holds {images.shape[0]} batches "
                            f"of {batch_size} ({x_key})")
            x, y, where = images[batch_index], labels[batch_index], f"{x_key}[{batch_index}]"
        elif {"x", "y"} <= keys:
            images, labels = archive["x"], archive["y"]
            if images.ndim != 4 or labels.shape != images.shape[:1]:
                raise _fail(f"{path}: expected x of shape [N, C, H, W] and y of shape [N], got "
                            f"{list(images.shape)} and {list(labels.shape)}")
            start = batch_index * batch_size
            if start + batch_size > len(images):
                raise _fail(f"batch_index {batch_index} is out of range: {path} holds {len(images)} images, "
                            f"{len(images) // batch_size} batches of batch_size {batch_size}")
            x, y, where = images[start:start + batch_size], labels[start:start + batch_size], \
                f"x[{start}:{start + batch_size}]"
        else:
            sizes = sorted(int(k[3:]) for k in keys if k.startswith("x_b") and k[3:].isdigit())
            if sizes:
                raise _fail(f"{path} has no batches of batch_size {batch_size} (no key {x_key!r}); it holds "
                            f"batch sizes {sizes}: pass one of them as batch_size (--batch-size)")
            raise _fail(f"{path} has neither x_b<batch size>/y_b<batch size> nor x/y keys (keys: {sorted(keys)})")
        all_labels = labels
    if not np.issubdtype(y.dtype, np.integer):
        raise _fail(f"{path}: labels must be integers, got {y.dtype}")
    if num_classes is None:
        num_classes = 100 if "cifar100" in path.name or int(all_labels.max(initial=0)) >= 10 else 10
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise _fail(f"{path}: labels of {where} must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    inputs = torch.from_numpy(np.ascontiguousarray(x))
    if inputs.dtype == torch.uint8:
        if inputs.shape[1] != len(CIFAR_MEAN):
            raise _fail(f"{path}: uint8 images are normalised with the 3-channel CIFAR mean/std, got "
                        f"{inputs.shape[1]} channels")
        inputs = _normalised(inputs, CIFAR_MEAN, CIFAR_STD)
    elif inputs.is_floating_point():
        inputs = inputs.float()
    else:
        raise _fail(f"{path}: images must be uint8 (0..255) or floating point, got {inputs.dtype}")
    inputs = _resized(inputs, image_size)
    targets = torch.from_numpy(np.ascontiguousarray(y)).long()
    return Minibatch(inputs, targets, num_classes, f"npz:{path} {where}")


def _image_set(kind: str, folder: str, image_size: int | None):
    """(ImageSet, mean, std) of the training images of a dataset spec."""
    from rdnas.data import load_digits, read_cifar, read_imagenet16
    from rdnas.data import CIFAR_MEAN, CIFAR_STD, IMAGENET16_MEAN, IMAGENET16_STD

    if kind == "digits":
        digits = load_digits(side=image_size or 32, channels=3)
        mean = digits.images.float().mean().item() / 255
        std = digits.images.float().std().item() / 255
        return digits, (mean,) * 3, (std,) * 3
    if not folder:
        raise _fail(f"spec '{kind}:' names no folder; expected {kind}:<dir>")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{_WHERE}: no dataset folder at {folder} (spec '{kind}:{folder}')")
    if kind in ("cifar10", "cifar100"):
        return read_cifar(folder, train=True, num_classes=10 if kind == "cifar10" else 100), CIFAR_MEAN, CIFAR_STD
    return read_imagenet16(folder, train=True), IMAGENET16_MEAN, IMAGENET16_STD


def load_minibatch(spec: str, batch_size: int = 64, seed: int = 0, batch_index: int = 0,
                   image_size: int | None = None, *, num_classes: int | None = None) -> Minibatch:
    """The minibatch named by ``spec`` (see the module docstring for the specs), on the CPU.

    Args:
        spec (str): ``random``, ``random:C,H,W,classes``, ``npz:<path>``, ``cifar10:<dir>``, ``cifar100:<dir>``,
            ``imagenet16:<dir>`` or ``digits``.
        batch_size (int): B, images in the batch (for ``npz:``, selects the key ``x_b{B}``).
        seed (int): seeds the random images, or the permutation the dataset batch is drawn from.
        batch_index (int): which batch: of the archive, of the seeded permutation, of the random stream.
        image_size (int, optional): digits' side (default 32); resizes the other sources when given.
        num_classes (int, optional): ``npz:`` only: overrides the inferred number of classes.

    Returns:
        Minibatch: ``inputs`` float32 Tensor[B, C, H, W] (normalised), ``targets`` LongTensor[B], ``num_classes``,
        and ``source`` describing where the batch came from (written into score tables).
    """
    if not isinstance(spec, str) or not spec:
        raise _fail(f"spec must be a non-empty string, one of {', '.join(SPECS)}; got {spec!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise _fail(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(batch_index, int) or batch_index < 0:
        raise _fail(f"batch_index must be a non-negative integer, got {batch_index!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise _fail(f"image_size must be a positive integer or None, got {image_size!r}")
    if num_classes is not None and not spec.startswith("npz:"):
        raise _fail(f"num_classes applies to npz: specs only; spec {spec!r} sets its own")
    kind, _, argument = spec.partition(":")
    if kind == "random":
        return _random(argument, batch_size, seed, batch_index, image_size)
    if kind == "npz":
        return _npz(argument, batch_size, batch_index, image_size, num_classes)
    if kind in ("cifar10", "cifar100", "imagenet16", "digits"):
        if kind == "digits" and argument:
            raise _fail(f"spec {spec!r}: digits takes no argument (use image_size for the side)")
        images, mean, std = _image_set(kind, argument, image_size)
        chosen = images.subset(_batch_positions(len(images), batch_size, seed, batch_index, images.name))
        inputs = _resized(_normalised(chosen.images, mean, std), image_size if kind != "digits" else None)
        where = f"{kind}:{argument}" if argument else kind
        source = f"{where} {images.name} (seed {seed}, batch {batch_index} of {batch_size})"
        return Minibatch(inputs, chosen.labels.long(), images.num_classes, source)
    raise _fail(f"unknown spec {spec!r}; expected one of {', '.join(SPECS)}")

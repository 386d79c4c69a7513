"""Zero-cost proxies on ResNet48 (scored through export(arch)) against the space's FLOPs: a sanity check that every
proxy works outside NB201 and how strongly each follows network size.

Protocol: ``--archs`` codes drawn by ``space.sample`` from a generator seeded with ``--seed`` (default 200 and 0);
the scoring supernet ``scoring_supernet(space="resnet48", resnet_stem="small", width_divisor=8)`` for 1-channel
inputs and 10 classes (PyTorch's default init, seed 0); one Fashion-MNIST minibatch: ``--batch-size`` training
images (64) drawn by a permutation seeded with ``--seed``, scaled to [0, 1], normalised with the Fashion-MNIST
mean and std and resized (bilinear) to ``--image-size`` (16). The scores go to a resumable table (``score_space``,
``--out``); the report is Kendall tau-b (scipy) between each proxy and ``space.cost(archs)["flops"]`` with the
same options (the competition's FLOP conventions), over the architectures with a finite score::

    OMP_NUM_THREADS=1 python benchmarks/resnet48_proxies_vs_flops.py --out /tmp/resnet48_proxies.csv
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau

from rdnas.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, read_fashion_mnist
from rdnas.proxies import PROXIES, Minibatch, score_space
from rdnas.spaces import get_space

OPTIONS = dict(resnet_stem="small", width_divisor=8)


def fashion_mnist_minibatch(batch_size: int, image_size: int, seed: int) -> Minibatch:
    """``batch_size`` Fashion-MNIST training images (a seeded permutation's first), normalised and resized:
    inputs float32 [B, 1, image_size, image_size], targets [B]."""
    images = read_fashion_mnist()
    positions = torch.randperm(len(images.labels), generator=torch.Generator().manual_seed(seed))[:batch_size]
    x = images.images[positions].float().div_(255.0)
    x = (x - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return Minibatch(x, images.labels[positions].long(), 10,
                     f"fashion_mnist train, {batch_size} images (seed {seed}), resized to {image_size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--proxies", default=",".join(PROXIES))
    parser.add_argument("--out", required=True, help="the score table (resumable)")
    args = parser.parse_args()

    space = get_space("resnet48")
    archs = space.sample(args.archs, torch.Generator().manual_seed(args.seed))
    minibatch = fashion_mnist_minibatch(args.batch_size, args.image_size, args.seed)
    started = time.perf_counter()
    table = score_space(args.proxies, minibatch, space="resnet48", archs=archs, out=args.out, archs_per_chunk=20,
                        **OPTIONS)
    flops = space.cost(archs, image_size=args.image_size, num_classes=10, in_channels=1, **OPTIONS)["flops"].numpy()
    print(f"{len(table)} ResNet48 codes (space.sample, seed {args.seed}), resnet_stem=small, width_divisor=8, "
          f"{minibatch.source}; scored in {time.perf_counter() - started:.0f} s "
          f"({table.info['written']} now, {table.info['already_present']} resumed)")
    print("| proxy | Kendall tau vs space.cost flops | finite |")
    print("|---|---|---|")
    for name in table.names:
        values = table.column(name)
        finite = np.isfinite(values)
        tau = kendalltau(values[finite], flops[finite]).statistic if finite.sum() > 1 else float("nan")
        print(f"| {name} | {tau:+.3f} | {int(finite.sum())}/{len(values)} |")


if __name__ == "__main__":
    main()

"""Building a mini-benchmark: stand-alone training of sampled NB201 architectures on a small real dataset.

No CIFAR images exist on the machines rdnas is developed on, so the rank quality of a supernet is measured on a
task whose ground truth rdnas makes itself: a sample of architectures, each trained from scratch with one fixed
recipe (:class:`Recipe`) and several seeds, evaluated on a held-out split. Networks train side by side in
:class:`~rdnas.minibench.stacked.StackedNB201` stacks (one grouped op per layer for the whole stack); each network
has its own initialisation and data order, derived from its seed and architecture alone, so a result does not
depend on which other networks shared its stack.

Every finished (architecture, seed) run is appended to ``runs.csv`` (flushed and fsynced per stack), so a killed
build resumes without losing or repeating a run; ``benchmark_table`` averages the runs into a table in the format
of NAS-Bench-201's ``nb201_gt.csv`` (``index``, ``arch_str``, numeric columns).
"""

import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rdnas.atomic_file import atomic_open
from rdnas.data import load_digits
from rdnas.data.pipeline import random_crop
from rdnas.minibench.stacked import StackedNB201
from rdnas.train.checkpoint import config_from_dict
from rdnas.spaces import nb201

RUN_COLUMNS = ("enumeration_index", "arch_str", "seed", "valid_acc", "valid_loss", "train_loss", "seconds")


@dataclass(frozen=True)
class Recipe:
    """How every architecture of a mini-benchmark is trained (saved with the build; a resume must match).

    The digits split is rdnas's (``rdnas.train.load_data``): a fixed permutation, first half for training, second
    half for validation, so a supernet trained on the same training half is evaluated on the benchmark's split.
    """

    dataset: str = "digits"
    image_size: int = 8  # digits are 8x8; larger sizes upsample (no new information, 4x the compute at 16)
    channels: int = 8  # C of the macro network
    cells_per_stage: int = 1  # N
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False  # random translation by up to one pixel
    train_images: int = 0  # train on the first this many images of the training half (0: all 898)
    networks_per_stack: int = 64

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        return config_from_dict(cls, values, "rdnas.minibench.Recipe")


def digits_split(image_size: int) -> tuple:
    """(train images, train labels, valid images, valid labels): float32 images scaled to zero mean and unit
    variance over the whole set, the halves of rdnas's fixed digits permutation."""
    digits = load_digits(side=image_size, channels=1)
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    images = digits.images.float() / 255.0
    images = (images - images.mean()) / images.std()
    half = len(digits) // 2
    train, valid = order[:half], order[half:]
    return images[train], digits.labels[train], images[valid], digits.labels[valid]


def network_seed(seed: int, arch) -> int:
    """The seed of one (architecture, seed) run: initial weights and data order come from it alone."""
    return int(seed) * 1_000_003 + nb201.enumeration_index(arch)


def sample_architectures(count: int, seed: int = 0) -> list[tuple]:
    """``count`` connected architectures, no two of which NAS-Bench-201 counts as the same network
    (:func:`rdnas.spaces.nb201.canonical_string`), drawn uniformly at random with ``seed``."""
    everything = nb201.all_archs()
    order = torch.randperm(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(seed))
    chosen, seen = [], set()
    for index in order.tolist():
        arch = tuple(everything[index].tolist())
        if not nb201.is_connected(arch):
            continue
        key = nb201.canonical_string(arch)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(arch)
        if len(chosen) == count:
            return chosen
    raise ValueError(f"rdnas.minibench.sample_architectures: only {len(chosen)} distinct connected architectures exist")


def train_stack(archs: list[tuple], seeds: list[int], recipe: Recipe, data: tuple, device="cpu") -> list[dict]:
    """Trains one stack of networks (network m: ``archs[m]`` with ``seeds[m]``) with ``recipe`` and returns one
    result per network: validation accuracy (%), validation cross-entropy and last-epoch training loss."""
    device = torch.device(device)
    train_x, train_y, valid_x, valid_y = data
    if recipe.train_images:
        train_x, train_y = train_x[:recipe.train_images], train_y[:recipe.train_images]
    m = len(archs)
    network_seeds = [network_seed(s, a) for a, s in zip(archs, seeds)]
    stack = StackedNB201(archs, network_seeds, recipe.channels, recipe.cells_per_stage, 10, 1).to(device)
    optimizer = torch.optim.SGD(stack.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=True)
    steps_per_epoch = len(train_x) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"rdnas.minibench.train_stack: {len(train_x)} training images make no batch of "
                         f"batch_size {recipe.batch_size}; raise train_images or lower batch_size")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps_per_epoch)
    generators = [torch.Generator().manual_seed(s) for s in network_seeds]
    train_x, train_y = train_x.to(device), train_y.to(device)
    start = time.perf_counter()
    stack.train()
    for _ in range(recipe.epochs):
        orders = torch.stack([torch.randperm(len(train_x), generator=g) for g in generators]).to(device)  # [M, n]
        epoch_loss = torch.zeros(m, device=device)
        for step in range(steps_per_epoch):
            index = orders[:, step * recipe.batch_size:(step + 1) * recipe.batch_size]  # [M, B]
            images = train_x[index]  # [M, B, 1, H, W]
            if recipe.augment:
                images = torch.stack([random_crop(images[k], 1, g) for k, g in enumerate(generators)])
            logits = stack(images.transpose(0, 1))  # [B, M, classes]
            per_network = F.cross_entropy(logits.flatten(0, 1), train_y[index].t().flatten(),
                                          reduction="none").view(-1, m).mean(0)
            optimizer.zero_grad(set_to_none=True)
            per_network.sum().backward()  # each network's gradient comes from its own loss only
            optimizer.step()
            scheduler.step()
            epoch_loss += per_network.detach()
    valid_loss, valid_correct = evaluate_stack(stack, valid_x.to(device), valid_y.to(device))
    seconds = (time.perf_counter() - start) / m
    train_loss = (epoch_loss / steps_per_epoch).cpu()
    return [{"enumeration_index": nb201.enumeration_index(a), "arch_str": nb201.to_string(a), "seed": int(s),
             "valid_acc": 100.0 * float(valid_correct[k]) / len(valid_y), "valid_loss": float(valid_loss[k]),
             "train_loss": float(train_loss[k]), "seconds": seconds}
            for k, (a, s) in enumerate(zip(archs, seeds))]


@torch.no_grad()
def evaluate_stack(stack: StackedNB201, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512):
    """Mean cross-entropy Tensor[M] and correct counts Tensor[M] of every network on one split (eval-mode BN)."""
    stack.eval()
    loss_sum = torch.zeros(stack.num_networks, dtype=torch.float64, device=images.device)
    correct = torch.zeros(stack.num_networks, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        logits = stack(x)  # [B, M, classes]
        targets = y.view(-1, 1).expand(-1, stack.num_networks)
        loss_sum += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(len(y), -1).sum(0).double()
        correct += (logits.argmax(-1) == targets).sum(0).double()
    return (loss_sum / len(images)).cpu(), correct.cpu()


def _complete_lines(path: Path) -> bytes:
    """The bytes of ``path`` up to the end of its last complete line (a build killed mid-write, or a full disk,
    can leave a partial last line)."""
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1]


def read_runs(path) -> list[dict]:
    """The finished runs of a build (``runs.csv``), numeric fields converted; an incomplete last line (a build
    killed while writing it) is not a run and is ignored (``build`` cuts it off before appending)."""
    path = Path(path)
    if not path.exists():
        return []
    text = _complete_lines(path).decode()
    rows = list(csv.DictReader(text.splitlines()))
    for number, row in enumerate(rows, start=2):
        try:
            row["enumeration_index"], row["seed"] = int(row["enumeration_index"]), int(row["seed"])
            for name in ("valid_acc", "valid_loss", "train_loss", "seconds"):
                row[name] = float(row[name])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"rdnas.minibench.read_runs: {path}:{number}: not a run row "
                             f"({type(error).__name__}: {error})") from None
    return rows


def build(out_dir, archs: list[tuple], seeds: list[int], recipe: Recipe = Recipe(), device="cpu",
          progress: bool = True) -> list[dict]:
    """Trains every (architecture, seed) pair not yet in ``out_dir/runs.csv`` and returns all runs.

    ``out_dir/recipe.json`` records the recipe; resuming with another recipe is refused. Runs are appended one
    stack at a time (flushed and fsynced), so an interrupted build loses at most the stack in progress.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "recipe.json"
    if recipe_path.exists():
        saved = Recipe.from_dict(json.loads(recipe_path.read_text()))
        if saved != recipe:
            raise ValueError(f"rdnas.minibench.build: {out} was built with {saved}, not {recipe}; use another "
                             "out_dir or the same recipe")
    else:
        recipe_path.write_text(json.dumps(asdict(recipe), indent=2))
    runs_path = out / "runs.csv"
    runs = read_runs(runs_path)
    done = {(r["enumeration_index"], r["seed"]) for r in runs}
    todo = [(a, s) for s in seeds for a in archs if (nb201.enumeration_index(a), s) not in done]
    if recipe.dataset != "digits":
        raise ValueError(f"rdnas.minibench.build: dataset must be 'digits', got {recipe.dataset!r}")
    data = digits_split(recipe.image_size)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="training networks", unit="net", disable=not progress)
    new_file = not runs_path.exists()
    if not new_file:
        complete = len(_complete_lines(runs_path))
        if complete < runs_path.stat().st_size:
            with open(runs_path, "r+b") as handle:  # the partial last line read_runs ignored: cut it off
                handle.truncate(complete)
    with open(runs_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
        if new_file:
            writer.writeheader()
        for start in range(0, len(todo), recipe.networks_per_stack):
            chunk = todo[start:start + recipe.networks_per_stack]
            results = train_stack([a for a, _ in chunk], [s for _, s in chunk], recipe, data, device)
            writer.writerows(results)
            handle.flush()
            os.fsync(handle.fileno())
            runs.extend(results)
            bar.update(len(chunk))
    bar.close()
    return runs


def benchmark_table(runs: list[dict], seeds=None) -> dict:
    """Averages runs over seeds: {enumeration index: {"arch_str", "valid_acc", "valid_loss", "seeds"}}, keeping
    only architectures that have every seed in ``seeds`` (default: every seed present in the runs)."""
    seeds = sorted({r["seed"] for r in runs}) if seeds is None else sorted(seeds)
    by_arch = {}
    for r in runs:
        if r["seed"] in seeds:
            by_arch.setdefault(r["enumeration_index"], {})[r["seed"]] = r
    table = {}
    for index, per_seed in sorted(by_arch.items()):
        if len(per_seed) != len(seeds):
            continue
        rows = [per_seed[s] for s in seeds]
        table[index] = {"arch_str": rows[0]["arch_str"], "seeds": len(rows),
                        "valid_acc": float(np.mean([r["valid_acc"] for r in rows])),
                        "valid_loss": float(np.mean([r["valid_loss"] for r in rows])),
                        "valid_acc_std": float(np.std([r["valid_acc"] for r in rows]))}
    return table


def reliability(runs: list[dict], seeds_a, seeds_b) -> dict:
    """Kendall tau between two independent builds (disjoint seed sets) of the same architectures, on mean
    validation accuracy and on mean validation loss (negated, so both are higher = better)."""
    from rdnas.rank import kendall_tau

    overlap = sorted(set(seeds_a) & set(seeds_b))
    if overlap:
        raise ValueError(f"rdnas.minibench.reliability: seeds_a and seeds_b must be disjoint (two independent "
                         f"builds), both have {overlap}")
    a, b = benchmark_table(runs, seeds_a), benchmark_table(runs, seeds_b)
    common = sorted(set(a) & set(b))
    if len(common) < 3:
        raise ValueError("rdnas.minibench.reliability: fewer than 3 architectures have every seed of both builds")
    return {"architectures": len(common), "seeds_a": sorted(seeds_a), "seeds_b": sorted(seeds_b),
            "kendall_tau_valid_acc": kendall_tau([a[i]["valid_acc"] for i in common], [b[i]["valid_acc"] for i in common]),
            "kendall_tau_valid_loss": kendall_tau([-a[i]["valid_loss"] for i in common],
                                                  [-b[i]["valid_loss"] for i in common])}


def write_table(path, table: dict, dataset: str = "digits") -> None:
    """Writes a table in NB201's ground-truth format: ``index`` (rdnas's enumeration index; the benchmark's
    official index is not derivable from an architecture), ``arch_str``, ``{dataset}_valid_acc`` (mean over seeds,
    %), ``{dataset}_valid_loss``, ``{dataset}_valid_acc_std`` and ``seeds``. Written atomically."""
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "arch_str", f"{dataset}_valid_acc", f"{dataset}_valid_loss",
                         f"{dataset}_valid_acc_std", "seeds"])
        for index, row in sorted(table.items()):
            writer.writerow([index, row["arch_str"], f"{row['valid_acc']:.4f}", f"{row['valid_loss']:.6f}",
                             f"{row['valid_acc_std']:.4f}", row["seeds"]])

"""Building a mini-benchmark: stand-alone training of sampled architectures of a space on a small real dataset.

No CIFAR images exist on the machines rdnas is developed on, so the rank quality of a supernet is measured on a
task whose ground truth rdnas makes itself: a sample of architectures, each trained from scratch with one fixed
recipe (:class:`Recipe`) and several seeds, evaluated on a held-out split. NB201 networks train side by side in
:class:`~rdnas.minibench.stacked.StackedNB201` stacks (one grouped op per layer for the whole stack); networks of
other spaces (ResNet48) in a :class:`~rdnas.minibench.stacked.NetworkStack` (one after the other, same
interface). Each network has its own initialisation and data order, derived from its seed and architecture
alone, so a result does not depend on which other networks shared its stack: on one machine and thread count a
run is bitwise the same in any stack (``rdnas.minibench.stacked``: kernels that would round differently in another
stack are avoided).

Every finished (architecture, seed) run is appended to ``runs.csv`` (flushed and fsynced per stack), so a killed
build resumes without losing or repeating a run; ``benchmark_table`` averages the runs into a table in the format
of NAS-Bench-201's ``nb201_gt.csv`` (``index`` for NB201, ``arch_str``, numeric columns).

Datasets: scikit-learn's digits (rdnas's fixed halves) and Fashion-MNIST (Debian's ``dataset-fashion-mnist``:
the first ``train_images`` training images, the first ``valid_images`` test images, optionally resized).
"""

import csv
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rdnas.atomic_file import atomic_open
from rdnas.data import load_digits, read_fashion_mnist
from rdnas.data.pipeline import random_crop
from rdnas.machine import cpu_model
from rdnas.minibench.stacked import NetworkStack, StackedNB201, pad_networks
from rdnas.spaces import get_space, nb201, space_names
from rdnas.supernet import move_legacy_network_options, supernet_spec, taking_space_options
from rdnas.train.checkpoint import config_from_dict

RUN_COLUMNS = ("enumeration_index", "arch_str", "seed", "valid_acc", "valid_loss", "train_loss", "seconds")
DATASETS = ("digits", "fashion_mnist")


def run_columns(space) -> tuple:
    """The columns of ``runs.csv``: NB201 keeps its enumeration index, other spaces key runs by ``arch_str``."""
    return RUN_COLUMNS if get_space(space).enumerable else RUN_COLUMNS[1:]


@taking_space_options
@dataclass(frozen=True)
class Recipe:
    """How every architecture of a mini-benchmark is trained (saved with the build; a resume must match).

    The digits split is rdnas's (``rdnas.train.load_data``): a fixed permutation, first half for training, second
    half for validation, so a supernet trained on the same training half is evaluated on the benchmark's split.
    The network is the space's (``space_options``: its :class:`rdnas.spaces.NetworkOptions`, every option filled
    in: those given over the options' ``benchmark_defaults()``, e.g. NB201 C = 8, N = 1); keyword arguments that
    are not fields are network options, ``Recipe(channels=4)``.
    """

    dataset: str = "digits"  # or "fashion_mnist"
    image_size: int = 8  # digits are 8x8 (larger sizes upsample); Fashion-MNIST 28x28 (other sizes resample)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False  # random translation by up to one pixel
    train_images: int = 0  # train on the first this many images of the training half (0: all 898)
    networks_per_stack: int = 64
    space: str = "nb201"
    valid_images: int = 0  # validate on the first this many images of the validation split (0: all)
    space_options: dict = field(default_factory=dict)  # the space's network options, {name: value}

    def __post_init__(self):
        if not isinstance(self.space_options, dict):
            raise ValueError(f"rdnas.minibench.Recipe: space_options must be a dict of the {self.space} network's "
                             f"options, got {self.space_options!r}")
        if self.space in space_names():
            spec = supernet_spec(self.space)
            options = spec.check_options({**spec.options.benchmark_defaults(), **self.space_options},
                                         "rdnas.minibench.Recipe")
            object.__setattr__(self, "space_options", options.as_dict())

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """The recipe a build saved (``recipe.json``). Files written before ``space_options`` existed hold the
        network options of every space as top-level fields: the recipe's space's ones move into ``space_options``."""
        return config_from_dict(cls, move_legacy_network_options(values, cls.space), "rdnas.minibench.Recipe")

    def network_options(self) -> dict:
        """Every option of the space's network this recipe trains, {name: value}."""
        return dict(self.space_options)


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


def fashion_mnist_split(image_size: int = 28, train_images: int = 0, valid_images: int = 0) -> tuple:
    """(train images, train labels, valid images, valid labels) of Fashion-MNIST: the first ``train_images``
    training images (0: all 60,000) and the first ``valid_images`` test images (0: all 10,000), resized to
    ``image_size`` (area interpolation) and scaled to zero mean and unit variance over the training images."""
    train, valid = read_fashion_mnist(train=True), read_fashion_mnist(train=False)
    train_x, train_y = train.images[:train_images or None].float() / 255.0, train.labels[:train_images or None]
    valid_x, valid_y = valid.images[:valid_images or None].float() / 255.0, valid.labels[:valid_images or None]
    if image_size != 28:
        train_x = F.interpolate(train_x, size=(image_size, image_size), mode="area")
        valid_x = F.interpolate(valid_x, size=(image_size, image_size), mode="area")
    mean, std = train_x.mean(), train_x.std()
    return (train_x - mean) / std, train_y, (valid_x - mean) / std, valid_y


def benchmark_split(recipe: "Recipe") -> tuple:
    """The recipe's dataset as (train images, train labels, valid images, valid labels), float32 [N, 1, S, S]."""
    if recipe.dataset == "digits":
        data = digits_split(recipe.image_size)
    elif recipe.dataset == "fashion_mnist":
        data = fashion_mnist_split(recipe.image_size, recipe.train_images, recipe.valid_images)
    else:
        raise ValueError(f"rdnas.minibench: dataset must be one of {DATASETS}, got {recipe.dataset!r}")
    if recipe.valid_images:
        data = data[:2] + (data[2][:recipe.valid_images], data[3][:recipe.valid_images])
    return data


def network_seed(seed: int, arch, space="nb201") -> int:
    """The seed of one (architecture, seed) run: initial weights and data order come from it alone (NB201: the
    enumeration index; other spaces: a hash of the architecture's string)."""
    space = get_space(space)
    if space.name == "nb201":
        return int(seed) * 1_000_003 + nb201.enumeration_index(arch)
    digest = hashlib.sha256(space.to_string(torch.as_tensor(arch)).encode()).digest()
    return int(seed) * 1_000_003 + int.from_bytes(digest[:6], "little")


def sample_architectures(count: int, seed: int = 0, space="nb201") -> list[tuple]:
    """``count`` non-trivial architectures, no two of which compute the same network (``space.key``; NB201:
    :func:`rdnas.spaces.nb201.canonical_string`), drawn uniformly at random with ``seed`` (enumerable spaces: a
    seeded permutation of the space; others: the space's sampler)."""
    space = get_space(space)
    if space.name != "nb201":
        return [tuple(arch) for arch in space.sample_distinct(count, torch.Generator().manual_seed(seed)).tolist()]
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
    space = get_space(recipe.space)
    network_seeds = [network_seed(s, a, space) for a, s in zip(archs, seeds)]
    options = recipe.network_options()
    if space.name == "nb201" and options["bn_affine"] and options["bn_track_running_stats"]:  # the stacked kernels
        stack = StackedNB201(archs, network_seeds, options["channels"], options["cells_per_stage"], 10, 1).to(device)
    else:
        stack = NetworkStack(space, archs, network_seeds, 10, 1, **options).to(device)
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
            losses = F.cross_entropy(logits.flatten(0, 1), train_y[index].t().flatten(), reduction="none").view(-1, m)
            per_network = losses.mean(0)
            optimizer.zero_grad(set_to_none=True)
            per_network.sum().backward()  # each network's gradient comes from its own loss only
            optimizer.step()
            scheduler.step()
            epoch_loss += pad_networks(losses.detach()).mean(0)[:m]  # a narrow stack's mean would round differently
    valid_loss, valid_correct = evaluate_stack(stack, valid_x.to(device), valid_y.to(device))
    seconds = (time.perf_counter() - start) / m
    train_loss = (epoch_loss / steps_per_epoch).cpu()
    return [{**({"enumeration_index": nb201.enumeration_index(a)} if space.name == "nb201" else {}),
             "arch_str": space.to_string(torch.as_tensor(a)), "seed": int(s),
             "valid_acc": 100.0 * float(valid_correct[k]) / len(valid_y), "valid_loss": float(valid_loss[k]),
             "train_loss": float(train_loss[k]), "seconds": seconds}
            for k, (a, s) in enumerate(zip(archs, seeds))]


@torch.no_grad()
def evaluate_stack(stack: StackedNB201 | NetworkStack, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512):
    """Mean cross-entropy Tensor[M] and correct counts Tensor[M] of every network on one split (eval-mode BN)."""
    stack.eval()
    loss_sum = torch.zeros(stack.num_networks, dtype=torch.float64, device=images.device)
    correct = torch.zeros(stack.num_networks, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        logits = stack(x)  # [B, M, classes]
        targets = y.view(-1, 1).expand(-1, stack.num_networks)
        losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(len(y), -1)
        loss_sum += pad_networks(losses).sum(0)[:stack.num_networks].double()  # as in a stack of 32 or more
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
            if "enumeration_index" in row:
                row["enumeration_index"] = int(row["enumeration_index"])
            row["seed"] = int(row["seed"])
            for name in ("valid_acc", "valid_loss", "train_loss", "seconds"):
                row[name] = float(row[name])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"rdnas.minibench.read_runs: {path}:{number}: not a run row "
                             f"({type(error).__name__}: {error})") from None
    return rows


def runs_files(out_dir) -> list[Path]:
    """Every run file of a build: ``runs.csv`` and the shards' ``runs.<i>of<n>.csv``."""
    out = Path(out_dir)
    return sorted(p for p in out.glob("runs*.csv") if p.name == "runs.csv" or p.name.startswith("runs."))


def read_all_runs(out_dir) -> list[dict]:
    """The runs of every run file of a build (see :func:`runs_files`), each (architecture, seed) once."""
    runs, seen = [], set()
    for path in runs_files(out_dir):
        for run in read_runs(path):
            if (run["arch_str"], run["seed"]) not in seen:
                seen.add((run["arch_str"], run["seed"]))
                runs.append(run)
    return runs


def build_environment(device="cpu") -> dict:
    """What a build's numbers depend on besides the recipe: torch's version, its thread count (results change with
    it, float64 included: docs/guides/whole_space_digits.md, "Reproducing runs"), the CPU kernels' instruction set
    (``torch.backends.cpu.get_cpu_capability()``), the CPU model, the platform and rdnas' version."""
    import rdnas

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model(),
            "platform": platform.platform(), "python": platform.python_version(), "rdnas": rdnas.__version__,
            "device": str(device)}


def record_environment(out_dir, shard: tuple[int, int], device, done: int, pending: int) -> dict:
    """Appends one JSON line to ``out_dir/environment[.<i>of<n>].jsonl`` (one file per shard, as the run files):
    the time, the shard, the runs already in the folder and pending for this shard, and :func:`build_environment`.
    Every start of a build that has runs to train adds a line, so a folder built on several machines or resumed
    with other settings says which; returns the record."""
    i, n = shard
    record = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shard": f"{i}/{n}", "runs_done": done,
              "runs_pending": pending, **build_environment(device)}
    path = Path(out_dir) / ("environment.jsonl" if n == 1 else f"environment.{i}of{n}.jsonl")
    with open(path, "a") as handle:  # one short line appended: whole or not at all in practice, never rewritten
        handle.write(json.dumps(record) + "\n")
    return record


def build(out_dir, archs: list[tuple], seeds: list[int], recipe: Recipe = Recipe(), device="cpu",
          progress: bool = True, shard: tuple[int, int] = (0, 1)) -> list[dict]:
    """Trains every (architecture, seed) pair not yet in the build's run files and returns all runs.

    ``out_dir/recipe.json`` records the recipe; resuming with another recipe is refused. Runs are appended one
    stack at a time (flushed and fsynced), so an interrupted build loses at most the stack in progress. With
    ``shard=(i, n)``, n > 1, this process trains only the pairs at positions p with p % n == i of the (seed,
    architecture) order and appends them to ``runs.<i>of<n>.csv``; n processes fill one build side by side, and
    every run file of the folder counts as done (no pair is trained twice, whatever the sharding of each resume).
    Each start with runs to train appends what the numbers depend on besides the recipe (threads, instruction set,
    versions: :func:`record_environment`) to the shard's ``environment*.jsonl``.
    """
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise ValueError(f"rdnas.minibench.build: shard must be (i, n) with 0 <= i < n, got {shard!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "recipe.json"
    if recipe_path.exists():
        saved = Recipe.from_dict(json.loads(recipe_path.read_text()))
        if saved != recipe:
            raise ValueError(f"rdnas.minibench.build: {out} was built with {saved}, not {recipe}; use another "
                             "out_dir or the same recipe")
    else:
        with atomic_open(recipe_path) as handle:  # shards starting together write the same file
            handle.write(json.dumps(asdict(recipe), indent=2))
    runs_path = out / ("runs.csv" if n == 1 else f"runs.{i}of{n}.csv")
    runs = read_all_runs(out)
    space = get_space(recipe.space)
    done = {(r["arch_str"], r["seed"]) for r in runs}
    pairs = [(a, s) for s in seeds for a in archs]
    todo = [(a, s) for p, (a, s) in enumerate(pairs)
            if p % n == i and (space.to_string(torch.as_tensor(a)), s) not in done]
    if recipe.dataset not in DATASETS:
        raise ValueError(f"rdnas.minibench.build: dataset must be one of {DATASETS}, got {recipe.dataset!r}")
    if todo:
        record_environment(out, shard, device, len(done), len(todo))
    data = benchmark_split(recipe)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="training networks", unit="net", disable=not progress)
    new_file = not runs_path.exists()
    if not new_file:
        complete = len(_complete_lines(runs_path))
        if complete < runs_path.stat().st_size:
            with open(runs_path, "r+b") as handle:  # the partial last line read_runs ignored: cut it off
                handle.truncate(complete)
    with open(runs_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=run_columns(space))
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
    """Averages runs over seeds: {key: {"arch_str", "valid_acc", "valid_loss", "seeds"}} with key the enumeration
    index (NB201 runs) or the architecture string (other spaces), keeping only architectures that have every seed in
    ``seeds`` (default: every seed present in the runs)."""
    seeds = sorted({r["seed"] for r in runs}) if seeds is None else sorted(seeds)
    by_arch, key_of_arch, arch_of_key = {}, {}, {}
    for r in runs:
        key = r.get("enumeration_index", r["arch_str"])
        # runs are matched by architecture: an index that names two architectures (or the reverse) is refused
        arch, other_key = arch_of_key.setdefault(key, r["arch_str"]), key_of_arch.setdefault(r["arch_str"], key)
        if arch != r["arch_str"] or other_key != key:
            what = (f"index {key} is {arch} in one run and {r['arch_str']} in another" if arch != r["arch_str"] else
                    f"{r['arch_str']} has index {other_key} in one run and {key} in another")
            raise ValueError(f"rdnas.minibench.benchmark_table: the run files disagree: {what}")
        if r["seed"] in seeds:
            by_arch.setdefault(key, {})[r["seed"]] = r
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
    """Writes a table in NB201's ground-truth format: ``index`` (NB201 only: rdnas's enumeration index; the
    benchmark's official index is not derivable from an architecture), ``arch_str``, ``{dataset}_valid_acc`` (mean
    over seeds, %), ``{dataset}_valid_loss``, ``{dataset}_valid_acc_std`` and ``seeds``. Written atomically."""
    indexed = all(isinstance(key, int) for key in table)
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow((["index"] if indexed else []) + ["arch_str", f"{dataset}_valid_acc", f"{dataset}_valid_loss",
                                                          f"{dataset}_valid_acc_std", "seeds"])
        for key, row in sorted(table.items()):
            writer.writerow(([key] if indexed else []) + [
                row["arch_str"], f"{row['valid_acc']:.4f}", f"{row['valid_loss']:.6f}", f"{row['valid_acc_std']:.4f}",
                row["seeds"]])

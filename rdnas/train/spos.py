"""SPOS training of the NAS-Bench-201 supernet: uniform single-path (or K-path) sampling.

Defaults follow the NB201 one-shot recipe used by the RD-NAS authors: SGD (lr 0.025, momentum 0.9, weight decay
5e-4), cosine annealing to 0 over the run, gradient-norm clipping at 5. Every epoch ends with an atomic checkpoint
and a JSONL metrics line; ``fit(resume=True)`` continues from the last checkpoint, and on the CPU a run killed and
resumed ends with exactly the weights of an uninterrupted one.
"""

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from rdnas.data import DeviceBatches, ImageSet, load_digits, read_cifar, read_imagenet16, read_split
from rdnas.supernet import NB201Supernet
from rdnas.train.checkpoint import load_checkpoint, save_checkpoint
from rdnas.train.samplers import UniformSampler

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET16_MEAN, IMAGENET16_STD = (0.4811, 0.4575, 0.4078), (0.2605, 0.2533, 0.2683)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    data: str = "digits"  # "digits", "cifar10:<dir>", "cifar100:<dir>" or "imagenet16:<dir>"
    image_size: int = 16  # digits only: the 8x8 images are resized to this
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    paths_per_step: int = 1  # K: losses of K sampled paths are summed each step
    channels: int = 16
    cells_per_stage: int = 5
    bn_affine: bool = True
    bn_track_running_stats: bool = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on the CPU
    out_dir: str = "runs/spos"

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"rdnas.train.TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**values)


@dataclass
class DataSplits:
    train: ImageSet
    valid: ImageSet
    mean: tuple
    std: tuple
    in_channels: int


def load_data(config: TrainConfig) -> DataSplits:
    """The training and validation sets named by ``config.data``. CIFAR-10 uses NB201's cifar-valid protocol
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
    raise ValueError(f"rdnas.train: unknown data {config.data!r}; expected digits, cifar10:<dir>, cifar100:<dir> "
                     "or imagenet16:<dir>")


class SPOSTrainer:
    """Trains an NB201Supernet with uniform path sampling. Files in ``config.out_dir``: ``checkpoint.pt`` (after
    every epoch, atomically), ``metrics.jsonl`` (one line per epoch) and ``config.json``."""

    def __init__(self, config: TrainConfig, progress: bool = True):
        self.config = config
        self.progress = progress
        self.out_dir = Path(config.out_dir)
        self.device = torch.device(config.device)
        self.data = load_data(config)
        torch.manual_seed(config.seed)
        self.model = NB201Supernet(config.channels, config.cells_per_stage, self.data.train.num_classes,
                                   self.data.in_channels, config.bn_affine, config.bn_track_running_stats).to(self.device)
        self.sampler = UniformSampler(config.paths_per_step, seed=config.seed + 1,
                                      device=self.device if self.device.type == "cuda" else None)
        self.data_generator = torch.Generator().manual_seed(config.seed + 2)
        self.batches = DeviceBatches(self.data.train, config.batch_size, self.device, self.data.mean, self.data.std,
                                     augment=True, padding=max(1, self.data.train.images.shape[-1] // 8),
                                     drop_last=True, generator=self.data_generator)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, config.epochs * len(self.batches)), eta_min=0.0)
        self.epoch = 0
        self.history = []

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(), "data_generator": self.data_generator.get_state(),
                "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        saved = TrainConfig.from_dict(state["config"])
        for name in ("data", "channels", "cells_per_stage", "paths_per_step", "batch_size", "epochs", "seed"):
            if getattr(saved, name) != getattr(self.config, name):
                raise ValueError(f"rdnas.train: cannot resume: the checkpoint has {name}={getattr(saved, name)!r}, "
                                 f"this run {getattr(self.config, name)!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.data_generator.set_state(state["data_generator"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])

    def _autocast(self):
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, images, labels) -> tuple[float, float]:
        """One SGD step on K sampled paths (summed losses); returns (mean loss, accuracy) of the step's paths."""
        self.model.train()
        archs = self.sampler.sample()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, correct = 0.0, 0.0
        for arch in archs:
            with self._autocast():
                logits = self.model(images, arch)
                loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            total_loss += loss.detach()
            correct += (logits.argmax(1) == labels).float().mean().detach()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return total_loss / len(archs), correct / len(archs)

    def fit(self, resume: bool = False) -> list:
        """Trains until ``config.epochs``; with ``resume``, first restores ``checkpoint.pt`` if it exists.
        Returns the per-epoch metrics."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.exists():
            self.load_state_dict(load_checkpoint(self.checkpoint_path))
        (self.out_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        self._rewrite_metrics()
        from tqdm.auto import tqdm

        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            losses, accuracies = [], []
            bar = tqdm(self.batches, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", disable=not self.progress,
                       leave=False)
            for images, labels in bar:
                loss, accuracy = self.train_step(images, labels)
                losses.append(loss)
                accuracies.append(accuracy)
            record = {"epoch": self.epoch + 1, "train_loss": float(torch.stack(losses).mean()),
                      "train_acc": float(torch.stack(accuracies).mean()), "lr": self.scheduler.get_last_lr()[0],
                      "seconds": time.perf_counter() - start}
            self.epoch += 1
            self.history.append(record)
            save_checkpoint(self.checkpoint_path, self.state_dict())
            with open(self.out_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.progress:
                print(f"epoch {record['epoch']}/{self.config.epochs}: loss {record['train_loss']:.4f}, "
                      f"accuracy {record['train_acc']:.3f}, {record['seconds']:.1f} s", flush=True)
        return self.history

    def _rewrite_metrics(self) -> None:
        """metrics.jsonl holds exactly the epochs of the checkpoint (a run killed after its last checkpoint but
        before the log line, or after a later log line, is made consistent)."""
        lines = "".join(json.dumps(record) + "\n" for record in self.history)
        (self.out_dir / "metrics.jsonl").write_text(lines)

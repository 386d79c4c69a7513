"""The RD-NAS pipeline end to end: teacher proxies, supernet training (SPOS, RD-NAS, baselines), rank quality.

On the embedded default (scikit-learn's digits, the network of the shipped mini-benchmark, e.g. NB201's C=8, N=1, 8x8
images) the whole pipeline runs in minutes on two CPU cores; with ``data="cifar10:<dir>"`` and a NAS-Bench-201
ground-truth table it runs the paper's setting. ``space="resnet48"`` runs it in the ResNet48 space against its
shipped digits mini-benchmark (small stem, widths / 8), with a teacher over a seeded reference sample. ``rdnas demo`` and ``benchmarks/rdnas_experiments.py`` are thin
layers over these functions.
"""

import json
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from rdnas.data import DeviceBatches
from rdnas.proxies import Minibatch, score_space, scoring_supernet
from rdnas.rank import GroundTruth, rank_report, recalibrated_accuracy_fn
from rdnas.rank.metrics import UndefinedRankCorrelation
from rdnas.spaces import get_space
from rdnas.train import OneShotTrainer, Teacher, TrainConfig, load_data, make_teacher


def shipped_benchmark(space: str = "nb201") -> Path:
    """The digits mini-benchmark of ``space`` shipped with rdnas (``rdnas bench build`` output; see its README
    section): ``<space>_digits.csv`` in ``rdnas/minibench/data``."""
    return Path(str(resources.files("rdnas.minibench") / "data" / f"{get_space(space).name}_digits.csv"))


@dataclass
class PipelineConfig:
    """One pipeline run: data, macro network, training budget, RD-NAS settings, evaluation."""

    space: str = "nb201"
    data: str = "digits"
    image_size: int = 8
    # The options of the space's network ({name: value}; see TrainConfig.space_options); None: the network of the
    # space's shipped digits mini-benchmark (its recipe's options: NB201 C=8, N=1; ResNet48 small stem, widths / 8)
    space_options: dict | None = None
    gt: str = ""  # ground-truth table; "" = the shipped digits mini-benchmark
    gt_column: str = "digits_valid_acc"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.025
    paths_per_step: int = 4  # K for RD-NAS and for the equal-budget baselines
    teacher_proxies: str = "synflow"
    teacher_samples: int = 10000  # non-enumerable spaces (resnet48): the teacher's seeded reference set
    proxies: str = ("synflow,logsynflow,naswot,zen,snip,grad_norm,fisher,grasp,jacov,plain,l2_norm,flops,"
                    "params")  # reported against ground truth
    proxy_init: str = "pytorch"
    groups: int = 5
    margin: float = 0.1
    margin_mode: str = "group"
    sampler: str = "margin"
    rank_schedule: str = "constant"
    rank_weight: float = 1.0
    eval_every: int = 5  # epochs between rank evaluations (the last epoch is always evaluated)
    eval_archs: int = 0  # evaluate on this many ground-truth architectures (0: all)
    calibration_steps: int = 4
    device: str = "cpu"
    out_dir: str = "runs/demo"

    def network_options(self) -> dict:
        """The options of the space's network this config sets: ``space_options``, or (None) those the space's
        shipped mini-benchmark was built with (its ``<space>_digits_recipe.json``; none for a space without one)."""
        if self.space_options is not None:
            return dict(self.space_options)
        from rdnas.minibench import Recipe

        recipe = shipped_benchmark(self.space).with_name(f"{get_space(self.space).name}_digits_recipe.json")
        if not recipe.is_file():
            return {}
        return Recipe.from_dict({"space": self.space, **json.loads(recipe.read_text())}).network_options()

    def train_config(self, method: str, seed: int, out_dir, **overrides) -> TrainConfig:
        """The TrainConfig of one supernet run of this pipeline."""
        values = dict(space=self.space, data=self.data, image_size=self.image_size, epochs=self.epochs,
                      batch_size=self.batch_size, lr=self.lr, space_options=self.network_options(),
                      teacher_proxies=self.teacher_proxies, teacher_samples=self.teacher_samples, seed=seed,
                      device=self.device, out_dir=str(out_dir), method=method, groups=self.groups,
                      margin=self.margin, margin_mode=self.margin_mode, sampler=self.sampler,
                      rank_schedule=self.rank_schedule, rank_weight=self.rank_weight,
                      paths_per_step=self.paths_per_step if method in ("rdnas", "sandwich") else 1)
        values.update(overrides)
        return TrainConfig(**values)


def load_ground_truth(config: PipelineConfig) -> tuple[GroundTruth, torch.Tensor, np.ndarray]:
    """(table, architectures LongTensor[A, space.width], ground truth float64 [A]) of the evaluation set."""
    table = GroundTruth.load(config.gt or shipped_benchmark(config.space), config.space)
    if config.gt_column not in table.columns:
        raise ValueError(f"rdnas.pipeline: the ground-truth table has no column {config.gt_column!r}; columns: "
                         f"{sorted(table.columns)}")
    archs = table.archs
    if config.eval_archs:
        order = torch.randperm(len(archs), generator=torch.Generator().manual_seed(0))[:config.eval_archs]
        archs = archs[order.sort().values]
    return table, archs, table.values(archs, config.gt_column)


def proxy_minibatch(config: PipelineConfig) -> Minibatch:
    """64 training images of the run's data (the first of its fixed order), normalised like training."""
    data = load_data(config.train_config("spos", 0, config.out_dir))
    batches = DeviceBatches(data.train, 64, "cpu", data.mean, data.std, shuffle=False)
    images, labels = next(iter(batches))
    return Minibatch(images, labels, data.train.num_classes, f"{data.train.name}[:64]")


def proxy_supernet(config: PipelineConfig, num_classes: int, in_channels: int):
    """The scoring supernet at initialisation, with the options of the supernets the pipeline trains."""
    options = config.train_config("spos", 0, config.out_dir).supernet_options()
    return scoring_supernet(num_classes, in_channels, init=config.proxy_init, seed=0, device=config.device,
                            space=config.space, **options)


def score_proxies(config: PipelineConfig, names, archs=None, out=None, progress: bool = False):
    """Proxy scores (ScoreTable) of ``archs`` (default: the whole space, where it is enumerable) on the
    pipeline's network."""
    minibatch = proxy_minibatch(config).to(config.device)
    supernet = proxy_supernet(config, minibatch.num_classes, minibatch.inputs.shape[1])
    return score_space(names, minibatch, space=config.space, archs=archs, supernet=supernet, out=out,
                       device=config.device, progress=progress)


def build_teacher(config: PipelineConfig, progress: bool = False):
    """The teacher from ``config.teacher_proxies``: over the whole space where it is enumerable (cached as a
    resumable score table in ``out_dir``), otherwise a SampledTeacher (:func:`rdnas.train.make_teacher`)."""
    if not get_space(config.space).enumerable:
        return make_teacher(config.train_config("rdnas", 0, config.out_dir))
    names = [n.strip() for n in config.teacher_proxies.split(",")]
    out = Path(config.out_dir) / f"teacher_{'_'.join(names)}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = score_proxies(config, names, out=out, progress=progress)
    return Teacher.from_score_table(table, names, config.groups, config.space)  # rows matched by arch string


class RankEvaluator:
    """After an epoch, the supernet's accuracy on the evaluation architectures (BN recalibrated per subnet) and
    its rank consistency with the ground truth. Called by OneShotTrainer as ``evaluate``."""

    def __init__(self, config: PipelineConfig, archs: torch.Tensor, truth: np.ndarray):
        self.config, self.archs, self.truth = config, archs, truth
        self.last_estimates = None

    def estimates(self, trainer: OneShotTrainer) -> torch.Tensor:
        # Built afresh each time, so every evaluation recalibrates on the same training batches (seed 0).
        # Several processes: every rank is here (the trainer calls evaluate on each) and takes its chunks.
        accuracy = recalibrated_accuracy_fn(trainer.model, trainer.data, trainer.device,
                                            calibration_batch_size=trainer.config.batch_size,
                                            calibration_steps=self.config.calibration_steps, distributed=True)
        return accuracy(self.archs)

    def __call__(self, trainer: OneShotTrainer) -> dict:
        if trainer.epoch % self.config.eval_every and trainer.epoch != trainer.config.epochs:
            return {}
        start = time.perf_counter()
        estimates = self.estimates(trainer)
        self.last_estimates = estimates
        report = rank_quality(estimates.numpy(), self.truth, self.config.gt_column)
        return {"kendall_tau": report["kendall_tau"], "spearman_rho": report["spearman_rho"],
                "precision_at_top_10pct": report["precision_at_top_10pct"],
                "eval_seconds": time.perf_counter() - start}


def rank_quality(estimates, truth, column: str, bootstrap_samples: int = 0) -> dict:
    """``rank_report``, or, where the ranking is undefined (a barely trained supernet gives every cell the same
    accuracy), the headline keys with NaN and the reason under ``"undefined"``. Any other bad input (lengths
    that differ, NaN) raises."""
    try:
        return rank_report(estimates, truth, column=column, bootstrap_samples=bootstrap_samples)
    except UndefinedRankCorrelation as error:
        nan = float("nan")
        return {"num_archs": len(truth), "ground_truth_column": column, "kendall_tau": nan, "spearman_rho": nan,
                "precision_at_top_10pct": nan, "kendall_tau_ci95": [nan, nan], "undefined": str(error)}


def train_and_rank(config: PipelineConfig, method: str, seed: int, archs, truth, teacher=None, progress=False,
                   **overrides) -> dict:
    """Trains one supernet and returns its history (with tau per evaluated epoch), final estimates and report."""
    run_dir = Path(config.out_dir) / f"{method}_seed{seed}"
    train_config = config.train_config(method, seed, run_dir, **overrides)
    evaluator = RankEvaluator(config, archs, truth)
    trainer = OneShotTrainer(train_config, progress=progress, teacher=teacher if method == "rdnas" else None,
                             evaluate=evaluator)
    start = time.perf_counter()
    history = trainer.fit(resume=True)
    estimates = evaluator.last_estimates if evaluator.last_estimates is not None else evaluator.estimates(trainer)
    report = rank_quality(estimates.numpy(), truth, config.gt_column, bootstrap_samples=1000)
    return {"method": method, "seed": seed, "config": asdict(train_config), "history": history,
            "estimates": estimates.tolist(), "report": report, "seconds": time.perf_counter() - start}

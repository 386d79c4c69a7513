"""The TNASP / PINAT protocol on a ground-truth table, shared by ``rdnas predictor`` and
benchmarks/predictor_experiments.py: draw N random training architectures (seeded), fit on one column, rank every
row of the table and compare with another column."""

import numpy as np
import torch
from torch import Tensor

from rdnas.predictors.base import Predictor, get_predictor
from rdnas.predictors.features import ArchFeatures, ProxyFeatures


def training_rows(total: int, count: int, seed: int) -> Tensor:
    """``count`` distinct rows of a table of ``total`` rows, uniformly at random: LongTensor[count] (the first
    ``count`` of a seeded permutation, so a larger N with the same seed contains the smaller one)."""
    if not 1 <= count <= total:
        raise ValueError(f"rdnas.predictors: --train-archs must be in 1..{total:,} (the table's rows), got {count}")
    return torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:count]


def table_column(table, name: str) -> np.ndarray:
    """A ground-truth column, or ValueError naming the columns the table has."""
    if name not in table.columns:
        raise ValueError(f"rdnas.predictors: the table {table.path} has no column {name!r}; it has "
                         f"{', '.join(sorted(table.columns))}")
    return table.column(name)


def make_features(space, feature_table=None, feature_columns=None, **options) -> ArchFeatures:
    """The space's structure features with its ``feature_options`` (``options``, None for the default; NB201:
    ``cells`` and ``edges``, see :class:`ArchFeatures`), plus the named columns of a feature table when one is
    given."""
    if (feature_table is None) != (not feature_columns):
        raise ValueError("rdnas.predictors: --feature-table and --features go together (a table and its columns)")
    proxies = None if feature_table is None else ProxyFeatures.from_table(feature_table, feature_columns, space)
    return ArchFeatures(space, proxies, **options)


def fit_on_table(model: str, table, column: str, count: int, seed: int, features: ArchFeatures | None = None,
                 progress: bool = False, **options) -> tuple[Predictor, Tensor]:
    """Fits predictor ``model`` on ``count`` random rows (seed ``seed``) of ``table``'s ``column``; returns the
    predictor and the training rows."""
    accuracy = table_column(table, column)
    rows = training_rows(len(table), count, seed)
    tiers = options.get("tiers", 5) if model == "nar" else 1
    if count < tiers:
        raise ValueError(f"rdnas.predictors: too few architectures for the tiers: --train-archs {count} cannot fill "
                         f"{tiers} tiers")
    predictor = get_predictor(model)(space=table.space, features=features, seed=seed, progress=progress, **options)
    predictor.fit(table.archs[rows], accuracy[rows.numpy()])
    return predictor, rows

"""Rank consistency: ground-truth tables and metrics."""

from rdnas.rank.ground_truth import GroundTruth, MalformedTable, MissingColumn, shipped_tables
from rdnas.rank.supernet_accuracy import recalibrated_accuracy_fn, register_shared_path, supernet_accuracy
from rdnas.rank import nb201_accuracy  # noqa: F401  (registers NB201's shared path)
from rdnas.rank.metrics import (
    best_and_worst_rank_in_top,
    bootstrap_interval,
    concordant_pair_ratio,
    kendall_tau,
    pearson_r,
    precision_at_top,
    rank_report,
    spearman_rho,
)

__all__ = [
    "GroundTruth", "MalformedTable", "MissingColumn", "best_and_worst_rank_in_top", "bootstrap_interval",
    "concordant_pair_ratio", "kendall_tau", "pearson_r", "precision_at_top", "rank_report", "recalibrated_accuracy_fn",
    "register_shared_path", "shipped_tables", "spearman_rho", "supernet_accuracy",
]

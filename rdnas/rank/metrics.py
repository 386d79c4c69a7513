"""Rank-consistency metrics between a predicted score and a ground truth (higher = better for both).

Every function takes two 1-D sequences of equal length and raises ValueError for mismatched lengths, NaN or a
constant sequence (rather than returning NaN silently). ``rank_report`` bundles them with the number of architectures and the
ground-truth column, which every reported figure must state.
"""

import math

import numpy as np
from scipy import stats


class UndefinedRankCorrelation(ValueError):
    """Every predicted (or every true) value is the same: no rank statistic is defined (e.g. a barely trained
    supernet that gives every cell the same accuracy)."""


def _pair(predicted, truth, name):
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if predicted.shape != truth.shape:
        raise ValueError(f"rdnas.rank.{name}: predicted and truth must have the same length, got "
                         f"{predicted.size} and {truth.size}")
    if np.isnan(predicted).any() or np.isnan(truth).any():
        raise ValueError(f"rdnas.rank.{name}: predicted and truth must not contain NaN (drop those entries first)")
    if predicted.size < 2:
        raise ValueError(f"rdnas.rank.{name}: at least 2 items are needed, got {predicted.size}")
    for label, values in (("predicted", predicted), ("truth", truth)):
        if np.ptp(values) == 0:
            raise UndefinedRankCorrelation(f"rdnas.rank.{name}: every {label} value is {values[0]:g}; a rank "
                                           "correlation with a constant is undefined")
    return predicted, truth


def kendall_tau(predicted, truth) -> float:
    """Kendall tau-b (scipy's default), which accounts for ties."""
    predicted, truth = _pair(predicted, truth, "kendall_tau")
    return float(stats.kendalltau(predicted, truth).statistic)


def spearman_rho(predicted, truth) -> float:
    """Spearman's rank correlation."""
    predicted, truth = _pair(predicted, truth, "spearman_rho")
    return float(stats.spearmanr(predicted, truth).statistic)


def pearson_r(predicted, truth) -> float:
    """Pearson's correlation, signed (some peer code reports its absolute value; we do not)."""
    predicted, truth = _pair(predicted, truth, "pearson_r")
    return float(stats.pearsonr(predicted, truth).statistic)


def _top_count(n, percent):
    if not 0 < percent <= 100:
        raise ValueError(f"rdnas.rank: percent must lie in (0, 100], got {percent}")
    return max(1, int(math.ceil(n * percent / 100)))


def _top_membership(values: np.ndarray, k: int) -> np.ndarray:
    """Each item's probability of being among the k largest ``values`` when ties are broken uniformly at random:
    1 above the k-th largest value, 0 below it, and (places left) / (items tied) for the items tied with it."""
    kth = np.sort(values)[::-1][k - 1]
    above, tied = values > kth, values == kth
    membership = above.astype(np.float64)
    membership[tied] = (k - int(above.sum())) / int(tied.sum())
    return membership


def precision_at_top(predicted, truth, percent: float) -> float:
    """P@top-K%: the fraction of the predicted top K% that is in the true top K%. Ties at either cut are broken
    uniformly at random and the expectation is returned, so the value never depends on the items' order (with no
    ties it is the plain overlap fraction)."""
    predicted, truth = _pair(predicted, truth, "precision_at_top")
    k = _top_count(predicted.size, percent)
    return float(np.dot(_top_membership(predicted, k), _top_membership(truth, k)) / k)


def best_and_worst_rank_in_top(predicted, truth, percent: float) -> tuple[int, int]:
    """BR@K / WR@K: the best and worst true rank (1 = best; tied true values share the best rank) among the
    predicted top K%. Every item tied with the K-th predicted value counts as in the top K%, so the result never
    depends on the items' order."""
    predicted, truth = _pair(predicted, truth, "best_and_worst_rank_in_top")
    k = _top_count(predicted.size, percent)
    true_rank = stats.rankdata(-truth, method="min").astype(int)
    chosen = true_rank[_top_membership(predicted, k) > 0]
    return int(chosen.min()), int(chosen.max())


def concordant_pair_ratio(predicted, truth) -> float:
    """Among pairs of distinct items whose true values differ, the fraction the prediction orders the same way
    (a predicted tie counts as half). Never compares an item with itself."""
    predicted, truth = _pair(predicted, truth, "concordant_pair_ratio")
    order = np.argsort(truth, kind="stable")
    predicted, truth = predicted[order], truth[order]
    concordant, total = 0.0, 0
    for i in range(predicted.size - 1):  # O(N^2 / 2) vectorised by row: fine for thousands of items
        true_diff = truth[i + 1:] - truth[i]
        pred_diff = predicted[i + 1:] - predicted[i]
        counted = true_diff != 0
        total += int(counted.sum())
        concordant += float((pred_diff[counted] > 0).sum()) + 0.5 * float((pred_diff[counted] == 0).sum())
    return concordant / total


def bootstrap_interval(metric, predicted, truth, *, samples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """A percentile bootstrap confidence interval of ``metric(predicted, truth)`` over resampled items."""
    predicted, truth = _pair(predicted, truth, "bootstrap_interval")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        take = rng.integers(0, predicted.size, predicted.size)
        if np.ptp(truth[take]) == 0 or np.ptp(predicted[take]) == 0:
            continue  # a constant resample has no correlation
        values.append(metric(predicted[take], truth[take]))
    if not values:
        raise ValueError("rdnas.rank.bootstrap_interval: every resample was constant")
    low, high = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(low), float(high)


def rank_report(predicted, truth, *, column: str, top_percents=(1, 5, 10), bootstrap_samples: int = 0) -> dict:
    """Every metric, with the number of architectures and the ground-truth column they were measured against."""
    predicted, truth = _pair(predicted, truth, "rank_report")
    report = {
        "num_archs": int(predicted.size),
        "ground_truth_column": column,
        "kendall_tau": kendall_tau(predicted, truth),
        "spearman_rho": spearman_rho(predicted, truth),
        "pearson_r": pearson_r(predicted, truth),
        "concordant_pair_ratio": concordant_pair_ratio(predicted, truth),
    }
    for percent in top_percents:
        report[f"precision_at_top_{percent}pct"] = precision_at_top(predicted, truth, percent)
        best, worst = best_and_worst_rank_in_top(predicted, truth, percent)
        report[f"best_rank_in_top_{percent}pct"] = best
        report[f"worst_rank_in_top_{percent}pct"] = worst
    if bootstrap_samples:
        report["kendall_tau_ci95"] = bootstrap_interval(kendall_tau, predicted, truth, samples=bootstrap_samples)
    return report

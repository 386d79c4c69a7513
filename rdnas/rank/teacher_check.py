"""Is a teacher worth distilling? Its rank quality on a user's few labelled architectures, beside the supernet's.

RD-NAS distils a teacher's ranking into a supernet. Whether that helps depends on how the teacher ranks compared
with the supernet itself (benchmarks/teacher_curve_experiment.py measures the gain against the teacher's quality
on a fully known benchmark). :func:`teacher_check` measures what a user can measure: Kendall tau of the teacher's
scores, and of the supernet's estimates, against the accuracy of the architectures the user has trained, with
bootstrap intervals over those architectures, and the paired difference.
"""

import numpy as np

from rdnas.rank.metrics import kendall_tau


def _bootstrap_taus(columns: list[np.ndarray], truth: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Kendall tau of each column against ``truth`` on the same resamples of the architectures: [samples, C]
    (a resample whose truth has no pair of distinct values is redrawn)."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    taus = np.empty((samples, len(columns)))
    done = 0
    while done < samples:
        rows = rng.integers(0, n, n)
        if np.unique(truth[rows]).size < 2 or any(np.unique(c[rows]).size < 2 for c in columns):
            continue
        taus[done] = [kendall_tau(c[rows], truth[rows]) for c in columns]
        done += 1
    return taus


def teacher_check(teacher_scores, truth, supernet_estimates=None, *, bootstrap_samples: int = 1000,
                  seed: int = 0) -> dict:
    """The teacher's rank quality on labelled architectures, and the supernet's where its estimates are given.

    Args:
        teacher_scores (array-like [A]): the teacher's score of each labelled architecture (higher = better).
        truth (array-like [A]): their accuracy (ground truth), A >= 4.
        supernet_estimates (array-like [A] or None): the supernet's accuracy estimate of each.
        bootstrap_samples: resamples of the architectures for the 95% intervals.
        seed: the resampling seed.

    Returns:
        {"architectures", "teacher_kendall_tau", "teacher_kendall_tau_ci95"} and, with estimates,
        {"supernet_kendall_tau", "supernet_kendall_tau_ci95", "teacher_minus_supernet",
        "teacher_minus_supernet_ci95", "teacher_better_share"} (the share of resamples in which the teacher ranks
        better: paired, on the same resampled architectures).

    Raises:
        ValueError: lengths differ, fewer than 4 architectures, or non-finite values.
    """
    teacher = np.asarray(teacher_scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    columns = [teacher]
    if supernet_estimates is not None:
        columns.append(np.asarray(supernet_estimates, dtype=np.float64).reshape(-1))
    for name, column in zip(("teacher_scores", "supernet_estimates"), columns):
        if column.shape != truth.shape:
            raise ValueError(f"rdnas.rank.teacher_check: {name} has {column.size} values for {truth.size} "
                             "architectures")
    if truth.size < 4:
        raise ValueError(f"rdnas.rank.teacher_check: at least 4 labelled architectures are needed, got {truth.size}")
    for name, column in zip(("truth", "teacher_scores", "supernet_estimates"), [truth] + columns):
        if not np.isfinite(column).all():
            raise ValueError(f"rdnas.rank.teacher_check: {name} holds non-finite values (NaN or inf)")
    taus = _bootstrap_taus(columns, truth, bootstrap_samples, seed)

    def interval(values):
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]

    result = {"architectures": int(truth.size), "teacher_kendall_tau": kendall_tau(teacher, truth),
              "teacher_kendall_tau_ci95": interval(taus[:, 0]), "bootstrap_samples": bootstrap_samples}
    if supernet_estimates is not None:
        supernet_tau = kendall_tau(columns[1], truth)
        difference = taus[:, 0] - taus[:, 1]
        result.update(supernet_kendall_tau=supernet_tau, supernet_kendall_tau_ci95=interval(taus[:, 1]),
                      teacher_minus_supernet=result["teacher_kendall_tau"] - supernet_tau,
                      teacher_minus_supernet_ci95=interval(difference),
                      teacher_better_share=float((difference > 0).mean()))
    return result


def expected_gain(curve: list[dict], teacher_tau: float, epochs: int | None = None,
                  neighbourhood: float = 0.1) -> dict | None:
    """What the measured curve (``benchmarks/results/teacher_curve.json``: points with ``teacher``, ``epochs``,
    ``teacher_kendall_tau``, ``gain``, ``gain_ci95``, ``spos_kendall_tau``) says for a teacher of Kendall tau
    ``teacher_tau``, at the budget ``epochs`` (default the largest measured).

    The measured gains are noisy (a few seeds per teacher) and need not be monotonic in the teacher's tau, so the
    prediction is read from the least-squares line through all of the budget's teachers, not from the two nearest
    points; beside it, the measured teachers within ``neighbourhood`` of ``teacher_tau``, each with its gain and
    interval. Only points distilled at the default ranking-loss weight count (``rank_weight`` 1, or none given).

    Returns None when the curve has no point of that budget, else a dict: ``epochs``, ``gain`` (the line at
    ``teacher_tau``), ``slope`` (gain per unit of teacher tau; 0 with a single measured tau), ``within_measured_range``,
    ``measured_teacher_taus``, ``nearby`` (list of ``teacher``, ``teacher_kendall_tau``, ``gain``, ``gain_ci95``) and
    ``spos_kendall_tau`` (the supernet's own tau at that budget).
    """
    curve = [p for p in curve if p.get("rank_weight", 1.0) == 1.0]
    budgets = sorted({p["epochs"] for p in curve})
    if not budgets:
        return None
    epochs = budgets[-1] if epochs is None else epochs
    points = sorted((p for p in curve if p["epochs"] == epochs), key=lambda p: p["teacher_kendall_tau"])
    if not points:
        return None
    x = np.array([p["teacher_kendall_tau"] for p in points], dtype=np.float64)
    y = np.array([p["gain"] for p in points], dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
    nearby = [{"teacher": p.get("teacher", ""), "teacher_kendall_tau": float(p["teacher_kendall_tau"]),
               "gain": float(p["gain"]), "gain_ci95": p.get("gain_ci95")}
              for p in points if abs(p["teacher_kendall_tau"] - teacher_tau) <= neighbourhood]
    return {"epochs": epochs, "gain": float(intercept + slope * teacher_tau), "slope": float(slope),
            "within_measured_range": bool(x[0] <= teacher_tau <= x[-1]),
            "measured_teacher_taus": [float(v) for v in x], "nearby": nearby,
            "spos_kendall_tau": float(np.mean([p["spos_kendall_tau"] for p in points]))}


def verdict(report: dict) -> str:
    """One line a user can act on, from a :func:`teacher_check` report made with the supernet's estimates: is the
    teacher clearly better than the supernet (the 95% interval of teacher tau - supernet tau above 0), clearly worse
    (below 0), or neither? Without the supernet's estimates there is nothing to compare the teacher with.

    On the whole-space digits benchmark (benchmarks/teacher_curve_experiment.py), teachers that rank worse than the
    supernet, and a random one, gained nothing, and a stronger ranking-loss weight made a worse teacher cost more."""
    if "teacher_minus_supernet_ci95" not in report:
        return ("no supernet to compare with: pass --checkpoint; distilling pays off only for a teacher that ranks "
                "better than the supernet does by itself")
    low, high = report["teacher_minus_supernet_ci95"]
    if low > 0:
        return ("the teacher ranks clearly better than the supernet here: distilling it can help; with a teacher far "
                "better than the supernet, a larger ranking-loss weight (--rank-weight) can help more")
    if high < 0:
        return ("the teacher ranks clearly worse than the supernet here: do not distil it (such teachers gained "
                "nothing on the measured benchmark, and a larger ranking-loss weight made them cost)")
    return ("the teacher is not clearly better than the supernet here (the interval holds 0): expect no gain from "
            "distilling it; label more architectures to tell")

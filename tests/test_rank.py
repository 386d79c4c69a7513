"""Rank-consistency metrics and ground-truth tables."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from rdnas import rank
from rdnas.spaces import nb201

GT_TABLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201_gt.csv"
needs_gt = pytest.mark.skipif(not GT_TABLE.exists(), reason=f"NB201 ground-truth table not found at {GT_TABLE}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=300).round(1)  # with ties
    predicted = truth + rng.normal(scale=0.8, size=300)
    assert rank.kendall_tau(predicted, truth) == pytest.approx(stats.kendalltau(predicted, truth).statistic)
    assert rank.spearman_rho(predicted, truth) == pytest.approx(stats.spearmanr(predicted, truth).statistic)
    assert rank.pearson_r(predicted, truth) == pytest.approx(stats.pearsonr(predicted, truth).statistic)
    assert rank.pearson_r(-predicted, truth) < 0  # signed


def test_concordant_pair_ratio_by_hand():
    truth = [1.0, 2.0, 3.0, 4.0]
    assert rank.concordant_pair_ratio([10, 20, 30, 40], truth) == 1.0
    assert rank.concordant_pair_ratio([40, 30, 20, 10], truth) == 0.0
    # Pairs: (1,2) + (1,3) + (1,4) + (2,3) - (2,4) + (3,4) tie -> (4 + 0.5) / 6
    assert rank.concordant_pair_ratio([1, 2, 3, 3], [1, 2, 3, 4]) == pytest.approx(5.5 / 6)
    # Tied truths are not pairs; an item is never paired with itself.
    assert rank.concordant_pair_ratio([1, 5, 2], [0, 0, 1]) == pytest.approx(0.5)
    assert rank.concordant_pair_ratio([1, 1, 2], [0, 1, 2]) == pytest.approx(2.5 / 3)


def test_concordant_pair_ratio_relates_to_kendall_tau_without_ties():
    rng = np.random.default_rng(3)
    truth, predicted = rng.normal(size=200), rng.normal(size=200)
    tau = stats.kendalltau(predicted, truth).statistic
    assert rank.concordant_pair_ratio(predicted, truth) == pytest.approx((tau + 1) / 2)


def test_top_k_metrics():
    truth = np.arange(100, dtype=float)            # item 99 is the best
    predicted = truth.copy()
    predicted[[99, 0]] = predicted[[0, 99]]        # the best and worst swap places
    assert rank.precision_at_top(predicted, truth, 10) == pytest.approx(0.9)
    best, worst = rank.best_and_worst_rank_in_top(predicted, truth, 10)
    assert (best, worst) == (2, 100)
    assert rank.precision_at_top(truth, truth, 1) == 1.0


def test_rank_report_states_size_and_column():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=120)
    report = rank.rank_report(truth + rng.normal(size=120), truth, column="cifar10_valid_acc", bootstrap_samples=200)
    assert report["num_archs"] == 120 and report["ground_truth_column"] == "cifar10_valid_acc"
    low, high = report["kendall_tau_ci95"]
    assert low < report["kendall_tau"] < high
    assert 0 <= report["precision_at_top_10pct"] <= 1


class TestMetricErrors:
    def test_nan(self):
        with pytest.raises(ValueError, match=r"rdnas.rank.kendall_tau: predicted and truth must not contain NaN"):
            rank.kendall_tau([1.0, float("nan")], [1.0, 2.0])

    def test_lengths(self):
        with pytest.raises(ValueError, match=r"rdnas.rank.spearman_rho: predicted and truth must have the same length, got 3 and 2"):
            rank.spearman_rho([1, 2, 3], [1, 2])

    def test_percent(self):
        with pytest.raises(ValueError, match=r"percent must lie in \(0, 100\], got 0"):
            rank.precision_at_top([1, 2], [1, 2], 0)

    def test_constant_truth(self):
        with pytest.raises(ValueError, match=r"rdnas.rank.concordant_pair_ratio: every truth value is 5; a rank correlation with a constant is undefined"):
            rank.concordant_pair_ratio([1, 2, 3], [5, 5, 5])

    def test_constant_prediction(self):
        with pytest.raises(ValueError, match=r"rdnas.rank.kendall_tau: every predicted value is 0.1"):
            rank.kendall_tau([0.1, 0.1, 0.1], [1, 2, 3])


def write_table(path, rows, header="index,arch_str,acc,params"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_table_round_trip(tmp_path):
    a, b = (3, 3, 3, 1, 3, 2), (0, 1, 2, 3, 4, 0)
    table = rank.GroundTruth.load(write_table(tmp_path / "t.csv", [
        f"7,{nb201.to_string(a)},91.5,1.2", f"3,{nb201.to_string(b)},,0.5"]))
    assert len(table) == 2 and table.index_of_arch(a) == 7 and table.arch_of_index(3) == b
    np.testing.assert_array_equal(table.values(torch.tensor([b, a]), "params"), [0.5, 1.2])
    assert np.isnan(table.column("acc")[1])
    assert table.rows_of(torch.tensor([(0, 0, 0, 0, 0, 0)])).item() == -1


class TestTableErrors:
    def test_wrong_field_count(self, tmp_path):
        path = write_table(tmp_path / "t.csv", [f"0,{nb201.to_string((0,) * 6)},1,2", "1,x"])
        with pytest.raises(rank.MalformedTable, match=rf"{path}:3: expected 4 fields, got 2"):
            rank.GroundTruth.load(path)

    def test_bad_architecture(self, tmp_path):
        path = write_table(tmp_path / "t.csv", ["0,|conv~0|,1,2"])
        with pytest.raises(rank.MalformedTable, match=rf"{path}:2: rdnas.spaces.nb201: invalid architecture string"):
            rank.GroundTruth.load(path)

    def test_bad_number(self, tmp_path):
        path = write_table(tmp_path / "t.csv", [f"0,{nb201.to_string((0,) * 6)},high,2"])
        with pytest.raises(rank.MalformedTable, match=rf"{path}:2: a numeric column holds a non-number"):
            rank.GroundTruth.load(path)

    def test_missing_column(self, tmp_path):
        path = write_table(tmp_path / "t.csv", [], header="index,acc")
        with pytest.raises(rank.MalformedTable, match=rf"{path}:1: the header has no 'arch_str' \(or 'arch'\) column"):
            rank.GroundTruth.load(path)

    def test_repeated_column_and_no_rows(self, tmp_path):
        path = write_table(tmp_path / "t.csv", [f"0,{nb201.to_string((0,) * 6)},1,2"], header="index,arch_str,acc,acc")
        with pytest.raises(rank.MalformedTable, match=rf"{path}:1: the header names \['acc'\] more than once"):
            rank.GroundTruth.load(path)
        path = tmp_path / "empty.csv"
        path.write_text("index,arch_str,acc\n")
        with pytest.raises(rank.MalformedTable, match=rf"{path}: the table has a header but no rows"):
            rank.GroundTruth.load(path)

    def test_unknown_column(self, tmp_path):
        table = rank.GroundTruth.load(write_table(tmp_path / "t.csv", [f"0,{nb201.to_string((0,) * 6)},1,2"]))
        with pytest.raises(KeyError, match=r"has no column 'accuracy'; it has \['acc', 'params'\]"):
            table.column("accuracy")


@needs_gt
def test_official_table():
    table = rank.GroundTruth.load(GT_TABLE)
    assert len(table) == 15625
    best = int(np.argmax(table.column("cifar10_valid_acc")))
    assert int(table.indices[best]) == 6111
    assert nb201.to_string(table.arch_of_index(9930)) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    every = nb201.all_archs()
    assert torch.all(table.rows_of(every) >= 0)


def test_top_k_metrics_do_not_depend_on_the_order_of_tied_items():
    """P@top-K% is the expectation over uniformly random tie-breaking (here checked against every order of six
    items with ties, under the position-broken definition it replaced); BR/WR count every item tied with the K-th
    predicted value. Both gave different answers for the same data in another row order."""
    import itertools

    predicted, truth = np.array([0.9, 0.9, 0.5, 0.1]), np.array([3.0, 1.0, 0.0, 2.0])
    for order in ([0, 1, 2, 3], [1, 0, 2, 3]):
        assert rank.precision_at_top(predicted[order], truth[order], 25) == pytest.approx(0.5)
        assert rank.best_and_worst_rank_in_top(predicted[order], truth[order], 25) == (1, 3)

    def top_set(values, order, k):  # the k largest, ties broken by position in ``order``
        order = np.asarray(order)
        return set(order[np.argsort(-values[order], kind="stable")[:k]].tolist())

    predicted, truth = np.array([3.0, 2.0, 2.0, 2.0, 1.0]), np.array([5.0, 4.0, 4.0, 1.0, 4.0])
    orders = list(itertools.permutations(range(5)))
    for percent in (20, 40, 60):
        k = max(1, int(np.ceil(5 * percent / 100)))
        tops_predicted = [top_set(predicted, o, k) for o in orders]
        tops_true = [top_set(truth, o, k) for o in orders]
        expected = np.mean([len(a & b) / k for a in tops_predicted for b in tops_true])  # independent tie-breaks
        assert rank.precision_at_top(predicted, truth, percent) == pytest.approx(expected, abs=1e-12)


def test_rank_quality_reports_only_an_undefined_ranking_as_nan():
    """A constant estimate (a barely trained supernet) gives a NaN report with the reason; other bad input
    (lengths that differ, NaN) raises instead of turning into a silent NaN report."""
    from rdnas.pipeline import rank_quality

    report = rank_quality(np.full(5, 0.1), np.arange(5.0), "acc")
    assert np.isnan(report["kendall_tau"]) and "every predicted value is 0.1" in report["undefined"]
    with pytest.raises(ValueError, match="must have the same length, got 3 and 2"):
        rank_quality(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]), "acc")
    with pytest.raises(ValueError, match="must not contain NaN"):
        rank_quality(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 2.0]), "acc")


def test_shipped_tables_are_read_by_name(capsys):
    """``shipped:<name>`` reads a table shipped with rdnas wherever a table path goes (GroundTruth.load, every
    ``--gt``); an unknown name is refused with the shipped names listed."""
    from rdnas.cli import main
    from rdnas.pipeline import shipped_benchmark
    from rdnas.rank import GroundTruth, shipped_tables

    tables = shipped_tables()
    assert {"nb201_digits", "resnet48_digits"} <= set(tables)
    assert tables["nb201_digits"] == shipped_benchmark("nb201")
    by_name = GroundTruth.load("shipped:nb201_digits", "nb201")
    by_path = GroundTruth.load(shipped_benchmark("nb201"), "nb201")
    assert by_name.path == by_path.path and torch.equal(by_name.archs, by_path.archs)
    np.testing.assert_array_equal(by_name.columns["digits_valid_acc"], by_path.columns["digits_valid_acc"])
    with pytest.raises(FileNotFoundError, match=r"no shipped table 'nb201_cifar' \(shipped:nb201_cifar\); shipped: "
                                                r".*shipped:nb201_digits"):
        GroundTruth.load("shipped:nb201_cifar", "nb201")
    assert main(["predictor", "fit", "--gt", "shipped:nope", "--train-archs", "20", "--out", "never.pt"]) == 2
    error = capsys.readouterr().err
    assert "--gt: no shipped table 'nope'" in error and "shipped:nb201_digits" in error

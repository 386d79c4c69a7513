"""Row order: every table rdnas writes, read by every reader, gives each architecture its own row.

Writers: ``rdnas proxies`` (score_space) without ``--gt`` (rows in rdnas's enumeration order) and with it (the
benchmark's official index order), merged shards (merge_tables), the mini-benchmark's tables (write_table) and
``rdnas predictor rank`` rankings (``arch,score``). Readers: the table teacher (Teacher.from_table and, in memory,
Teacher.from_score_table), ground-truth tables (GroundTruth: eval, search, predictor --gt), feature tables
(ProxyFeatures: predictor --feature-table), ScoreTable.rows_of and merge_tables.

The writers score with a test proxy whose value is a known function of the architecture, distinct for every cell
(its enumeration index + 0.25), and the ground truth gives the cells official indices in a seeded random order,
so a reader that took a row's position for its architecture fails at almost every cell.
"""

import csv
import re

import numpy as np
import pytest
import torch

from rdnas.cli import main
from rdnas.minibench.build import benchmark_table, write_table
from rdnas.predictors import get_predictor
from rdnas.predictors.features import ArchFeatures, ProxyFeatures
from rdnas.proxies import Proxy, ScoreTable, merge_tables, score_space
from rdnas.rank import GroundTruth, MalformedTable, MissingColumn
from rdnas.spaces import get_space
from rdnas.train import Teacher, TrainConfig, make_teacher

SPACE = get_space("nb201")
ALL = SPACE.enumerate()  # LongTensor[15625, 6], enumeration order
EXPECTED = torch.arange(SPACE.size, dtype=torch.float64) + 0.25  # the test proxy's value, per enumeration index


def _enumeration_score(supernet, archs, minibatch):
    return SPACE.index(torch.tensor(archs, dtype=torch.long)).double() + 0.25


ENUMERATION_PROXY = Proxy("enum", _enumeration_score, needs_data=False, batched=True, summary="test: the index")
SMALL_NET = {"channels": 4, "cells_per_stage": 1, "archs_per_chunk": 4096, "progress": False}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Every writer's output over the whole space (the bench table over 240 cells): {name: path}."""
    folder = tmp_path_factory.mktemp("tables")
    official = torch.randperm(SPACE.size, generator=torch.Generator().manual_seed(0))  # official index -> enumeration
    gt = folder / "gt.csv"
    with open(gt, "w") as handle:
        handle.write("index,arch_str,acc\n")
        for index, e in enumerate(official.tolist()):
            handle.write(f"{index},{SPACE.to_string(ALL[e])},{float(EXPECTED[e])!r}\n")
    paths = {"gt": gt}
    paths["proxies"] = folder / "proxies.csv"
    score_space([ENUMERATION_PROXY], space="nb201", out=paths["proxies"], **SMALL_NET)
    paths["proxies_gt"] = folder / "proxies_gt.csv"
    score_space([ENUMERATION_PROXY], space="nb201", gt=gt, out=paths["proxies_gt"], **SMALL_NET)
    shards = [folder / f"shard{i}.csv" for i in range(3)]
    for i, shard in enumerate(shards):
        score_space([ENUMERATION_PROXY], space="nb201", gt=gt, out=shard, shard=(i, 3),
                    **{**SMALL_NET, "archs_per_chunk": 1000})
    paths["merged"] = folder / "merged.csv"
    merge_tables(list(reversed(shards)), paths["merged"], expect_complete=True)
    paths["shards"] = shards

    predictor = get_predictor("mlp")(space="nb201", features=ArchFeatures("nb201"), seed=0, epochs=2, hidden=16)
    rows = torch.randperm(SPACE.size, generator=torch.Generator().manual_seed(1))[:32]
    predictor.fit(ALL[rows], EXPECTED[rows].float())
    model = folder / "model.pt"
    predictor.save(model)
    paths["ranking"] = folder / "ranking.csv"
    assert main(["predictor", "rank", "--model", str(model), "--out", str(paths["ranking"])]) == 0
    paths["ranking_scores"] = predictor.predict(ALL).double()  # per enumeration index

    sample = torch.randperm(SPACE.size, generator=torch.Generator().manual_seed(2))[:240]
    runs = [{"enumeration_index": int(e), "arch_str": SPACE.to_string(ALL[e]), "seed": seed,
             "valid_acc": float(e) / 1000, "valid_loss": 1.0, "train_loss": 1.0, "seconds": 0.0}
            for e in sample.tolist() for seed in (0, 1)]
    paths["bench"] = folder / "bench.csv"
    write_table(paths["bench"], benchmark_table(runs))
    paths["bench_sample"] = sample
    return paths


WHOLE_SPACE = {"proxies": "enum", "proxies_gt": "enum", "merged": "enum", "ranking": "score"}


def _expected(tables, writer) -> torch.Tensor:
    return tables["ranking_scores"] if writer == "ranking" else EXPECTED


def _plain_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_writers_use_different_row_orders(tables):
    """The premise: a positional reader would give most cells another cell's value."""
    enumeration = [SPACE.index(SPACE.from_string(r["arch"])).item() for r in _plain_rows(tables["proxies"])]
    official = [SPACE.index(SPACE.from_string(r["arch"])).item() for r in _plain_rows(tables["proxies_gt"])]
    assert enumeration == list(range(SPACE.size))
    assert sum(e != k for k, e in enumerate(official)) > 15_000
    assert [SPACE.index(SPACE.from_string(r["arch"])).item() for r in _plain_rows(tables["merged"])] == official
    assert ScoreTable.read(tables["proxies"]).order == "enumeration"
    assert ScoreTable.read(tables["proxies_gt"]).order == "official"
    assert ScoreTable.read(tables["merged"]).order == "official"


@pytest.mark.parametrize("writer", list(WHOLE_SPACE))
def test_teacher_from_table_matches_rows_by_architecture(tables, writer):
    teacher = Teacher.from_table(tables[writer], WHOLE_SPACE[writer], num_groups=5)
    assert torch.equal(teacher.scores, _expected(tables, writer))
    probe = ALL[torch.randperm(SPACE.size, generator=torch.Generator().manual_seed(3))[:50]]
    assert torch.equal(teacher.score(probe), _expected(tables, writer)[SPACE.index(probe)])


@pytest.mark.parametrize("writer", ["proxies_gt", "ranking"])
def test_the_training_run_teacher_matches_rows_by_architecture(tables, writer):
    """What `rdnas train --method rdnas --teacher-table T --teacher C` builds."""
    config = TrainConfig(method="rdnas", teacher_table=str(tables[writer]), teacher_proxies=WHOLE_SPACE[writer])
    assert torch.equal(make_teacher(config).scores, _expected(tables, writer))


@pytest.mark.parametrize("writer", ["proxies", "proxies_gt", "merged"])
def test_teacher_from_score_table_matches_rows_by_architecture(tables, writer):
    teacher = Teacher.from_score_table(ScoreTable.read(tables[writer]), "enum", num_groups=5)
    assert torch.equal(teacher.scores, EXPECTED)


@pytest.mark.parametrize("writer", list(WHOLE_SPACE) + ["gt"])
def test_ground_truth_and_feature_tables_match_rows_by_architecture(tables, writer):
    column = WHOLE_SPACE.get(writer, "acc")
    expected = _expected(tables, writer).numpy()
    table = GroundTruth.load(tables[writer])
    np.testing.assert_array_equal(table.values(ALL, column), expected)
    assert table.has_index == (writer != "ranking")
    shuffled = torch.randperm(SPACE.size, generator=torch.Generator().manual_seed(4))[:100]
    np.testing.assert_array_equal(table.values(ALL[shuffled], column), expected[shuffled.numpy()])
    features = ProxyFeatures.from_table(tables[writer], [column])
    order = np.argsort(np.argsort(expected, kind="stable"), kind="stable")  # rank of each enumeration index
    np.testing.assert_array_equal(np.argsort(features(ALL)[:, 0].numpy(), kind="stable"),
                                  np.argsort(order, kind="stable"))


@pytest.mark.parametrize("writer", ["proxies", "proxies_gt", "merged"])
def test_score_table_rows_of_matches_by_architecture(tables, writer):
    table = ScoreTable.read(tables[writer])
    rows = table.rows_of(ALL, SPACE)
    assert bool((rows >= 0).all())
    np.testing.assert_array_equal(table.column("enum")[rows.numpy()], EXPECTED.numpy())
    strings = [SPACE.to_string(ALL[7]), SPACE.to_string(ALL[15000])]
    np.testing.assert_array_equal(table.column("enum")[table.rows_of(strings, "nb201").numpy()], [7.25, 15000.25])


def test_bench_table_is_keyed_by_architecture_and_refused_as_a_teacher(tables):
    table = GroundTruth.load(tables["bench"])
    sample = tables["bench_sample"]
    np.testing.assert_array_almost_equal(table.values(ALL[sample], "digits_valid_acc"),
                                         sample.double().numpy() / 1000, decimal=4)
    with pytest.raises(ValueError, match=rf"teacher table {tables['bench']} must hold all 15625 nb201 "
                                         r"architectures .*it has 240 rows and lacks 15385, e.g. \|"):
        Teacher.from_table(tables["bench"], "digits_valid_acc")
    with pytest.raises(ValueError, match="does not cover the space nb201"):
        ProxyFeatures.from_table(tables["bench"], ["digits_valid_acc"])
    with pytest.raises(ValueError, match="not a score table"):
        merge_tables([tables["bench"]])


def test_merging_tables_of_two_index_orders_is_refused(tables, tmp_path):
    with pytest.raises(ValueError, match=r"written with order=.*merge only the shards of one run"):
        merge_tables([tables["proxies"], tables["proxies_gt"]])
    # the same tables without their sidecars: an architecture under two indices gives them away
    bare = []
    for name in ("proxies", "proxies_gt"):
        bare.append(tmp_path / f"{name}.csv")
        bare[-1].write_bytes(tables[name].read_bytes())
    with pytest.raises(ValueError, match=r"architecture \|.*\| has index \d+ in .*proxies.csv but \d+ in "
                                         r".*proxies_gt.csv: the tables number architectures differently"):
        merge_tables(bare)


def test_a_ranking_gives_no_official_index(tables):
    ranking = GroundTruth.load(tables["ranking"])
    with pytest.raises(ValueError, match="has no index column"):
        ranking.index_of_arch(ALL[0])
    with pytest.raises(ValueError, match="gt: .*ranking.csv has no index column"):
        score_space([ENUMERATION_PROXY], space="nb201", gt=tables["ranking"], limit=3, **SMALL_NET)


def test_teacher_scores_of_an_enumeration_order_table_are_those_positional_reading_gave(tables):
    """Checkpoints written before tables were keyed keep resuming: the teacher they saved (a positional read of a
    table written without --gt) is the teacher a keyed read builds."""
    positional = Teacher.from_columns([ScoreTable.read(tables["proxies"]).column("enum")], 5, "enum")
    keyed = Teacher.from_table(tables["proxies"], "enum", 5)
    assert keyed.same_as(positional.state()) and torch.equal(keyed.groups, positional.groups)
    misread = Teacher.from_columns([ScoreTable.read(tables["proxies_gt"]).column("enum")], 5, "enum")
    assert not Teacher.from_table(tables["proxies_gt"], "enum", 5).same_as(misread.state())


class TestTableErrors:
    def test_missing_column_names_file_column_and_columns(self, tables):
        with pytest.raises(MissingColumn, match=rf"the teacher table {tables['proxies']} has no column 'snip'; its "
                                                "columns: enum$"):
            Teacher.from_table(tables["proxies"], "enum,snip")
        with pytest.raises(MissingColumn, match=rf"the score table {tables['proxies']} has no column 'snip'"):
            Teacher.from_score_table(ScoreTable.read(tables["proxies"]), ["enum", "snip"])
        table = GroundTruth.load(tables["gt"])
        with pytest.raises(ValueError, match=rf"the table {tables['gt']} has no column 'nope'; its columns: acc"):
            table.require_columns(["acc", "nope"])
        table.require_columns("acc")
        with pytest.raises(ValueError, match=r"has no column 'nope'; its columns: enum"):
            ScoreTable.read(tables["proxies"]).require_columns("nope")

    def test_a_missing_column_is_a_key_error_and_a_value_error(self, tables):
        """A KeyError for code that treats columns as a mapping, a ValueError so that the command line reports it
        as bad input rather than a traceback."""
        assert issubclass(MissingColumn, KeyError) and issubclass(MissingColumn, ValueError)
        with pytest.raises(MissingColumn, match=rf"^rdnas.rank.GroundTruth: {tables['gt']} has no column 'nope'; "
                                                r"it has \['acc'\]$"):
            GroundTruth.load(tables["gt"]).values(ALL[:3], "nope")
        with pytest.raises(MissingColumn, match=rf"^rdnas.proxies.ScoreTable: {tables['proxies']} has no column "
                                                r"'nope'; columns: \['enum'\]$"):
            ScoreTable.read(tables["proxies"]).column("nope")

    def test_an_architecture_twice_names_both_lines(self, tables, tmp_path):
        lines = tables["proxies_gt"].read_text().splitlines(keepends=True)
        arch = lines[5].split(",")[1]
        lines.insert(9, f"99999,{arch},-1.0\n")  # becomes line 10
        path = tmp_path / "twice.csv"
        path.write_text("".join(lines))
        with pytest.raises(MalformedTable, match=rf"{path}:10: architecture .* is also on line 6"):
            Teacher.from_table(path, "enum")

    def test_score_table_rows_of_names_a_repeated_or_invalid_architecture(self):
        a = SPACE.to_string(ALL[3])
        table = ScoreTable([0, 1, 2], [a, SPACE.to_string(ALL[4]), a], {"x": [1.0, 2.0, 3.0]})
        with pytest.raises(ValueError, match=r"ScoreTable: row 3: architecture .* is also at row 1"):
            table.rows_of(ALL[:2], SPACE)
        bad = ScoreTable([0], ["|conv~0|"], {"x": [1.0]}, {"path": "t.csv"})
        with pytest.raises(ValueError, match=r"ScoreTable: t.csv:2: .*invalid architecture string"):
            bad.rows_of(ALL[:1], SPACE)

    def test_an_interrupted_score_table_is_refused(self, tables, tmp_path):
        path = tmp_path / "cut.csv"
        data = tables["proxies"].read_bytes()
        path.write_bytes(data[:-3])
        (tmp_path / "cut.csv.meta.json").write_bytes((tables["proxies"].parent / "proxies.csv.meta.json").read_bytes())
        with pytest.raises(MalformedTable, match="last line is incomplete"):
            Teacher.from_table(path, "enum")

    def test_no_common_architecture_names_the_table(self, tables):
        table = GroundTruth.load(tables["bench"])
        outside = ALL[[e for e in range(300) if e not in set(tables["bench_sample"].tolist())][:5]]
        with pytest.raises(ValueError, match=rf"the table {tables['bench']} holds none of the search's cells "
                                             r"\(5 nb201 architectures"):
            table.require_common(outside, "the search's cells")
        rows = table.require_common(torch.cat([outside, ALL[tables["bench_sample"][:1]]]))
        assert (rows >= 0).tolist() == [False] * 5 + [True]


def test_bench_runs_that_disagree_on_an_architectures_index_are_refused():
    a, b = SPACE.to_string(ALL[1]), SPACE.to_string(ALL[2])

    def run(index, arch, seed):
        return {"enumeration_index": index, "arch_str": arch, "seed": seed, "valid_acc": 90.0, "valid_loss": 0.3}

    assert list(benchmark_table([run(1, a, 0), run(1, a, 1), run(2, b, 0), run(2, b, 1)])) == [1, 2]
    with pytest.raises(ValueError, match=rf"the run files disagree: {re.escape(a)} has index 1 in one run and 2 in "
                                         "another"):
        benchmark_table([run(1, a, 0), run(2, a, 1)])
    with pytest.raises(ValueError, match=rf"the run files disagree: index 1 is {re.escape(a)} in one run and "
                                         rf"{re.escape(b)} in another"):
        benchmark_table([run(1, a, 0), run(1, b, 1)])

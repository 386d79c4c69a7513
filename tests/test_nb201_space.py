"""The NAS-Bench-201 search space: encodings, enumeration, connectivity, isomorphism classes."""

import csv
import itertools
from pathlib import Path

import pytest
import torch

from rdnas.spaces import nb201

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GT_TABLE = DATA / "nb201_gt.csv"
SUITE_ZERO = DATA / "nb201_zc_suite_zero_subset.csv"
needs_gt = pytest.mark.skipif(not GT_TABLE.exists(), reason=f"NB201 ground-truth table not found at {GT_TABLE}")
needs_suite_zero = pytest.mark.skipif(not SUITE_ZERO.exists(), reason=f"NAS-Bench-Suite-Zero table not found at {SUITE_ZERO}")

BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def test_string_round_trip_for_every_architecture():
    for arch in itertools.product(range(5), repeat=6):
        assert nb201.from_string(nb201.to_string(arch)) == arch


def test_string_encoding_follows_the_official_edge_order():
    assert nb201.from_string(BEST_C10) == (3, 3, 3, 1, 3, 2)
    assert nb201.to_string((0, 1, 2, 3, 4, 0)) == "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"


def test_enumeration_index_round_trip_and_order():
    archs = nb201.all_archs()
    assert archs.shape == (15625, 6) and archs.dtype == torch.long
    assert len({tuple(a) for a in archs.tolist()}) == 15625
    for index in (0, 1, 4, 5, 3125, 15624):
        arch = nb201.from_enumeration_index(index)
        assert tuple(archs[index].tolist()) == arch
        assert nb201.enumeration_index(arch) == index
    assert torch.equal(nb201.enumeration_indices(archs), torch.arange(15625))


def test_naslib_and_nni_round_trips():
    for arch in itertools.product(range(5), repeat=6):
        assert nb201.from_naslib(nb201.to_naslib(arch)) == arch
        assert nb201.from_nni(nb201.to_nni(arch)) == arch
    # NASLib's edge order is (0-1, 0-2, 0-3, 1-2, 1-3, 2-3) and its codes 0=skip, 1=none, 2=conv3x3, 3=conv1x1, 4=pool.
    assert nb201.to_naslib(nb201.from_string(BEST_C10)) == (2, 2, 0, 2, 2, 3)
    assert nb201.to_nni((3, 0, 1, 2, 4, 0)) == {
        "0_1": "conv_3x3", "0_2": "none", "1_2": "skip_connect", "0_3": "conv_1x1", "1_3": "avg_pool_3x3", "2_3": "none"}


@needs_suite_zero
def test_naslib_codes_match_the_published_table():
    with open(SUITE_ZERO) as handle:
        rows = list(csv.DictReader(handle))
    for row in rows[:500]:
        codes = tuple(int(c) for c in row["naslib_op_indices"])
        assert nb201.to_string(nb201.from_naslib(codes)) == row["arch_str"]


def test_connectivity_counts():
    mask = nb201.connected(nb201.all_archs())
    assert int((~mask).sum()) == 341
    assert not nb201.is_connected((0, 0, 0, 0, 0, 0))
    assert nb201.is_connected((0, 1, 0, 0, 0, 1))  # 0 -skip-> 2 -skip-> 3
    assert not nb201.is_connected((1, 0, 0, 0, 0, 1))  # node 2 receives nothing, so 2 -> 3 carries nothing
    assert not nb201.is_connected((3, 3, 3, 0, 0, 0))  # nothing enters node 3


def test_live_edges_are_the_edges_on_an_input_to_output_path_of_non_none_edges():
    archs = nb201.all_archs()
    expected = torch.zeros(archs.shape, dtype=torch.bool)
    for path in ((3,), (0, 4), (1, 5), (0, 2, 5)):  # the four node-0 -> node-3 paths, as edge positions
        on_path = (archs[:, list(path)] != nb201.NONE).all(1)
        for edge in path:
            expected[:, edge] |= on_path
    live = nb201.live_edges(archs)
    assert live.shape == archs.shape and torch.equal(live, expected)
    assert torch.equal(live.any(1), nb201.connected(archs))
    # 0 -conv-> 1 -conv-> 2 is dead (2 feeds nothing), 0 -> 3 lives: only edge 3.
    assert nb201.live_edges(torch.tensor([3, 0, 3, 1, 0, 0])).tolist() == [False] * 3 + [True, False, False]
    # Node 2 receives nothing (0 -> 2 and 1 -> 2 are none): its skip to 3 is dead, 0 -> 1 -> 3 lives.
    assert nb201.live_edges(torch.tensor([[2, 0, 0, 0, 3, 1]])).tolist() == [[True, False, False, False, True, False]]


@needs_gt
def test_disconnected_architectures_are_the_ten_percent_ones():
    with open(GT_TABLE) as handle:
        rows = list(csv.DictReader(handle))
    archs = torch.tensor([nb201.from_string(r["arch_str"]) for r in rows])
    accuracy = torch.tensor([float(r["cifar10_valid_acc"]) for r in rows])
    disconnected = ~nb201.connected(archs)
    assert int(disconnected.sum()) == 341
    assert torch.all(accuracy[disconnected] <= 10.0 + 1e-6)


def test_isomorphism_classes():
    classes = {nb201.canonical_string(arch) for arch in itertools.product(range(5), repeat=6)}
    assert len(classes) == 6466
    # Node 1 = skip(node 0), so conv3x3 from node 0 plus skip from node 1 into node 2 equals skip from node 0 plus
    # conv3x3 from node 1: the inputs of a node commute and a skip edge passes its input through.
    assert nb201.canonical_string((1, 3, 1, 0, 0, 1)) == nb201.canonical_string((1, 1, 3, 0, 0, 1))
    assert nb201.canonical_string((1, 3, 1, 0, 0, 1)) != nb201.canonical_string((1, 3, 3, 0, 0, 1))
    disconnected = [a for a in itertools.product(range(5), repeat=6) if not nb201.is_connected(a)]
    assert len({nb201.canonical_string(a) for a in disconnected}) == 5  # the benchmark's rule, see the docstring


class TestErrors:
    def test_bad_string_shape(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"rdnas.spaces.nb201: invalid architecture string .* expected three node groups"):
            nb201.from_string("|nor_conv_3x3~0|")

    def test_wrong_number_of_inputs(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"node 2 must have 2 inputs, got 1"):
            nb201.from_string("|none~0|+|none~0|+|none~0|none~1|none~2|")

    def test_unknown_op(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"unknown op 'conv_3x3'"):
            nb201.from_string("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")

    def test_wrong_source_node(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"entry 'none~0' of node 2 must read from node 1"):
            nb201.from_string("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|")

    def test_op_index_out_of_range(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"op index 5 on edge 2 is outside 0..4"):
            nb201.validate((0, 0, 5, 0, 0, 0))

    def test_wrong_length(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"expected 6 op indices, got 5"):
            nb201.to_string((0, 0, 0, 0, 0))

    def test_enumeration_index_range(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"invalid enumeration index 15625: expected 0..15624"):
            nb201.from_enumeration_index(15625)

    def test_nni_keys(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"expected the keys"):
            nb201.from_nni({"0_1": "none"})

    def test_naslib_codes(self):
        with pytest.raises(nb201.InvalidArchitecture, match=r"invalid NASLib op indices .* expected six integers in 0..4"):
            nb201.from_naslib((0, 1, 2, 3, 4, 9))

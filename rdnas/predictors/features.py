"""Predictor inputs: per-architecture tokens (NAR) and flat feature vectors (trees, MLP), for any search space.

NB201 (:func:`nb201_cell_tensors`): NAR's 31 channels of 4x4 per cell, as the authors' code builds them:

* channel 0, the op-type adjacency: entry ``[i, j]`` is the op code of the edge ``i -> j`` divided by 4
  (``none`` = 0 = no edge, ``skip_connect`` 0.25, ``nor_conv_1x1`` 0.5, ``nor_conv_3x3`` 0.75, ``avg_pool_3x3`` 1);
* channels 1..30, for each of the 15 searchable cells of the benchmark's CIFAR-10 network (C = 16, 32, 64 at
  32x32, 16x16, 8x8, five cells per stage), that edge's FLOPs then its parameters (ReLU-Conv-BN convolutions:
  ``C*C*k*k*H*W`` multiply-accumulates, ``C*C*k*k + 2C`` parameters; pooling, skip and none: 0).

Within a stage the five cells have the same channels and resolution, so their 2 x 5 channels are five copies of
the same two: ``cells="stages"`` keeps one cell per stage (7 channels: the adjacency, then FLOPs and parameters of
stage 1, 2, 3), the same information in 7 tokens instead of 31, which makes NAR's fit about 6x faster
(benchmarks/bench_predictors.py).
``cells="all"`` is the authors' 31 (:class:`ArchFeatures` defaults to "stages").

``edges="live"`` (NB201) gives every predictor the cell as it computes: an edge on no input-to-output path of
non-``none`` edges (:func:`rdnas.spaces.nb201.live_edges`) is dead weight, so it becomes ``none`` in every channel
(op code, FLOPs, parameters), and one more token (:func:`nb201_path_tokens`) describes the cell's four
input-to-output paths: whether each is live, the share of convolutions on each live path, and the share of the six
edges that are live and hold each op. The same cell information, made explicit; the predictors' Kendall tau on the NB201 protocol rises
by 0.05-0.2 with it (README, "Predictors on NAS-Bench-201's real ground truth"); it is :class:`ArchFeatures`'s
default. ``edges="all"`` is the authors' input.

The authors fed the raw counts (up to 2.4e6). Here every count is **log-scaled**: ``log1p(count)`` divided by
``log1p`` of the largest count of its channel over the space, so every entry lies in [0, 1] and the scaling does
not depend on the training set. One 4x4 channel, flattened, is one token of 16 values.

Other spaces: ``space.encode(archs)`` (float32 Tensor[K, F]) cut into tokens of 16 (zero-padded).

Zero-cost proxy columns (:class:`ProxyFeatures`): any table keyed by architecture string (an ``rdnas proxies``
output, or ``nb201_zc_proxies.csv``); each column is **rank-normalised** over the table's rows (average rank of
ties, scaled to [0, 1]; -inf, e.g. a disconnected cell's score, ranks lowest; NaN becomes 0.5). They add tokens of
16 values (the columns, zero-padded) to NAR's input and columns to the flat vector.
"""

import math

import numpy as np
import torch
from torch import Tensor

from rdnas.spaces import SearchSpace, get_space
from rdnas.spaces import nb201

TOKEN_SIZE = 16
NB201_CELL_CHANNELS = 1 + 2 * 15
# (channels, side) of the 15 searchable cells of NB201's CIFAR-10 network, in network order.
_NB201_CELLS = tuple((16 * 2**stage, 32 // 2**stage) for stage in range(3) for _ in range(5))


def _edge_costs(op: int, channels: int, side: int) -> tuple[float, float]:
    """(multiply-accumulates, parameters) of one NB201 edge op in a cell of ``channels`` at ``side`` x ``side``."""
    kernel = {nb201.CONV1X1: 1, nb201.CONV3X3: 3}.get(op)
    if kernel is None:
        return 0.0, 0.0
    weights = channels * channels * kernel * kernel
    return float(weights * side * side), float(weights + 2 * channels)


def _channel_maxima() -> Tensor:
    largest = [1.0]  # the adjacency channel is op / 4 already
    for channels, side in _NB201_CELLS:
        flops, params = _edge_costs(nb201.CONV3X3, channels, side)
        largest += [flops, params]
    return torch.tensor(largest, dtype=torch.float64)


NB201_CELL_CHOICES = ("all", "stages")
NB201_EDGE_CHOICES = ("all", "live")
# NB201's four input-to-output paths (node 0 -> node 3) as edge positions: 0-3, 0-1-3, 0-2-3, 0-1-2-3.
NB201_PATHS = ((3,), (0, 4), (1, 5), (0, 2, 5))


def _checked(option: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"rdnas.predictors: {option} must be one of {choices}, got {value!r}")
    return value


def nb201_cell_tensors(archs, cells: str = "all", edges: str = "all") -> Tensor:
    """NAR's NB201 input (module docstring): LongTensor[K, 6] -> float32 Tensor[K, 31, 4, 4] (``cells="all"``) or
    Tensor[K, 7, 4, 4] (``cells="stages"``: the adjacency and the first cell of each stage), log-scaled to [0, 1];
    ``edges="live"``: dead edges as ``none``."""
    _checked("cells", cells, NB201_CELL_CHOICES)
    rows = nb201.SPACE.validate(archs)
    if _checked("edges", edges, NB201_EDGE_CHOICES) == "live":
        rows = torch.where(nb201.live_edges(rows), rows, nb201.NONE)
    out = torch.zeros(len(rows), NB201_CELL_CHANNELS, nb201.NUM_NODES, nb201.NUM_NODES, dtype=torch.float64)
    # Per op: the (flops, params) of every cell, a [5, 30] table; then scatter by edge position.
    per_op = torch.tensor([[value for channels, side in _NB201_CELLS for value in _edge_costs(op, channels, side)]
                           for op in range(nb201.NUM_OPS)], dtype=torch.float64)
    maxima = _channel_maxima()
    scaled = torch.log1p(per_op) / torch.log1p(maxima[1:])  # [5, 30]
    for edge, (source, target) in enumerate(nb201.EDGES):
        ops = rows[:, edge]
        out[:, 0, source, target] = ops.double() / (nb201.NUM_OPS - 1)
        out[:, 1:, source, target] = scaled[ops]
    if cells == "stages":  # channel 0, then (flops, params) of cells 0, 5, 10: channels 1-2, 11-12, 21-22
        out = out[:, [0] + [1 + 2 * cell + k for cell in (0, 5, 10) for k in (0, 1)]]
    return out.float()


def nb201_path_tokens(archs) -> Tensor:
    """The path token of ``edges="live"`` (module docstring): LongTensor[K, 6] -> float32 Tensor[K, 1, 16]: for each
    of the four input-to-output paths (:data:`NB201_PATHS`) whether it is live (no ``none`` edge) and the fraction of
    its edges that are convolutions (0 on a dead path), then the fraction of the six edges that are live and hold
    each op (``none`` counts the dead edges), zero-padded to 16."""
    rows = nb201.SPACE.validate(archs)
    live_paths = torch.stack([(rows[:, list(path)] != nb201.NONE).all(1) for path in NB201_PATHS], dim=1)
    convolution = (rows == nb201.CONV1X1) | (rows == nb201.CONV3X3)
    convs = torch.stack([convolution[:, list(path)].float().mean(1) for path in NB201_PATHS], dim=1) * live_paths
    live_ops = torch.where(nb201.live_edges(rows), rows, nb201.NONE)
    op_share = torch.nn.functional.one_hot(live_ops, nb201.NUM_OPS).float().mean(1)
    return _as_tokens(torch.cat([live_paths.float(), convs, op_share], dim=1))


class ProxyFeatures:
    """Rank-normalised columns of a table keyed by architecture string (module docstring).

    Args:
        keys (list[str]): ``space.to_string`` of each row.
        values (Tensor[R, P]): the rank-normalised values, float32.
        columns (list[str]): the column names.
        space: the search space.
    """

    def __init__(self, keys: list[str], values: Tensor, columns: list[str], space="nb201"):
        self.space = get_space(space)
        self.keys, self.values, self.columns = list(keys), values.float(), list(columns)
        self._row = {key: row for row, key in enumerate(self.keys)}
        self._row_of_index = None
        if self.space.enumerable:  # a tensor lookup: predictors look up the whole space at once
            self._row_of_index = torch.full((self.space.size,), -1, dtype=torch.long)
            archs = torch.stack([self.space.from_string(key) for key in self.keys])
            self._row_of_index[self.space.index(archs)] = torch.arange(len(self.keys))

    @classmethod
    def from_table(cls, path, columns, space="nb201") -> "ProxyFeatures":
        """Reads ``columns`` of a table (``GroundTruth`` format: an ``arch_str`` or ``arch`` column) and
        rank-normalises them. Raises ValueError naming an unknown column or, for an enumerable space, the first
        architecture of the space the table lacks."""
        from rdnas.rank import GroundTruth

        space = get_space(space)
        columns = list(columns)
        if not columns:
            raise ValueError("rdnas.predictors: --features names no column of the feature table")
        table = GroundTruth.load(path, space=space)
        unknown = [name for name in columns if name not in table.columns]
        if unknown:
            raise ValueError(f"rdnas.predictors: the feature table {path} has no column {unknown[0]!r}; it has "
                             f"{', '.join(sorted(table.columns))}")
        if space.enumerable and len(table) < space.size:
            rows = table.rows_of(space.enumerate())
            missing = space.enumerate()[(rows < 0).nonzero()[0, 0]]
            raise ValueError(f"rdnas.predictors: the feature table {path} does not cover the space {space.name}: "
                             f"it has {len(table):,} of {space.size:,} architectures (missing e.g. "
                             f"{space.to_string(missing)})")
        values = torch.from_numpy(np.stack([rank_normalise(table.column(name)) for name in columns], axis=1))
        keys = [space.to_string(arch) for arch in table.archs]
        return cls(keys, values, columns, space)

    def __call__(self, archs) -> Tensor:
        """float32 Tensor[K, P]; ValueError naming the first architecture the table lacks."""
        archs = self.space.validate(archs)
        if self._row_of_index is not None:
            rows = self._row_of_index[self.space.index(archs)]
            if bool((rows < 0).any()):
                missing = archs[(rows < 0).nonzero()[0, 0]]
                raise ValueError(f"rdnas.predictors: the feature table has no row for {self.space.to_string(missing)}")
            return self.values[rows]
        rows = []
        for arch in archs:
            key = self.space.to_string(arch)
            if key not in self._row:
                raise ValueError(f"rdnas.predictors: the feature table has no row for {key}")
            rows.append(self._row[key])
        return self.values[torch.tensor(rows, dtype=torch.long)]

    def state(self) -> dict:
        return {"keys": self.keys, "values": self.values, "columns": self.columns}


def rank_normalise(column: np.ndarray) -> np.ndarray:
    """Average ranks of ``column`` scaled to [0, 1] (higher value, higher rank); -inf lowest, NaN 0.5."""
    from scipy.stats import rankdata

    column = np.asarray(column, dtype=np.float64)
    finite = ~np.isnan(column)
    out = np.full(column.shape, 0.5)
    if finite.sum() > 1:
        ranks = rankdata(column[finite], method="average")  # -inf sorts first
        out[finite] = (ranks - 1) / (finite.sum() - 1)
    return out


class ArchFeatures:
    """The inputs of every predictor for one space, optionally with proxy columns.

    ``tokens(archs)``: float32 Tensor[K, T, 16] (NAR); ``flat(archs)``: float32 Tensor[K, T * 16] (trees, MLP).
    NB201 options (module docstring): ``cells`` ("stages" by default, or the authors' "all") and ``edges`` ("live"
    by default, or the authors' "all"); the defaults are the best measured input of every predictor (README,
    "Predictors on NAS-Bench-201's real ground truth"). Other spaces take neither (their default is "all": the
    space's encoding as it is).
    """

    def __init__(self, space="nb201", proxies: ProxyFeatures | None = None, cells: str | None = None,
                 edges: str | None = None):
        self.space: SearchSpace = get_space(space)
        self.proxies = proxies
        nb201_space = self.space.name == "nb201"
        cells = cells if cells is not None else "stages" if nb201_space else "all"
        edges = edges if edges is not None else "live" if nb201_space else "all"
        for option, value, choices in (("cells", cells, NB201_CELL_CHOICES), ("edges", edges, NB201_EDGE_CHOICES)):
            if _checked(option, value, choices) != "all" and not nb201_space:
                raise ValueError(f"rdnas.predictors: {option}={value!r} is an NB201 input option; the "
                                 f"{self.space.name} space's features come from its encoding")
        self.cells, self.edges = cells, edges

    def _structure_tokens(self, archs) -> Tensor:
        if self.space.name == "nb201":
            tokens = nb201_cell_tensors(archs, self.cells, self.edges).flatten(2)
            if self.edges == "live":
                tokens = torch.cat([tokens, nb201_path_tokens(archs)], dim=1)
            return tokens
        return _as_tokens(self.space.encode(archs).float())

    def tokens(self, archs) -> Tensor:
        tokens = self._structure_tokens(archs)
        if self.proxies is not None:
            tokens = torch.cat([tokens, _as_tokens(self.proxies(archs))], dim=1)
        return tokens

    def flat(self, archs) -> Tensor:
        return self.tokens(archs).flatten(1)

    @property
    def num_tokens(self) -> int:
        return self.tokens(self.space.sample(1, torch.Generator().manual_seed(0))).shape[1]

    def state(self) -> dict:
        return {"space": self.space.name, "proxies": None if self.proxies is None else self.proxies.state(),
                "cells": self.cells, "edges": self.edges}

    @classmethod
    def from_state(cls, state: dict) -> "ArchFeatures":
        proxies = state["proxies"]
        if proxies is not None:
            proxies = ProxyFeatures(proxies["keys"], proxies["values"], proxies["columns"], state["space"])
        return cls(state["space"], proxies, state.get("cells", "all"), state.get("edges", "all"))


def _as_tokens(values: Tensor) -> Tensor:
    """float Tensor[K, F] -> Tensor[K, ceil(F / 16), 16], zero-padded."""
    count = max(1, math.ceil(values.shape[1] / TOKEN_SIZE))
    padded = torch.zeros(values.shape[0], count * TOKEN_SIZE, dtype=torch.float32)
    padded[:, : values.shape[1]] = values
    return padded.view(values.shape[0], count, TOKEN_SIZE)

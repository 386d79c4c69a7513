"""NB201's predictor inputs (:meth:`NB201Space.predictor_tokens <rdnas.spaces.nb201.NB201Space.predictor_tokens>`,
which :class:`rdnas.predictors.ArchFeatures` reads through the space interface).

:func:`nb201_cell_tensors`: NAR's 31 channels of 4x4 per cell, as the authors' code builds them:

* channel 0, the op-type adjacency: entry ``[i, j]`` is the op code of the edge ``i -> j`` divided by 4
  (``none`` = 0 = no edge, ``skip_connect`` 0.25, ``nor_conv_1x1`` 0.5, ``nor_conv_3x3`` 0.75, ``avg_pool_3x3`` 1);
* channels 1..30, for each of the 15 searchable cells of the benchmark's CIFAR-10 network (C = 16, 32, 64 at
  32x32, 16x16, 8x8, five cells per stage), that edge's FLOPs then its parameters (ReLU-Conv-BN convolutions:
  ``C*C*k*k*H*W`` multiply-accumulates, ``C*C*k*k + 2C`` parameters; pooling, skip and none: 0).

Within a stage the five cells have the same channels and resolution, so their 2 x 5 channels are five copies of
the same two: ``cells="stages"`` keeps one cell per stage (7 channels: the adjacency, then FLOPs and parameters of
stage 1, 2, 3), the same information in 7 tokens instead of 31, which makes NAR's fit about 6x faster
(benchmarks/bench_predictors.py).
``cells="all"`` is the authors' 31 (:class:`rdnas.predictors.ArchFeatures` defaults to "stages").

``edges="live"`` (NB201) gives every predictor the cell as it computes: an edge on no input-to-output path of
non-``none`` edges (:func:`rdnas.spaces.nb201.live_edges`) is dead weight, so it becomes ``none`` in every channel
(op code, FLOPs, parameters), and one more token (:func:`nb201_path_tokens`) describes the cell's four
input-to-output paths: whether each is live, the share of convolutions on each live path, and the share of the six
edges that are live and hold each op. The same cell information, made explicit; the predictors' Kendall tau on
the NB201 protocol rises by 0.05-0.2 with it (README, "Predictors on NAS-Bench-201's real ground truth"); it is
:class:`rdnas.predictors.ArchFeatures`'s default. ``edges="all"`` is the authors' input.

The authors fed the raw counts (up to 2.4e6). Here every count is **log-scaled**: ``log1p(count)`` divided by
``log1p`` of the largest count of its channel over the space, so every entry lies in [0, 1] and the scaling does
not depend on the training set. One 4x4 channel, flattened, is one token of 16 values.
"""

import torch
from torch import Tensor

from rdnas.spaces import base
from rdnas.spaces.nb201 import (CONV1X1, CONV3X3, EDGES, NONE, NUM_NODES, NUM_OPS, SPACE, live_edges)

NB201_CELL_CHANNELS = 1 + 2 * 15
# (channels, side) of the 15 searchable cells of NB201's CIFAR-10 network, in network order.
_NB201_CELLS = tuple((16 * 2**stage, 32 // 2**stage) for stage in range(3) for _ in range(5))


def _edge_costs(op: int, channels: int, side: int) -> tuple[float, float]:
    """(multiply-accumulates, parameters) of one NB201 edge op in a cell of ``channels`` at ``side`` x ``side``."""
    kernel = {CONV1X1: 1, CONV3X3: 3}.get(op)
    if kernel is None:
        return 0.0, 0.0
    weights = channels * channels * kernel * kernel
    return float(weights * side * side), float(weights + 2 * channels)


def _channel_maxima() -> Tensor:
    largest = [1.0]  # the adjacency channel is op / 4 already
    for channels, side in _NB201_CELLS:
        flops, params = _edge_costs(CONV3X3, channels, side)
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
    rows = SPACE.validate(archs)
    if _checked("edges", edges, NB201_EDGE_CHOICES) == "live":
        rows = torch.where(live_edges(rows), rows, NONE)
    out = torch.zeros(len(rows), NB201_CELL_CHANNELS, NUM_NODES, NUM_NODES, dtype=torch.float64)
    # Per op: the (flops, params) of every cell, a [5, 30] table; then scatter by edge position.
    per_op = torch.tensor([[value for channels, side in _NB201_CELLS for value in _edge_costs(op, channels, side)]
                           for op in range(NUM_OPS)], dtype=torch.float64)
    maxima = _channel_maxima()
    scaled = torch.log1p(per_op) / torch.log1p(maxima[1:])  # [5, 30]
    for edge, (source, target) in enumerate(EDGES):
        ops = rows[:, edge]
        out[:, 0, source, target] = ops.double() / (NUM_OPS - 1)
        out[:, 1:, source, target] = scaled[ops]
    if cells == "stages":  # channel 0, then (flops, params) of cells 0, 5, 10: channels 1-2, 11-12, 21-22
        out = out[:, [0] + [1 + 2 * cell + k for cell in (0, 5, 10) for k in (0, 1)]]
    return out.float()


def nb201_path_tokens(archs) -> Tensor:
    """The path token of ``edges="live"`` (module docstring): LongTensor[K, 6] -> float32 Tensor[K, 1, 16]: for each
    of the four input-to-output paths (:data:`NB201_PATHS`) whether it is live (no ``none`` edge) and the fraction of
    its edges that are convolutions (0 on a dead path), then the fraction of the six edges that are live and hold
    each op (``none`` counts the dead edges), zero-padded to 16."""
    rows = SPACE.validate(archs)
    live_paths = torch.stack([(rows[:, list(path)] != NONE).all(1) for path in NB201_PATHS], dim=1)
    convolution = (rows == CONV1X1) | (rows == CONV3X3)
    convs = torch.stack([convolution[:, list(path)].float().mean(1) for path in NB201_PATHS], dim=1) * live_paths
    live_ops = torch.where(live_edges(rows), rows, NONE)
    op_share = torch.nn.functional.one_hot(live_ops, NUM_OPS).float().mean(1)
    return base.to_tokens(torch.cat([live_paths.float(), convs, op_share], dim=1))


def predictor_tokens(archs, cells: str = "stages", edges: str = "live") -> Tensor:
    """NB201's predictor input (module docstring): LongTensor[K, 6] -> float32 Tensor[K, T, 16], the cell tensors
    flattened to tokens, and the path token where ``edges="live"``."""
    tokens = nb201_cell_tensors(archs, cells, edges).flatten(2)
    if edges == "live":
        tokens = torch.cat([tokens, nb201_path_tokens(archs)], dim=1)
    return tokens

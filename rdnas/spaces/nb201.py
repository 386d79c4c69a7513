"""The NAS-Bench-201 cell search space.

An architecture is a tuple of six op indices, one per edge, in the official op order ``OPS`` and edge order
``EDGES`` (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2): ``(op_1<-0, op_2<-0, op_2<-1, op_3<-0, op_3<-1, op_3<-2)``.
Conversions cover the official string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, NASLib op-index tuples, NNI
dicts, and our enumeration order (mixed radix, first edge most significant). The official benchmark index
0..15624 is not a formula but the order of the benchmark's tables: see :class:`rdnas.rank.GroundTruth`.
"""

import itertools
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from rdnas.spaces import base
from rdnas.spaces.nb201_cost import network_cost

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV1X1, CONV3X3, AVG_POOL = range(5)
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from node, to node), official order
NUM_OPS = len(OPS)
NUM_EDGES = len(EDGES)
NUM_NODES = 4
NUM_ARCHS = NUM_OPS**NUM_EDGES  # 15,625

# NASLib: op codes 0=skip, 1=none, 2=conv3x3, 3=conv1x1, 4=avgpool; edges (0->1, 0->2, 0->3, 1->2, 1->3, 2->3).
_NASLIB_OP_TO_OURS = (SKIP, NONE, CONV3X3, CONV1X1, AVG_POOL)
_OURS_OP_TO_NASLIB = tuple(_NASLIB_OP_TO_OURS.index(op) for op in range(NUM_OPS))
_NASLIB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_NASLIB_EDGE_OF_OURS = tuple(_NASLIB_EDGES.index(edge) for edge in EDGES)
# NNI: keys "<from>_<to>", op names without the "nor_" prefix.
NNI_OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")

_STRING_PATTERN = re.compile(r"^\|(.+)\|\+\|(.+)\|\+\|(.+)\|$")

Arch = tuple[int, ...]


class InvalidArchitecture(base.InvalidArchitecture):
    """An architecture in some encoding that is not one of the 15,625 NB201 cells."""


def _error(what, value, why) -> InvalidArchitecture:
    return InvalidArchitecture(f"rdnas.spaces.nb201: invalid {what} {value!r}: {why}")


def validate(arch) -> Arch:
    """Returns ``arch`` as a tuple of six ints in 0..4, or raises InvalidArchitecture."""
    try:
        ops = tuple(int(op) for op in arch)
    except (TypeError, ValueError):
        raise _error("architecture", arch, "expected six op indices") from None
    if len(ops) != NUM_EDGES:
        raise _error("architecture", arch, f"expected {NUM_EDGES} op indices, got {len(ops)}")
    for edge, op in enumerate(ops):
        if not 0 <= op < NUM_OPS:
            raise _error("architecture", arch, f"op index {op} on edge {edge} is outside 0..{NUM_OPS - 1}")
    return ops


def from_string(text: str) -> Arch:
    """Parses ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``."""
    if not isinstance(text, str):
        raise _error("architecture string", text, f"expected a str, got {type(text).__name__}")
    match = _STRING_PATTERN.match(text.strip())
    if match is None:
        raise _error("architecture string", text, "expected three node groups |op~j|...|+|...|+|...|")
    ops = []
    for node, group in enumerate(match.groups(), start=1):
        entries = group.split("|")
        if len(entries) != node:
            raise _error("architecture string", text, f"node {node} must have {node} inputs, got {len(entries)}")
        for source, entry in enumerate(entries):
            name, _, index = entry.partition("~")
            if name not in OPS:
                raise _error("architecture string", text, f"unknown op {name!r} (expected one of {', '.join(OPS)})")
            if index != str(source):
                raise _error("architecture string", text, f"entry {entry!r} of node {node} must read from node {source}")
            ops.append(OPS.index(name))
    return tuple(ops)


def to_string(arch) -> str:
    """The official string of an architecture."""
    ops = validate(arch)
    groups, position = [], 0
    for node in range(1, NUM_NODES):
        groups.append("|" + "|".join(f"{OPS[ops[position + source]]}~{source}" for source in range(node)) + "|")
        position += node
    return "+".join(groups)


def from_naslib(codes) -> Arch:
    """From a NASLib op-index tuple (codes 0=skip, 1=none, 2=conv3x3, 3=conv1x1, 4=avgpool; NASLib edge order)."""
    try:
        codes = tuple(int(code) for code in codes)
    except (TypeError, ValueError):
        raise _error("NASLib op indices", codes, "expected six integers") from None
    if len(codes) != NUM_EDGES or any(not 0 <= code < NUM_OPS for code in codes):
        raise _error("NASLib op indices", codes, "expected six integers in 0..4")
    return tuple(_NASLIB_OP_TO_OURS[codes[_NASLIB_EDGE_OF_OURS[edge]]] for edge in range(NUM_EDGES))


def to_naslib(arch) -> tuple[int, ...]:
    """To a NASLib op-index tuple."""
    ops = validate(arch)
    codes = [0] * NUM_EDGES
    for edge, op in enumerate(ops):
        codes[_NASLIB_EDGE_OF_OURS[edge]] = _OURS_OP_TO_NASLIB[op]
    return tuple(codes)


def from_nni(choices: dict) -> Arch:
    """From an NNI dict ``{"0_1": "conv_3x3", "0_2": ..., "2_3": ...}``."""
    if not isinstance(choices, dict):
        raise _error("NNI architecture", choices, f"expected a dict, got {type(choices).__name__}")
    expected = {f"{src}_{dst}" for src, dst in EDGES}
    if set(choices) != expected:
        raise _error("NNI architecture", choices, f"expected the keys {sorted(expected)}")
    ops = []
    for src, dst in EDGES:
        name = choices[f"{src}_{dst}"]
        if name not in NNI_OPS:
            raise _error("NNI architecture", choices, f"unknown op {name!r} (expected one of {', '.join(NNI_OPS)})")
        ops.append(NNI_OPS.index(name))
    return tuple(ops)


def to_nni(arch) -> dict:
    """To an NNI dict."""
    ops = validate(arch)
    return {f"{src}_{dst}": NNI_OPS[op] for (src, dst), op in zip(EDGES, ops)}


_RADIX = tuple(NUM_OPS ** (NUM_EDGES - 1 - edge) for edge in range(NUM_EDGES))  # first edge most significant


def enumeration_index(arch) -> int:
    """Position of ``arch`` in :func:`all_archs` (mixed radix, first edge most significant). Not the official index."""
    return sum(op * weight for op, weight in zip(validate(arch), _RADIX))


def enumeration_indices(archs: Tensor) -> Tensor:
    """:func:`enumeration_index` of many architectures: LongTensor[..., 6] -> LongTensor[...] (on the CPU)."""
    return (archs.long().cpu() * torch.tensor(_RADIX)).sum(-1)


def from_enumeration_index(index: int) -> Arch:
    """Inverse of :func:`enumeration_index`."""
    if not 0 <= int(index) < NUM_ARCHS:
        raise _error("enumeration index", index, f"expected 0..{NUM_ARCHS - 1}")
    index, ops = int(index), []
    for _ in range(NUM_EDGES):
        index, op = divmod(index, NUM_OPS)
        ops.append(op)
    return tuple(reversed(ops))


def all_archs() -> Tensor:
    """Every architecture: LongTensor[15625, 6] in enumeration order."""
    return torch.tensor(list(itertools.product(range(NUM_OPS), repeat=NUM_EDGES)), dtype=torch.long)


def connected(archs: Tensor) -> Tensor:
    """Whether each architecture has an input-to-output path of non-``none`` edges.

    Args:
        archs (LongTensor[..., 6]): op indices.

    Returns:
        BoolTensor[...]: 341 of the 15,625 architectures are not connected (their benchmark accuracy is 10 %).
    """
    return _reached_nodes(archs != NONE)[3]


def _reached_nodes(live: Tensor) -> list[Tensor]:
    """Per node 0..3, whether a path of live (non-``none``) edges leads to it from the input: BoolTensor[...] each."""
    reached = [torch.ones_like(live[..., 0]), live[..., 0]]  # node 0 is the input
    reached.append(live[..., 1] | (reached[1] & live[..., 2]))
    reached.append(live[..., 3] | (reached[1] & live[..., 4]) | (reached[2] & live[..., 5]))
    return reached


def live_edges(archs: Tensor) -> Tensor:
    """Which edges lie on an input-to-output path of non-``none`` edges: the edges that can change the output.

    Any other edge either reads a node no input reaches (its input is the zero tensor) or writes a node from which no
    path leads to the output: its op is dead weight, and replacing it by ``none`` gives the same function.

    Args:
        archs (LongTensor[..., 6]): op indices.

    Returns:
        BoolTensor[..., 6]: in the official edge order; all False for a disconnected cell.
    """
    live = archs != NONE
    reached = _reached_nodes(live)
    reaches_out = {1: live[..., 4] | (live[..., 2] & live[..., 5]), 2: live[..., 5], 3: reached[0]}  # node 3: output
    return torch.stack([live[..., edge] & reached[src] & reaches_out[dst] for edge, (src, dst) in enumerate(EDGES)],
                       dim=-1)


def is_connected(arch) -> bool:
    """Whether ``arch`` has an input-to-output path of non-``none`` edges."""
    return bool(connected(torch.tensor(validate(arch))))


def canonical_string(arch) -> str:
    """A string shared by exactly the architectures NAS-Bench-201 counts as one (6,466 classes).

    This is the benchmark's own rule (``CellStructure.to_unique_str(consider_zero=True)``): a ``none`` edge, or any
    edge leaving a node marked zero, contributes the zero term ``#``; ``skip_connect`` passes its input's
    expression through; another op wraps it as ``(input)@op``; a node is its terms sorted and joined by ``+``.
    Cells that differ only in the order of a node's inputs, or by skip edges that merely relabel a node, share
    a string. The rule does not simplify a node whose inputs are all zero, so the 341 disconnected cells still fall
    into 5 classes; that is the benchmark's count, kept for comparability.
    """
    ops = validate(arch)
    expressions = {0: "0"}
    for node in range(1, NUM_NODES):
        terms = []
        for edge, (src, dst) in enumerate(EDGES):
            if dst != node:
                continue
            op = ops[edge]
            if op == NONE or expressions[src] == "#":
                terms.append("#")
            elif op == SKIP:
                terms.append(expressions[src])
            else:
                terms.append(f"({expressions[src]})@{OPS[op]}")
        expressions[node] = "+".join(sorted(terms))
    return expressions[NUM_NODES - 1]


class NB201Space(base.SearchSpace):
    """NAS-Bench-201 as a :class:`rdnas.spaces.SearchSpace`: an architecture is its six op indices (width 6),
    the space is the full product 5^6 (enumerable; :meth:`index` is :func:`enumeration_index`), the canonical
    key is the benchmark's isomorphism class (:func:`canonical_string`), and :meth:`is_trivial` marks the 341
    disconnected cells."""

    name = "nb201"
    width = NUM_EDGES
    size = NUM_ARCHS
    enumerable = True

    def validate(self, archs) -> Tensor:
        if isinstance(archs, Tensor):
            rows = archs.detach().cpu().long()
        else:
            try:
                rows = torch.as_tensor(archs, dtype=torch.long)
            except (TypeError, ValueError, RuntimeError):
                raise _error("architectures", archs, "expected a LongTensor[K, 6] or a sequence of op-index tuples") from None
        if rows.dim() == 1:
            rows = rows.unsqueeze(0)
        if rows.dim() != 2 or rows.shape[1] != NUM_EDGES:
            raise _error("architectures", tuple(rows.shape), f"expected shape [K, {NUM_EDGES}]")
        bad = (rows < 0) | (rows >= NUM_OPS)
        if bool(bad.any()):
            k, edge = (int(i) for i in bad.nonzero()[0])
            raise _error("architecture", tuple(rows[k].tolist()),
                         f"op index {int(rows[k, edge])} on edge {edge} is outside 0..{NUM_OPS - 1}")
        return rows

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, NUM_OPS, (n, NUM_EDGES), generator=generator, device=generator.device)

    def mutate(self, archs: Tensor, changes: int, generator: torch.Generator) -> Tensor:
        rows = self.validate(archs).clone()
        if not 1 <= changes <= NUM_EDGES:
            raise ValueError(f"rdnas.spaces.nb201.mutate: changes must be in 1..{NUM_EDGES}, got {changes}")
        for row in rows:
            edges = torch.randperm(NUM_EDGES, generator=generator)[:changes]
            row[edges] = (row[edges] + torch.randint(1, NUM_OPS, (changes,), generator=generator)) % NUM_OPS
        return rows

    def to_string(self, arch) -> str:
        return to_string(tuple(self.validate(arch)[0].tolist()) if isinstance(arch, Tensor) else arch)

    def from_string(self, text: str) -> Tensor:
        return torch.tensor(from_string(text))

    def key(self, arch) -> str:
        return canonical_string(tuple(self.validate(arch)[0].tolist()))

    def encode(self, archs) -> Tensor:
        """One-hot op per edge: float32 Tensor[K, 6 * 5]."""
        rows = self.validate(archs)
        return torch.nn.functional.one_hot(rows, NUM_OPS).flatten(1).float()

    def enumerate(self) -> Tensor:
        return all_archs()

    def index(self, archs) -> Tensor:
        return enumeration_indices(self.validate(archs))

    def largest(self) -> Tensor:
        return torch.full((NUM_EDGES,), CONV3X3, dtype=torch.long)

    def smallest(self) -> Tensor:
        return torch.full((NUM_EDGES,), SKIP, dtype=torch.long)  # the cheapest connected cell: no weights, no FLOPs

    def fair_paths(self, generator: torch.Generator) -> Tensor:
        return torch.stack([torch.randperm(NUM_OPS, generator=generator) for _ in range(NUM_EDGES)], dim=1)

    def is_trivial(self, archs) -> Tensor:
        return ~connected(self.validate(archs))

    #: cells: "stages" (one cell per stage) or the authors' "all"; edges: "live" (dead edges as none, plus a path
    #: token) or the authors' "all" (:mod:`rdnas.spaces.nb201_features`); the defaults are the best measured input.
    feature_options = {"cells": ("stages", "all"), "edges": ("live", "all")}
    feature_option_help = {
        "cells": "the 7 distinct cell tokens (stages, default: the five cells of a stage are identical; same "
                 "information, a fifth of NAR's cost) or the authors' 31 (all)",
        "edges": "the live cell (live, default: edges on no input-to-output path become none, plus a token "
                 "describing the four paths; Kendall tau +0.05-0.2 on the NB201 protocol) or every edge as drawn "
                 "(all, the authors' input)",
    }

    def predictor_tokens(self, archs, cells: str = "stages", edges: str = "live") -> Tensor:
        """NAR's cell tensors as tokens (:func:`rdnas.spaces.nb201_features.predictor_tokens`): LongTensor[K, 6]
        -> float32 Tensor[K, T, 16]."""
        from rdnas.spaces import nb201_features

        return nb201_features.predictor_tokens(archs, cells, edges)

    def cost(self, archs, **options) -> dict[str, Tensor]:
        """The benchmark's own counts (:mod:`rdnas.spaces.nb201_cost`), by default for its CIFAR-10 network (C=16,
        N=5, 32x32, 10 classes): ``flops`` (Conv2d and Linear multiply-accumulates, every non-``none`` edge
        included) and ``params`` = ``trainable_params`` (the table's ``flops_M`` and ``params_M`` times 1e6),
        float64 Tensor[K] for LongTensor[K, 6]. ``options``: those of :func:`rdnas.spaces.nb201_cost.network_cost`
        (``channels``, ``cells_per_stage``, ``num_classes``, ``in_channels``, ``image_size``, ``bn_affine``)."""
        rows = self.validate(archs)
        return network_cost((rows == CONV1X1).sum(1), (rows == CONV3X3).sum(1), **options)


@dataclass(frozen=True)
class NB201Options(base.NetworkOptions):
    """The options of the NB201 macro network (:class:`rdnas.spaces.NetworkOptions`): its width and depth (the
    benchmark's network: C = 16, N = 5) and its cells' batch norm."""

    channels: int = base.option(16, "C, the first stage's width", minimum=1)
    cells_per_stage: int = base.option(5, "N, cells per stage", minimum=1, flag="--cells")
    bn_affine: bool = base.option(True, "BN without learnable scale and shift in cells", flag="--no-bn-affine")
    bn_track_running_stats: bool = base.option(True, "BN without running statistics", flag="--no-bn-running-stats")

    @classmethod
    def benchmark_defaults(cls) -> dict:
        """C = 8, N = 1: the network of the shipped digits mini-benchmarks (``nb201_digits*.csv``)."""
        return {"channels": 8, "cells_per_stage": 1}


SPACE = NB201Space()

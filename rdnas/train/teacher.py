"""The RD-NAS teachers: zero-cost proxy scores over a search space, and groups by teacher rank.

The teacher score of an architecture is one proxy's score or the rank-average of several (each proxy's scores
turned into ranks, -inf lowest, then averaged), always higher = better. Two teachers share one interface
(``num_groups``, ``population_size``, ``population(indices)``, ``groups``, ``members(g)``, ``lookup(archs)``,
``rank``, ``score``, ``group``, ``state``):

- :class:`Teacher` (enumerable spaces, e.g. NB201): scores over the whole space, held in enumeration order (a table
  file is read by its architecture column, in any row order); groups split the space by teacher rank into G groups
  of equal size (group 0 holds the best 1/G of the space).
- :class:`SampledTeacher` (any space): scores of a seeded reference sample R of the space; group boundaries at
  the quantiles of R's scores, ranks as the empirical CDF over R; an architecture outside R is scored on demand
  by a scorer and cached under the space's key. The margin sampler draws group members from R, so a training
  step scores nothing new.
"""

import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from rdnas.spaces import get_space


class Teacher:
    """Teacher scores and groups for every architecture of an enumerable space (a table teacher).

    Args:
        scores (array-like [space.size]): teacher score per architecture in enumeration order
            (``space.enumerate()``), higher = better; -inf or NaN for architectures it cannot score (they rank last).
        num_groups (int): G, the number of groups (>= 2).
        name (str): what the scores are (written into reports).
        space (str or SearchSpace): an enumerable space (default ``"nb201"``).

    Attributes:
        scores (Tensor[space.size] float64): the teacher score per enumeration index.
        ranks (Tensor[space.size] float64): normalised teacher rank in [0, 1], 1 = best (ties share a rank).
        groups (LongTensor[space.size]): the group per enumeration index, 0 = best.
    """

    def __init__(self, scores, num_groups: int = 5, name: str = "teacher", space="nb201"):
        self.space = get_space(space)
        if not self.space.enumerable:
            raise ValueError(f"rdnas.train.Teacher: a table teacher needs an enumerable space; {self.space.name} is "
                             "not (use SampledTeacher)")
        size = self.space.size
        values = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1)
        if values.numel() != size:
            raise ValueError(f"rdnas.train.Teacher: scores must cover all {size} architectures in "
                             f"enumeration order, got {values.numel()}")
        if not 2 <= num_groups <= size:
            raise ValueError(f"rdnas.train.Teacher: num_groups must be in 2..{size}, got {num_groups}")
        self.name = name
        self.num_groups = int(num_groups)
        self.scores = torch.nan_to_num(values, nan=float("-inf"))
        # Normalised ranks in [0, 1] (1 = best, ties share their average rank): what the ranking loss compares,
        # since raw proxy scores (synflow reaches 1e44) do not fit in float32.
        self.ranks = torch.from_numpy(rank_average([self.scores.numpy()]))
        # Best first; ties keep enumeration order (a stable sort), so groups are deterministic.
        order = torch.sort(-self.scores, stable=True).indices
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order))
        self.groups = position * self.num_groups // len(order)
        self._members = [order[self.groups[order] == g] for g in range(self.num_groups)]
        self._enumeration = None

    @classmethod
    def from_table(cls, path, proxies, num_groups: int = 5, space="nb201") -> "Teacher":
        """A teacher from a table over the whole space: one column, or the rank-average of several
        (``"synflow,naswot"``).

        Rows are matched to architectures by the table's architecture column (``arch`` or ``arch_str``), never by
        position, so any table rdnas writes over the whole space serves, in any row order: ``rdnas proxies``
        with or without ``--gt`` (enumeration or official index order), merged shards, a ``rdnas predictor rank``
        ranking (``arch,score``), or a published table such as ``nb201_zc_proxies.csv``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: a malformed table (:class:`rdnas.rank.MalformedTable`, naming the file and line, e.g. an
                architecture on two lines), a missing column (naming the file, the column and the columns
                present), or a table that does not hold every architecture of the space (naming one it lacks).
        """
        from rdnas.rank import GroundTruth

        space = get_space(space)
        if not space.enumerable:
            raise ValueError(f"rdnas.train.Teacher: a table teacher needs an enumerable space; {space.name} is not "
                             "(use SampledTeacher)")
        names = _column_names(proxies, path)
        table = GroundTruth.load(Path(path), space)
        columns = _whole_space_columns(table, table.rows_of, names, space, f"the teacher table {path}")
        return cls.from_columns(columns, num_groups, "+".join(names), space)

    @classmethod
    def from_score_table(cls, table, proxies, num_groups: int = 5, space="nb201") -> "Teacher":
        """A teacher from a :class:`rdnas.proxies.ScoreTable` in memory (e.g. what :func:`score_space` returns),
        its rows matched to architectures by their ``arch`` strings (any row order); errors as
        :meth:`from_table`."""
        space = get_space(space)
        what = f"the score table {table.info['path']}" if table.info.get("path") else "the score table"
        names = _column_names(proxies, what)
        columns = _whole_space_columns(table, lambda archs: table.rows_of(archs, space), names, space, what)
        return cls.from_columns(columns, num_groups, "+".join(names), space)

    @classmethod
    def from_columns(cls, columns, num_groups: int = 5, name: str = "teacher", space="nb201") -> "Teacher":
        """A teacher from one or more score columns over the whole space (enumeration order): one column as it
        is, several as their :func:`rank_average`."""
        columns = list(columns)
        return cls(columns[0] if len(columns) == 1 else rank_average(columns), num_groups, name, space)

    @property
    def population_size(self) -> int:
        """How many architectures the margin sampler draws from: the whole space."""
        return len(self.scores)

    def population(self, indices) -> Tensor:
        """The architectures at enumeration ``indices`` (LongTensor[K]): LongTensor[K, space.width]."""
        if self._enumeration is None:
            self._enumeration = self.space.enumerate()
        return self._enumeration[torch.as_tensor(indices, dtype=torch.long)]

    def _indices(self, archs) -> Tensor:
        return self.space.index(archs)

    def lookup(self, archs) -> tuple[Tensor, Tensor]:
        """(normalised ranks Tensor[K] float64, groups LongTensor[K]) of LongTensor[K, space.width]."""
        index = self._indices(archs)
        return self.ranks[index], self.groups[index]

    def rank(self, archs) -> Tensor:
        """Normalised teacher ranks Tensor[K] float64 (1 = best) of LongTensor[K, space.width] architectures."""
        return self.ranks[self._indices(archs)]

    def score(self, archs) -> Tensor:
        """Teacher scores Tensor[K] float64 of LongTensor[K, space.width] architectures."""
        return self.scores[self._indices(archs)]

    def group(self, archs) -> Tensor:
        """Groups LongTensor[K] of LongTensor[K, space.width] architectures (0 = best)."""
        return self.groups[self._indices(archs)]

    def members(self, group: int) -> Tensor:
        """Population (here: enumeration) indices (LongTensor) of the architectures in ``group``."""
        return self._members[group]

    def state(self) -> dict:
        """What a checkpoint stores; :meth:`from_state` rebuilds the same teacher. (NB201 checkpoints keep the
        keys they always had; another space adds its name.)"""
        state = {"name": self.name, "num_groups": self.num_groups, "scores": self.scores.clone()}
        if self.space.name != "nb201":
            state["space"] = self.space.name
        return state

    def same_as(self, state: dict) -> bool:
        """Whether ``state`` (from :meth:`state`) is this teacher's (a resumed run must keep its teacher)."""
        return ("archs" not in state and state.get("space", "nb201") == self.space.name
                and torch.equal(state["scores"], self.scores))

    @classmethod
    def from_state(cls, state: dict) -> "Teacher":
        if "archs" in state:
            return SampledTeacher.from_state(state)
        return cls(state["scores"].numpy(), state["num_groups"], state["name"], state.get("space", "nb201"))


class SampledTeacher:
    """A teacher over a reference sample of a (typically non-enumerable) space.

    Args:
        archs (LongTensor[M, space.width]): the reference set R, e.g. ``space.sample(M, seeded generator)``
            (repeats are allowed: R is a sample of the space's distribution).
        scores (array-like [M]): teacher score of each, higher = better; -inf / NaN rank last.
        num_groups (int): G (2 <= G <= M).
        name (str): what the scores are.
        space (str or SearchSpace): the space of ``archs``.
        scorer (callable, optional): ``scorer(LongTensor[K, width]) -> Tensor[K]`` for architectures outside R
            (scored once each, cached by ``space.key``); without one, such an architecture is an error.

    Groups: R sorted by score, best first; the boundary between group g-1 and g is the score at position
    ceil(g M / G). An architecture with score s belongs to the number of boundaries strictly above s (ties at a
    boundary go to the better group), so R's members split into G groups of (up to ties) equal size and a new
    architecture falls where its score does. Ranks: the mid-rank empirical CDF of s over R's scores in [0, 1]
    (1 = best), the same quantity the table teacher's normalised rank estimates.
    """

    def __init__(self, archs, scores, num_groups: int = 5, name: str = "teacher", space="nb201", scorer=None):
        self.space = get_space(space)
        self.archs = self.space.validate(archs)
        values = torch.nan_to_num(torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1),
                                  nan=float("-inf"))
        if len(values) != len(self.archs):
            raise ValueError(f"rdnas.train.SampledTeacher: {len(self.archs)} architectures but {len(values)} scores")
        if not 2 <= num_groups <= len(values):
            raise ValueError(f"rdnas.train.SampledTeacher: num_groups must be in 2..{len(values)} (the reference "
                             f"set's size), got {num_groups}")
        self.name, self.num_groups, self.scores, self.scorer = name, int(num_groups), values, scorer
        self._sorted = torch.sort(values).values  # ascending, for the empirical CDF
        descending = self._sorted.flip(0)
        m = len(values)
        self.boundaries = torch.stack([descending[math.ceil(g * m / self.num_groups) - 1]
                                       for g in range(1, self.num_groups)])
        self.ranks, self.groups = self._ranks_and_groups(values)
        self._members = [torch.nonzero(self.groups == g).flatten() for g in range(self.num_groups)]
        self._cache = {self.space.key(arch): float(score) for arch, score in zip(self.archs, values)}

    def _ranks_and_groups(self, values: Tensor) -> tuple[Tensor, Tensor]:
        below = torch.searchsorted(self._sorted, values, right=False)
        at_or_below = torch.searchsorted(self._sorted, values, right=True)
        ranks = (below + at_or_below).double() / (2 * len(self._sorted))
        groups = (values.unsqueeze(1) < self.boundaries.unsqueeze(0)).sum(1)
        return ranks, groups

    @property
    def population_size(self) -> int:
        """How many architectures the margin sampler draws from: the reference set."""
        return len(self.archs)

    def population(self, indices) -> Tensor:
        """Reference architectures at ``indices``: LongTensor[K, space.width]."""
        return self.archs[torch.as_tensor(indices, dtype=torch.long)]

    def score(self, archs) -> Tensor:
        """Teacher scores Tensor[K] float64; architectures outside R are scored by the scorer (and cached)."""
        archs = self.space.validate(archs)
        keys = [self.space.key(arch) for arch in archs]
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            if self.scorer is None:
                raise KeyError(f"rdnas.train.SampledTeacher: {self.space.to_string(archs[missing[0]])} is not in the "
                               "reference set and this teacher has no scorer")
            fresh = torch.as_tensor(self.scorer(archs[missing]), dtype=torch.float64).reshape(-1)
            for i, value in zip(missing, torch.nan_to_num(fresh, nan=float("-inf")).tolist()):
                self._cache[keys[i]] = value
        return torch.tensor([self._cache[key] for key in keys], dtype=torch.float64)

    def lookup(self, archs) -> tuple[Tensor, Tensor]:
        """(normalised ranks Tensor[K] float64, groups LongTensor[K]) of LongTensor[K, space.width]."""
        return self._ranks_and_groups(self.score(archs))

    def rank(self, archs) -> Tensor:
        return self.lookup(archs)[0]

    def group(self, archs) -> Tensor:
        return self.lookup(archs)[1]

    def members(self, group: int) -> Tensor:
        """Reference-set indices (LongTensor) of the architectures in ``group``."""
        return self._members[group]

    def state(self) -> dict:
        """What a checkpoint stores (R, its scores, G); the scorer is rebuilt by whoever made the teacher."""
        return {"name": self.name, "num_groups": self.num_groups, "scores": self.scores.clone(),
                "archs": self.archs.clone(), "space": self.space.name}

    def same_as(self, state: dict) -> bool:
        return ("archs" in state and state.get("space") == self.space.name and torch.equal(state["archs"], self.archs)
                and torch.equal(state["scores"], self.scores))

    @classmethod
    def from_state(cls, state: dict, scorer=None) -> "SampledTeacher":
        return cls(state["archs"], state["scores"].numpy(), state["num_groups"], state["name"], state["space"], scorer)


def _column_names(proxies, source) -> list[str]:
    """The teacher columns ``"a,b"`` or ``["a", "b"]`` as a list; ValueError when it names none."""
    names = [p.strip() for p in proxies.split(",")] if isinstance(proxies, str) else [str(p).strip() for p in proxies]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"rdnas.train.Teacher: no teacher column named for {source} (e.g. 'synflow')")
    return names


def _whole_space_columns(table, rows_of, names: list[str], space, what: str) -> list[np.ndarray]:
    """Columns ``names`` of ``table`` (a GroundTruth or ScoreTable) in enumeration order, float64 [space.size]
    each, rows matched by ``rows_of(LongTensor[K, space.width]) -> LongTensor[K]`` (-1: absent). MissingColumn
    (a ValueError) for a column it lacks, ValueError naming an architecture it lacks."""
    from rdnas.rank import MissingColumn

    missing = [name for name in names if name not in table.columns]
    if missing:
        raise MissingColumn(f"rdnas.train.Teacher: teacher column: {what} has no column {missing[0]!r}; its "
                            f"columns: {', '.join(table.columns) or '(none)'}")
    everything = space.enumerate()
    rows = rows_of(everything)  # the row of each enumeration index
    absent = (rows < 0).nonzero().flatten()
    if len(absent):
        raise ValueError(f"rdnas.train.Teacher: {what} must hold all {space.size} {space.name} architectures (rows "
                         f"are matched by their architecture string); it has {len(table)} rows and lacks "
                         f"{len(absent)}, e.g. {space.to_string(everything[absent[0]])}")
    return [np.asarray(table.columns[name], dtype=np.float64)[rows.numpy()] for name in names]


def rank_average(columns) -> np.ndarray:
    """The mean over columns of each column's normalised rank in [0, 1] (1 = highest score; ties share their
    average rank; -inf and NaN lowest). A single column keeps its ranks' order. Returns float64 [N]."""
    columns = [np.nan_to_num(np.asarray(c, dtype=np.float64), nan=-np.inf) for c in columns]
    if not columns:
        raise ValueError("rdnas.train.rank_average: no columns")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError(f"rdnas.train.rank_average: columns of different lengths {[len(c) for c in columns]}")
    # rankdata cannot order -inf against -inf consistently with finite values unless they are finite: map them below
    # the minimum first.
    ranks = []
    for c in columns:
        finite = np.isfinite(c)
        floor = (c[finite].min() - 1.0) if finite.any() else 0.0
        ranks.append((rankdata(np.where(finite, c, floor)) - 1) / max(n - 1, 1))
    return np.mean(ranks, axis=0)

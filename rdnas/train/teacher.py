"""The RD-NAS teacher: zero-cost proxy scores over the whole search space, and groups by teacher rank.

The teacher score of an architecture is one proxy's score or the rank-average of several (each proxy's scores
turned into ranks over the space, -inf lowest, then averaged), always higher = better. Groups split the space by
teacher rank into G groups of equal size: group 0 holds the best 1/G of the space.
"""

from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from rdnas.spaces import nb201


class Teacher:
    """Teacher scores and groups for every NB201 architecture.

    Args:
        scores (array-like [15625]): teacher score per architecture in enumeration order
            (:func:`rdnas.spaces.nb201.all_archs`), higher = better; -inf or NaN for architectures it cannot score
            (they rank last).
        num_groups (int): G, the number of groups (>= 2).
        name (str): what the scores are (written into reports).

    Attributes:
        scores (Tensor[15625] float64): the teacher score per enumeration index.
        ranks (Tensor[15625] float64): normalised teacher rank in [0, 1], 1 = best (ties share a rank).
        groups (LongTensor[15625]): the group per enumeration index, 0 = best.
    """

    def __init__(self, scores, num_groups: int = 5, name: str = "teacher"):
        values = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1)
        if values.numel() != nb201.NUM_ARCHS:
            raise ValueError(f"rdnas.train.Teacher: scores must cover all {nb201.NUM_ARCHS} architectures in "
                             f"enumeration order, got {values.numel()}")
        if not 2 <= num_groups <= nb201.NUM_ARCHS:
            raise ValueError(f"rdnas.train.Teacher: num_groups must be in 2..{nb201.NUM_ARCHS}, got {num_groups}")
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

    @classmethod
    def from_table(cls, path, proxies, num_groups: int = 5) -> "Teacher":
        """A teacher from a score table written by :func:`rdnas.proxies.score_space` over the whole space
        (``index`` = enumeration index): one proxy column, or the rank-average of several (``"synflow,naswot"``)."""
        from rdnas.proxies import ScoreTable

        names = [p.strip() for p in proxies.split(",")] if isinstance(proxies, str) else list(proxies)
        table = ScoreTable.read(Path(path))
        if len(table) != nb201.NUM_ARCHS or not torch.equal(table.indices, torch.arange(nb201.NUM_ARCHS)):
            raise ValueError(f"rdnas.train.Teacher: {path} must hold all {nb201.NUM_ARCHS} architectures indexed by "
                             f"enumeration index (score_space without gt); it has {len(table)} rows")
        return cls.from_columns([table.column(n) for n in names], num_groups, "+".join(names))

    @classmethod
    def from_columns(cls, columns, num_groups: int = 5, name: str = "teacher") -> "Teacher":
        """A teacher from one or more score columns over the whole space (enumeration order): one column as it
        is, several as their :func:`rank_average`."""
        columns = list(columns)
        return cls(columns[0] if len(columns) == 1 else rank_average(columns), num_groups, name)

    def rank(self, archs) -> Tensor:
        """Normalised teacher ranks Tensor[K] float64 (1 = best) of LongTensor[K, 6] architectures."""
        return self.ranks[_enumeration_indices(archs)]

    def score(self, archs) -> Tensor:
        """Teacher scores Tensor[K] float64 of LongTensor[K, 6] architectures."""
        return self.scores[_enumeration_indices(archs)]

    def group(self, archs) -> Tensor:
        """Groups LongTensor[K] of LongTensor[K, 6] architectures (0 = best)."""
        return self.groups[_enumeration_indices(archs)]

    def members(self, group: int) -> Tensor:
        """Enumeration indices (LongTensor) of the architectures in ``group``."""
        return self._members[group]

    def state(self) -> dict:
        """What a checkpoint stores; :meth:`from_state` rebuilds the same teacher."""
        return {"name": self.name, "num_groups": self.num_groups, "scores": self.scores.clone()}

    @classmethod
    def from_state(cls, state: dict) -> "Teacher":
        return cls(state["scores"].numpy(), state["num_groups"], state["name"])


def _enumeration_indices(archs) -> Tensor:
    return nb201.enumeration_indices(torch.as_tensor(archs, dtype=torch.long))


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

"""Architecture search with a trained supernet as the fitness: random search and regularised evolution.

Fitness is the supernet's validation accuracy of an architecture (BN recalibrated per subnet), computed for many
architectures per forward pass (``forward_subnets``); every architecture is evaluated at most once and counts once
against the budget. Any registered space works (``space``, default ``"nb201"``): candidates are drawn with the
space's sampler (enumerable spaces: a seeded permutation of the whole space) and mutated with ``space.mutate``;
architectures the space calls trivial (NB201's disconnected cells) are never proposed.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor

from rdnas.spaces import get_space

Fitness = Callable[[Tensor], Tensor]  # LongTensor[K, space.width] -> Tensor[K] (higher = better)


class SearchHistory:
    """Every evaluated cell and its fitness, in evaluation order; ``evaluate`` skips cells already seen."""

    def __init__(self, fitness: Fitness, budget: int):
        if budget < 1:
            raise ValueError(f"rdnas.search: budget must be at least 1, got {budget}")
        self.fitness, self.budget = fitness, budget
        self.archs: list[tuple] = []
        self.scores: list[float] = []
        self._seen: dict[tuple, float] = {}

    @property
    def remaining(self) -> int:
        return self.budget - len(self.archs)

    def evaluate(self, candidates: list[tuple]) -> list[float]:
        """Fitness of each candidate (new ones evaluated together, within the remaining budget; a candidate past
        the budget gets -inf and is not recorded)."""
        new = []
        for arch in candidates:
            if arch not in self._seen and arch not in new and len(new) < self.remaining:
                new.append(arch)
        if new:
            values = self.fitness(torch.tensor(new, dtype=torch.long)).double().cpu().tolist()
            for arch, value in zip(new, values):
                self._seen[arch] = value
                self.archs.append(arch)
                self.scores.append(value)
        return [self._seen.get(arch, float("-inf")) for arch in candidates]

    def top(self, k: int) -> list[tuple[tuple, float]]:
        """The k best evaluated cells, best first (ties: the earlier evaluated first; a NaN score ranks last)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"rdnas.search.SearchHistory.top: k must be a positive integer, got {k!r}")
        order = sorted(range(len(self.archs)),
                       key=lambda i: (math.isnan(self.scores[i]), -self.scores[i] if not math.isnan(self.scores[i])
                                      else 0.0, i))
        return [(self.archs[i], self.scores[i]) for i in order[:k]]


def _uniform_cells(count: int, seed: int, space) -> list[tuple]:
    """``count`` distinct non-trivial architectures in a seeded uniform order (fewer if the space has fewer)."""
    generator = torch.Generator().manual_seed(seed)
    if space.enumerable:
        everything = space.enumerate()
        candidates = everything[~space.is_trivial(everything)]
        order = torch.randperm(len(candidates), generator=generator)[:count]
        return [tuple(a) for a in candidates[order].tolist()]
    return [tuple(arch) for arch in space.sample_distinct(count, generator).tolist()]


def _evaluate_in_batches(history: SearchHistory, cells: list[tuple], batch: int) -> None:
    for start in range(0, len(cells), batch):
        history.evaluate(cells[start:start + batch])


def random_search(fitness: Fitness, budget: int, seed: int = 0, batch: int = 64, space="nb201") -> SearchHistory:
    """``budget`` distinct architectures drawn uniformly (non-trivial ones only), evaluated ``batch`` at a time."""
    history = SearchHistory(fitness, budget)
    _evaluate_in_batches(history, _uniform_cells(budget, seed, get_space(space)), batch)
    return history


def mutate(arch: tuple, generator: torch.Generator, space="nb201") -> tuple:
    """``arch`` with one choice changed (``space.mutate``; NB201: one edge's op), redrawn until non-trivial."""
    space = get_space(space)
    parent = torch.tensor(arch, dtype=torch.long).unsqueeze(0)
    while True:
        child = space.mutate(parent, 1, generator)
        if not bool(space.is_trivial(child)[0]):
            return tuple(child[0].tolist())


def evolution_search(fitness: Fitness, budget: int, seed: int = 0, population: int = 32, sample_size: int = 8,
                     batch: int = 16, space="nb201") -> SearchHistory:
    """Regularised evolution (Real et al. 2019): a population of ``population`` cells, initially random; each
    round, ``batch`` children, each a one-edge mutation of the best of ``sample_size`` random population members,
    are evaluated together and replace the oldest members. Stops when ``budget`` cells have been evaluated (or no
    unseen child is found in 100 rounds)."""
    if population < 2 or not 1 <= sample_size <= population:
        raise ValueError(f"rdnas.search.evolution_search: needs population >= 2 and 1 <= sample_size <= population, "
                         f"got {population} and {sample_size}")
    space = get_space(space)
    generator = torch.Generator().manual_seed(seed)
    history = SearchHistory(fitness, budget)
    _evaluate_in_batches(history, _uniform_cells(min(population, budget), seed, space), max(batch, population))
    members = list(zip(history.archs, history.scores))  # oldest first
    stale = 0
    while history.remaining > 0 and stale < 100:
        children = []
        for _ in range(batch):
            picks = torch.randperm(len(members), generator=generator)[:sample_size].tolist()
            parent = max((members[i] for i in picks), key=lambda m: m[1])[0]
            children.append(mutate(parent, generator, space))
        before = len(history.archs)
        scores = history.evaluate(children)
        stale = stale + 1 if len(history.archs) == before else 0
        for child, score in zip(children, scores):
            if score != float("-inf"):
                members.append((child, score))
        members = members[-population:]
    return history

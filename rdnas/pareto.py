"""Multi-objective search: the front of estimated accuracy (higher = better) against one cost (lower = better).

Two objectives, so the NSGA-II machinery is written for two (Deb et al. 2002):

* :func:`pareto_front`: the non-dominated points, by one sort and a sweep (O(N log N), no N x N matrix, so the
  true front of a whole space is cheap). A point dominates another when it is at least as good in both objectives
  and better in one; points equal in both are both on the front. A NaN estimate counts as -inf.
* :func:`non_dominated_sort`: the fronts one after the other (the front of what the earlier fronts leave).
* :func:`crowding_distance`: NSGA-II's crowding distance inside one front (the two ends infinite).
* :func:`pareto_evolution`: NSGA-II with the space's mutation as the variation operator: binary tournaments on
  (front rank, crowding distance) pick the parents, each child is a one-choice mutation (inside the constraint and
  the domain, see :mod:`rdnas.search`), and parents plus children are cut back to ``population`` by front rank,
  then crowding distance.
* :func:`hypervolume`: the area a front dominates above a reference point (the yardstick against a true front).
* :func:`plot_front`: a PNG of every evaluated architecture, the front and the true front (matplotlib, Agg).

Whatever the strategy (random, regularised evolution, NAR's sampling search or NSGA-II), the front a search
reports is :func:`pareto_front` of everything it evaluated.
"""

import math

import numpy as np
import torch
from torch import Tensor

from rdnas.search import CostConstraint, Fitness, SearchHistory, SearchJournal, mutate, uniform_archs
from rdnas.spaces import get_space


def _objectives(estimate, cost) -> tuple[Tensor, Tensor]:
    estimate = torch.as_tensor(estimate, dtype=torch.float64).flatten()
    cost = torch.as_tensor(cost, dtype=torch.float64).flatten()
    if estimate.shape != cost.shape:
        raise ValueError(f"rdnas.pareto: estimate and cost must have the same length, got {len(estimate)} and "
                         f"{len(cost)}")
    if bool(torch.isnan(cost).any()):
        raise ValueError("rdnas.pareto: a cost is NaN")
    return torch.nan_to_num(estimate, nan=-math.inf), cost


def pareto_front(estimate, cost) -> Tensor:
    """Indices of the non-dominated points (module docstring), in order of increasing cost.

    Args:
        estimate (Tensor[N]): higher is better.
        cost (Tensor[N]): lower is better.

    Returns:
        LongTensor[F].
    """
    estimate, cost = _objectives(estimate, cost)
    if len(cost) == 0:
        return torch.zeros(0, dtype=torch.long)
    e, c = estimate.numpy(), cost.numpy()
    order = np.lexsort((-e, c))  # cost up, then estimate down
    e, c = e[order], c[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])  # the groups of equal cost
    group = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1
    top = e[starts][group]  # each group's best estimate
    before = np.r_[-np.inf, np.maximum.accumulate(e)][starts][group]  # the best estimate at a strictly lower cost
    on_front = (e == top) & ((group == 0) | (e > before))
    return torch.from_numpy(order[on_front]).long()


def non_dominated_sort(estimate, cost) -> list[Tensor]:
    """The successive fronts (module docstring): a list of LongTensor, every index once, front 0 first."""
    estimate, cost = _objectives(estimate, cost)
    remaining = torch.arange(len(cost))
    fronts = []
    while len(remaining):
        front = remaining[pareto_front(estimate[remaining], cost[remaining])]
        fronts.append(front)
        remaining = remaining[~torch.isin(remaining, front)]
    return fronts


def crowding_distance(estimate, cost) -> Tensor:
    """NSGA-II crowding distance of each point of one front: float64 Tensor[N], the sum over both objectives of
    the gap between a point's two neighbours (normalised by the objective's range); the extremes get inf."""
    estimate, cost = _objectives(estimate, cost)
    distance = torch.zeros(len(cost), dtype=torch.float64)
    if len(cost) <= 2:
        return distance.fill_(math.inf)
    for values in (torch.where(torch.isinf(estimate), torch.full_like(estimate, -1e300), estimate), cost):
        order = torch.sort(values, stable=True).indices
        ordered = values[order]
        span = float(ordered[-1] - ordered[0])
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0:
            distance[order[1:-1]] += (ordered[2:] - ordered[:-2]) / span
    return distance


def hypervolume(estimate, cost, reference: tuple[float, float]) -> float:
    """The area dominated by the points above ``reference = (estimate_ref, cost_ref)``: the union over points with
    ``estimate > estimate_ref`` and ``cost < cost_ref`` of the boxes [cost, cost_ref] x [estimate_ref, estimate].
    Points beyond the reference add nothing."""
    estimate, cost = _objectives(estimate, cost)
    low, high = float(reference[0]), float(reference[1])
    keep = (estimate > low) & (cost < high)
    estimate, cost = estimate[keep], cost[keep]
    front = pareto_front(estimate, cost)
    area = 0.0
    costs = cost[front].tolist() + [high]
    for k, i in enumerate(front.tolist()):
        area += (costs[k + 1] - costs[k]) * (float(estimate[i]) - low)
    return area


def _selection_keys(estimate: Tensor, cost: Tensor) -> tuple[Tensor, Tensor]:
    """(front rank, crowding distance) of each point: LongTensor[N], float64 Tensor[N]."""
    rank = torch.zeros(len(cost), dtype=torch.long)
    crowding = torch.zeros(len(cost), dtype=torch.float64)
    for r, front in enumerate(non_dominated_sort(estimate, cost)):
        rank[front] = r
        crowding[front] = crowding_distance(estimate[front], cost[front])
    return rank, crowding


def _better(i: int, j: int, rank: Tensor, crowding: Tensor) -> int:
    if int(rank[i]) != int(rank[j]):
        return i if int(rank[i]) < int(rank[j]) else j
    return i if float(crowding[i]) >= float(crowding[j]) else j


def pareto_evolution(fitness: Fitness, budget: int, cost: str = "flops", seed: int = 0, population: int = 32,
                     batch: int = 16, space="nb201", constraint: CostConstraint | None = None,
                     domain: Tensor | None = None, journal: SearchJournal | None = None) -> SearchHistory:
    """NSGA-II (module docstring) on (fitness, ``space.cost()[cost]``) for ``budget`` evaluations.

    Args:
        fitness: LongTensor[K, W] -> Tensor[K] (higher = better).
        budget (int): evaluations in all (the first ``population`` are uniform, see :func:`uniform_archs`).
        cost (str): the cost minimised, a key of ``space.cost``.
        seed (int): every draw comes from it.
        population (int): kept between generations (at least 2).
        batch (int): children per generation.
        space, constraint, domain, journal: as in :func:`rdnas.search.evolution_search`.

    Returns:
        The :class:`SearchHistory`; its front is ``pareto_front(history.scores, costs of history.archs)``.
    """
    if population < 2 or batch < 1:
        raise ValueError(f"rdnas.pareto.pareto_evolution: needs population >= 2 and batch >= 1, got {population} "
                         f"and {batch}")
    space = get_space(space)
    costs = constraint if constraint is not None else CostConstraint(space)
    if cost not in costs.names():
        raise ValueError(f"rdnas.pareto.pareto_evolution: the space {space.name} has no cost {cost!r}; its costs: "
                         f"{', '.join(costs.names())}")
    generator = torch.Generator().manual_seed(seed)
    history = SearchHistory(fitness, budget, constraint, journal)
    start = uniform_archs(min(population, budget), seed, space, constraint, domain)
    history.evaluate(start)
    members = list(history.archs)
    known = dict(zip(history.archs, history.scores))
    cost_of = dict(zip(members, costs.costs(torch.tensor(members, dtype=torch.long))[cost].tolist()))
    stale = 0
    while history.remaining > 0 and stale < 100:
        estimate = torch.tensor([known[m] for m in members], dtype=torch.float64)
        rank, crowding = _selection_keys(estimate, torch.tensor([cost_of[m] for m in members]))
        children = []
        for _ in range(batch):
            i, j = torch.randint(len(members), (2,), generator=generator).tolist()
            parent = members[_better(i, j, rank, crowding)]
            exclude = known.keys() | set(children) if domain is not None else frozenset()
            child = mutate(parent, generator, space, constraint, domain, exclude)
            if child is not None and child not in known and child not in children:
                children.append(child)
        before = len(history.archs)
        history.evaluate(children)
        stale = stale + 1 if len(history.archs) == before else 0
        fresh = list(zip(history.archs[before:], history.scores[before:]))
        if not fresh:
            continue
        known.update(fresh)
        cost_of.update(zip([c for c, _ in fresh],
                           costs.costs(torch.tensor([c for c, _ in fresh], dtype=torch.long))[cost].tolist()))
        merged = members + [c for c, _ in fresh]
        estimate = torch.tensor([known[m] for m in merged], dtype=torch.float64)
        merged_cost = torch.tensor([cost_of[m] for m in merged], dtype=torch.float64)
        chosen = []
        for front in non_dominated_sort(estimate, merged_cost):
            if len(chosen) + len(front) <= population:
                chosen.extend(front.tolist())
            else:
                crowd = crowding_distance(estimate[front], merged_cost[front])
                keep = torch.sort(-crowd, stable=True).indices[: population - len(chosen)]
                chosen.extend(front[keep].tolist())
            if len(chosen) >= population:
                break
        members = [merged[i] for i in chosen]
    return history


def plot_front(path, cost, estimate, front, cost_name: str = "flops", estimate_name: str = "estimate",
               truth=None, true_front=None, title: str | None = None, truth_name: str | None = None) -> None:
    """Writes a PNG (matplotlib, Agg): every evaluated architecture (grey), the found front (a line with markers)
    and, where given, the true accuracy of the front's architectures and the true front.

    Args:
        path: the PNG to write (atomically).
        cost, estimate (Tensor[N]): of every evaluated architecture.
        front (LongTensor[F]): indices of the found front.
        truth (Tensor[F]): the ground truth of the front's architectures (plotted against the same cost).
        true_front (tuple[Tensor[T], Tensor[T]]): (cost, truth) of the true front, in order of cost.
        truth_name (str): when given, the ground truth gets a second y axis with this label (an estimate on
            another scale than the ground truth); otherwise both share one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rdnas.atomic_file import atomic_open

    cost = torch.as_tensor(cost, dtype=torch.float64)
    estimate = torch.as_tensor(estimate, dtype=torch.float64)
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    axis.scatter(cost.numpy(), estimate.numpy(), s=8, color="0.7", label=f"evaluated ({len(cost)})")
    axis.step(cost[front].numpy(), estimate[front].numpy(), where="post", marker="o", markersize=4, color="C0",
              label=f"found front, {estimate_name} ({len(front)})")
    truth_axis = axis.twinx() if truth_name and (truth is not None or true_front is not None) else axis
    if truth is not None:
        truth_axis.scatter(cost[front].numpy(), torch.as_tensor(truth, dtype=torch.float64).numpy(), marker="x",
                     color="C1", label="found front, ground truth")
    if true_front is not None:
        truth_axis.step(torch.as_tensor(true_front[0]).numpy(), torch.as_tensor(true_front[1]).numpy(), where="post",
                  color="C3", label="true front")
    axis.set_xlabel(cost_name)
    axis.set_ylabel(estimate_name)
    if truth_axis is not axis:
        truth_axis.set_ylabel(truth_name)
        handles = [h for a in (axis, truth_axis) for h in a.get_legend_handles_labels()[0]]
        axis.legend(handles, [h.get_label() for h in handles], fontsize=8)
    else:
        axis.legend(fontsize=8)
    if title:
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)

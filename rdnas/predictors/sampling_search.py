"""NAR's sampling search, for any predictor and any registered space: spend a budget of ground-truth queries by
alternating "fit the predictor on what has been queried" with "query the candidates it likes best".

Written from the NAR paper's description (Guo et al., arXiv 2201.12725, the sampling search); the details below
are rdnas's:

1. ``initial`` distinct non-trivial architectures drawn uniformly are queried (default: half the budget).
2. Each of ``rounds`` rounds (the rest of the budget split evenly): the predictor is fitted on every queried
   architecture; the *top tier* is the best ``1 / tiers`` of them. Candidates come from the top tier's
   distributions:

   * operations: a pool of ``pool`` uniform draws of the space is resampled (without replacement) with weight
     ``prod_p f_p(arch_p)``, where ``f_p`` is the frequency of each value at position p among the top tier, plus
     ``smoothing`` for every value the pool shows there (so nothing is impossible);
   * cost: where the space has a cost model (:meth:`SearchSpace.cost`), candidates whose FLOPs fall outside the
     top tier's range are dropped;
   * the candidates are ranked by the predictor's score, those it classifies into its top tier (``predict_tiers``,
     where it has one: NAR) first; the round queries the first ones (the others fill the round only when fewer
     than its share are predicted top tier).

Constraints and domains (see :mod:`rdnas.search`): with a ``constraint`` every query, initial or per round, lies
inside its bounds (the initial draws by :func:`rdnas.search.uniform_archs`; each round's uniform draws are filtered,
filled by constraint-aware mutation from the queried ones when fewer than ``candidates`` are left); with a ``domain``
the initial draws and each round's pool come from its members only.

Queries are counted by :class:`rdnas.search.SearchHistory` (each architecture at most once), so the result
compares with :func:`rdnas.search.random_search` and :func:`rdnas.search.evolution_search` at the same number of
ground-truth queries.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from rdnas.predictors.base import Predictor
from rdnas.search import CostConstraint, Fitness, SearchHistory, SearchJournal, uniform_archs
from rdnas.spaces import get_space

_WHERE = "rdnas.predictors.sampling_search"


def top_tier_weights(pool: Tensor, top: Tensor, smoothing: float = 0.5) -> Tensor:
    """Sampling weight of each pool architecture under the top tier's per-position value frequencies.

    Args:
        pool (LongTensor[M, W]): candidate architectures.
        top (LongTensor[T, W]): the top tier.
        smoothing (float): pseudo-count added to every value present at a position of the pool.

    Returns:
        float64 Tensor[M], the product over positions of the smoothed frequency of the candidate's value there
        (normalised per position over the values the pool shows).
    """
    if smoothing <= 0:
        raise ValueError(f"{_WHERE}: smoothing must be positive, got {smoothing}")
    values = int(max(pool.max(), top.max())) + 1 if len(pool) and len(top) else 1
    weights = torch.ones(len(pool), dtype=torch.float64)
    for position in range(pool.shape[1]):
        present = torch.bincount(pool[:, position], minlength=values) > 0
        counts = torch.bincount(top[:, position], minlength=values).double() + smoothing * present.double()
        weights *= (counts / counts.sum())[pool[:, position]]
    return weights


def sampling_search(fitness: Fitness, budget: int, make_predictor: Callable[[], Predictor], seed: int = 0,
                    initial: int | None = None, rounds: int = 2, tiers: int = 5, pool: int = 20000,
                    candidates: int = 2000, smoothing: float = 0.5, space="nb201",
                    constraint: CostConstraint | None = None, domain: Tensor | None = None,
                    journal: SearchJournal | None = None) -> SearchHistory:
    """Spends ``budget`` ground-truth queries as the module docstring describes.

    Args:
        fitness: LongTensor[K, W] -> Tensor[K], the ground truth queried (higher = better).
        budget (int): ground-truth queries in all.
        make_predictor: returns a fresh, unfitted predictor (called once per round).
        seed (int): the uniform draws, the pools and the resampling come from it.
        initial (int): queries before the first fit (default ``budget // 2``; at least ``tiers``).
        rounds (int): fit-and-query rounds for the rest of the budget.
        tiers (int): the top tier is the best ``1 / tiers`` of the queried architectures.
        pool, candidates (int): uniform draws per round, and how many of them are resampled as candidates.
        smoothing (float): see :func:`top_tier_weights`.
        space: the search space (name or object).
        constraint (CostConstraint): bounds every query keeps.
        domain (LongTensor[N, W]): the architectures the search may query (default: the whole space).
        journal (SearchJournal): replays recorded queries, records new ones (resume).

    Returns:
        The :class:`SearchHistory` of every query, in query order.
    """
    space = get_space(space)
    initial = budget // 2 if initial is None else initial
    if not tiers <= initial <= budget or rounds < 1 or tiers < 1 or candidates < 1 or pool < candidates:
        raise ValueError(f"{_WHERE}: needs tiers <= initial <= budget, rounds >= 1 and pool >= candidates >= 1; got "
                         f"initial={initial}, budget={budget}, tiers={tiers}, rounds={rounds}, pool={pool}, "
                         f"candidates={candidates}")
    generator = torch.Generator().manual_seed(seed)
    history = SearchHistory(fitness, budget, constraint, journal)
    bounded = constraint is not None and constraint.bounded
    if bounded or domain is not None:
        history.evaluate(uniform_archs(initial, seed, space, constraint, domain))
    else:  # the unconstrained draws as recorded in benchmarks/results/search
        history.evaluate([tuple(a) for a in space.sample_distinct(initial, generator).tolist()])
    for round_index in range(rounds):
        share = history.remaining // (rounds - round_index)
        if share < 1:
            continue
        archs = torch.tensor(history.archs, dtype=torch.long)
        scores = torch.tensor(history.scores, dtype=torch.float64)
        predictor = make_predictor().fit(archs, scores)
        top = archs[torch.sort(-scores, stable=True).indices[: max(1, len(archs) // tiers)]]
        draws = _round_pool(space, pool, candidates, generator, constraint, domain, archs)
        seen = set(history.archs)
        draws = draws[torch.tensor([tuple(a) not in seen for a in draws.tolist()], dtype=torch.bool)]
        draws = torch.unique(draws, dim=0)
        if len(draws) == 0:
            break
        weights = top_tier_weights(draws, top, smoothing)
        picked = draws[torch.multinomial(weights, min(candidates, len(draws)), replacement=False,
                                         generator=generator)]
        picked = _within_top_cost(space, picked, top, constraint)
        order = torch.sort(-predictor.predict(picked), stable=True).indices
        if hasattr(predictor, "predict_tiers"):  # predicted top tier first, each part by score
            outside_top = predictor.predict_tiers(picked).argmax(-1)[order] != 0
            order = order[torch.sort(outside_top.to(torch.uint8), stable=True).indices]
        history.evaluate([tuple(a) for a in picked[order[:share]].tolist()])
    return history


def _round_pool(space, pool: int, candidates: int, generator: torch.Generator, constraint, domain,
                queried: Tensor) -> Tensor:
    """A round's draws: ``pool`` uniform draws of the space (or the whole ``domain``), non-trivial, inside the
    constraint; when fewer than ``candidates`` remain, filled by constraint-aware mutation
    (:meth:`CostConstraint.walk`) from them and the ``queried`` architectures (LongTensor[Q, W], all inside)."""
    draws = space.sample(pool, generator) if domain is None else space.validate(domain)
    draws = draws[~space.is_trivial(draws)]
    if constraint is None or not constraint.bounded:
        return draws
    inside = constraint.admits(draws)
    kept = draws[inside]
    if len(kept) < candidates and domain is None:
        kept = torch.cat([kept, constraint.walk(torch.cat([kept, queried]), candidates - len(kept), generator)])
    return kept


def _within_top_cost(space, picked: Tensor, top: Tensor, constraint: CostConstraint | None = None) -> Tensor:
    """``picked`` without the candidates whose FLOPs lie outside the top tier's range (all of them when the space
    has no cost model, or when none is inside). The costs come from ``constraint`` where given (its cached table)."""
    cost = space.cost if constraint is None else constraint.costs
    try:
        flops, top_flops = cost(picked)["flops"], cost(top)["flops"]
    except NotImplementedError:
        return picked
    inside = (flops >= top_flops.min()) & (flops <= top_flops.max())
    return picked[inside] if bool(inside.any()) else picked

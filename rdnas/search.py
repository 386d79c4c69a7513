"""Architecture search: random search and regularised evolution, under cost constraints, with a resumable record.

The fitness is any ``LongTensor[K, space.width] -> Tensor[K]`` (higher = better): a trained supernet's validation
accuracy (BN recalibrated per subnet, many architectures per forward pass), a predictor's score, a column of a
table. Every architecture is evaluated at most once and counts once against the budget. Any registered space
works (``space``, default ``"nb201"``): candidates are drawn with the space's sampler (enumerable spaces: a seeded
permutation of the whole space) and mutated with ``space.mutate``; architectures the space calls trivial (NB201's
disconnected cells) are never proposed.

Constraints (:class:`CostConstraint`): bounds on the space's cost model (:meth:`SearchSpace.cost`, its own units:
NB201 counts FLOPs and parameters of its CIFAR-10 network, ResNet48 those of the ImageNet network). No architecture
outside the bounds is ever evaluated (:class:`SearchHistory` refuses one). Uniform candidates are drawn from the
architectures inside the bounds: exactly, by filtering the enumeration, in an enumerable space; otherwise by
rejection (``REJECTION_ROUNDS`` rounds of draws), then, for what rejection did not find, by *constraint-aware
mutation* (:meth:`CostConstraint.walk`: single-choice mutations of admitted architectures that stay inside; no
longer uniform). A mutation child outside the bounds is redrawn (``MUTATION_TRIES`` children of the parent at once,
the first admissible one taken), then repaired (:meth:`CostConstraint.repair`: greedy single-choice mutations that
lower the bounds' relative violation to zero). A constraint that no architecture meets is an
:class:`InfeasibleConstraint` naming the smallest (largest, for a lower bound) reachable cost: exact in an
enumerable space or a domain, the cost of ``space.smallest()`` (``space.largest()``) otherwise.

A *domain* (``domain``: LongTensor[N, width]) restricts a search to given architectures, e.g. the rows of a table
that holds the fitness: draws are a permutation of the domain, and a mutation child outside the domain is replaced
by the unevaluated admissible domain member nearest to the parent (Hamming distance, ties at random).

Resume: a :class:`SearchJournal` records every evaluation (atomically rewritten after each batch); a search
started again with the same settings replays the recorded values instead of calling the fitness, and so follows
the same trajectory (the strategies draw their random numbers independently of the fitness values' timing) and
evaluates only what is new.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from rdnas.spaces import get_space

Fitness = Callable[[Tensor], Tensor]  # LongTensor[K, space.width] -> Tensor[K] (higher = better)
REJECTION_ROUNDS = 8  # rounds of uniform draws before constraint-aware mutation fills what rejection did not
MUTATION_TRIES = 16  # mutation children drawn at once before the first admissible is taken (then: repair)


class InfeasibleConstraint(ValueError):
    """A cost constraint that no architecture of the space (or of the domain) meets; the message names the
    smallest (largest) reachable cost."""


def _format(value: float) -> str:
    return f"{value:.6g}"


class CostConstraint:
    """Bounds on the space's cost model: ``minimum[name] <= cost[name] <= maximum[name]`` for each name given.

    Args:
        space: the search space (name or object); it needs :meth:`SearchSpace.cost`.
        minimum, maximum (dict[str, float]): bounds by cost name (``space.cost``'s keys, e.g. ``"flops"``,
            ``"params"``), in the space's own units; either may be empty.

    Raises ValueError naming an unknown cost, a bound that is not finite, or a minimum above its maximum.
    """

    def __init__(self, space="nb201", minimum: dict | None = None, maximum: dict | None = None):
        self.space = get_space(space)
        self.minimum, self.maximum = dict(minimum or {}), dict(maximum or {})
        self._table = None
        names = self.names() if self.minimum or self.maximum else []
        for kind, bounds in (("minimum", self.minimum), ("maximum", self.maximum)):
            for name, value in bounds.items():
                if name not in names:
                    raise ValueError(f"rdnas.search.CostConstraint: the space {self.space.name} has no cost {name!r} "
                                     f"({kind}); its costs: {', '.join(names)}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"rdnas.search.CostConstraint: the {kind} {name} must be a finite number, got "
                                     f"{value!r}")
        for name in set(self.minimum) & set(self.maximum):
            if self.minimum[name] > self.maximum[name]:
                raise InfeasibleConstraint(f"rdnas.search.CostConstraint: the minimum {name} "
                                           f"{_format(self.minimum[name])} is above the maximum "
                                           f"{_format(self.maximum[name])}")

    def names(self) -> list[str]:
        """The space's cost names (ValueError if the space has no cost model)."""
        try:
            return list(self.space.cost(self.space.sample(1, torch.Generator().manual_seed(0))))
        except NotImplementedError:
            raise ValueError(f"rdnas.search.CostConstraint: the space {self.space.name} has no cost model "
                             "(SearchSpace.cost), so it takes no cost bounds") from None

    @property
    def bounded(self) -> bool:
        return bool(self.minimum or self.maximum)

    def __str__(self) -> str:
        parts = [f"{name} >= {_format(v)}" for name, v in self.minimum.items()]
        parts += [f"{name} <= {_format(v)}" for name, v in self.maximum.items()]
        return " and ".join(parts) if parts else "no cost bound"

    def costs(self, archs) -> dict[str, Tensor]:
        """``space.cost`` of LongTensor[K, width]: dict of float64 Tensor[K] (an enumerable space's whole table is
        computed once and looked up)."""
        archs = self.space.validate(archs)
        if not self.space.enumerable:
            return self.space.cost(archs)
        if self._table is None:
            self._table = self.space.cost(self.space.enumerate())
        rows = self.space.index(archs)
        return {name: values[rows] for name, values in self._table.items()}

    def violation(self, archs, costs: dict | None = None) -> Tensor:
        """float64 Tensor[K]: the sum over the bounds of the relative amount by which each cost lies outside
        (``(cost - max) / max`` above a maximum, ``(min - cost) / min`` below a minimum); 0 inside."""
        costs = self.costs(archs) if costs is None else costs
        total = torch.zeros(len(next(iter(costs.values()))), dtype=torch.float64)
        for name, bound in self.maximum.items():
            total += (costs[name] - bound).clamp(min=0) / max(abs(bound), 1e-12)
        for name, bound in self.minimum.items():
            total += (bound - costs[name]).clamp(min=0) / max(abs(bound), 1e-12)
        return total

    def admits(self, archs, costs: dict | None = None) -> Tensor:
        """BoolTensor[K]: the architectures inside every bound."""
        if not self.bounded:
            return torch.ones(len(self.space.validate(archs)), dtype=torch.bool)
        return self.violation(archs, costs) == 0

    def check_reachable(self, domain: Tensor | None = None) -> None:
        """Raises :class:`InfeasibleConstraint` if no non-trivial architecture (of ``domain``, when given) meets the
        bounds, naming for each bound the smallest (largest) reachable cost and an architecture that reaches it.
        Exact for a domain or an enumerable space; otherwise the bounds are checked against ``space.smallest()``
        (maxima) and ``space.largest()`` (minima), the extremes of the cost model."""
        if not self.bounded:
            return
        if domain is not None or self.space.enumerable:
            candidates = self.space.enumerate() if domain is None else self.space.validate(domain)
            candidates = candidates[~self.space.is_trivial(candidates)]
            costs = self.costs(candidates)
            if len(candidates) and bool(self.admits(candidates, costs).any()):
                return
            where = f"the domain of {len(candidates):,} architectures" if domain is not None else \
                f"the space {self.space.name}"
            reached = []
            for name in self.maximum:
                i = int(costs[name].argmin())
                reached.append(f"the smallest reachable {name} is {_format(float(costs[name][i]))} "
                               f"({self.space.to_string(candidates[i])})")
            for name in self.minimum:
                i = int(costs[name].argmax())
                reached.append(f"the largest reachable {name} is {_format(float(costs[name][i]))} "
                               f"({self.space.to_string(candidates[i])})")
            raise InfeasibleConstraint(f"rdnas.search: no architecture of {where} meets {self}: "
                                       + "; ".join(reached))
        smallest = self.space.cost(self.space.smallest().unsqueeze(0))
        largest = self.space.cost(self.space.largest().unsqueeze(0))
        for name, bound in self.maximum.items():
            if float(smallest[name][0]) > bound:
                raise InfeasibleConstraint(
                    f"rdnas.search: no architecture of the space {self.space.name} meets {name} <= {_format(bound)}: "
                    f"the smallest reachable {name} is {_format(float(smallest[name][0]))} "
                    f"({self.space.to_string(self.space.smallest())})")
        for name, bound in self.minimum.items():
            if float(largest[name][0]) < bound:
                raise InfeasibleConstraint(
                    f"rdnas.search: no architecture of the space {self.space.name} meets {name} >= {_format(bound)}: "
                    f"the largest reachable {name} is {_format(float(largest[name][0]))} "
                    f"({self.space.to_string(self.space.largest())})")

    def seeds(self, draws: Tensor | None, generator: torch.Generator) -> Tensor:
        """Architectures inside the bounds to start :meth:`walk` from when no draw landed inside: the space's
        smallest and largest where admitted, else up to 8 of ``draws`` (LongTensor[K, width]) repaired."""
        ends = []
        for end in ("smallest", "largest"):
            try:
                ends.append(getattr(self.space, end)())
            except NotImplementedError:
                pass
        if ends:
            ends = torch.stack(ends)
            ends = ends[(~self.space.is_trivial(ends)) & self.admits(ends)]
            if len(ends):
                return ends
        if draws is None or len(draws) == 0:
            draws = self.space.sample(8, generator)
        return self.repair(draws[:8], generator)

    def walk(self, seeds: Tensor, count: int, generator: torch.Generator, rounds: int = 32) -> Tensor:
        """Constraint-aware mutation: up to ``count`` architectures reached from ``seeds`` (LongTensor[S, width],
        inside the bounds) by single-choice mutations that stay inside (each admitted child becomes a parent too),
        for at most ``rounds`` rounds of ``count`` children: LongTensor[<= count, width], non-trivial, admitted,
        distinct from each other and from the seeds (by ``space.key``)."""
        seeds = self.space.validate(seeds)
        if len(seeds) == 0 or count < 1:
            return seeds[:0]
        parents, found = seeds, []
        keys = {self.space.key(arch) for arch in seeds}
        for _ in range(rounds):
            picks = torch.randint(len(parents), (count,), generator=generator)
            children = self.space.mutate(parents[picks], 1, generator)
            children = children[(~self.space.is_trivial(children)) & self.admits(children)]
            fresh = []
            for child in children:
                key = self.space.key(child)
                if key not in keys:
                    keys.add(key)
                    fresh.append(child)
            if fresh:
                found.extend(fresh)
                parents = torch.cat([parents, torch.stack(fresh)])
            if len(found) >= count:
                break
        return torch.stack(found[:count]) if found else seeds[:0]

    def repair(self, archs, generator: torch.Generator, proposals: int = 8, steps: int | None = None) -> Tensor:
        """Constraint-aware mutation: each architecture is moved, one choice at a time, to the best of
        ``proposals`` single-choice mutations (lowest :meth:`violation`; non-trivial ones only) while that does
        not raise its violation, for at most ``steps`` steps (default ``4 * space.width``).

        Args:
            archs (LongTensor[K, width]): starting points (any cost).

        Returns:
            LongTensor[K', width]: those that ended inside the bounds (non-trivial), in input order.
        """
        current = self.space.validate(archs).clone()
        if len(current) == 0:
            return current
        steps = 4 * self.space.width if steps is None else steps
        trivial = self.space.is_trivial(current)
        violation = self.violation(current)
        violation[trivial] = math.inf
        for _ in range(steps):
            open_rows = (violation > 0).nonzero().flatten()
            if len(open_rows) == 0:
                break
            parents = current[open_rows].repeat_interleave(proposals, 0)
            children = self.space.mutate(parents, 1, generator)
            scores = self.violation(children)
            scores[self.space.is_trivial(children)] = math.inf
            scores = scores.view(len(open_rows), proposals)
            best, pick = scores.min(1)
            better = best <= violation[open_rows]
            chosen = children.view(len(open_rows), proposals, -1)[torch.arange(len(open_rows)), pick]
            current[open_rows[better]] = chosen[better]
            violation[open_rows[better]] = best[better]
        return current[violation == 0]


class SearchJournal:
    """Every evaluation of a search, kept in a JSON-lines file so that an interrupted search resumes.

    The first line holds ``settings`` (whatever identifies the search: strategy, seed, budget, space, fitness,
    constraint); each further line ``{"arch": space.to_string(arch), "score": value}``. The file is rewritten
    atomically after each batch (only where ``write`` is true: rank 0 of a job).

    Args:
        path: the journal file (created on the first record; an existing one is read).
        settings (dict): JSON-serialisable; an existing journal with other settings is a ValueError naming the first
            setting that differs.
        space: the search space (name or object).
        write (bool): whether :meth:`record` writes the file.
    """

    def __init__(self, path, settings: dict, space="nb201", write: bool = True):
        self.path, self.settings, self.space, self.write = Path(path), dict(settings), get_space(space), write
        self.lines: list[str] = [json.dumps({"settings": self.settings})]
        self.recorded: dict[tuple, float] = {}
        if self.path.is_dir():
            raise ValueError(f"rdnas.search.SearchJournal: {self.path} is a folder; the journal is a file")
        if not self.path.exists():
            return
        text = self.path.read_text().splitlines()
        try:
            recorded_settings = json.loads(text[0])["settings"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise ValueError(f"rdnas.search.SearchJournal: {self.path} is not a search journal (its first line "
                             "holds no settings)") from None
        if recorded_settings != json.loads(json.dumps(self.settings)):
            keys = sorted(set(recorded_settings) | set(self.settings), key=str)
            key = next(k for k in keys if recorded_settings.get(k) != json.loads(json.dumps(self.settings)).get(k))
            raise ValueError(f"rdnas.search.SearchJournal: {self.path} records another search ({key}: "
                             f"{recorded_settings.get(key)!r} there, {self.settings.get(key)!r} now); give another "
                             "journal path or remove it")
        for number, line in enumerate(text[1:], start=2):
            try:
                entry = json.loads(line)
                arch = tuple(self.space.from_string(entry["arch"]).tolist())
                score = float(entry["score"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"rdnas.search.SearchJournal: {self.path}:{number}: not an evaluation "
                                 f"({error})") from None
            self.recorded[arch] = score
            self.lines.append(line)

    def record(self, archs: list[tuple], scores: list[float]) -> None:
        """Adds evaluations and rewrites the file (atomically) where this process writes."""
        from rdnas.atomic_file import write_text_atomic

        fresh = False
        for arch, score in zip(archs, scores):
            if arch not in self.recorded:
                self.recorded[arch] = score
                self.lines.append(json.dumps({"arch": self.space.to_string(arch), "score": score}))
                fresh = True
        if fresh and self.write:
            write_text_atomic(self.path, "\n".join(self.lines) + "\n")


class SearchHistory:
    """Every evaluated architecture and its fitness, in evaluation order; ``evaluate`` skips those already seen.

    Args:
        fitness: LongTensor[K, width] -> Tensor[K].
        budget (int): evaluations in all.
        constraint (CostConstraint): when given, evaluating an architecture outside its bounds is a ValueError.
        journal (SearchJournal): recorded values are replayed instead of calling the fitness; new ones recorded.
    """

    def __init__(self, fitness: Fitness, budget: int, constraint: CostConstraint | None = None,
                 journal: SearchJournal | None = None):
        if budget < 1:
            raise ValueError(f"rdnas.search: budget must be at least 1, got {budget}")
        self.fitness, self.budget, self.constraint, self.journal = fitness, budget, constraint, journal
        self.archs: list[tuple] = []
        self.scores: list[float] = []
        self._seen: dict[tuple, float] = {}
        self.replayed = 0  # evaluations taken from the journal

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
        if new and self.constraint is not None and self.constraint.bounded:
            inside = self.constraint.admits(torch.tensor(new, dtype=torch.long))
            if not bool(inside.all()):
                arch = new[int((~inside).nonzero()[0, 0])]
                raise ValueError(f"rdnas.search: {self.constraint.space.to_string(arch)} is outside the constraint "
                                 f"{self.constraint}; a search never evaluates it")
        recorded = self.journal.recorded if self.journal is not None else {}
        unrecorded = [arch for arch in new if arch not in recorded]
        if unrecorded:
            values = self.fitness(torch.tensor(unrecorded, dtype=torch.long)).double().cpu().tolist()
            recorded = {**recorded, **dict(zip(unrecorded, values))}
            if self.journal is not None:
                self.journal.record(unrecorded, values)
        self.replayed += len(new) - len(unrecorded)
        for arch in new:
            self._seen[arch] = recorded[arch]
            self.archs.append(arch)
            self.scores.append(recorded[arch])
        return [self._seen.get(arch, float("-inf")) for arch in candidates]

    def top(self, k: int) -> list[tuple[tuple, float]]:
        """The k best evaluated cells, best first (ties: the earlier evaluated first; a NaN score ranks last)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"rdnas.search.SearchHistory.top: k must be a positive integer, got {k!r}")
        order = sorted(range(len(self.archs)),
                       key=lambda i: (math.isnan(self.scores[i]), -self.scores[i] if not math.isnan(self.scores[i])
                                      else 0.0, i))
        return [(self.archs[i], self.scores[i]) for i in order[:k]]


def _constrained(constraint: CostConstraint | None) -> bool:
    return constraint is not None and constraint.bounded


def uniform_archs(count: int, seed: int, space="nb201", constraint: CostConstraint | None = None,
                  domain: Tensor | None = None) -> list[tuple]:
    """``count`` distinct non-trivial architectures in a seeded order (fewer if the space, or the domain, has fewer
    inside the constraint): uniform over the admissible ones of an enumerable space or a domain; otherwise drawn by
    rejection, then constraint-aware mutation (module docstring). Raises :class:`InfeasibleConstraint` when none
    is admissible, ValueError when the draws find too few."""
    space = get_space(space)
    generator = torch.Generator().manual_seed(seed)
    if space.enumerable or domain is not None:
        everything = space.enumerate() if domain is None else space.validate(domain)
        candidates = everything[~space.is_trivial(everything)]
        if _constrained(constraint):
            constraint.check_reachable(domain)
            candidates = candidates[constraint.admits(candidates)]
        order = torch.randperm(len(candidates), generator=generator)[:count]
        return [tuple(a) for a in candidates[order].tolist()]
    if not _constrained(constraint):
        return [tuple(arch) for arch in space.sample_distinct(count, generator).tolist()]
    constraint.check_reachable()
    chosen, seen = [], set()

    def take(archs: Tensor) -> None:
        for arch in archs:
            key = space.key(arch)
            if key not in seen and len(chosen) < count:
                seen.add(key)
                chosen.append(tuple(arch.tolist()))

    draws = None
    for _ in range(REJECTION_ROUNDS):
        draws = space.sample(max(64, 2 * count), generator)
        draws = draws[~space.is_trivial(draws)]
        take(draws[constraint.admits(draws)])
        if len(chosen) == count:
            return chosen
    # rejection fell short: constraint-aware mutation from what is inside (or from repaired draws)
    seeds = torch.tensor(chosen, dtype=torch.long) if chosen else constraint.seeds(draws, generator)
    take(constraint.walk(seeds, 2 * (count - len(chosen)), generator))
    if len(chosen) == count:
        return chosen
    raise ValueError(f"rdnas.search: found only {len(chosen)} distinct architectures of {space.name} within "
                     f"{constraint} of the {count} asked for ({REJECTION_ROUNDS} rounds of draws, then mutations)")


def _evaluate_in_batches(history: SearchHistory, cells: list[tuple], batch: int) -> None:
    for start in range(0, len(cells), batch):
        history.evaluate(cells[start:start + batch])


def random_search(fitness: Fitness, budget: int, seed: int = 0, batch: int = 64, space="nb201",
                  constraint: CostConstraint | None = None, domain: Tensor | None = None,
                  journal: SearchJournal | None = None) -> SearchHistory:
    """``budget`` distinct architectures drawn uniformly (non-trivial ones inside ``constraint``, from ``domain``
    when given; see :func:`uniform_archs`), evaluated ``batch`` at a time."""
    history = SearchHistory(fitness, budget, constraint, journal)
    _evaluate_in_batches(history, uniform_archs(budget, seed, space, constraint, domain), batch)
    return history


def mutate(arch: tuple, generator: torch.Generator, space="nb201", constraint: CostConstraint | None = None,
           domain: Tensor | None = None, exclude=frozenset()) -> tuple | None:
    """``arch`` with one choice changed (``space.mutate``; NB201: one edge's op), redrawn until non-trivial.

    With a ``constraint``: ``MUTATION_TRIES`` children drawn at once, the first non-trivial admissible one taken;
    failing that, a child repaired into the bounds (:meth:`CostConstraint.repair`); None if that fails too. With a
    ``domain`` (LongTensor[N, width]): a child outside it is replaced by the admissible domain member not in
    ``exclude`` (a set of tuples) nearest to ``arch`` (Hamming distance, ties at random); None if there is none.
    """
    space = get_space(space)
    parent = torch.tensor(arch, dtype=torch.long).unsqueeze(0)
    if domain is not None:
        return _domain_neighbour(arch, generator, space, constraint, domain, exclude)
    if not _constrained(constraint):
        while True:
            child = space.mutate(parent, 1, generator)
            if not bool(space.is_trivial(child)[0]):
                return tuple(child[0].tolist())
    children = space.mutate(parent.expand(MUTATION_TRIES, -1), 1, generator)
    good = (~space.is_trivial(children)) & constraint.admits(children)
    if bool(good.any()):
        return tuple(children[int(good.nonzero()[0, 0])].tolist())
    repaired = constraint.repair(children[:1], generator)
    return tuple(repaired[0].tolist()) if len(repaired) else None


def _domain_neighbour(arch: tuple, generator, space, constraint, domain: Tensor, exclude) -> tuple | None:
    parent = torch.tensor(arch, dtype=torch.long).unsqueeze(0)
    child = tuple(space.mutate(parent, 1, generator)[0].tolist())
    members = space.validate(domain)
    allowed = ~space.is_trivial(members)
    if _constrained(constraint):
        allowed &= constraint.admits(members)
    blocked = set(exclude) | {arch}
    allowed &= torch.tensor([tuple(m) not in blocked for m in members.tolist()], dtype=torch.bool)
    if not bool(allowed.any()):
        return None
    if child not in blocked and bool(allowed[(members == torch.tensor(child)).all(1)].any()):
        return child
    candidates = members[allowed]
    distance = space.hamming(candidates, parent.expand(len(candidates), -1)).double()
    distance += torch.rand(len(candidates), generator=generator, dtype=torch.float64) * 0.5  # ties at random
    return tuple(candidates[int(distance.argmin())].tolist())


def evolution_search(fitness: Fitness, budget: int, seed: int = 0, population: int = 32, sample_size: int = 8,
                     batch: int = 16, space="nb201", constraint: CostConstraint | None = None,
                     domain: Tensor | None = None, journal: SearchJournal | None = None) -> SearchHistory:
    """Regularised evolution (Real et al. 2019): a population of ``population`` cells, initially random; each
    round, ``batch`` children, each a one-edge mutation of the best of ``sample_size`` random population members,
    are evaluated together and replace the oldest members. Stops when ``budget`` cells have been evaluated (or no
    unseen child is found in 100 rounds). ``constraint``, ``domain``: every candidate and child inside the bounds
    and the domain (see :func:`uniform_archs` and :func:`mutate`)."""
    if population < 2 or not 1 <= sample_size <= population:
        raise ValueError(f"rdnas.search.evolution_search: needs population >= 2 and 1 <= sample_size <= population, "
                         f"got {population} and {sample_size}")
    space = get_space(space)
    generator = torch.Generator().manual_seed(seed)
    history = SearchHistory(fitness, budget, constraint, journal)
    _evaluate_in_batches(history, uniform_archs(min(population, budget), seed, space, constraint, domain),
                         max(batch, population))
    members = list(zip(history.archs, history.scores))  # oldest first
    stale = 0
    while history.remaining > 0 and stale < 100:
        children = []
        for _ in range(batch):
            picks = torch.randperm(len(members), generator=generator)[:sample_size].tolist()
            parent = max((members[i] for i in picks), key=lambda m: m[1])[0]
            exclude = history._seen.keys() | set(children) if domain is not None else frozenset()
            child = mutate(parent, generator, space, constraint, domain, exclude)
            if child is not None:
                children.append(child)
        before = len(history.archs)
        scores = history.evaluate(children)
        stale = stale + 1 if len(history.archs) == before else 0
        for child, score in zip(children, scores):
            if score != float("-inf"):
                members.append((child, score))
        members = members[-population:]
    return history

"""The search-space interface every space implements, and the registry that finds a space by name.

An architecture is a row of ``space.width`` integers; many architectures are a ``LongTensor[K, space.width]`` on
the CPU. Everything generic in rdnas (trainer, samplers, teachers, proxies, ground truth, search, CLI) works on
that tensor through this interface and never names a particular space.

A space is stateless: every random draw takes a ``torch.Generator``, so a run is reproducible from its seeds.
"""

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class InvalidArchitecture(ValueError):
    """An architecture that is not in its search space; the message names the space, the architecture, the
    position and the rule it breaks."""


class SearchSpace(ABC):
    """A search space (see the module docstring).

    Attributes:
        name (str): the registry name, e.g. ``"nb201"``.
        width (int): integers per architecture.
        size (int): the exact number of architectures (a Python int; it may exceed 2**63).
        enumerable (bool): whether :meth:`enumerate` and :meth:`index` exist (the space is small enough to list).
    """

    name: str
    width: int
    size: int
    enumerable: bool = False

    # -- required -----------------------------------------------------------------------------------------------
    @abstractmethod
    def validate(self, archs) -> Tensor:
        """``archs`` (LongTensor[K, width], a nested sequence, or one architecture) as a CPU LongTensor[K, width];
        raises :class:`InvalidArchitecture` naming the architecture, the position and the rule broken."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` architectures drawn from the space's own uniform distribution: LongTensor[n, width] (CPU)."""

    @abstractmethod
    def mutate(self, archs: Tensor, changes: int, generator: torch.Generator) -> Tensor:
        """Each architecture with ``changes`` independent choices redrawn to a different valid value:
        LongTensor[K, width] -> LongTensor[K, width]. The result is valid and differs from its parent."""

    @abstractmethod
    def to_string(self, arch) -> str:
        """The canonical text of one architecture (what tables and reports key by)."""

    @abstractmethod
    def from_string(self, text: str) -> Tensor:
        """Inverse of :meth:`to_string`: LongTensor[width]; raises :class:`InvalidArchitecture`."""

    def key(self, arch) -> str:
        """A string shared exactly by the architectures that compute the same function (de-duplication, caches).
        Default: :meth:`to_string` (every code a different network)."""
        return self.to_string(arch)

    @abstractmethod
    def encode(self, archs) -> Tensor:
        """Features for predictors: LongTensor[K, width] -> float32 Tensor[K, F]."""

    # -- optional -----------------------------------------------------------------------------------------------
    def enumerate(self) -> Tensor:
        """Every architecture, LongTensor[size, width], in the space's enumeration order (enumerable spaces)."""
        raise NotImplementedError(f"rdnas.spaces.{self.name}: the space has {self.size:,} architectures and cannot "
                                  "be enumerated; sample it instead")

    def index(self, archs) -> Tensor:
        """Positions of architectures in :meth:`enumerate`: LongTensor[K, width] -> LongTensor[K] (enumerable)."""
        raise NotImplementedError(f"rdnas.spaces.{self.name}: the space is not enumerable, so architectures have "
                                  "no index; key them by to_string")

    def largest(self) -> Tensor:
        """The largest architecture (sandwich rule): LongTensor[width]."""
        raise NotImplementedError(f"rdnas.spaces.{self.name}: the space defines no largest architecture "
                                  "(needed by the sandwich rule)")

    def smallest(self) -> Tensor:
        """The smallest architecture that computes something (sandwich rule): LongTensor[width]."""
        raise NotImplementedError(f"rdnas.spaces.{self.name}: the space defines no smallest architecture "
                                  "(needed by the sandwich rule)")

    def fair_paths(self, generator: torch.Generator) -> Tensor:
        """FairNAS's strict-fairness group: LongTensor[M, width] in which every choice of every position appears
        exactly once."""
        raise NotImplementedError(f"rdnas.spaces.{self.name}: the space has no strict-fairness paths (FairNAS)")

    def sample_distinct(self, count: int, generator: torch.Generator, max_rounds: int = 1000) -> Tensor:
        """``count`` non-trivial architectures with distinct :meth:`key`, in the order :meth:`sample` draws them:
        LongTensor[count, width]. Raises ValueError if ``max_rounds`` rounds of draws find fewer."""
        chosen, seen = [], set()
        for _ in range(max_rounds):
            draws = self.sample(count, generator)
            for arch in draws[~self.is_trivial(draws)]:
                key = self.key(arch)
                if key not in seen:
                    seen.add(key)
                    chosen.append(arch)
                    if len(chosen) == count:
                        return torch.stack(chosen)
        raise ValueError(f"rdnas.spaces.{self.name}.sample_distinct: found only {len(chosen)} distinct non-trivial "
                         f"architectures of the {count} asked for")

    def is_trivial(self, archs) -> Tensor:
        """BoolTensor[K]: architectures that compute nothing from their input (NB201's disconnected cells);
        proxies give them -inf. Default: none."""
        return torch.zeros(len(self.validate(archs)), dtype=torch.bool)

    def cost(self, archs) -> dict[str, Tensor]:
        """The space's cost model, computed from the architecture alone (no training, no data):
        ``{"params": Tensor[K], "trainable_params": Tensor[K], "flops": Tensor[K]}`` float64 for
        LongTensor[K, width], in the conventions of the space's reference network (see its docstring). Optional."""
        raise NotImplementedError(f"rdnas.spaces.{self.name}: the space has no cost model")

    def hamming(self, first, second) -> Tensor:
        """Positions at which two sets of architectures differ: LongTensor[K, width] x2 -> LongTensor[K]."""
        return (self.validate(first) != self.validate(second)).sum(-1)

    def __repr__(self) -> str:
        return f"<search space {self.name}: {self.size:,} architectures of width {self.width}>"


_SPACES: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    """Adds ``space`` to the registry under ``space.name`` (an existing name is an error)."""
    if space.name in _SPACES:
        raise ValueError(f"rdnas.spaces.register_space: a space named {space.name!r} is already registered")
    _SPACES[space.name] = space
    return space


def unregister_space(name) -> SearchSpace:
    """Removes the space called ``name`` (or that SearchSpace) from the registry and returns it (e.g. a test's
    teardown; unregister its supernet first, :func:`rdnas.supernet.unregister_supernet`). An unknown name is an
    error."""
    name = name.name if isinstance(name, SearchSpace) else name
    if name not in _SPACES:
        raise ValueError(f"rdnas.spaces.unregister_space: no space named {name!r} is registered; registered: "
                         f"{', '.join(space_names())}")
    return _SPACES.pop(name)


def get_space(name) -> SearchSpace:
    """The registered space called ``name`` (a SearchSpace is returned as it is)."""
    if isinstance(name, SearchSpace):
        return name
    if name not in _SPACES:
        raise ValueError(f"rdnas.spaces.get_space: unknown space {name!r}; registered: {', '.join(space_names())}")
    return _SPACES[name]


def space_names() -> tuple[str, ...]:
    """Names of the registered spaces, in registration order."""
    return tuple(_SPACES)

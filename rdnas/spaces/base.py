"""The search-space interface every space implements, and the registry that finds a space by name.

An architecture is a row of ``space.width`` integers; many architectures are a ``LongTensor[K, space.width]`` on
the CPU. Everything generic in rdnas (trainer, samplers, teachers, proxies, ground truth, search, CLI) works on
that tensor through this interface and never names a particular space.

A space is stateless: every random draw takes a ``torch.Generator``, so a run is reproducible from its seeds.

A space's network (supernet and stand-alone networks) takes options beyond its classes and input channels (NB201:
``channels``, ``cells_per_stage``; ResNet48: ``resnet_stem``, ``width_divisor``): the space declares them as a
frozen :class:`NetworkOptions` dataclass, each field made with :func:`option` (default, help, choices, least
value), and its :class:`rdnas.supernet.SupernetSpec` names that class. Generic code (trainer, CLI, checkpoints)
reads, checks and turns them into command-line flags through that class, never by name.
"""

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

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

    #: The options of :meth:`predictor_tokens`: name -> the values it takes, the first the default.
    feature_options: dict[str, tuple] = {}
    #: One line of help per option of :attr:`feature_options` (``rdnas predictor fit`` derives its flags from both).
    feature_option_help: dict[str, str] = {}

    def predictor_tokens(self, archs, **options) -> Tensor:
        """The input of learned predictors (:class:`rdnas.predictors.ArchFeatures`): LongTensor[K, width] ->
        float32 Tensor[K, T, TOKEN_SIZE] (``options``: those of :attr:`feature_options`). Default: :meth:`encode`
        cut into tokens of 16 values, zero-padded (:func:`to_tokens`)."""
        if options:
            raise ValueError(f"rdnas.spaces.{self.name}: the space's predictor input takes no options; got "
                             f"{', '.join(sorted(options))}")
        return to_tokens(self.encode(archs).float())

    def hamming(self, first, second) -> Tensor:
        """Positions at which two sets of architectures differ: LongTensor[K, width] x2 -> LongTensor[K]."""
        return (self.validate(first) != self.validate(second)).sum(-1)

    def __repr__(self) -> str:
        return f"<search space {self.name}: {self.size:,} architectures of width {self.width}>"


TOKEN_SIZE = 16  # values per token of a predictor input (SearchSpace.predictor_tokens)


def to_tokens(values: Tensor) -> Tensor:
    """Features as predictor tokens: float Tensor[K, F] -> float32 Tensor[K, ceil(F / 16), 16], zero-padded."""
    count = max(1, math.ceil(values.shape[1] / TOKEN_SIZE))
    padded = torch.zeros(values.shape[0], count * TOKEN_SIZE, dtype=torch.float32)
    padded[:, : values.shape[1]] = values
    return padded.view(values.shape[0], count, TOKEN_SIZE)


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


def option(default, help: str, choices: tuple = (), minimum=None, flag: str = ""):
    """A field of a :class:`NetworkOptions` dataclass: its ``default``, the ``help`` of its command-line flag,
    the values it may take (``choices``, empty: any value of the field's type) or its least value (``minimum``, for
    numbers), and the flag's name where it is not derived from the field's (``flag``, e.g. ``"--cells"``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices), "minimum": minimum,
                                                        "flag": flag})


_KINDS = {bool: "True or False", int: "an integer", float: "a finite number", str: "a string"}


@dataclasses.dataclass(frozen=True)
class NetworkOptions:
    """The options of a space's network (see the module docstring); a space without options uses this class as it
    is. A subclass is a frozen dataclass of fields made with :func:`option`, each of type bool, int, float or str.

    ``check(where)`` raises ValueError naming ``where``, the option and what it must be; ``from_dict`` builds and
    checks one from a mapping; ``as_dict()`` is the keyword arguments of the space's network constructors.
    """

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def option_fields(cls) -> tuple[dataclasses.Field, ...]:
        """The dataclass fields (``field.metadata``: help, choices, minimum, flag; see :func:`option`)."""
        return dataclasses.fields(cls)

    @classmethod
    def from_dict(cls, values: Mapping, where: str, network: str = "network") -> "NetworkOptions":
        """The options ``values`` names (the others at their defaults), checked. A name the class does not have is
        a ValueError naming ``where``, ``network`` (e.g. "the resnet48 network") and the names it does have."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            taken = ", ".join(cls.names()) or "no options"
            raise ValueError(f"{where}: {network} takes {'the options ' if cls.names() else ''}{taken}; got "
                             f"{', '.join(unknown)}")
        options = cls(**values)
        options.check(where)
        return options

    @classmethod
    def defaults_for_data(cls, data: str) -> dict:
        """The options whose default depends on the data (``data``: a data spec such as ``digits`` or
        ``imagenet:<dir>``, see :data:`rdnas.data.DATA_KINDS`): the values a command uses for them when the user
        gives none (e.g. a narrower network on small images). Default: none."""
        return {}

    @classmethod
    def benchmark_defaults(cls) -> dict:
        """The options a mini-benchmark (:class:`rdnas.minibench.Recipe`, ``rdnas bench build``) trains its networks
        with when none are given: a CPU trains thousands of them. Default: :meth:`defaults_for_data` of digits."""
        return cls.defaults_for_data("digits")

    def check(self, where: str) -> None:
        """Raises ValueError naming ``where``, the option and what was expected, for a value of the wrong type,
        outside ``choices`` or below ``minimum``."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type
            choices, minimum = f.metadata.get("choices", ()), f.metadata.get("minimum")
            if choices:
                if value not in choices or type(value) is bool and kind is not bool:
                    raise ValueError(f"{where}: {f.name} must be one of {choices}, got {value!r}")
                continue
            wrong = (kind is bool and not isinstance(value, bool)) or (
                kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float)))) or (
                kind is int and not isinstance(value, int)) or (kind is str and not isinstance(value, str))
            if not wrong and kind is float and not math.isfinite(value):
                wrong = True
            if minimum is not None and not wrong and value < minimum:
                wrong = True
            if wrong:
                expected = ("a positive integer" if minimum == 1 else f"an integer of at least {minimum}") \
                    if kind is int and minimum is not None else \
                    f"a finite number of at least {minimum}" if minimum is not None else _KINDS.get(kind, str(kind))
                raise ValueError(f"{where}: {f.name} must be {expected}, got {value!r}")

    def as_dict(self) -> dict:
        """The options as keyword arguments: ``{name: value}``."""
        return {name: getattr(self, name) for name in self.names()}

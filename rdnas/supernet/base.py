"""The supernet interface every space's weight-sharing network implements, and the registry that builds one.

A supernet of a space (:mod:`rdnas.spaces`) runs any architecture of that space with shared weights:

- ``forward(x, arch)``: logits [B, classes] of one subnet (``arch``: LongTensor[width] on the CPU, or a tuple);
- ``forward_subnets(x, archs, bn="batch")``: logits [K, B, classes] of K subnets on one minibatch, each subnet's
  batch norm with its own statistics (``bn``: a :class:`rdnas.supernet.BNStatistics` or one of its mode names),
  equal to K separate ``forward`` calls in training mode;
- ``export(arch)``: a stand-alone ``nn.Module`` holding copies of the subnet's weights, with
  ``export(arch)(x) == supernet(x, arch)``;
- ``space``: the :class:`rdnas.spaces.SearchSpace` it runs; ``config``: the keyword arguments that rebuild it
  through :func:`build_supernet`.

Supernets are registered per space name with the options they take (:func:`register_supernet`), so the trainer,
the proxies and the CLI build one without naming its class. The options are the space's
:class:`rdnas.spaces.NetworkOptions` dataclass (e.g. :class:`rdnas.spaces.resnet48.ResNet48Options`): the spec
checks them (:meth:`SupernetSpec.check_options`), the trainer keeps them in ``TrainConfig.space_options`` and the
commands derive their flags from it (``rdnas train --space resnet48 --width-divisor 8``).
"""

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from rdnas.spaces import NetworkOptions, get_space


@dataclass(frozen=True)
class SupernetSpec:
    """How to build the supernet of one space.

    Attributes:
        space (str): the space's registry name.
        build (callable): ``build(num_classes=..., in_channels=..., **options) -> nn.Module``.
        options (type): the space's :class:`rdnas.spaces.NetworkOptions` dataclass: the options ``build`` and
            ``network`` accept beyond ``num_classes`` and ``in_channels``, with their defaults, choices and help
            (the trainer passes ``TrainConfig.space_options``; commands derive their flags from it).
            ``NetworkOptions`` itself (the default) for a network without options.
        summary (str): one line for ``--help`` and reports.
        check_image_size (callable, optional): ``check_image_size(side, options)`` raises ValueError when the
            network cannot take square inputs of ``side`` pixels with these options.
        network (callable, optional): ``network(arch, num_classes=..., in_channels=..., **options) -> nn.Module``,
            one architecture as a freshly initialised stand-alone network (mini-benchmark builds).
    """

    space: str
    build: Callable[..., nn.Module]
    options: type[NetworkOptions] = NetworkOptions
    summary: str = ""
    check_image_size: Callable[[int, dict], None] | None = None
    network: Callable[..., nn.Module] | None = None

    def __post_init__(self):
        if not (isinstance(self.options, type) and issubclass(self.options, NetworkOptions)):
            raise TypeError(f"rdnas.supernet.SupernetSpec: options of the {self.space} supernet must be a "
                            f"rdnas.spaces.NetworkOptions dataclass, got {self.options!r}")

    @property
    def option_names(self) -> tuple[str, ...]:
        """The names of the options ``build`` accepts."""
        return self.options.names()

    def check_options(self, values, where: str) -> NetworkOptions:
        """The options ``values`` (a mapping; missing ones at their defaults) as the space's NetworkOptions,
        checked: ValueError naming ``where``, the option and what was expected, or the options the network takes."""
        return self.options.from_dict(values, where, f"the {self.space} network")


_SUPERNETS: dict[str, SupernetSpec] = {}


def register_supernet(spec: SupernetSpec) -> SupernetSpec:
    """Registers the supernet of ``spec.space`` (one per space)."""
    get_space(spec.space)  # the space must exist
    if spec.space in _SUPERNETS:
        raise ValueError(f"rdnas.supernet.register_supernet: space {spec.space!r} already has a supernet")
    _SUPERNETS[spec.space] = spec
    return spec


def unregister_supernet(space) -> SupernetSpec:
    """Removes the supernet of ``space`` (a name or a SearchSpace) from the registry and returns its spec (e.g. a
    test's teardown, before :func:`rdnas.spaces.unregister_space`). A space without one is an error."""
    name = space.name if hasattr(space, "name") else space
    if name not in _SUPERNETS:
        raise ValueError(f"rdnas.supernet.unregister_supernet: no supernet is registered for space {name!r}; "
                         f"registered: {', '.join(_SUPERNETS)}")
    return _SUPERNETS.pop(name)


def supernet_spec(space) -> SupernetSpec:
    """The registered :class:`SupernetSpec` of ``space`` (a name or a SearchSpace)."""
    name = get_space(space).name
    if name not in _SUPERNETS:
        raise ValueError(f"rdnas.supernet.supernet_spec: no supernet is registered for space {name!r}; "
                         f"registered: {', '.join(_SUPERNETS)}")
    return _SUPERNETS[name]


def build_supernet(space, num_classes: int, in_channels: int, **options) -> nn.Module:
    """A freshly initialised supernet of ``space`` (a name or SearchSpace) with ``options`` (see its spec).

    An option the space's supernet does not take is an error naming it and the options it does take.
    """
    spec = supernet_spec(space)
    unknown = sorted(set(options) - set(spec.option_names))
    if unknown:
        raise ValueError(f"rdnas.supernet.build_supernet: the {spec.space} supernet takes the options "
                         f"{', '.join(spec.option_names) or 'none'}; got {', '.join(unknown)}")
    return spec.build(num_classes=num_classes, in_channels=in_channels, **options)


def network_option_names() -> set:
    """The option names of every registered space's network."""
    return {name for spec in _SUPERNETS.values() for name in spec.option_names}


def move_legacy_network_options(values: dict, default_space: str) -> dict:
    """``values`` (a saved config or recipe, {field: value}) with the network options that files written before
    ``space_options`` existed hold as top-level fields moved into ``values["space_options"]``: the saved space's own
    ones (``values["space"]``, else ``default_space``) are kept, the other spaces' ones (which held their defaults
    and never reached the network) dropped. Options already in ``space_options`` win."""
    values = dict(values)
    legacy = [name for name in values if name in network_option_names()]
    if legacy:
        space = values.get("space", default_space)
        own = _SUPERNETS[space].option_names if space in _SUPERNETS else ()
        moved = {name: values.pop(name) for name in legacy}
        values["space_options"] = {**{k: v for k, v in moved.items() if k in own}, **values.get("space_options", {})}
    return values


def taking_space_options(cls):
    """Class decorator for a dataclass with a ``space_options`` dict field (a training config, a benchmark recipe):
    its constructor's keyword arguments that are not fields join ``space_options``, so
    ``TrainConfig(space="resnet48", width_divisor=8)`` reads as the flags do."""
    init = cls.__init__
    names = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(init)
    def __init__(self, *args, **values):
        options = {name: values.pop(name) for name in [name for name in values if name not in names]}
        if options:
            values["space_options"] = {**(values.get("space_options") or {}), **options}
        init(self, *args, **values)

    cls.__init__ = __init__
    return cls

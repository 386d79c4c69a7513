"""What every zero-cost proxy shares: the minibatch, the proxy record and registry, the scoring supernet.

A proxy scores K architectures of a search space with one weight-sharing supernet at initialisation:
``proxy.score(supernet, archs, minibatch) -> Tensor[K]`` (float64, higher = predicted better). On a supernet with
a fused path (:func:`fused_path`: NB201's) no network is built per architecture, and a proxy marked ``batched``
also runs several architectures in one pass. Any other space's supernet is scored through
:mod:`rdnas.proxies.network`: each architecture is exported (``supernet.export(arch)``) and the plain network is
scored (``archs``: LongTensor[K, space.width]); :func:`register` wraps every proxy with that dispatch.

Disconnected architectures (no input-to-output path in the cell; the benchmark trains them to 10 %) score
``-inf`` under every proxy except ``flops`` and ``params``, which report the cost of the network as the benchmark
builds it. ``-inf`` ranks them last, below every connected architecture.
"""

import contextlib
import copy
import functools
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rdnas.spaces import nb201
from rdnas.supernet import NB201Supernet, build_supernet, cell_plan, supernet_spec

INITS = ("pytorch", "kaiming_normal")


@dataclass(frozen=True, eq=False)
class Minibatch:
    """One minibatch the data-dependent proxies see.

    Attributes:
        inputs (Tensor[B, C, H, W]): normalised float images.
        targets (LongTensor[B]): class labels in 0..num_classes-1.
        num_classes (int): classifier outputs of the network being scored.
        source (str): where the images came from (written into score tables).
    """

    inputs: Tensor
    targets: Tensor
    num_classes: int
    source: str = "unknown"

    def __post_init__(self):
        if self.inputs.dim() != 4 or not self.inputs.is_floating_point():
            raise ValueError(f"rdnas.proxies.Minibatch: inputs must be a float Tensor[B, C, H, W], got "
                             f"{self.inputs.dtype} of shape {list(self.inputs.shape)}")
        if self.targets.shape != self.inputs.shape[:1] or self.targets.dtype != torch.long:
            raise ValueError(f"rdnas.proxies.Minibatch: targets must be a LongTensor[{self.inputs.shape[0]}], got "
                             f"{self.targets.dtype} of shape {list(self.targets.shape)}")
        if len(self.targets) and not 0 <= int(self.targets.min()) <= int(self.targets.max()) < self.num_classes:
            raise ValueError(f"rdnas.proxies.Minibatch: targets must lie in 0..{self.num_classes - 1}")

    def to(self, device) -> "Minibatch":
        return Minibatch(self.inputs.to(device), self.targets.to(device), self.num_classes, self.source)


@dataclass(frozen=True)
class Proxy:
    """A registered zero-cost proxy.

    Attributes:
        name (str): the registry key and the score table's column name.
        score (callable): ``score(supernet, archs, minibatch) -> Tensor[K]`` float64 on the CPU, higher = better;
            ``archs`` is a list of K architectures (tuples of op indices).
        needs_data (bool): whether the minibatch's images are used (synflow, flops, params, l2_norm: no).
        batched (bool): whether several architectures share one pass (otherwise one pass per architecture).
        summary (str): one line for ``rdnas proxies --list``.
        family (callable, optional): for proxies that come from one shared pass (snip, grad_norm, plain, fisher):
            ``family(supernet, archs, minibatch, names) -> {name: Tensor[K]}`` computes just the named members in
            one pass per architecture. :func:`~rdnas.proxies.score_space` calls it once for all requested members;
            ``score`` computes its own member alone.
    """

    name: str
    score: Callable[..., Tensor]
    needs_data: bool
    batched: bool
    summary: str
    family: Callable[..., dict] | None = None


PROXIES: dict[str, Proxy] = {}


def fused_path(supernet: nn.Module) -> bool:
    """Whether the proxies' fused implementations (cell plans, K-subnet passes, per-op tables) apply to
    ``supernet``: NB201's supernet and its exported networks. Every other supernet is scored by exporting each
    architecture (:func:`rdnas.proxies.network.score_exported`)."""
    return isinstance(supernet, NB201Supernet)


def register(name: str, *, needs_data: bool, batched: bool, summary: str, family: Callable[..., dict] | None = None):
    """Decorator: adds a scoring function to :data:`PROXIES` under ``name`` (``family``: see :class:`Proxy`).

    The decorated function is the fused path; what is registered (and returned) calls it where
    :func:`fused_path` holds and otherwise scores each exported architecture with the plain-network proxy of the
    same name (:func:`rdnas.proxies.network.score_exported`)."""

    def add(fused):
        if name in PROXIES:
            raise ValueError(f"rdnas.proxies: a proxy named {name!r} is already registered")

        @functools.wraps(fused)
        def score(supernet, archs, minibatch=None, **options):
            if fused_path(supernet):
                return fused(supernet, archs, minibatch, **options)
            from rdnas.proxies.network import score_exported  # network.py builds on the fused modules' helpers

            return score_exported(name, supernet, archs, minibatch, **options)

        PROXIES[name] = Proxy(name, score, needs_data, batched, summary, family)
        return score

    return add


def get_proxy(name: str) -> Proxy:
    """The registered proxy ``name``; the error lists the known ones."""
    try:
        return PROXIES[name]
    except KeyError:
        raise ValueError(f"rdnas.proxies: unknown proxy {name!r}; known proxies: {', '.join(sorted(PROXIES))}") from None


def scoring_supernet(num_classes: int = 10, in_channels: int = 3, init: str = "pytorch", seed: int = 0, device="cpu",
                     space: str = "nb201", **options) -> nn.Module:
    """The supernet of ``space`` whose initial weights every architecture borrows when it is scored.

    Args:
        num_classes, in_channels: the classifier's outputs and the images' channels.
        init (str): "pytorch" (the layers' default initialisation, the NAS-Bench-Suite-Zero protocol) or
            "kaiming_normal" (convolutions Kaiming-normal, fan_out, ReLU gain; BN 1 / 0; linear N(0, 0.01), bias 0:
            the FreeREA protocol behind nb201_zc_proxies.csv).
        seed (int): the initialisation seed (the CPU generator is seeded for the build and put back after).
        space (str): a registered space with a supernet (:func:`rdnas.supernet.build_supernet`), e.g. "nb201" or
            "resnet48".
        **options: options of the space's network (its :class:`rdnas.supernet.SupernetSpec`'s NetworkOptions,
            e.g. NB201's ``channels`` and ``cells_per_stage``, default the benchmark's 16 and 5), checked there: an
            option the network does not take, or a bad value, is a ValueError naming it.
    """
    if init not in INITS:
        raise ValueError(f"rdnas.proxies.scoring_supernet: init must be one of {INITS}, got {init!r}")
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"rdnas.proxies.scoring_supernet: {name} must be a positive integer, got {value!r}")
    supernet_spec(space).check_options(options, "rdnas.proxies.scoring_supernet")
    generator_state = torch.random.get_rng_state()
    torch.random.default_generator.manual_seed(seed)  # the CPU one only: torch.manual_seed would reseed CUDA's
    try:
        supernet = build_supernet(space, num_classes=num_classes, in_channels=in_channels, **options)
        if init == "kaiming_normal":
            for module in supernet.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d) and module.affine:
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, 0.01)
                    nn.init.zeros_(module.bias)
    except ValueError as error:
        raise ValueError(f"rdnas.proxies.scoring_supernet: {error}") from None
    finally:
        torch.random.set_rng_state(generator_state)
    return supernet.to(device)


def check_archs(where: str, archs) -> list[tuple]:
    """``archs`` (a LongTensor[K, 6] or a sequence of architectures) as a list of validated tuples."""
    if isinstance(archs, Tensor):
        if archs.dim() != 2 or archs.shape[1] != nb201.NUM_EDGES:
            raise ValueError(f"rdnas.proxies.{where}: archs must be a LongTensor[K, {nb201.NUM_EDGES}], got shape "
                             f"{list(archs.shape)}")
        archs = archs.tolist()
    if not isinstance(archs, Sequence):
        raise TypeError(f"rdnas.proxies.{where}: archs must be a sequence of architectures, got {type(archs).__name__}")
    return [nb201.validate(arch) for arch in archs]


def is_connected(arch: tuple) -> bool:
    return bool(cell_plan(arch))


_plan_caches: dict = {}


def plan_cache(*key) -> dict:
    """A dict {live cell plan: score} shared by every call with the same key (keep the supernet and minibatch
    objects and the parameter state in the key). A :class:`Minibatch` in the key stands for its object and the
    current state of its tensors (:func:`tensor_state`), so writing into ``minibatch.inputs`` in place starts a new
    cache. Only the 4 most recent keys are kept (a key holds its supernet and minibatch alive);
    :func:`clear_plan_caches` drops them all."""
    key = tuple((part, tensor_state(part.inputs), tensor_state(part.targets)) if isinstance(part, Minibatch) else part
                for part in key)
    if key not in _plan_caches:
        while len(_plan_caches) >= 4:
            _plan_caches.pop(next(iter(_plan_caches)))
        _plan_caches[key] = {}
    return _plan_caches[key]


def clear_plan_caches() -> None:
    """Forgets every cached per-plan score (benchmarks call it so that each round computes everything)."""
    _plan_caches.clear()


def scores_with_disconnected_last(archs: list[tuple], score_connected, cache: dict | None = None) -> Tensor:
    """Runs ``score_connected(connected archs) -> Tensor[k]`` and returns Tensor[K] float64 on the CPU with
    ``-inf`` for the disconnected architectures.

    With ``cache`` (from :func:`plan_cache`), architectures are scored once per live cell plan: two cells that
    differ only in dead edges run the same network on the supernet's weights, so a proxy that only sees the live
    edges gives them the same score (15,625 NB201 cells have 9,444 live plans). Plans already in the cache are not
    scored again.
    """
    scores = torch.full((len(archs),), float("-inf"), dtype=torch.float64)
    positions = [k for k, arch in enumerate(archs) if is_connected(arch)]
    if not positions:
        return scores
    if cache is None:
        scores[positions] = score_connected([archs[k] for k in positions]).detach().to("cpu", torch.float64)
        return scores
    plans = {k: cell_plan(archs[k]) for k in positions}
    todo = {}
    for k in positions:
        if plans[k] not in cache:
            todo.setdefault(plans[k], archs[k])
    if todo:
        values = score_connected(list(todo.values())).detach().to("cpu", torch.float64).tolist()
        cache.update(zip(todo, values))
    scores[positions] = torch.tensor([cache[plans[k]] for k in positions], dtype=torch.float64)
    return scores


def tensor_state(tensor: Tensor) -> tuple:
    """Changes whenever the tensor's values may have changed: written in place (its version counter), or given new
    data (``t.data = ...``; its storage address, dtype and device)."""
    return tensor._version, tensor.dtype, tensor.device, tensor.data_ptr()


def parameter_state(model: nn.Module) -> tuple:
    """Changes whenever a parameter changes: modified in place (its version counter), converted or moved
    (``model.double()``, ``model.to(device)``) or given new data (``p.data = ...``; its storage address). The key of
    the caches of scores and derived copies, which would otherwise hand back results of the old weights."""
    return tuple(tensor_state(p) for p in model.parameters())


_DERIVED_COPIES = weakref.WeakKeyDictionary()  # supernet -> {kind: (parameter state, copy)}


def derived_copy(supernet: nn.Module, kind, make) -> nn.Module:
    """``make(supernet)`` (a transformed copy: float64 and linearised, Gaussian re-initialised, ...), made once per
    supernet, ``kind`` and parameter state and reused by every later call, never once per architecture."""
    copies = _DERIVED_COPIES.setdefault(supernet, {})
    state = parameter_state(supernet)
    if kind not in copies or copies[kind][0] != state:
        copies[kind] = (state, make(supernet))
    return copies[kind][1]


def scoring_copy_on_cpu(supernet: NB201Supernet, minibatch: Minibatch,
                        memory_format: torch.memory_format = torch.channels_last) -> tuple[NB201Supernet, Minibatch]:
    """On the CPU, a copy of the supernet in ``memory_format`` (made once per supernet, format and parameter state,
    see :func:`derived_copy`) and the minibatch's images in that layout; elsewhere, both unchanged (callers restore
    the supernet's state with :func:`network_state_restored`).

    oneDNN's convolutions and their backward run about 1.7x faster on NB201's small-channel layers in channels_last
    (snip over 8 cells at batch 64 on 2 cores: 1.53 s against 2.58 s), the default. Second derivatives (GraSP) are
    faster contiguous: batch norm's double backward is element-wise work that runs slowly in channels_last. Scores
    differ between layouts by float32 rounding only (relative 1e-4 on snip; GraSP, a sum with heavy cancellation,
    up to 1e-2)."""
    if minibatch.inputs.device.type != "cpu":
        return supernet, minibatch
    network = derived_copy(supernet, memory_format,
                           lambda source: copy.deepcopy(source).to(memory_format=memory_format))
    images = minibatch.inputs.contiguous(memory_format=memory_format)
    return network, Minibatch(images, minibatch.targets, minibatch.num_classes, minibatch.source)


@contextlib.contextmanager
def network_state_restored(network: nn.Module, training: bool | None = None) -> Iterator[nn.Module]:
    """Runs the block with ``network`` in training mode ``training`` (left as it is when None), then puts back its
    mode, every buffer (BN running statistics and batch counts) and every parameter's ``.grad`` (the very tensor,
    or None), also when the block raises. Scoring a supernet thus never changes it, on the CPU (where the passes
    run on a copy anyway) as on a GPU (where they run on the supernet itself: gradients a training step has
    accumulated survive a snip in between). Training-mode BN normalises with batch statistics, so the restore
    changes no score."""
    saved = [buffer.detach().clone() for buffer in network.buffers()]
    saved_grads = [parameter.grad for parameter in network.parameters()]
    was_training = network.training
    if training is not None:
        network.train(training)
    try:
        yield network
    finally:
        with torch.no_grad():
            for buffer, value in zip(network.buffers(), saved):
                buffer.copy_(value)
        for parameter, grad in zip(network.parameters(), saved_grads):
            parameter.grad = grad
        network.train(was_training)


def chunks(items: list, size: int):
    """Consecutive slices of ``items`` of at most ``size`` (architectures per pass)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def default_archs_per_pass(requested: int | None, device, cpu: int, cuda: int) -> int:
    """``requested``, or the proxy's default for the device type (GPUs take many more architectures per pass)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"rdnas.proxies: archs_per_pass must be at least 1, got {requested}")
        return requested
    return cuda if torch.device(device).type == "cuda" else cpu


def conv_and_linear_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose weights the zero-cost proxies score (Conv2d and Linear, as the reference code does)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

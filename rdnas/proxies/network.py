"""Zero-cost proxies of one plain network, and the path that scores any space's architectures through them.

Each proxy here takes one stand-alone ``nn.Module`` (``network(x) -> logits``; x Tensor[B, C, H, W], logits
Tensor[B, classes]) and a :class:`~rdnas.proxies.Minibatch`, and returns a float: ``score_network(name, network,
minibatch, **options)``. The definitions are those of the fused NB201 implementations, written once on a plain
module and sharing their code (:func:`~rdnas.proxies.synflow_of_network`, the loss-gradient pass, GraSP's and
jacov's formulas, NASWOT's kernel term, Zen's inputs and BN term, NB201's MAC counter):

- synflow, logsynflow: float64 copy, BN removed, |w|, all-ones input of batch 1 (the minibatch's C, H, W).
- snip, grad_norm, plain, fisher (one pass for any subset), grasp, jacov: cross-entropy / logits on the
  minibatch, training-mode BN, over the Conv2d and Linear weights.
- naswot: log|det K| with K summed over every ReLU the forward runs (modules and ``F.relu`` alike,
  :func:`~rdnas.proxies.probes.relu_calls_seen`), training-mode BN; a singular K gives -inf.
- zen: features = the output of the last ReLU the forward runs (the input of the global pooling in networks that
  end ReLU -> pool -> Linear, as NB201's and ResNet48's do); BN term from each BN layer's batch variances.
- l2_norm: sum of the Conv2d/Linear weights' L2 norms; params: trainable parameters; flops: Conv2d/Linear
  multiply-accumulates per image at the minibatch's resolution, measured with hooks. A supernet with a cost model
  (``supernet.cost(archs, image_size)``; ResNet48's, in the CVPR 2022 Track 1 conventions: BN and the global pool
  count, parameters include BN's running statistics) gives flops and params from it instead, as its space defines
  them.

Scores are taken in the network's train/eval mode each proxy needs and leave the network as it was (mode,
buffers, gradients: :func:`~rdnas.proxies.base.network_state_restored`).

:func:`score_exported` is how every registered proxy scores a supernet without a fused path
(:func:`~rdnas.proxies.base.fused_path`; e.g. ResNet48's): each architecture of ``archs`` (LongTensor[K,
space.width]) is exported (``supernet.export(arch)``: the supernet's initial weights, sliced) and scored here;
architectures the space calls trivial (:meth:`~rdnas.spaces.SearchSpace.is_trivial`) get -inf, except under
flops and params. Zen's networks are exported from the supernet's Gaussian re-initialised copy, as its fused path
reads that copy's weights.

Where the generic path on an ``NB201Network`` and the fused NB201 path legitimately differ: the plain network
runs only the live edges, while the fused naswot and zen run every non-``none`` edge (``edges="all"``) and the
fused flops counts them; cells whose edges are all live agree (tests/test_network_proxies.py).
"""

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from rdnas.proxies.activation import gaussian_copy, gaussian_initialised, jacov_of_logits, relu_code_agreement
from rdnas.proxies.activation import zen_inputs, zen_running_variance
from rdnas.proxies.base import Minibatch, conv_and_linear_layers, get_proxy, network_state_restored
from rdnas.proxies.cost import _macs_of
from rdnas.proxies.gradient import LOSS_GRADIENT_PROXIES, _one_architecture, checked_loss_gradient_names
from rdnas.proxies.gradient import grasp_of_logits
from rdnas.proxies.probes import hooks_removed, relu_calls_seen
from rdnas.proxies.synflow import synflow_of_network

COST_PROXIES = ("flops", "params")  # scored for every architecture, trivial ones included


def synflow_network(network: nn.Module, minibatch: Minibatch, log_gradients: bool = False) -> float:
    """SynFlow (or LogSynFlow with ``log_gradients``) of ``network`` on an all-ones input of the minibatch's
    (C, H, W), in float64 (a float64 copy unless the network already is float64); see
    :func:`~rdnas.proxies.synflow_of_network`."""
    model = network if next(network.parameters()).dtype == torch.float64 else copy.deepcopy(network).double()
    with network_state_restored(model):
        return synflow_of_network(model, tuple(minibatch.inputs.shape[1:]), log_gradients=log_gradients)


def logsynflow_network(network: nn.Module, minibatch: Minibatch) -> float:
    """LogSynFlow of ``network``: :func:`synflow_network` with log(|dR/dw| + 1) in place of the gradient."""
    return synflow_network(network, minibatch, log_gradients=True)


def loss_gradient_of_network(network: nn.Module, minibatch: Minibatch,
                             names=LOSS_GRADIENT_PROXIES) -> dict[str, float]:
    """snip, grad_norm, plain and fisher (or the ``names`` among them) of ``network`` from one forward/backward
    of the cross-entropy on the minibatch (training-mode BN); definitions as
    :func:`~rdnas.proxies.loss_gradient_proxies`. Returns {name: float}."""
    names = checked_loss_gradient_names("loss_gradient_of_network", names)
    with network_state_restored(network, training=True):
        return _one_architecture(network, None, minibatch, conv_and_linear_layers(network), names)


def _loss_gradient_member(name: str) -> Callable[..., float]:
    def score(network: nn.Module, minibatch: Minibatch) -> float:
        return loss_gradient_of_network(network, minibatch, (name,))[name]

    score.__name__ = f"{name}_network"
    score.__doc__ = f"{name} of ``network`` alone: :func:`loss_gradient_of_network` with just that name."
    return score


def grasp_network(network: nn.Module, minibatch: Minibatch, temperature: float = 1.0) -> float:
    """GraSP of ``network``: -sum w * Hg over its Conv2d/Linear weights (training-mode BN; see
    :func:`~rdnas.proxies.gradient.grasp_of_logits`)."""
    weights = [m.weight for m in conv_and_linear_layers(network)]
    with network_state_restored(network, training=True):
        return grasp_of_logits(network, weights, minibatch, temperature)


def jacov_network(network: nn.Module, minibatch: Minibatch, epsilon: float = 1e-5) -> float:
    """jacob_cov of ``network`` on the minibatch's images (training-mode BN; see
    :func:`~rdnas.proxies.activation.jacov_of_logits`)."""
    with network_state_restored(network, training=True):
        return jacov_of_logits(network, minibatch.inputs, epsilon)


@torch.no_grad()
def naswot_network(network: nn.Module, minibatch: Minibatch) -> float:
    """NASWOT of ``network``: log|det K|, K = sum over every ReLU the forward runs of C C^T + (1 - C)(1 - C)^T
    (C: the B images' binary codes, input > 0; :func:`~rdnas.proxies.activation.relu_code_agreement`), with
    training-mode BN. A singular K gives -inf."""
    images = minibatch.inputs.shape[0]
    kernel = torch.zeros(images, images, dtype=torch.float64, device=minibatch.inputs.device)

    def on_relu(x, run):
        kernel.add_(relu_code_agreement(x, images)[0].double())
        return run()

    with network_state_restored(network, training=True), relu_calls_seen(on_relu):
        network(minibatch.inputs)
    sign, logabsdet = torch.linalg.slogdet(kernel)
    return float("-inf") if sign == 0 else float(logabsdet)


@torch.no_grad()
def _zen_features(network: nn.Module, x: Tensor) -> tuple[Tensor, dict]:
    """The output of the last ReLU of one forward ([B, C, h, w]) and each BN layer's unbiased batch variance [C]
    of that forward."""
    last, variances = [], {}

    def on_relu(inputs, run):
        out = run()
        last[:] = [out]
        return out

    def on_bn(module, args):
        variances[module] = torch.var(args[0], dim=(0, 2, 3), correction=1)

    hooks = [m.register_forward_pre_hook(on_bn) for m in network.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with hooks_removed(hooks), relu_calls_seen(on_relu):
        network(x)
    if not last or last[0].dim() != 4:
        raise ValueError("rdnas.proxies.zen_network: zen reads the output of the network's last ReLU as its "
                         "features before global pooling, Tensor[B, C, h, w]; got "
                         f"{'no ReLU' if not last else 'shape ' + str(list(last[0].shape))}")
    return last[0], variances


def zen_network(network: nn.Module, minibatch: Minibatch, mixup_gamma: float = 1e-2, seed: int = 0,
                gaussian_init: bool = True) -> float:
    """Zen-score of ``network`` as NAS-Bench-Suite-Zero computes it: log(mean over images of sum |f(x) - f(x')|)
    + sum over BN layers of log sqrt(mean running variance), f the features before global pooling (the last
    ReLU's output), x and x' = x + gamma * x2 Gaussian inputs of the minibatch's shape
    (:func:`~rdnas.proxies.activation.zen_inputs`), running variances those two training-mode passes leave.

    Args:
        mixup_gamma (float): the perturbation scale.
        seed (int): seeds the inputs and, with ``gaussian_init``, the weights.
        gaussian_init (bool): score a copy with Conv2d/Linear weights N(0, 1), biases 0, BN 1 / 0 (Zen-NAS's
            init); False when the weights already are (networks exported from a Gaussian supernet copy).
    """
    net = gaussian_initialised(network, seed) if gaussian_init else network
    parameter = next(net.parameters())
    first, mixed = zen_inputs(tuple(minibatch.inputs.shape), mixup_gamma, seed, parameter.device, parameter.dtype)
    with network_state_restored(net, training=True):
        features, variances = _zen_features(net, first)
        features_mixed, variances_mixed = _zen_features(net, mixed)
    change = (features - features_mixed).abs().flatten(1).sum(1).mean(0).double()
    log_bn = torch.zeros((), dtype=torch.float64, device=parameter.device)
    for layer, variance in variances.items():
        log_bn += 0.5 * zen_running_variance(variance, variances_mixed[layer]).mean().log()
    return float(change.log() + log_bn)


@torch.no_grad()
def l2_norm_network(network: nn.Module, minibatch: Minibatch | None = None) -> float:
    """Sum over the Conv2d and Linear layers of ``||weight||_2`` (in float64)."""
    return sum(float(m.weight.detach().double().norm()) for m in conv_and_linear_layers(network))


def params_network(network: nn.Module, minibatch: Minibatch | None = None) -> float:
    """The number of trainable parameters (those with ``requires_grad``)."""
    return float(sum(p.numel() for p in network.parameters() if p.requires_grad))


@torch.no_grad()
def flops_network(network: nn.Module, minibatch: Minibatch, image_size: tuple[int, int] | None = None) -> float:
    """Multiply-accumulates per image of every Conv2d and Linear call of one forward at the minibatch's
    resolution (or ``image_size`` (H, W)), counted as NB201 counts them (Conv2d: output elements x in / groups x
    kernel area; Linear: in x out, + out with a bias), measured with hooks on a batch-1 zeros input in eval
    mode."""
    channels = minibatch.inputs.shape[1]
    size = tuple(image_size) if image_size is not None else tuple(minibatch.inputs.shape[2:])
    total = []
    hooks = [m.register_forward_hook(lambda m, args, out: total.append(_macs_of(m, out)))
             for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    parameter = next(network.parameters())
    with hooks_removed(hooks), network_state_restored(network, training=False):
        network(torch.zeros(1, channels, *size, device=parameter.device, dtype=parameter.dtype))
    return float(sum(total))


NETWORK_PROXIES: dict[str, Callable[..., float]] = {
    "synflow": synflow_network,
    "logsynflow": logsynflow_network,
    **{name: _loss_gradient_member(name) for name in LOSS_GRADIENT_PROXIES},
    "grasp": grasp_network,
    "naswot": naswot_network,
    "zen": zen_network,
    "jacov": jacov_network,
    "l2_norm": l2_norm_network,
    "params": params_network,
    "flops": flops_network,
}
"""Every registered proxy's plain-network version: ``NETWORK_PROXIES[name](network, minibatch, **options)``."""


def score_network(name: str, network: nn.Module, minibatch: Minibatch, **options) -> float:
    """Proxy ``name`` of one plain network (``network(x Tensor[B, C, H, W]) -> Tensor[B, classes]``) on
    ``minibatch`` (data-free proxies use only its shape); ``options`` as the proxy's function above takes them."""
    if name not in NETWORK_PROXIES:
        raise ValueError(f"rdnas.proxies.score_network: unknown proxy {name!r}; known: "
                         f"{', '.join(sorted(NETWORK_PROXIES))}")
    if not isinstance(network, nn.Module):
        raise TypeError(f"rdnas.proxies.score_network: network must be an nn.Module, got {type(network).__name__}")
    return NETWORK_PROXIES[name](network, minibatch, **options)


# ------------------------------------------------------------------------------ any space, through export(arch)


def _validated(where: str, supernet: nn.Module, archs) -> Tensor:
    space = getattr(supernet, "space", None)
    if space is None or not hasattr(supernet, "export"):
        raise TypeError(f"{where}: supernet must be a registered space's supernet (with .space and .export), got "
                        f"{type(supernet).__name__}")
    try:
        return space.validate(archs)
    except ValueError as error:
        raise ValueError(f"{where}: archs must be {space.name} architectures, LongTensor[K, {space.width}]: "
                         f"{error}") from None


def _minibatch_for(where: str, needs_data: bool, supernet: nn.Module, minibatch: Minibatch | None) -> Minibatch:
    """The minibatch, or for a data-free proxy without one a zeros stand-in of the fused path's default shape:
    64 images of the supernet's channels at 32 x 32."""
    if minibatch is not None:
        return minibatch
    if needs_data:
        raise ValueError(f"{where}: this proxy uses images; pass a minibatch (rdnas.proxies.load_minibatch)")
    parameter = next(supernet.parameters())
    inputs = torch.zeros(64, supernet.config["in_channels"], 32, 32, device=parameter.device)
    return Minibatch(inputs, torch.zeros(64, dtype=torch.long, device=parameter.device),
                     supernet.config["num_classes"], "shape only")


def _each_exported(source: nn.Module, archs: Tensor, scored: Tensor, score_one) -> list:
    """``score_one(source.export(arch))`` for every architecture with ``scored[k]`` (None for the others).
    Exporting builds (and initialises) a network: the CPU generator is put back afterwards."""
    results = [None] * len(archs)
    with torch.random.fork_rng(devices=[]):
        for k in range(len(archs)):
            if scored[k]:
                results[k] = score_one(source.export(archs[k]))
    return results


def score_exported(name: str, supernet: nn.Module, archs, minibatch: Minibatch | None = None,
                   **options) -> Tensor:
    """Proxy ``name`` of K architectures of ``supernet.space``, each exported from the supernet
    (``supernet.export(arch)``) and scored as a plain network (:data:`NETWORK_PROXIES`).

    Args:
        supernet: a registered space's supernet (``.space``, ``.config``, ``.export``), usually
            :func:`~rdnas.proxies.scoring_supernet`'s; left unchanged.
        archs (LongTensor[K, space.width], or what ``space.validate`` takes).
        minibatch (Minibatch, optional): required by the data-dependent proxies; the data-free ones use its shape
            (default 64 x in_channels x 32 x 32).
        **options: the proxy's options (``temperature``, ``epsilon``, ``mixup_gamma``, ``seed``, ``image_size``);
            ``archs_per_pass`` (the fused path's batching) is accepted and ignored.

    Returns:
        Tensor[K] float64 on the CPU; -inf for trivial architectures except under flops and params.
    """
    where = f"rdnas.proxies.{name}"
    proxy = get_proxy(name)
    archs = _validated(where, supernet, archs)
    minibatch = _minibatch_for(where, proxy.needs_data, supernet, minibatch)
    options.pop("archs_per_pass", None)  # one network at a time here
    scored = (torch.ones(len(archs), dtype=torch.bool) if name in COST_PROXIES
              else ~supernet.space.is_trivial(archs))
    if name in COST_PROXIES and hasattr(supernet, "cost"):  # the space's own cost model (ResNet48: the competition's)
        return supernet.cost(archs, minibatch.inputs.shape[-1])[name].double().cpu()
    source = supernet
    if name == "zen":  # the fused path's weights: the supernet's Gaussian copy, sliced per architecture
        source = gaussian_copy(supernet, options.get("seed", 0))
        options["gaussian_init"] = False
    function = NETWORK_PROXIES[name]
    results = _each_exported(source, archs, scored, lambda network: function(network, minibatch, **options))
    return torch.tensor([float("-inf") if r is None else r for r in results], dtype=torch.float64)


def loss_gradient_exported(supernet: nn.Module, archs, minibatch: Minibatch,
                           names=LOSS_GRADIENT_PROXIES) -> dict[str, Tensor]:
    """snip, grad_norm, plain and fisher (or the ``names`` among them) of K exported architectures, one pass per
    architecture for all of them (:func:`loss_gradient_of_network`). ``archs``: LongTensor[K, space.width].
    Returns {name: Tensor[K] float64}; trivial architectures get -inf."""
    where = "rdnas.proxies.loss_gradient_proxies"
    names = checked_loss_gradient_names("loss_gradient_proxies", names)
    archs = _validated(where, supernet, archs)
    minibatch = _minibatch_for(where, True, supernet, minibatch)
    results = _each_exported(supernet, archs, ~supernet.space.is_trivial(archs),
                             lambda network: loss_gradient_of_network(network, minibatch, names))
    return {name: torch.tensor([float("-inf") if r is None else r[name] for r in results], dtype=torch.float64)
            for name in names}

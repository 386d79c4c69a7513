"""M independent NAS-Bench-201 networks trained as one: every layer is a grouped op over the networks' channels.

Stand-alone training of many small networks is dominated by per-op overhead on a CPU and by launch count on a
GPU. ``StackedNB201`` holds the weights of M networks (any architectures, each with its own initialisation)
stacked along a leading dimension, lays their activations side by side in the channel dimension
([B, M * C, H, W], network-major) and runs each layer as one grouped convolution (``groups = M``) and one batch
norm over the M * C channels, so each network normalises with its own statistics. Within a cell the networks are
grouped by the op they use on each edge. Each network gets its own minibatch (its own data order), and its
gradient comes only from its own loss, so training the stack is training M networks side by side: one SGD step
of the stack equals one step of each exported network (tested).

Semantics are those of :class:`rdnas.supernet.NB201Network` (live edges only; a disconnected cell outputs zeros),
and ``export(m)`` gives network m as an ``NB201Network`` with its current weights.

A network's arithmetic does not depend on which networks share its stack or in which order, nor on the stack's size
when that is at most 32 or a multiple of 32 (the builder's 64): on one machine and thread count a network then
trains to bitwise the same weights and losses in every such stack (tests/test_build_reproducibility.py). Two
kernels would otherwise depend on the stack: a convolution over one network (a stack of one, or a network alone in
its op group) is not a grouped convolution and rounds differently, so it runs as a grouped convolution beside a zero
network; and a sum across the stack's networks (the classifier bias gradient, the builder's per-network losses)
rounds a narrow or ragged last block of networks differently, so stacks of fewer than ``NETWORK_REDUCTION_WIDTH``
networks are padded with zero networks there. In a stack of 33-63 networks the networks past the 32nd still get
other rounding there (not padded, so that such stacks of the whole-space build keep their results).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.spaces import nb201
from rdnas.supernet import NB201Network
from rdnas.supernet.nb201 import _PARAMETRIC, subnet_groups
from rdnas.supernet.nb201_ops import avg_pool_3x3


NETWORK_REDUCTION_WIDTH = 32  # a sum across fewer networks is padded to this many (see the module docstring)


def _key(name: str) -> str:
    return name.replace(".", "__")


def pad_networks(x: Tensor, dim: int = 1) -> Tensor:
    """``x`` with its network dimension ``dim`` zero-padded to ``NETWORK_REDUCTION_WIDTH`` when narrower (else ``x``
    itself): a sum over another dimension then gives each network the bits it gets in a stack of 32 or 64 networks
    (CPU reductions round a narrow or ragged last block of columns differently; wider stacks are left as they are).

    Args:
        x (Tensor [..., M, ...]): M networks along ``dim``.
    Returns:
        Tensor [..., max(M, NETWORK_REDUCTION_WIDTH), ...]; the first M entries along ``dim`` are ``x``'s.
    """
    missing = NETWORK_REDUCTION_WIDTH - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim)


class _StackBias(torch.autograd.Function):
    """logits [B, M, K] + bias [M, K], whose bias gradient (a sum over the batch) is taken with the networks
    padded to ``NETWORK_REDUCTION_WIDTH`` (used for stacks narrower than that)."""

    @staticmethod
    def forward(ctx, logits, bias):
        ctx.networks = bias.shape[0]
        return logits + bias

    @staticmethod
    def backward(ctx, grad):
        return grad, pad_networks(grad, 1).sum(0)[:ctx.networks]


class StackedNB201(nn.Module):
    """M stand-alone NB201 networks as one module.

    Args:
        archs (LongTensor[M, 6] or list of M architectures): network m's cell.
        seeds (list of M ints): network m is initialised exactly as ``NB201Network(archs[m], ...)`` built right
            after ``torch.manual_seed(seeds[m])`` (so a network's initial weights depend on its seed alone, not on
            which other networks share the stack).
        channels, cells_per_stage, num_classes, in_channels: the macro network (see NB201Supernet).

    ``forward(x)`` takes x [B, M, in_channels, H, W] (network m's minibatch at ``x[:, m]``) or
    [B, in_channels, H, W] (one minibatch for every network) and returns logits [B, M, num_classes].
    """

    def __init__(self, archs, seeds, channels: int = 8, cells_per_stage: int = 1, num_classes: int = 10,
                 in_channels: int = 1):
        super().__init__()
        archs = [nb201.validate(tuple(a.tolist()) if isinstance(a, Tensor) else tuple(a)) for a in archs]
        seeds = [int(s) for s in seeds]
        if len(archs) != len(seeds) or not archs:
            raise ValueError(f"rdnas.minibench.StackedNB201: archs and seeds must be non-empty and of equal length, "
                             f"got {len(archs)} architectures and {len(seeds)} seeds")
        self.archs, self.seeds = archs, seeds
        self.config = dict(channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                           in_channels=in_channels)
        self.num_networks = len(archs)
        networks = []
        for arch, seed in zip(archs, seeds):
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)  # not torch.manual_seed: it reseeds CUDA
                networks.append(NB201Network(arch, **self.config))
        # Every tensor any of the networks holds, stacked over the M networks (zeros where a network lacks it).
        states = [network.state_dict() for network in networks]
        shapes = {}
        for state in states:
            for name, tensor in state.items():
                shapes.setdefault(name, tensor)
        for name, like in shapes.items():
            stacked = torch.zeros(self.num_networks, *like.shape, dtype=like.dtype)
            for m, state in enumerate(states):
                if name in state:
                    stacked[m] = state[name]
            if name.endswith("num_batches_tracked"):
                continue  # unused by BN with a fixed momentum
            if name.endswith(("running_mean", "running_var")):
                self.register_buffer(_key(name), stacked)
            else:
                self.register_parameter(_key(name), nn.Parameter(stacked))
        self._cells = subnet_groups(self.archs, "cpu")  # networks grouped by the op of each edge

    def _tensor(self, name: str) -> Tensor:
        return getattr(self, _key(name))

    # ---- grouped layers over [B, M' * C, H, W] -------------------------------------------------------------------

    def _conv(self, x: Tensor, name: str, members, stride: int = 1) -> Tensor:
        weight = self._tensor(name)
        if members is not None:
            weight = weight.index_select(0, members.to(weight.device))
        groups = weight.shape[0]
        kernel = weight.shape[-1]
        if groups == 1:  # one network: a grouped convolution beside a zero network rounds as in a larger stack
            beside_zeros = torch.cat([weight, torch.zeros_like(weight)]).flatten(0, 1)
            out = F.conv2d(torch.cat([x, torch.zeros_like(x)], 1), beside_zeros, None, stride, kernel // 2, 1, 2)
            return out[:, :weight.shape[1]].contiguous()
        return F.conv2d(x, weight.flatten(0, 1), None, stride, kernel // 2, 1, groups)

    def _bn(self, x: Tensor, prefix: str, members) -> Tensor:
        weight, bias = self._tensor(prefix + ".weight"), self._tensor(prefix + ".bias")
        mean, var = self._tensor(prefix + ".running_mean"), self._tensor(prefix + ".running_var")
        if members is None:
            return F.batch_norm(x, mean.view(-1), var.view(-1), weight.view(-1), bias.view(-1), self.training, 0.1,
                                1e-5)
        index = members.to(x.device)
        chosen_mean, chosen_var = mean.index_select(0, index), var.index_select(0, index)
        out = F.batch_norm(x, chosen_mean.view(-1), chosen_var.view(-1), weight.index_select(0, index).flatten(),
                           bias.index_select(0, index).flatten(), self.training, 0.1, 1e-5)
        if self.training:  # batch_norm updated the gathered copies in place; write them back
            mean.index_copy_(0, index, chosen_mean)
            var.index_copy_(0, index, chosen_var)
        return out

    def _relu_conv_bn(self, x: Tensor, prefix: str, members, stride: int = 1) -> Tensor:
        return self._bn(self._conv(F.relu(x), prefix + ".conv.weight", members, stride), prefix + ".bn", members)

    # ---- the network ---------------------------------------------------------------------------------------------

    def _cell(self, x: Tensor, layer: int) -> Tensor:
        b, width, h, w = x.shape
        m = self.num_networks
        c = width // m
        nodes = [x.view(b, m, c, h, w), None, None, None]
        for node in (1, 2, 3):
            total, fresh = None, False  # fresh: `total` was made here, so adding into it in place is safe
            for edge, src, op, members in self._cells[node]:
                source = nodes[src]
                if members is not None:
                    source = source.index_select(1, members.to(x.device))
                count = source.shape[1]
                if op == nb201.SKIP:
                    out = source
                elif op == nb201.AVG_POOL:
                    out = avg_pool_3x3(source.reshape(b, count * c, h, w)).view(source.shape)
                else:
                    prefix = f"layers.{layer}.edges.{edge}.{_PARAMETRIC[op][0]}"
                    out = self._relu_conv_bn(source.reshape(b, count * c, h, w), prefix, members).view(source.shape)
                if members is None:
                    total, fresh = (out, op != nb201.SKIP) if total is None else (total + out, True)
                else:
                    if total is None or not fresh:  # never add in place into a node or the input (skip aliases)
                        total = torch.zeros_like(nodes[0]) if total is None else total.clone()
                        fresh = True
                    total.index_add_(1, members.to(x.device), out)
            nodes[node] = total if total is not None else torch.zeros_like(nodes[0])
        return nodes[3].view(b, width, h, w)

    def _reduction(self, x: Tensor, layer: int) -> Tensor:
        prefix = f"layers.{layer}"
        residual = self._relu_conv_bn(x, prefix + ".conv_a", None, stride=2)
        residual = self._relu_conv_bn(residual, prefix + ".conv_b", None)
        shortcut = self._conv(F.avg_pool2d(x, 2, 2), prefix + ".downsample.1.weight", None)
        return shortcut + residual

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, M, num_classes]; x: [B, M, in_channels, H, W] or [B, in_channels, H, W] (shared)."""
        m, c_in = self.num_networks, self.config["in_channels"]
        if x.dim() == 4:
            x = x.unsqueeze(1).expand(-1, m, -1, -1, -1)
        if x.dim() != 5 or x.shape[1] != m or x.shape[2] != c_in:
            raise ValueError(f"rdnas.minibench.StackedNB201: x must be [B, {m}, {c_in}, H, W] or [B, {c_in}, H, W], "
                             f"got {tuple(x.shape)}")
        out = self._bn(self._conv(x.flatten(1, 2), "stem_conv.weight", None), "stem_bn", None)
        layer = 0
        for stage in range(3):
            if stage > 0:
                out = self._reduction(out, layer)
                layer += 1
            for _ in range(self.config["cells_per_stage"]):
                out = self._cell(out, layer)
                layer += 1
        out = F.relu(self._bn(out, "head_bn", None))
        features = out.mean(dim=(2, 3)).view(out.shape[0], m, -1)  # [B, M, C_last]
        weight, bias = self._tensor("classifier.weight"), self._tensor("classifier.bias")  # [M, K, C], [M, K]
        logits = torch.einsum("bmc,mkc->bmk", features, weight)
        if m < NETWORK_REDUCTION_WIDTH:
            return _StackBias.apply(logits, bias)
        return logits + bias

    def export(self, m: int) -> NB201Network:
        """Network m as a stand-alone ``NB201Network`` with copies of its current weights and BN statistics."""
        network = NB201Network(self.archs[m], **self.config)
        own = network.state_dict()
        state = {}
        for name, tensor in own.items():
            if name.endswith("num_batches_tracked"):
                state[name] = tensor
            else:
                state[name] = self._tensor(name)[m].detach().clone().to(tensor.device)
        network.load_state_dict(state)
        return network.to(next(self.parameters()).device)


class NetworkStack(nn.Module):
    """M stand-alone networks of any registered space with the interface of :class:`StackedNB201`, run one after
    the other (spaces whose networks differ in width cannot share grouped ops).

    Args:
        space (str or SearchSpace): a space whose supernet spec has a ``network`` constructor.
        archs (LongTensor[M, space.width]), seeds (list of M ints): network m is built right after seeding the CPU
            generator with ``seeds[m]``.
        num_classes, in_channels, **options: the network's options (those of the space's supernet spec).

    ``forward(x)``: x [B, M, in_channels, H, W] (network m's minibatch at ``x[:, m]``) or [B, in_channels, H, W]
    (one minibatch for every network) -> logits [B, M, num_classes].
    """

    def __init__(self, space, archs, seeds, num_classes: int = 10, in_channels: int = 1, **options):
        super().__init__()
        from rdnas.spaces import get_space
        from rdnas.supernet import supernet_spec

        self.space = get_space(space)
        spec = supernet_spec(self.space)
        if spec.network is None:
            raise ValueError(f"rdnas.minibench.NetworkStack: the {self.space.name} supernet spec has no network "
                             "constructor")
        archs = self.space.validate(archs)
        seeds = [int(s) for s in seeds]
        if len(archs) != len(seeds) or not len(archs):
            raise ValueError(f"rdnas.minibench.NetworkStack: archs and seeds must be non-empty and of equal length, "
                             f"got {len(archs)} architectures and {len(seeds)} seeds")
        networks = []
        for arch, seed in zip(archs, seeds):
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                networks.append(spec.network(arch, num_classes=num_classes, in_channels=in_channels, **options))
        self.networks = nn.ModuleList(networks)
        self.num_networks = len(networks)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            return torch.stack([net(x[:, m]) for m, net in enumerate(self.networks)], dim=1)
        return torch.stack([net(x) for net in self.networks], dim=1)

"""The NAS-Bench-201 weight-sharing supernet with a path-sampled forward and a K-subnet forward.

Macro network (NAS-Bench-201): stem Conv3x3(in -> C) + BN; N cells at C; a ResNet basic block (stride 2) to 2C;
N cells at 2C; a basic block to 4C; N cells at 4C; head BN + ReLU + global average pool + Linear. Every cell uses
the same architecture (six op indices, see rdnas.spaces.nb201).

Semantics shared by every forward here and by the exported networks (``edges="live"``, the default): an edge
whose op is ``none``, whose input node receives nothing, or whose output cannot reach the cell output contributes
nothing and is not computed; a cell with no input-to-output path outputs zeros. ``edges="all"`` computes every
non-``none`` edge as the benchmark's own network does (see :func:`cell_plan`).
"""

import copy
import functools

import torch
from torch import Tensor, nn

from rdnas.spaces import nb201
from rdnas.supernet.batchnorm import BNStatistics, SubnetBatchNorm
from rdnas.supernet.nb201_ops import ReLUConvBN, ResNetBasicBlock, avg_pool_3x3

_PARAMETRIC = {nb201.CONV1X1: ("nor_conv_1x1", 1), nb201.CONV3X3: ("nor_conv_3x3", 3)}
# Relative cost of a training step (forward and backward) of one live edge's op in one cell, and of the network
# outside the cells (stem, reduction blocks, head), in units of a cell's ReLU-conv3x3-BN; fitted to step times of
# 80 random subnets on the CPU (digits network, C = 8, N = 1, 16 x 16). An estimate for balancing a step's subnets
# over processes (NB201Supernet.subnet_costs); no result depends on it.
OP_COSTS = {nb201.NONE: 0.0, nb201.SKIP: 0.05, nb201.CONV1X1: 0.6, nb201.CONV3X3: 1.0, nb201.AVG_POOL: 0.4}
OUTSIDE_CELLS_COST = 3.7


EDGE_MODES = ("live", "all")


def cell_plan(arch, edges: str = "live") -> tuple:
    """The edges a cell computes, per node: ((edge, source node, op), ...) for nodes 1, 2, 3; () where the cell
    is disconnected. Cached (keyed by the op indices as ints, whatever the encoding): a step pays a dictionary
    lookup, not this analysis.

    ``edges="live"`` keeps only edges on an input-to-output path (the others cannot change the output);
    ``edges="all"`` keeps every non-``none`` edge, as the benchmark's own network computes them: a node that
    receives nothing is zeros, and a conv edge reading it still adds its BN's output for a zero input (the BN
    bias in training mode; bias - weight * running_mean / sqrt(running_var + eps) in eval mode), so the logits can
    differ from ``"live"``'s as the benchmark network's do. Activation-reading proxies (naswot, zen) use "all".
    """
    if type(arch) is not tuple or not all(type(op) is int for op in arch):
        arch = nb201.validate(arch)  # e.g. 0-dim tensors, which hash by identity: every call would miss the cache
    return _cell_plan(arch, edges)


@functools.lru_cache(maxsize=None)
def _cell_plan(arch: tuple, edges: str) -> tuple:
    ops = nb201.validate(arch)
    if edges not in EDGE_MODES:
        raise ValueError(f"rdnas.supernet.cell_plan: edges must be one of {EDGE_MODES}, got {edges!r}")
    row = torch.tensor(ops)
    if not bool(nb201.connected(row)):
        return ()
    keep = nb201.live_edges(row).tolist() if edges == "live" else [op != nb201.NONE for op in ops]
    return tuple(tuple((e, src, ops[e]) for e, (src, dst) in enumerate(nb201.EDGES) if dst == node and keep[e])
                 for node in (1, 2, 3))


def subnet_groups(arch_list: list, device, edges: str = "live") -> list:
    """How K cells share a cell's edges: ``groups[node] = [(edge, src, op, LongTensor of the cells that use op on
    that edge, or None when all K do)]`` for nodes 1..3 (``groups[0]`` is empty), in a fixed order."""
    grouped = {}
    for index, arch in enumerate(arch_list):
        for node, node_edges in enumerate(cell_plan(arch, edges), start=1):
            for edge, src, op in node_edges:
                grouped.setdefault((node, edge, src, op), []).append(index)
    groups = [[], [], [], []]
    for (node, edge, src, op), members in sorted(grouped.items()):
        subnets = None if len(members) == len(arch_list) else torch.tensor(members, device=device)
        groups[node].append((edge, src, op, subnets))
    return groups


class SearchCell(nn.Module):
    """One cell with every op of every edge (``nor_conv_1x1`` and ``nor_conv_3x3`` hold weights; skip, pool and
    none do not)."""

    def __init__(self, channels: int, affine: bool, track_running_stats: bool, edge_ops=None):
        super().__init__()
        self.edges = nn.ModuleList()
        for edge in range(nb201.NUM_EDGES):
            wanted = _PARAMETRIC if edge_ops is None else {op: _PARAMETRIC[op] for op in edge_ops[edge] if op in _PARAMETRIC}
            self.edges.append(nn.ModuleDict({
                name: ReLUConvBN(channels, channels, kernel, 1, affine, track_running_stats)
                for name, kernel in wanted.values()
            }))

    def apply_op(self, edge: int, op: int, x: Tensor, subnets=None, stats=None) -> Tensor:
        if op == nb201.SKIP:
            return x
        if op == nb201.AVG_POOL:
            return avg_pool_3x3(x)
        return self.edges[edge][_PARAMETRIC[op][0]](x, subnets, stats)

    def forward(self, x: Tensor, plan: tuple) -> Tensor:
        """One subnet: ``plan`` from :func:`cell_plan`."""
        if not plan:
            return torch.zeros_like(x)
        nodes = [x, None, None, None]
        for node, edges in enumerate(plan, start=1):
            for edge, src, op in edges:
                source = nodes[src] if nodes[src] is not None else torch.zeros_like(x)  # edges="all" only
                out = self.apply_op(edge, op, source)
                nodes[node] = out if nodes[node] is None else nodes[node] + out
        return nodes[3]

    def forward_subnets(self, x: Tensor, groups: list, stats: BNStatistics) -> Tensor:
        """K subnets at once: x is [K, B, C, H, W]; ``groups[node]`` lists (edge, src, op, subnet index tensor or
        None when the group is every subnet)."""
        nodes = [x, None, None, None]
        for node in (1, 2, 3):
            total = None
            for edge, src, op, subnets in groups[node]:
                inputs = nodes[src] if subnets is None else nodes[src].index_select(0, subnets)
                every = torch.arange(len(inputs), device=x.device) if subnets is None else subnets
                out = self.apply_op(edge, op, inputs.flatten(0, 1), every, stats).view(inputs.shape)
                if total is None and subnets is None and op != nb201.SKIP:
                    total = out  # a fresh tensor (skip would alias its input): later groups add into it in place
                elif subnets is None:
                    total = (torch.zeros_like(x) if total is None else total).add_(out)
                else:
                    total = (torch.zeros_like(x) if total is None else total).index_add_(0, subnets, out)
            nodes[node] = total if total is not None else torch.zeros_like(x)
        return nodes[3]


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 supernet.

    Args:
        channels (int): C, the width of the first stage (16 in the benchmark).
        cells_per_stage (int): N (5 in the benchmark).
        num_classes (int): classifier outputs.
        in_channels (int): input image channels.
        bn_affine (bool): learnable BN scale and shift in the cells' ops. The benchmark's stand-alone networks use
            True; several supernet codebases (NB201's own search code) use False.
        bn_track_running_stats (bool): keep running BN statistics in the cells' ops and reduction blocks (True in
            the benchmark). With False, BN always uses batch statistics, as many supernets do.

    ``forward(x, arch)`` runs one subnet (``arch``: six op indices, a tuple or a CPU LongTensor[6]; only the
    chosen op of each edge runs). ``forward_subnets(x, archs)`` runs K subnets on the same minibatch in one pass
    and returns logits [K, B, num_classes]. ``export(arch)`` returns a stand-alone network with the weights.
    """

    space = nb201.SPACE

    def __init__(self, channels=16, cells_per_stage=5, num_classes=10, in_channels=3, bn_affine=True,
                 bn_track_running_stats=True, _edge_ops=None):
        super().__init__()
        self.config = dict(channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                           in_channels=in_channels, bn_affine=bn_affine, bn_track_running_stats=bn_track_running_stats)
        self.stem_conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.stem_bn = SubnetBatchNorm(channels)
        self.layers = nn.ModuleList()
        width = channels
        for stage in range(3):
            if stage > 0:
                self.layers.append(ResNetBasicBlock(width, width * 2, True, True))
                width *= 2
            for _ in range(cells_per_stage):
                self.layers.append(SearchCell(width, bn_affine, bn_track_running_stats, _edge_ops))
        self.head_bn = SubnetBatchNorm(width)
        self.head_relu = nn.ReLU()
        self.classifier = nn.Linear(width, num_classes)

    @staticmethod
    def _arch_tuple(arch) -> tuple:
        if isinstance(arch, Tensor):
            if arch.device.type != "cpu":
                raise ValueError("rdnas.supernet.NB201Supernet: pass architectures as CPU tensors or tuples "
                                 "(reading a GPU tensor would synchronise the device every step)")
            arch = arch.tolist()
        return tuple(arch)

    def _head(self, features: Tensor, subnets=None, stats=None) -> Tensor:
        out = self.head_relu(self.head_bn(features, subnets, stats))
        return self.classifier(out.mean(dim=(2, 3)))

    def forward(self, x: Tensor, arch, edges: str = "live") -> Tensor:
        """Logits [B, num_classes] of one subnet (x: [B, in_channels, H, W]); ``edges``: see :func:`cell_plan`."""
        plan = cell_plan(self._arch_tuple(arch), edges)
        out = self.stem_bn(self.stem_conv(x))
        for layer in self.layers:
            out = layer(out, plan) if isinstance(layer, SearchCell) else layer(out)
        return self._head(out)

    def forward_subnets(self, x: Tensor, archs, bn: str | BNStatistics = "batch", edges: str = "live") -> Tensor:
        """Logits [K, B, num_classes] of K subnets on one minibatch, in one pass.

        Per edge, the subnets are grouped by their op and each op runs once on its group's slices; every BN layer
        normalises each subnet's slice with that subnet's statistics (``bn``: a BNStatistics or one of its mode
        names). The result equals K separate ``forward`` calls (in "batch" mode: training-mode BN).

        Args:
            x (Tensor[B, in_channels, H, W]): the minibatch.
            archs (LongTensor[K, 6] on the CPU, or a list of K architectures).
            bn (str or BNStatistics): where BN statistics come from (default "batch").
            edges (str): "live" (default) or "all" non-``none`` edges, dead ones included (see :func:`cell_plan`).
        """
        arch_list = [self._arch_tuple(a) for a in archs]
        k = len(arch_list)
        stats = bn if isinstance(bn, BNStatistics) else BNStatistics(bn, k)
        every = torch.arange(k, device=x.device)
        groups = subnet_groups(arch_list, x.device, edges)
        # The stem convolution runs once; its BN sees every subnet's (identical) slice, so per-subnet statistics
        # stay uniform across modes.
        stem = self.stem_conv(x)
        out = self.stem_bn(stem.unsqueeze(0).expand(k, *stem.shape).flatten(0, 1), every, stats)
        out = out.view(k, *stem.shape)
        for layer in self.layers:
            if isinstance(layer, SearchCell):
                out = layer.forward_subnets(out, groups, stats)
            else:
                out = layer(out.flatten(0, 1), every, stats)
                out = out.view(k, -1, *out.shape[1:])
        logits = self._head(out.flatten(0, 1), every, stats)
        return logits.view(k, x.shape[0], -1)

    def subnet_costs(self, archs) -> Tensor:
        """Estimated relative costs of training each of K subnets (LongTensor[K, 6] on the CPU, or K architectures):
        float64 Tensor[K], the network outside the cells plus, in each of its 3 N cells, the ops of the live edges
        (what :meth:`forward_subnets` computes: ``none`` and dead edges nothing, ``skip_connect`` one addition), from
        :data:`OP_COSTS`. Subnet-parallel training deals a step's subnets to processes by it
        (:func:`rdnas.distributed.subnet_costs`)."""
        cells = 3 * self.config["cells_per_stage"]
        return torch.tensor([OUTSIDE_CELLS_COST + cells * sum(OP_COSTS[op] for node in cell_plan(self._arch_tuple(a))
                                                              for _, _, op in node) for a in archs],
                            dtype=torch.float64)

    def export(self, arch) -> "NB201Network":
        """A stand-alone network for ``arch`` holding copies of the supernet's weights for its ops, in the
        supernet's train/eval mode (so that ``export(arch)(x)`` equals ``supernet(x, arch)``)."""
        return NB201Network(arch, self).train(self.training)


class NB201Network(NB201Supernet):
    """One NAS-Bench-201 architecture as a stand-alone network (the benchmark's network for that cell).

    It holds the weights of every non-``none`` edge, as the benchmark's network does (so its parameter count is
    the benchmark's), and computes the edges :func:`cell_plan` keeps. Built from a supernet, it copies the
    supernet's weights (on the supernet's device, in its float type); built with
    ``NB201Network(arch, channels=..., ...)`` it is freshly initialised.
    """

    def __init__(self, arch, supernet: NB201Supernet | None = None, **config):
        arch = nb201.validate(self._arch_tuple(arch))
        if supernet is not None:
            config = dict(supernet.config)
        edge_ops = tuple((op,) for op in arch)
        super().__init__(**config, _edge_ops=edge_ops)
        self.arch = arch
        self.plan = cell_plan(arch)
        if supernet is not None:
            weight = next(supernet.parameters())
            self.to(device=weight.device, dtype=weight.dtype)  # the supernet's device and float type
            own = self.state_dict()
            source = supernet.state_dict()
            self.load_state_dict({name: copy.deepcopy(source[name]) for name in own})

    def forward(self, x: Tensor, arch=None, edges: str = "live") -> Tensor:
        """Logits [B, num_classes]; ``arch``, if given, must be this network's architecture."""
        if arch is not None and self._arch_tuple(arch) != self.arch:
            raise ValueError(f"rdnas.supernet.NB201Network: this network is {nb201.to_string(self.arch)}")
        return super().forward(x, self.arch, edges)


def check_image_size(side: int, options: dict | None = None) -> None:
    """The NB201 macro network halves the resolution twice with blocks whose AvgPool2x2 shortcut floors and whose
    strided 3x3 convolution rounds up: the two agree only when the side is a multiple of 4."""
    if side < 4 or side % 4:
        raise ValueError(f"rdnas: image_size {side} does not fit the NB201 macro network: its two stride-2 stages "
                         "need a multiple of 4 (e.g. 16 or 32)")

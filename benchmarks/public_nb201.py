"""The NAS-Bench-201 network as public zero-cost-proxy code runs it (the reference for ``bench_proxies.py``).

zero-cost-nas (Abdelfattah et al. 2021) and NASLib score a cell with the benchmark's own "tiny network": plain
``nn`` modules, one op module per edge of the cell *including* ``none`` (a module returning ``x * 0``) and edges
whose output no path uses, ``nn.AvgPool2d(3, 1, 1, count_include_pad=False)`` for ``avg_pool_3x3``, and
``nn.BatchNorm2d`` everywhere. A proxy run builds that network for the cell and, per proxy, a second one with
``get_prunable_copy(bn=...)`` (a new network, BN dropped for synflow, loaded with the first's ``state_dict``).

Written here from the benchmark's definition (stem conv + BN, three stages of N cells joined by residual
reduction blocks, BN + ReLU, global average pooling, linear classifier), in the order in which rdnas's
:class:`rdnas.supernet.NB201Network` registers its parameters, so that ``bench_proxies.py`` can check that both
compute the same logits and the same scores from the same weights.
"""

import torch
from torch import Tensor, nn

from rdnas.spaces import nb201


def _norm(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bn: bool):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         _norm(c_out, bn))


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


def edge_op(op: int, channels: int, bn: bool) -> nn.Module:
    if op == nb201.NONE:
        return Zero()
    if op == nb201.SKIP:
        return nn.Identity()
    if op == nb201.AVG_POOL:
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return ReLUConvBN(channels, channels, 1 if op == nb201.CONV1X1 else 3, 1, bn)


class InferCell(nn.Module):
    """Every edge of the cell runs, in NB201's edge order: node j sums op(node i) over its edges i -> j."""

    def __init__(self, arch: tuple, channels: int, bn: bool):
        super().__init__()
        self.layers = nn.ModuleList(edge_op(op, channels, bn) for op in arch)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for target in (1, 2, 3):
            nodes.append(sum(layer(nodes[source]) for layer, (source, node) in zip(self.layers, nb201.EDGES)
                             if node == target))
        return nodes[3]


class ResNetBasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, bn: bool):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, bn)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, bn)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """One NB201 cell's benchmark network: logits [B, num_classes] from images [B, 3, H, W]."""

    def __init__(self, arch: tuple, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
                 bn: bool = True):
        super().__init__()
        self.arch, self.config = tuple(arch), dict(channels=channels, cells_per_stage=cells_per_stage,
                                                    num_classes=num_classes)
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), _norm(channels, bn))
        cells, width = [], channels
        for stage in range(3):
            if stage > 0:
                cells.append(ResNetBasicBlock(width, width * 2, bn))
                width *= 2
            cells += [InferCell(self.arch, width, bn) for _ in range(cells_per_stage)]
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(_norm(width, bn), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem(x)
        for cell in self.cells:
            out = cell(out)
        out = self.global_pooling(self.lastact(out))
        return self.classifier(out.flatten(1))

    def get_prunable_copy(self, bn: bool = False) -> "TinyNetwork":
        """zero-cost-nas's copy for a proxy: a new network (without BN for synflow) loaded with this one's
        weights (``strict=False``: the BN entries have nowhere to go without BN)."""
        copy = TinyNetwork(self.arch, **self.config, bn=bn)
        copy.load_state_dict(self.state_dict(), strict=False)
        return copy.train()


@torch.no_grad()
def load_rdnas_weights(public: TinyNetwork, network: nn.Module) -> TinyNetwork:
    """Copies an :class:`rdnas.supernet.NB201Network`'s parameters and buffers into ``public`` (same order, same
    shapes) so that both compute the same function."""
    pairs = [(list(public.parameters()), list(network.parameters())),
             (list(public.buffers()), list(network.buffers()))]
    for mine, theirs in pairs:
        if [t.shape for t in mine] != [t.shape for t in theirs]:
            raise ValueError("public_nb201: the two networks' parameters or buffers do not line up")
        for target, source in zip(mine, theirs):
            target.copy_(source)
    return public

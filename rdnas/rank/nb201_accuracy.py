"""NB201 supernet accuracy for many cells at once, sharing what the cells have in common (the whole-space path).

:func:`rdnas.rank.supernet_accuracy` runs a chunk of K subnets through ``NB201Supernet.forward_subnets``: every
layer runs on K copies of the activations, the stem and the first cell's early nodes included, although they are
the same for many of the subnets, and every batch norm transposes its K slices twice. ``SharedChunk`` computes the
same accuracies (BN recalibrated per subnet, ``edges="live"``) with less work:

- the stem (convolution and batch norm) runs once for the whole chunk: its input and its statistics are the same
  for every subnet;
- in the first cell, node n's value depends only on the edges into nodes 1..n (a prefix of the cell plan), so it is
  computed once per distinct prefix (the chunk is ordered by plan, so a chunk holds few prefixes), and an op on an
  edge runs once per distinct input row, whatever the number of subnets that read it;
- after the first cell every distinct plan is one row (isomorphic duplicates in the chunk are computed once);
- ``relu`` of a node is computed once, not once per conv edge that reads it;
- with recalibrated statistics a batch norm is a per-row affine map ``x * scale + shift`` (the form ATen's CPU batch
  norm computes too), one pass instead of transpose, batch norm, transpose back.

Every batch norm statistic is recorded per subnet in a :class:`rdnas.supernet.BNStatistics`, exactly as the
per-subnet path records it. The results equal the per-subnet path's up to float rounding (tested in float64 and
float32).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from rdnas.rank.supernet_accuracy import register_shared_path
from rdnas.spaces import nb201
from rdnas.supernet import BNStatistics, NB201Supernet
from rdnas.supernet.nb201 import _PARAMETRIC, SearchCell, cell_plan
from rdnas.supernet.nb201_ops import avg_pool_3x3


def plan_order(archs: Tensor) -> Tensor:
    """The permutation (LongTensor[A]) that orders NB201 cells (LongTensor[A, 6]) by their live-edge plan, so
    that a chunk of consecutive cells shares first-cell prefixes (and isomorphic duplicates sit together)."""
    plans = [cell_plan(tuple(a)) for a in archs.tolist()]
    return torch.tensor(sorted(range(len(plans)), key=plans.__getitem__), dtype=torch.long)


class _Rows:
    """R distinct values and the row of each of the chunk's K subnets: ``row[s]`` (LongTensor[K]); ``rep[r]``: one
    subnet of row r (LongTensor[R])."""

    def __init__(self, keys: list):
        index = {}
        for key in keys:
            index.setdefault(key, len(index))
        self.count = len(index)
        self.row = torch.tensor([index[key] for key in keys], dtype=torch.long)
        rep = [0] * self.count
        for subnet in reversed(range(len(keys))):
            rep[index[keys[subnet]]] = subnet
        self.rep = torch.tensor(rep, dtype=torch.long)
        self.all = torch.arange(len(keys), dtype=torch.long)


class _EdgeGroup:
    """One (edge, op) of a cell and the subnets that use it: the distinct source rows it reads (``inputs``), for each
    destination row that receives it the position of its input among them (``positions``), and, per using subnet,
    the position of its input (for the batch-norm statistics)."""

    def __init__(self, edge: int, src: int, op: int, subnets: list, src_rows: _Rows, dst_rows: _Rows):
        self.edge, self.src, self.op = edge, src, op
        src_of = src_rows.row.tolist()
        dst_of = dst_rows.row.tolist()
        inputs = sorted({src_of[s] for s in subnets})
        position = {row: i for i, row in enumerate(inputs)}
        self.inputs = torch.tensor(inputs, dtype=torch.long)
        self.every_input = inputs == list(range(src_rows.count))
        targets = {}
        for s in subnets:
            targets.setdefault(dst_of[s], position[src_of[s]])
        self.targets = torch.tensor(sorted(targets), dtype=torch.long)
        self.positions = torch.tensor([targets[row] for row in sorted(targets)], dtype=torch.long)
        # The common cases without a gather: each target reads its own input, in order, and every row is a target.
        self.identity = self.positions.tolist() == list(range(len(inputs)))
        self.every_target = sorted(targets) == list(range(dst_rows.count))
        self.subnets = torch.tensor(subnets, dtype=torch.long)
        self.subnet_inputs = torch.tensor([position[src_of[s]] for s in subnets], dtype=torch.long)
        rep = [0] * len(inputs)
        for s in reversed(subnets):
            rep[position[src_of[s]]] = s
        self.rep = torch.tensor(rep, dtype=torch.long)


class SharedChunk:
    """K NB201 cells evaluated together with a supernet's weights, sharing common work (see the module docstring).

    Args:
        supernet (NB201Supernet): the weights (``edges="live"`` semantics).
        archs (LongTensor[K, 6] or list of K architectures).

    ``calibrate(images)`` runs a training batch with each subnet's batch statistics and records them (call it on
    every calibration batch first); ``logits(images)`` then gives [K, B, num_classes] with the recorded statistics.
    """

    def __init__(self, supernet: NB201Supernet, archs):
        self.supernet = supernet
        self.archs = [supernet._arch_tuple(a) for a in archs]
        self.plans = [cell_plan(a) for a in self.archs]
        k = len(self.archs)
        self.stats = BNStatistics("calibrate", k)
        self.whole = _Rows(self.plans)  # after the first cell: one row per distinct plan
        first_cell = isinstance(supernet.layers[0], SearchCell) if len(supernet.layers) else False
        shared_nodes = [_Rows([plan[:n] for plan in self.plans]) for n in range(4)]
        self.stem = shared_nodes[0]  # one row: the stem is every subnet's
        self.cells = {}
        for index, layer in enumerate(supernet.layers):
            if isinstance(layer, SearchCell):
                nodes = shared_nodes if index == 0 and first_cell else [self.whole] * 4
                self.cells[index] = (nodes, self._edge_groups(nodes))

    def _edge_groups(self, nodes: list) -> list:
        grouped = {}
        for subnet, plan in enumerate(self.plans):
            for node, node_edges in enumerate(plan, start=1):
                for edge, src, op in node_edges:
                    grouped.setdefault((node, edge, src, op), []).append(subnet)
        groups = [[], [], [], []]
        for (node, edge, src, op), subnets in sorted(grouped.items()):
            groups[node].append(_EdgeGroup(edge, src, op, subnets, nodes[src], nodes[node]))
        return groups

    # ---- batch norm over rows ------------------------------------------------------------------------------------

    def _bn(self, bn, x: Tensor, subnets: Tensor, subnet_rows: Tensor, rep: Tensor) -> Tensor:
        """Batch norm of x [R, B, C, H, W] whose row r stands for the subnets ``subnets[subnet_rows == r]``; ``rep``
        [R]: one subnet per row. Calibrating: each row's batch statistics, recorded for its subnets. Calibrated:
        each row's recorded statistics as an affine map."""
        rows, channels = x.shape[0], x.shape[2]
        weight = None if bn.weight is None else bn.weight.to(x.dtype)
        bias = None if bn.bias is None else bn.bias.to(x.dtype)
        if self.stats.mode == "calibrate":
            # As SubnetBatchNorm's calibrate mode: [R, B, C, H, W] -> [B, R * C, H, W], one fused batch norm whose
            # momentum-1 "running" buffers return the batch statistics (variance unbiased).
            wide = x.transpose(0, 1).reshape(x.shape[1], rows * channels, *x.shape[3:])
            mean = torch.zeros(rows * channels, device=x.device, dtype=x.dtype)
            var = torch.ones_like(mean)
            out = F.batch_norm(wide, mean, var, None if weight is None else weight.repeat(rows),
                               None if bias is None else bias.repeat(rows), True, 1.0, bn.eps)
            count = wide.numel() // wide.shape[1]
            mean, var = mean.view(rows, channels), var.view(rows, channels) * ((count - 1) / count)
            square = var + mean.square()
            self.stats.record(bn, subnets.to(x.device), mean[subnet_rows.to(x.device)],
                              square[subnet_rows.to(x.device)])
            return out.view(x.shape[1], rows, *x.shape[2:]).transpose(0, 1)
        mean, var = self.stats.calibrated(bn, rep.to(x.device))
        scale = 1 / torch.sqrt(var + bn.eps)
        if weight is not None:
            scale = scale * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        view = (rows, 1, channels, 1, 1)
        return torch.addcmul(shift.view(view), x, scale.view(view))

    def _relu_conv_bn(self, module, x: Tensor, subnets: Tensor, subnet_rows: Tensor, rep: Tensor,
                      relu: bool = True) -> Tensor:
        """ReLUConvBN on rows x [R, B, C, H, W] (``relu`` False: x is already rectified)."""
        rows, batch = x.shape[:2]
        flat = x.reshape(rows * batch, *x.shape[2:])
        out = module.conv(F.relu(flat) if relu else flat)
        return self._bn(module.bn, out.view(rows, batch, *out.shape[1:]), subnets, subnet_rows, rep)

    # ---- the network ---------------------------------------------------------------------------------------------

    def _cell(self, cell: SearchCell, x: Tensor, nodes: list, groups: list) -> Tensor:
        values = [x, None, None, None]
        rectified = [None] * 4
        for node in (1, 2, 3):
            rows = nodes[node].count
            total = None
            for group in groups[node]:
                source = values[group.src]
                if group.op in _PARAMETRIC:
                    if rectified[group.src] is None:
                        rectified[group.src] = F.relu(source)
                    source = rectified[group.src]
                if not group.every_input:
                    source = source.index_select(0, group.inputs.to(x.device))
                if group.op == nb201.SKIP:
                    out = source
                elif group.op == nb201.AVG_POOL:
                    out = avg_pool_3x3(source.reshape(-1, *source.shape[2:])).view(source.shape)
                else:
                    module = cell.edges[group.edge][_PARAMETRIC[group.op][0]]
                    out = self._relu_conv_bn(module, source, group.subnets, group.subnet_inputs, group.rep,
                                             relu=False)
                if not group.identity:
                    out = out.index_select(0, group.positions.to(x.device))
                if group.every_target:
                    if total is None:
                        total = out.clone() if group.op == nb201.SKIP and group.identity else out
                    else:
                        total = total.add_(out)
                else:
                    if total is None:
                        total = x.new_zeros(rows, *x.shape[1:])
                    total.index_add_(0, group.targets.to(x.device), out)
            values[node] = total if total is not None else x.new_zeros(rows, *x.shape[1:])
        return values[3]

    @staticmethod
    def _spread(x: Tensor, source: _Rows, target: _Rows) -> Tensor:
        """x [source.count, ...] -> [target.count, ...], where each target row refines a source row (e.g. the
        stem's one row -> one row per distinct plan)."""
        if source is target:
            return x
        index = source.row[target.rep]
        if source.count == target.count and torch.equal(index, torch.arange(target.count)):
            return x
        return x.index_select(0, index.to(x.device))

    def _forward(self, images: Tensor) -> Tensor:
        supernet = self.supernet
        stem = supernet.stem_conv(images).unsqueeze(0)  # [1, B, C, H, W]: one row for every subnet
        out = self._bn(supernet.stem_bn, stem, self.stem.all, self.stem.row, self.stem.rep)
        rows = self.stem
        whole = self.whole
        for index, layer in enumerate(supernet.layers):
            if isinstance(layer, SearchCell):
                nodes, groups = self.cells[index]
                out = self._spread(out, rows, nodes[0])
                out = self._cell(layer, out, nodes, groups)
                rows = nodes[3]
            else:
                out = self._spread(out, rows, whole)
                rows = whole
                residual = self._relu_conv_bn(layer.conv_a, out, whole.all, whole.row, whole.rep)
                residual = self._relu_conv_bn(layer.conv_b, residual, whole.all, whole.row, whole.rep)
                flat = out.reshape(-1, *out.shape[2:])
                shortcut = layer.downsample(flat)
                out = residual.add_(shortcut.view(residual.shape)) if residual.is_contiguous() else \
                    shortcut.view(residual.shape) + residual
        out = self._spread(out, rows, whole)
        out = F.relu(self._bn(supernet.head_bn, out, whole.all, whole.row, whole.rep))
        return supernet.classifier(out.mean(dim=(3, 4)))  # [R, B, num_classes]

    @torch.no_grad()
    def calibrate(self, images: Tensor) -> None:
        """Records every subnet's batch statistics of one training batch (images [B, in_channels, H, W])."""
        if self.stats.mode != "calibrate":
            raise RuntimeError("rdnas.rank.SharedChunk.calibrate: the statistics are frozen (logits was called)")
        self._forward(images)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Logits [K, B, num_classes] of the chunk's subnets with their recorded statistics."""
        if self.stats.mode == "calibrate":
            self.stats.freeze()
        return self._forward(images).index_select(0, self.whole.row.to(images.device))


register_shared_path(NB201Supernet, SharedChunk, plan_order)

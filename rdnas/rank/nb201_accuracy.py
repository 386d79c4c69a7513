"""NB201 supernet accuracy for many cells at once, sharing what the cells have in common (the whole-space path).

:func:`rdnas.rank.supernet_accuracy` runs a chunk of K subnets through ``NB201Supernet.forward_subnets``: every
layer runs on K copies of the activations, the stem and the first cell's early nodes included, although they are
the same for many of the subnets, and every batch norm transposes its K slices twice. ``SharedChunk`` computes the
same accuracies (BN recalibrated per subnet, ``edges="live"``) with less work:

- the stem (convolution and batch norm) runs once for the whole chunk: its input and its statistics are the same
  for every subnet;
- in the first cell, node n's value depends only on the edges into nodes 1..n (a prefix of the cell plan), so it is
  computed once per distinct prefix (:func:`plan_order` orders the cells so that a chunk holds few prefixes), and
  an op on an edge runs once per distinct input row, whatever the number of subnets that read it;
- after the first cell every distinct plan is one row (isomorphic duplicates in the chunk are computed once);
- the rows sit side by side in the channels ([B, H, W, R, C], channels-last): a layer over all rows is one grouped
  convolution (the shared weights repeated per row) and one batch norm over R * C channels, with no transposes;
  once the statistics are recalibrated, each row's batch norm is folded into its copy of the weights;
- ``relu`` of a node is computed once, not once per conv edge that reads it; an edge's contribution to a node is
  gathered once from its op groups' outputs.

Every batch norm statistic is recorded per subnet in a :class:`rdnas.supernet.BNStatistics`, exactly as the
per-subnet path records it. The results equal the per-subnet path's up to float rounding (tests/
test_whole_space_eval.py: logits to 1e-10 in float64 and 1e-5 in float32, accuracies equal).
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
        self.subnets = torch.tensor(subnets, dtype=torch.long)
        self.subnet_inputs = torch.tensor([position[src_of[s]] for s in subnets], dtype=torch.long)
        rep = [0] * len(inputs)
        for s in reversed(subnets):
            rep[position[src_of[s]]] = s
        self.rep = torch.tensor(rep, dtype=torch.long)


class _Edge:
    """The groups of one edge into a node, and how their outputs make the edge's contribution to every row of the
    node: concatenated (plus a zero row where some row does not use the edge), row r takes entry ``gather[r]``."""

    def __init__(self, groups: list, rows: int):
        self.groups = groups
        gather, offset = [None] * rows, 0
        for group in groups:
            for target, position in zip(group.targets.tolist(), group.positions.tolist()):
                gather[target] = offset + position
            offset += len(group.inputs)
        self.zero_row = any(g is None for g in gather)
        gather = [offset if g is None else g for g in gather]
        self.direct = gather == list(range(offset))  # the concatenation is the contribution itself
        self.gather = torch.tensor(gather, dtype=torch.long)


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
        by_edge = [{}, {}, {}, {}]
        for (node, edge, src, op), subnets in sorted(grouped.items()):
            by_edge[node].setdefault(edge, []).append(_EdgeGroup(edge, src, op, subnets, nodes[src], nodes[node]))
        return [[_Edge(groups, nodes[node].count) for groups in by_edge[node].values()] for node in range(4)]

    # ---- rows side by side: [B, H, W, R, C] ----------------------------------------------------------------------
    # Row r's channels sit beside the other rows' (channels-last, row-major), so a layer over all rows is one grouped
    # convolution (groups = R, the shared weights repeated per row) and one batch norm over R * C channels, and a
    # row's recalibrated batch norm folds into its copy of the convolution's weights.

    @staticmethod
    def _planes(x: Tensor) -> Tensor:
        """[B, H, W, R, C] -> the same memory as a channels-last [B, R * C, H, W]."""
        b, h, w, r, c = x.shape
        return x.view(b, h, w, r * c).permute(0, 3, 1, 2)

    @staticmethod
    def _rows(x: Tensor, rows: int) -> Tensor:
        """[B, R * C, H, W] -> [B, H, W, R, C] (a view when x is channels-last)."""
        b, channels, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h, w, rows, channels // rows)

    def _statistics(self, bn, rows: int, channels: int, subnets: Tensor, subnet_rows: Tensor, rep: Tensor,
                    planes: Tensor):
        """Calibrating: (mean, var buffers [R * C] that a momentum-1 batch norm fills, a function that records them
        for the subnets). Calibrated: each row's recorded (mean, var) [R, C]."""
        device = planes.device
        if self.stats.mode == "calibrate":
            mean = torch.zeros(rows * channels, device=device, dtype=planes.dtype)
            var = torch.ones_like(mean)

            def record():
                count = planes.numel() // planes.shape[1]
                m, v = mean.view(rows, channels), var.view(rows, channels) * ((count - 1) / count)  # biased
                index = subnet_rows.to(device)
                self.stats.record(bn, subnets.to(device), m[index], (v + m.square())[index])

            return mean, var, record
        return self.stats.calibrated(bn, rep.to(device))

    def _bn(self, bn, x: Tensor, subnets: Tensor, subnet_rows: Tensor, rep: Tensor) -> Tensor:
        """Batch norm of x [B, H, W, R, C] whose row r stands for the subnets ``subnets[subnet_rows == r]`` (``rep``
        [R]: one subnet of each row): calibrating, each row's batch statistics, recorded for its subnets;
        calibrated, each row's recorded statistics."""
        rows, channels = x.shape[3:]
        planes = self._planes(x)
        weight = None if bn.weight is None else bn.weight.to(x.dtype).repeat(rows)
        bias = None if bn.bias is None else bn.bias.to(x.dtype).repeat(rows)
        if self.stats.mode == "calibrate":
            mean, var, record = self._statistics(bn, rows, channels, subnets, subnet_rows, rep, planes)
            out = F.batch_norm(planes, mean, var, weight, bias, True, 1.0, bn.eps)
            record()
        else:
            mean, var = self._statistics(bn, rows, channels, subnets, subnet_rows, rep, planes)
            out = F.batch_norm(planes, mean.flatten(), var.flatten(), weight, bias, False, 0.0, bn.eps)
        return self._rows(out, rows)

    def _conv_bn(self, module, x: Tensor, subnets: Tensor, subnet_rows: Tensor, rep: Tensor, stride: int = 1,
                 bn=True) -> Tensor:
        """Conv2d (+ BN) of a ReLUConvBN (its ReLU already applied) on every row of x [B, H, W, R, C]."""
        rows = x.shape[3]
        conv = module.conv if bn else module
        weight = conv.weight.to(x.dtype)
        padding = weight.shape[-1] // 2
        planes = self._planes(x)
        if not bn:
            return self._rows(F.conv2d(planes, weight.repeat(rows, 1, 1, 1), None, stride, padding, 1, rows), rows)
        norm = module.bn
        if self.stats.mode == "calibrate":
            out = F.conv2d(planes, weight.repeat(rows, 1, 1, 1), None, stride, padding, 1, rows)
            return self._bn(norm, self._rows(out, rows), subnets, subnet_rows, rep)
        # Recalibrated statistics are fixed: BN(conv(x)) = conv(x) * scale + shift per row and channel, folded
        # into each row's copy of the weights.
        mean, var = self._statistics(norm, rows, weight.shape[0], subnets, subnet_rows, rep, planes)
        scale = 1 / torch.sqrt(var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.to(x.dtype)
        shift = -mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias.to(x.dtype)
        folded = (weight.unsqueeze(0) * scale.view(rows, -1, 1, 1, 1)).flatten(0, 1)
        return self._rows(F.conv2d(planes, folded, shift.flatten(), stride, padding, 1, rows), rows)

    # ---- the network ---------------------------------------------------------------------------------------------

    def _cell(self, cell: SearchCell, x: Tensor, nodes: list, edges: list) -> Tensor:
        values = [x, None, None, None]
        rectified = [None] * 4
        for node in (1, 2, 3):
            total = None
            for edge in edges[node]:
                outs = []
                for group in edge.groups:
                    source = values[group.src]
                    if group.op in _PARAMETRIC:
                        if rectified[group.src] is None:
                            rectified[group.src] = F.relu(source)
                        source = rectified[group.src]
                    if not group.every_input:
                        source = self._select(source, group.inputs)
                    if group.op == nb201.SKIP:
                        outs.append(source)
                    elif group.op == nb201.AVG_POOL:
                        outs.append(self._rows(avg_pool_3x3(self._planes(source)), source.shape[3]))
                    else:
                        module = cell.edges[group.edge][_PARAMETRIC[group.op][0]]
                        outs.append(self._conv_bn(module, source, group.subnets, group.subnet_inputs, group.rep))
                if edge.zero_row:
                    outs.append(x.new_zeros(*x.shape[:3], 1, x.shape[4]))
                out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)
                if not edge.direct:
                    out = self._select(out, edge.gather)
                if total is None:
                    fresh = not any(out is value for value in values)  # a skip edge hands back a node itself
                    total = out if fresh else out.clone()
                else:
                    total = total.add_(out)
            values[node] = total if total is not None else x.new_zeros(*x.shape[:3], nodes[node].count, x.shape[4])
        return values[3]

    @staticmethod
    def _spread(x: Tensor, source: _Rows, target: _Rows) -> Tensor:
        """x [B, H, W, source.count, C] -> [B, H, W, target.count, C], where each target row refines a source row
        (e.g. the stem's one row -> one row per distinct plan)."""
        if source is target:
            return x
        index = source.row[target.rep]
        if source.count == target.count and torch.equal(index, torch.arange(target.count)):
            return x
        return SharedChunk._select(x, index)

    @staticmethod
    def _select(x: Tensor, rows: Tensor) -> Tensor:
        """Rows ``rows`` of x [B, H, W, R, C] (an index_select on a 3-dim view: a few times faster than on dim 3
        of the 5-dim tensor)."""
        b, h, w, r, c = x.shape
        return x.reshape(-1, r, c).index_select(1, rows.to(x.device)).view(b, h, w, len(rows), c)

    def _forward(self, images: Tensor) -> Tensor:
        supernet = self.supernet
        stem, whole = self.stem, self.whole
        x = images.permute(0, 2, 3, 1).unsqueeze(3).contiguous()  # one row: the stem is every subnet's
        out = self._conv_bn(supernet.stem_conv, x, stem.all, stem.row, stem.rep, bn=False)
        out = self._bn(supernet.stem_bn, out, stem.all, stem.row, stem.rep)
        rows = stem
        for index, layer in enumerate(supernet.layers):
            if isinstance(layer, SearchCell):
                nodes, groups = self.cells[index]
                out = self._cell(layer, self._spread(out, rows, nodes[0]), nodes, groups)
                rows = nodes[3]
                continue
            out = self._spread(out, rows, whole)
            rows = whole
            residual = self._conv_bn(layer.conv_a, F.relu(out), whole.all, whole.row, whole.rep, stride=2)
            residual = self._conv_bn(layer.conv_b, F.relu(residual), whole.all, whole.row, whole.rep)
            pooled = self._rows(layer.downsample[0](self._planes(out)), whole.count)
            out = self._conv_bn(layer.downsample[1], pooled, whole.all, whole.row, whole.rep, bn=False) + residual
        out = self._spread(out, rows, whole)
        out = F.relu(self._bn(supernet.head_bn, out, whole.all, whole.row, whole.rep))
        logits = supernet.classifier(out.mean(dim=(1, 2)))  # [B, R, num_classes]
        return logits.transpose(0, 1)

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

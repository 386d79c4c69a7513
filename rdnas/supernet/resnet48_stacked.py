"""K ResNet48 subnets in one pass (eval mode): :meth:`rdnas.supernet.ResNet48Supernet.forward_stacked`.

Ranking many students needs each one's forward on the same small input (DaSS's probe, a validation batch).
One subnet at a time costs ~35 small layer calls per subnet, nearly all of it call overhead at these sizes; here
the K subnets run side by side as one batch of K x B rows at the supernet's full widths, each row's channels
beyond its subnet's widths held at zero:

- a convolution over an input whose channels past c_in are zero, keeping its first c_out outputs, is the sliced
  convolution ``W[:c_out, :c_in]`` (the zeros add nothing);
- eval-mode batch norm is a per-channel affine map with the running statistics, so normalising every channel and
  zeroing those past c is the sliced batch norm; ReLU, pooling and the identity shortcut keep zeros zero;
- a block beyond a subnet's depth leaves that subnet's rows as they were (only the rows of the subnets that run
  it are computed); the first block of every stage runs in every subnet (depth >= 2).

The result equals one ``forward(x, arch)`` per subnet in eval mode up to float rounding (the convolutions sum
zeros in another order). Training-mode batch norm would mix the subnets' rows, so the supernet must be in eval mode
with running statistics.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from rdnas.spaces import resnet48


def subnet_widths(archs, width_divisor: int = 1) -> dict:
    """The channel widths of K architectures, vectorised: ``stem`` LongTensor[K], ``mid`` and ``out``
    LongTensor[K, 23] (conv1 and conv2 channels of each block slot; 0 beyond a stage's depth), ``depths``
    LongTensor[K, 4]."""
    rows = resnet48.validate(archs)
    widths = {"depths": rows[:, resnet48.POS_DEPTH:resnet48.POS_DEPTH + resnet48.NUM_STAGES],
              "stem": torch.tensor([0, *resnet48.WIDTH_TABLE[resnet48.STEM_BASE]])[rows[:, resnet48.POS_STEM]]
              // width_divisor}
    mids, outs = [], []
    for slot in range(resnet48.NUM_SLOTS):
        table = torch.tensor([0, *resnet48.WIDTH_TABLE[resnet48.STAGE_BASES[resnet48.STAGE_OF_SLOT[slot]]]])
        mids.append(table[rows[:, resnet48.conv1_position(slot)]] // width_divisor)
        outs.append(table[rows[:, resnet48.conv2_position(slot)]] // width_divisor)
    widths["mid"], widths["out"] = torch.stack(mids, 1), torch.stack(outs, 1)
    return widths


def _mask(widths: Tensor, channels: int, rows_per_subnet: int, like: Tensor) -> Tensor:
    """[K * B, channels, 1, 1] of 1 where the channel is below the row's subnet width, else 0."""
    keep = torch.arange(channels) < widths.unsqueeze(1)
    return keep.repeat_interleave(rows_per_subnet, 0).to(like.dtype).to(like.device)[:, :, None, None]


@torch.no_grad()
def forward_stacked(supernet, x: Tensor, archs, return_features: bool = False, max_rows: int = 4096):
    """Logits [K, B, num_classes] of the K subnets ``archs`` of the eval-mode ``supernet`` on ``x`` [B, C, H, W]
    (see the module docstring); with ``return_features`` also the last stage's output [K, B, C4, H', W'] (the
    input of the global pool; channels past each subnet's width are zero) and each subnet's last-stage width
    LongTensor[K]. Subnets go through in groups of at most ``max_rows`` // B (memory)."""
    where = "rdnas.supernet.ResNet48Supernet.forward_stacked"
    if supernet.training or not supernet.config["bn_track_running_stats"]:
        raise ValueError(f"{where}: needs the supernet in eval mode with running BN statistics (batch statistics "
                         "would mix the subnets' rows); call .eval() first")
    if max_rows < 1:
        raise ValueError(f"{where}: max_rows must be >= 1, got {max_rows}")
    batch = x.shape[0]
    if len(archs) == 0:
        empty = x.new_zeros(0, batch, supernet.config["num_classes"])
        return (empty, x.new_zeros(0, batch, 0, 0, 0), torch.zeros(0, dtype=torch.long)) if return_features else empty
    widths = subnet_widths(archs, supernet.config["width_divisor"])
    count = len(widths["stem"])
    last_slots = torch.tensor(resnet48.SLOT_START[-1]) + widths["depths"][:, -1] - 1
    last_width = widths["out"].gather(1, last_slots.unsqueeze(1)).squeeze(1)
    stem = supernet.stem_pool(F.relu(supernet.stem_bn(supernet.stem_conv(x))))  # one for all: only widths differ
    per_group = max(1, max_rows // max(batch, 1))
    logits, features = [], []
    for start in range(0, count, per_group):
        group = slice(start, min(start + per_group, count))
        k = group.stop - group.start
        h = stem.repeat(k, 1, 1, 1) * _mask(widths["stem"][group], stem.shape[1], batch, stem)
        slot = 0
        for stage, blocks in enumerate(supernet.stages):
            for index, block in enumerate(blocks):
                runs = widths["depths"][group, stage] > index
                rows = runs.repeat_interleave(batch)
                part = h if bool(runs.all()) else h[rows]
                mid = _mask(widths["mid"][group, slot][runs], block.conv1.out_channels, batch, part)
                out = _mask(widths["out"][group, slot][runs], block.conv2.out_channels, batch, part)
                y = F.relu(block.bn1(block.conv1(part))) * mid
                y = block.bn2(block.conv2(y)) * out
                shortcut = part if block.shortcut_conv is None else block.shortcut_bn(block.shortcut_conv(part)) * out
                y = F.relu(y + shortcut)
                if bool(runs.all()):
                    h = y
                elif bool(runs.any()):
                    h = h.clone()
                    h[rows] = y
                slot += 1
        logits.append(supernet.classifier(h.mean(dim=(2, 3))).view(k, batch, -1))
        if return_features:
            features.append(h.view(k, batch, *h.shape[1:]))
    logits = torch.cat(logits)
    return (logits, torch.cat(features), last_width) if return_features else logits

"""The ResNet48 elastic search space of the CVPR 2022 NAS competition, Track 1 (RD-NAS's second space).

Three modules, one per responsibility: :mod:`rdnas.spaces.resnet48_codes` (the 52-digit code: its digits, rules,
validation, strings and decoding into widths), :mod:`rdnas.spaces.resnet48_cost` (parameters and FLOPs of a
code's network) and this one, the :class:`ResNet48Space` (sampling, mutation, features, largest / smallest) and
its registered instance :data:`SPACE`. Every public name of the other two is importable from here too
(``rdnas.spaces.resnet48.validate``, ``.decode``, ``.cost``, ``.WIDTH_TABLE``, ...).
"""

import torch
from torch import Tensor

from rdnas.spaces import base
from rdnas.spaces.resnet48_codes import (  # noqa: F401 (the code format's public names, re-exported)
    BLOCK_OF_SLOT, DEPTH_RANGES, IMAGE_CODE, MAX_DEPTHS, NUM_CODES, NUM_SLOTS, NUM_STAGES, PAPER_SIZE, POS_DEPTH,
    POS_IMAGE, POS_STEM, RATIOS, SIZE, SLOT_START, STAGE_BASES, STAGE_OF_SLOT, STEM_BASE, STEMS, STRIDES, WIDTH,
    WIDTH_DIVISORS, WIDTH_TABLE, InvalidArchitecture, ResNet48Arch, ResNet48Options, conv1_position, conv2_position, decode,
    from_string, make_divisible, to_string, validate)
from rdnas.spaces.resnet48_codes import _CONV1, _CONV2, _DEPTH_HIGH, _DEPTH_LOW, _RATIO, _assemble  # noqa: F401
from rdnas.spaces.resnet48_cost import cost  # noqa: F401 (re-exported)


# -- the space ------------------------------------------------------------------------------------------------------
class ResNet48Space(base.SearchSpace):
    """The ResNet48 space as a :class:`rdnas.spaces.SearchSpace`: an architecture is its 52 digits (width 52);
    :attr:`size` counts the valid codes (see the module docstring); the key is the code (every code a different
    network); not enumerable.

    :meth:`sample` draws as the RD-NAS authors' training sampler does: each stage's depth uniform over its range,
    then every width code (each active block's conv1, each stage's tied output code, stage 1's being the stem's)
    uniform over 1..7. That is uniform over each choice, not over the :attr:`size` codes (those are dominated by
    the deepest networks, which have the most width combinations).
    """

    name = "resnet48"
    width = WIDTH
    size = SIZE
    enumerable = False

    def validate(self, archs) -> Tensor:
        return validate(archs)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """LongTensor[n, 52] drawn as the class docstring says."""
        depths = torch.stack([torch.randint(low, high + 1, (n,), generator=generator) for low, high in DEPTH_RANGES], 1)
        outs = torch.randint(1, NUM_CODES + 1, (n, NUM_STAGES), generator=generator)
        mids = torch.randint(1, NUM_CODES + 1, (n, NUM_SLOTS), generator=generator)
        return _assemble(depths, outs, mids)

    def mutate(self, archs, changes: int, generator: torch.Generator) -> Tensor:
        """Each architecture with ``changes`` of its choices (4 depths, 4 tied output codes, the conv1 code of each
        active block) drawn without replacement and redrawn uniformly among the other values. A deeper stage's new
        blocks get conv1 codes drawn uniformly; a shallower one drops its last blocks (a conv1 redraw in a dropped
        block is then invisible, the depth change is not). LongTensor[K, 52] -> LongTensor[K, 52], valid, and every
        child differs from its parent. ``changes`` must be at most the parent's number of choices (16 for the
        shallowest networks)."""
        rows = validate(archs)
        if isinstance(changes, bool) or not isinstance(changes, int) or changes < 1:
            raise ValueError(f"rdnas.spaces.resnet48.mutate: changes must be a positive int, got {changes!r}")
        depths = rows[:, POS_DEPTH:POS_DEPTH + NUM_STAGES].clone()
        outs = rows[:, _CONV2[torch.tensor(SLOT_START)]].clone()
        mids = rows[:, _CONV1].clone()
        for k in range(len(rows)):
            active = [j for j in range(NUM_SLOTS) if BLOCK_OF_SLOT[j] < int(depths[k, STAGE_OF_SLOT[j]])]
            choices = ([("depth", s) for s in range(NUM_STAGES)] + [("out", s) for s in range(NUM_STAGES)]
                       + [("conv1", j) for j in active])
            if changes > len(choices):
                raise ValueError(f"rdnas.spaces.resnet48.mutate: changes={changes} but architecture "
                                 f"{to_string(rows[k])} has only {len(choices)} choices")
            for c in torch.randperm(len(choices), generator=generator)[:changes].tolist():
                kind, i = choices[c]
                if kind == "depth":
                    low, high = DEPTH_RANGES[i]
                    span = high - low + 1
                    step = int(torch.randint(1, span, (), generator=generator))
                    depths[k, i] = low + (int(depths[k, i]) - low + step) % span
                else:
                    table = outs if kind == "out" else mids
                    step = int(torch.randint(1, NUM_CODES, (), generator=generator))
                    table[k, i] = (int(table[k, i]) - 1 + step) % NUM_CODES + 1
            fresh = torch.randint(1, NUM_CODES + 1, (NUM_SLOTS,), generator=generator)
            mids[k] = torch.where(mids[k] == 0, fresh, mids[k])  # blocks a deeper stage adds
        return _assemble(depths, outs, mids)

    def to_string(self, arch) -> str:
        return to_string(arch)

    def from_string(self, text: str) -> Tensor:
        return from_string(text)

    def encode(self, archs) -> Tensor:
        """float32 Tensor[K, 31]: the 4 depths scaled to [0, 1] ((d - 2) / (max - 2)), the 23 slots' conv1 width
        ratios (1.0 .. 0.7; 0 for a slot beyond its stage's depth), the 4 stages' output ratios (stage 1's is the
        stem's)."""
        rows = validate(archs)
        depths = rows[:, POS_DEPTH:POS_DEPTH + NUM_STAGES].float()
        depths = (depths - _DEPTH_LOW) / (_DEPTH_HIGH - _DEPTH_LOW)
        return torch.cat([depths, _RATIO[rows[:, _CONV1]], _RATIO[rows[:, _CONV2[torch.tensor(SLOT_START)]]]], 1)

    def cost(self, archs, **options) -> dict:
        """Params and FLOPs in the competition's conventions (see :func:`cost`, which takes the ``options``):
        dict of float64 Tensor[K] ``params``, ``trainable_params``, ``flops``."""
        return cost(archs, **options)

    def largest(self) -> Tensor:
        """Depths 5, 5, 8, 5, every width code 1: ``1558511...1``."""
        n = torch.ones(1, NUM_STAGES, dtype=torch.long)
        return _assemble(torch.tensor([MAX_DEPTHS]), n, torch.ones(1, NUM_SLOTS, dtype=torch.long))[0]

    def smallest(self) -> Tensor:
        """Depths 2, 2, 2, 2, every width code 7."""
        n = torch.full((1, NUM_STAGES), NUM_CODES, dtype=torch.long)
        return _assemble(torch.full((1, NUM_STAGES), 2), n, torch.full((1, NUM_SLOTS), NUM_CODES))[0]


SPACE = ResNet48Space()

"""The ResNet48 space's codes (CVPR 2022 NAS competition, Track 1): the 52-digit format, its rules and decoding.

An architecture is its 52-digit code (``../shared/data/resnet48_track1/README.md``), one int per digit:
LongTensor[52], many are LongTensor[K, 52].

======== ========================================================================================================
digits   meaning
======== ========================================================================================================
``0``    input size: only ``1`` (224 x 224) exists
``1:5``  blocks per stage: stage 1 in 2..5, stage 2 in 2..5, stage 3 in 2..8, stage 4 in 2..5
``5``    stem conv width code
``6:52`` 23 block slots (5 + 5 + 8 + 5), two digits each: conv1 (middle) width code, conv2 (output) width code;
         the slots beyond a stage's depth are ``00``
======== ========================================================================================================

Width code k in 1..7 is the ratio ``RATIOS[k - 1]`` (1.0 .. 0.7) of the stage's base width (stem and stage 1: 64,
then 128, 256, 512); channels = ``make_divisible(base * ratio, 8)`` (:data:`WIDTH_TABLE`). Ties (the identity
shortcuts need them): every block of a stage has the same conv2 code, and stage 1's equals the stem code.

Size: :data:`SIZE` = sum over the depths of 7^(d1+d2+d3+d4) conv1 choices times 7^4 tied output codes (stem = stage
1, stages 2, 3, 4) = 121,588,067,670,250,048,000,000 ~ 1.216e23. The paper's 5.06e19 is the same sum without
the 7^4 output codes (it counts only the middle widths).

The network options every ResNet48 module shares are declared here too: :class:`ResNet48Options` (``resnet_stem``
in :data:`STEMS`, ``width_divisor`` in :data:`WIDTH_DIVISORS`, ``bn_track_running_stats``);
:mod:`rdnas.spaces.resnet48_cost` says what they mean. Every public name
is importable from :mod:`rdnas.spaces.resnet48` as well.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from rdnas.spaces import base

WIDTH = 52
IMAGE_CODE = 1  # 224 x 224, the only input size of the competition
NUM_STAGES = 4
DEPTH_RANGES = ((2, 5), (2, 5), (2, 8), (2, 5))
MAX_DEPTHS = tuple(high for _, high in DEPTH_RANGES)
NUM_SLOTS = sum(MAX_DEPTHS)  # 23
SLOT_START = (0, 5, 10, 18)  # first slot of each stage
STAGE_OF_SLOT = tuple(s for s, d in enumerate(MAX_DEPTHS) for _ in range(d))
BLOCK_OF_SLOT = tuple(b for d in MAX_DEPTHS for b in range(d))
STEM_BASE = 64
STAGE_BASES = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
NUM_CODES = len(RATIOS)
POS_IMAGE, POS_DEPTH, POS_STEM = 0, 1, 5  # POS_DEPTH + s is stage s's depth digit


def conv1_position(slot: int) -> int:
    """The digit index of block slot ``slot``'s conv1 (middle) width code."""
    return 6 + 2 * slot


def conv2_position(slot: int) -> int:
    """The digit index of block slot ``slot``'s conv2 (output) width code."""
    return 7 + 2 * slot


STEMS = ("imagenet", "small")
WIDTH_DIVISORS = (1, 2, 4, 8)


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), one step up where rounding
    would lose more than 10 % (the MobileNet / once-for-all rule the competition's model uses)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


WIDTH_TABLE = {b: tuple(make_divisible(b * r) for r in RATIOS) for b in sorted({STEM_BASE, *STAGE_BASES})}
"""base width -> channels of codes 1..7 (64: 64, 64, 56, 56, 48, 48, 48; 512: 512, 488, ..., 360)."""

SIZE = 1
for _low, _high in DEPTH_RANGES:
    SIZE *= sum(NUM_CODES**d for d in range(_low, _high + 1))
PAPER_SIZE = SIZE  # 50,640,594,614,848,000,000 ~ 5.06e19: the paper's count (middle widths only)
SIZE *= NUM_CODES**NUM_STAGES


class InvalidArchitecture(base.InvalidArchitecture):
    """A code that is not one of the ResNet48 space's architectures."""


def _code_text(digits) -> str:
    return "".join(str(d) if 0 <= d <= 9 else f"({d})" for d in digits)


def _error(code: str, position: int, rule: str) -> InvalidArchitecture:
    return InvalidArchitecture(f"rdnas.spaces.resnet48: invalid architecture {code!r} at position {position}: {rule}")


@dataclass(frozen=True)
class ResNet48Options(base.NetworkOptions):
    """The options of the ResNet48 supernet and networks (:class:`rdnas.spaces.NetworkOptions`); the defaults are
    the competition's network. On data other than ``imagenet:<dir>`` commands default to the small stem with every
    width divided by 8 (:meth:`defaults_for_data`). ``ResNet48Options(width_divisor=3).check(where)`` raises
    ValueError naming ``where`` and the option."""

    resnet_stem: str = base.option(
        "imagenet", "imagenet (7x7 conv stride 2 + 3x3 max-pool: the competition's, for 224 px) or small (3x3 "
        "stride 1, no pooling: for 8-32 px images)", choices=STEMS)
    width_divisor: int = base.option(1, "divide every channel count of the width table by this", choices=WIDTH_DIVISORS)
    bn_track_running_stats: bool = base.option(True, "BN without running statistics", flag="--no-bn-running-stats")

    @classmethod
    def defaults_for_data(cls, data: str) -> dict:
        """The small stem and widths / 8 on small images (every data kind but ``imagenet:<dir>``)."""
        return {} if data.partition(":")[0] == "imagenet" else {"resnet_stem": "small", "width_divisor": 8}


# -- parsing and validation ---------------------------------------------------------------------------------------
def _parse_strings(codes: list) -> Tensor:
    for code in codes:
        if len(code) != WIDTH:
            raise _error(code, min(len(code), WIDTH), f"a code has {WIDTH} digits, got {len(code)}")
        for position, char in enumerate(code):
            if char not in "0123456789":
                raise _error(code, position, f"every position holds a digit 0..9, got {char!r}")
    if not codes:
        return torch.zeros(0, WIDTH, dtype=torch.long)
    data = bytearray("".join(codes), "ascii")
    return (torch.frombuffer(data, dtype=torch.uint8).long() - ord("0")).view(len(codes), WIDTH)


def _as_rows(archs) -> Tensor:
    if isinstance(archs, str):
        return _parse_strings([archs])
    if isinstance(archs, Tensor):
        rows = archs.detach().cpu()
        if rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool:
            raise InvalidArchitecture(f"rdnas.spaces.resnet48: architectures must be an integer tensor of digits, "
                                      f"got dtype {rows.dtype}")
        rows = rows.long()
    else:
        try:
            items = list(archs)
        except TypeError:
            raise InvalidArchitecture(f"rdnas.spaces.resnet48: expected a 52-digit code, a LongTensor[K, 52] or a "
                                      f"sequence of codes, got {type(archs).__name__}") from None
        if items and all(isinstance(item, str) for item in items):
            return _parse_strings(items)
        try:
            rows = torch.as_tensor(items, dtype=torch.long)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidArchitecture(f"rdnas.spaces.resnet48: expected a 52-digit code, a LongTensor[K, 52] or a "
                                      f"sequence of codes, got {archs!r}") from None
        if not items:
            rows = rows.view(0, WIDTH)
    if rows.dim() == 1:
        rows = rows.unsqueeze(0)
    if rows.dim() != 2:
        raise InvalidArchitecture(f"rdnas.spaces.resnet48: architectures must be LongTensor[K, {WIDTH}], got shape "
                                  f"{list(rows.shape)}")
    if rows.shape[1] != WIDTH:
        code = _code_text(rows[0].tolist()) if len(rows) else ""
        raise _error(code, min(rows.shape[1], WIDTH), f"a code has {WIDTH} digits, got {rows.shape[1]}")
    return rows


_SLOT_STAGE = torch.tensor(STAGE_OF_SLOT)
_SLOT_BLOCK = torch.tensor(BLOCK_OF_SLOT)
_CONV1 = torch.tensor([conv1_position(j) for j in range(NUM_SLOTS)])
_CONV2 = torch.tensor([conv2_position(j) for j in range(NUM_SLOTS)])
_DEPTH_LOW = torch.tensor([low for low, _ in DEPTH_RANGES])
_DEPTH_HIGH = torch.tensor(MAX_DEPTHS)


def _violations(rows: Tensor) -> list:
    """(rule, BoolTensor[K, 52] of positions breaking it), rules in the order they are reported."""
    k = len(rows)

    def at(columns, mask):
        full = torch.zeros(k, WIDTH, dtype=torch.bool)
        full[:, columns] = mask
        return full

    digit = (rows < 0) | (rows > 9)
    rules = [("digit", digit), ("image", at([POS_IMAGE], (rows[:, POS_IMAGE] != IMAGE_CODE).unsqueeze(1)))]
    depths = rows[:, POS_DEPTH:POS_DEPTH + NUM_STAGES]
    rules.append(("depth", at(list(range(POS_DEPTH, POS_DEPTH + NUM_STAGES)),
                              (depths < _DEPTH_LOW) | (depths > _DEPTH_HIGH))))
    stem = rows[:, POS_STEM]
    rules.append(("stem", at([POS_STEM], ((stem < 1) | (stem > NUM_CODES)).unsqueeze(1))))
    active = _SLOT_BLOCK < depths[:, _SLOT_STAGE]  # [K, 23]
    conv1, conv2 = rows[:, _CONV1], rows[:, _CONV2]
    rules.append(("inactive", at(_CONV1, ~active & (conv1 != 0)) | at(_CONV2, ~active & (conv2 != 0))))
    rules.append(("zero", at(_CONV1, active & (conv1 == 0)) | at(_CONV2, active & (conv2 == 0))))
    rules.append(("range", at(_CONV1, active & (conv1 > NUM_CODES)) | at(_CONV2, active & (conv2 > NUM_CODES))))
    first = conv2[:, torch.tensor(SLOT_START)][:, _SLOT_STAGE]  # each stage's first block's conv2 code
    rules.append(("stem_tie", at([conv2_position(0)], (conv2[:, 0] != stem).unsqueeze(1))))
    rules.append(("tie", at(_CONV2, active & (conv2 != first))))
    return rules


def _describe(rule: str, position: int, digits: list) -> str:
    value = digits[position]
    if rule == "digit":
        return f"every position holds a digit 0..9, got {value}"
    if rule == "image":
        return f"the input-size digit must be {IMAGE_CODE} (224 x 224), got {value}"
    if rule == "depth":
        stage = position - POS_DEPTH
        low, high = DEPTH_RANGES[stage]
        return f"stage {stage + 1}'s depth must be in {low}..{high}, got {value}"
    if rule == "stem":
        return f"the stem width code must be in 1..{NUM_CODES}, got {value}"
    slot = (position - 6) // 2
    stage, block = STAGE_OF_SLOT[slot], BLOCK_OF_SLOT[slot]
    conv = "conv1" if position % 2 == 0 else "conv2"
    depth = digits[POS_DEPTH + stage]
    where = f"{conv} of block {block + 1} of stage {stage + 1} (depth {depth})"
    if rule == "inactive":
        return f"{where} is beyond the stage's depth, so its slot must be 00, got {value}"
    if rule == "zero":
        return f"{where} is within the stage's depth, so its width code must be in 1..{NUM_CODES}, got 0"
    if rule == "range":
        return f"{where}: width code must be in 1..{NUM_CODES}, got {value}"
    if rule == "stem_tie":
        return (f"tie broken: stage 1's conv2 code must equal the stem code {digits[POS_STEM]} "
                f"(identity shortcut), got {value}")
    return (f"tie broken: every conv2 code of stage {stage + 1} must equal its first block's "
            f"{digits[conv2_position(SLOT_START[stage])]} (identity shortcuts), got {value}")


def validate(archs) -> Tensor:
    """``archs`` as a CPU LongTensor[K, 52] of digits, or :class:`InvalidArchitecture` naming the first invalid
    code (as a string), the position (0-based digit index) and the rule it breaks.

    Args:
        archs: a 52-character code, a sequence of codes, an integer tensor [52] or [K, 52], or a (nested) sequence
            of digits.
    """
    rows = _as_rows(archs)
    if not len(rows):
        return rows
    rules = _violations(rows)
    bad_rows = torch.stack([mask.any(1) for _, mask in rules], 1)  # [K, rules]
    if bool(bad_rows.any()):
        row = int(bad_rows.any(1).nonzero()[0])
        rule, mask = rules[int(bad_rows[row].nonzero()[0])]
        position = int(mask[row].nonzero()[0])
        digits = rows[row].tolist()
        raise _error(_code_text(digits), position, _describe(rule, position, digits))
    return rows


def to_string(arch) -> str:
    """The 52-digit code of one architecture."""
    rows = validate(arch)
    if len(rows) != 1:
        raise ValueError(f"rdnas.spaces.resnet48.to_string: expected one architecture, got {len(rows)}")
    return "".join(map(str, rows[0].tolist()))


def from_string(text: str) -> Tensor:
    """LongTensor[52] of a 52-digit code (validated)."""
    if not isinstance(text, str):
        raise InvalidArchitecture(f"rdnas.spaces.resnet48.from_string: expected a 52-digit string, got "
                                  f"{type(text).__name__}")
    return validate(text)[0]


# -- decoding -----------------------------------------------------------------------------------------------------
_CHANNELS = torch.tensor([[0, *WIDTH_TABLE[b]] for b in STAGE_BASES])  # [stage, code 0..7], 0 -> 0 channels
_STEM_CHANNELS = torch.tensor([0, *WIDTH_TABLE[STEM_BASE]])
_RATIO = torch.tensor([0.0, *RATIOS])


@dataclass(frozen=True)
class ResNet48Arch:
    """One decoded architecture, widths in channels.

    Attributes:
        code (str): the 52-digit code.
        depths (tuple of 4 ints): blocks per stage.
        stem (int): stem conv output channels.
        blocks (tuple of 4 tuples of (conv1 channels, conv2 channels)): the active blocks of each stage.
    """

    code: str
    depths: tuple
    stem: int
    blocks: tuple

    @property
    def stage_widths(self) -> tuple:
        """Output channels of each stage (4 ints)."""
        return tuple(stage[0][1] for stage in self.blocks)


def decode(arch, width_divisor: int = 1) -> ResNet48Arch:
    """The depths and channel widths of one architecture (every channel count divided by ``width_divisor``)."""
    ResNet48Options(width_divisor=width_divisor).check("rdnas.spaces.resnet48.decode")
    row = validate(arch)
    if len(row) != 1:
        raise ValueError(f"rdnas.spaces.resnet48.decode: expected one architecture, got {len(row)}")
    digits = row[0].tolist()
    depths = tuple(digits[POS_DEPTH:POS_DEPTH + NUM_STAGES])
    blocks = tuple(
        tuple((WIDTH_TABLE[STAGE_BASES[s]][digits[conv1_position(SLOT_START[s] + b)] - 1] // width_divisor,
               WIDTH_TABLE[STAGE_BASES[s]][digits[conv2_position(SLOT_START[s] + b)] - 1] // width_divisor)
              for b in range(depths[s]))
        for s in range(NUM_STAGES))
    stem = WIDTH_TABLE[STEM_BASE][digits[POS_STEM] - 1] // width_divisor
    return ResNet48Arch("".join(map(str, digits)), depths, stem, blocks)


def _assemble(depths: Tensor, outs: Tensor, mids: Tensor) -> Tensor:
    """Codes from depths [K, 4], output codes [K, 4] (stage 1's is the stem's) and conv1 codes [K, 23] (those of
    inactive slots are ignored): LongTensor[K, 52]."""
    rows = torch.zeros(len(depths), WIDTH, dtype=torch.long)
    rows[:, POS_IMAGE] = IMAGE_CODE
    rows[:, POS_DEPTH:POS_DEPTH + NUM_STAGES] = depths
    rows[:, POS_STEM] = outs[:, 0]
    active = _SLOT_BLOCK < depths[:, _SLOT_STAGE]
    rows[:, _CONV1] = mids * active
    rows[:, _CONV2] = outs[:, _SLOT_STAGE] * active
    return rows

"""Synthetic glyphs: an embedded, deterministic image dataset rendered from the fonts matplotlib ships.

A class is one character (a letter, digit or symbol). Sample i of class c is the character drawn in one of the
text fonts of matplotlib's ``mpl-data/fonts/ttf`` (DejaVu Sans / Sans Mono / Serif, STIX General, Computer
Modern; never a system font), chosen at random among the fonts that hold the character, then moved by a random
affine map (rotation, anisotropic scale, shear, translation), resampled to ``side`` x ``side`` and given
Gaussian pixel noise. Every random draw of that sample comes from a generator seeded with
``mix_seed(seed, class index, i)``, so the images are a pure function of (characters, side, seed, fonts): the same
arguments give identical bytes, a class's first samples do not depend on how many are drawn, and adding a class
changes no other class's images.

Nothing is downloaded and nothing is cached on disk. :func:`rdnas.kd.data.write_image_folder` writes any image set
as an image folder (``root/<class>/<i>.png``) that rdnas's image-folder reader takes back.
"""

import functools
import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from rdnas.data.datasets import DatasetError, ImageSet
from rdnas.data.image_folder import mix_seed

TEXT_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)
"""The text fonts of matplotlib's ``mpl-data/fonts/ttf`` (its symbol, size-variant and fallback fonts left out)."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SYMBOLS = "+-*/=<>#%&@$?!"

_CANVAS = 64  # rendering resolution before the affine map and the resampling to ``side``
_WHERE = "rdnas.data.glyphs"


def font_dir() -> str:
    """matplotlib's bundled TrueType folder (``mpl-data/fonts/ttf``)."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=64)
def _font(name: str) -> ImageFont.FreeTypeFont:
    path = os.path.join(font_dir(), name)
    if not os.path.isfile(path):
        raise DatasetError(f"{_WHERE}: font {path} is missing (matplotlib's bundled fonts)")
    return ImageFont.truetype(path, size=_CANVAS * 3 // 4)


@functools.lru_cache(maxsize=4096)
def _has_glyph(name: str, char: str) -> bool:
    from matplotlib.ft2font import FT2Font

    return FT2Font(os.path.join(font_dir(), name)).get_char_index(ord(char)) != 0


def fonts_for(char: str, fonts=TEXT_FONTS) -> tuple:
    """The fonts of ``fonts`` (file names in :func:`font_dir`) that hold a glyph for ``char``."""
    return tuple(name for name in fonts if _has_glyph(name, char))


@functools.lru_cache(maxsize=4096)
def _master(name: str, char: str) -> np.ndarray:
    """``char`` in font ``name``, white on black, its ink box centred on a _CANVAS-pixel canvas: float32 [H, W]."""
    font = _font(name)
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    draw.text(((_CANVAS - (right - left)) / 2 - left, (_CANVAS - (bottom - top)) / 2 - top), char, fill=255, font=font)
    return np.asarray(canvas, dtype=np.float32)


def render_glyph(char: str, side: int, generator: torch.Generator, fonts=TEXT_FONTS, noise: float = 0.08) -> np.ndarray:
    """One jittered glyph of ``char``: uint8 [side, side], white on black, every random draw from ``generator``
    (font, rotation +-15 degrees, scale 0.75..1.05 per axis, shear +-0.2, shift +-10 % of the side, Gaussian noise
    of standard deviation ``noise`` x 255)."""
    candidates = fonts_for(char, fonts)
    if not candidates:
        raise DatasetError(f"{_WHERE}: no font of {len(fonts)} holds the character {char!r}")
    u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
    name = candidates[min(int(u[0] * len(candidates)), len(candidates) - 1)]
    angle = math.radians(-15 + 30 * u[1])
    sx, sy = 0.75 + 0.3 * u[2], 0.75 + 0.3 * u[3]
    shear = -0.2 + 0.4 * u[4]
    tx, ty = (-0.1 + 0.2 * u[5]) * _CANVAS, (-0.1 + 0.2 * u[6]) * _CANVAS
    # forward map (about the centre): rotate . shear . scale; PIL wants the inverse (output -> input pixel)
    cos, sin = math.cos(angle), math.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    inverse = np.linalg.inv(forward)
    centre = np.array([_CANVAS / 2, _CANVAS / 2])
    offset = centre - inverse @ (centre + np.array([tx, ty]))
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    master = Image.fromarray(_master(name, char).astype(np.uint8), mode="L")
    moved = master.transform((_CANVAS, _CANVAS), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    small = np.asarray(moved.resize((side, side), Image.Resampling.BOX), dtype=np.float64)
    pixels = small + noise * 255.0 * torch.randn(side, side, generator=generator, dtype=torch.float64).numpy()
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def render_glyphs(chars: str, per_class: int, side: int = 16, seed: int = 0, fonts=TEXT_FONTS,
                  noise: float = 0.08) -> ImageSet:
    """``per_class`` jittered images of each character of ``chars`` (see the module docstring).

    Args:
        chars (str): the classes, one character each, distinct (label k is ``chars[k]``).
        per_class (int): images per class.
        side (int): image side in pixels.
        seed (int): the dataset's seed.
        fonts (sequence of str): font file names in :func:`font_dir` (default :data:`TEXT_FONTS`).
        noise (float): Gaussian pixel noise, standard deviation as a fraction of 255.

    Returns an ImageSet: images uint8 [len(chars) * per_class, 1, side, side] (class by class), labels int64.
    """
    if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
        raise DatasetError(f"{_WHERE}.render_glyphs: chars must be a non-empty string of distinct characters, got "
                           f"{chars!r}")
    if per_class < 1 or side < 4:
        raise DatasetError(f"{_WHERE}.render_glyphs: needs per_class >= 1 and side >= 4, got {per_class} and {side}")
    if not noise >= 0:
        raise DatasetError(f"{_WHERE}.render_glyphs: noise must be >= 0, got {noise}")
    images = np.empty((len(chars) * per_class, 1, side, side), dtype=np.uint8)
    for label, char in enumerate(chars):
        for i in range(per_class):
            generator = torch.Generator().manual_seed(mix_seed(seed, label, i))
            images[label * per_class + i, 0] = render_glyph(char, side, generator, tuple(fonts), noise)
    labels = torch.arange(len(chars)).repeat_interleave(per_class)
    return ImageSet(torch.from_numpy(images), labels, len(chars), f"glyphs-{side}-seed{seed}")

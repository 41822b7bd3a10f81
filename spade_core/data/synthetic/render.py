"""`render_landscape`: one seed -> a label map and a photo-like image; argument checks shared by the API."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import make_layout
from .paint import paint
from .style import LandscapeStyle

MIN_SIZE = 32  # smaller maps cannot hold a recognisable horizon, ridge and trees


@dataclass(frozen=True, eq=False)
class LandscapeSample:
    """One rendered landscape: labels (H,W) uint8 indices into LANDSCAPE_CLASSES, image (H,W,3) uint8 RGB."""

    seed: int
    labels: np.ndarray
    image: np.ndarray
    style: LandscapeStyle


def check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """`size` -> (height, width), with a clear error for anything unusable."""
    hw = (size, size) if isinstance(size, (int, np.integer)) else None
    if isinstance(size, (tuple, list)):
        hw = tuple(size)
    if hw is None or len(hw) != 2 or not all(isinstance(s, (int, np.integer)) for s in hw):
        raise ValueError(f"size={size!r} is not usable: pass an int or a (height, width) tuple of ints")
    if min(hw) < MIN_SIZE:
        raise ValueError(f"size={size!r} is too small for a landscape: pass sizes of at least {MIN_SIZE} pixels")
    return int(hw[0]), int(hw[1])


def check_seed(seed: int) -> int:
    """`seed` as a plain int, with a clear error unless it is a non-negative integer."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not usable: pass a non-negative int")
    return int(seed)


def render_landscape(seed: int, size: int | tuple[int, int] = 256,
                     style: LandscapeStyle | None = None) -> LandscapeSample:
    """Render the landscape of `seed` at `size` (int or (height, width)); the layout depends on the
    seed only, so passing `style` repaints the same label map in another look."""
    seed = check_seed(seed)
    h, w = check_size(size)
    if style is not None and not isinstance(style, LandscapeStyle):
        raise ValueError(f"style must be a LandscapeStyle or None, got {type(style).__name__}: "
                         "pass LandscapeStyle(time_of_day=..., season=..., weather=...) or None")
    layout_seq, style_seq, grain_seq = np.random.SeedSequence(seed).spawn(3)  # one stream per purpose
    if style is None:
        style = LandscapeStyle.random(np.random.default_rng(style_seq))
    layout = make_layout(np.random.default_rng(layout_seq), np.random.default_rng(grain_seq), h, w)
    return LandscapeSample(seed=seed, labels=layout.labels, image=paint(layout, style), style=style)

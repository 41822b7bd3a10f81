"""Bounded image input: every image file, upload or decoded picture passes a pixel limit before it is decoded.

One owner for the limits every surface shares (CLI, pipeline, datasets, demo, nodes): a
decompression bomb or a huge canvas becomes a one-line ``ValueError`` before any pixel array is
allocated, and non-finite numbers (NaN / Inf) in inputs or weights raise instead of painting garbage.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_SIDE",
    "check_finite",
    "check_image_size",
    "max_image_pixels",
    "open_image",
]

# 64 Mpx: an 8192x8192 label map decodes to 64 MB (mode L) / 192 MB (RGB); beyond that is a bomb or a mistake.
MAX_IMAGE_PIXELS = 8192 * 8192
# The largest side any requested output size may have (the generator's activations grow with the area).
MAX_SIDE = 4096
_ENV_PIXELS = "SPADE_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit in force: ``$SPADE_MAX_IMAGE_PIXELS`` when set to a positive integer, else MAX_IMAGE_PIXELS."""
    text = os.environ.get(_ENV_PIXELS, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{_ENV_PIXELS}={text!r} is not a positive integer: set it to a pixel count, e.g. 16777216")
    return int(text)


def check_image_size(width: int, height: int, what: str = "image", max_pixels: int | None = None) -> None:
    """Raise a one-line ValueError when ``width`` x ``height`` exceeds the pixel limit (or is empty)."""
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if width < 1 or height < 1:
        raise ValueError(f"{what} is empty ({width}x{height} pixels): pass a non-empty image")
    if width * height > limit:
        raise ValueError(
            f"{what} is {width}x{height} pixels, over the limit of {limit:,d} pixels: downscale it first"
            f" (or raise {_ENV_PIXELS} if you trust the file)"
        )


def open_image(
    source: str | os.PathLike | bytes | IO[bytes] | Image.Image,
    what: str = "image",
    max_pixels: int | None = None,
) -> Image.Image:
    """Open and decode an image from a path, bytes or a binary file, checking its size first.

    The header is read (no pixels) and its size held against the limit before ``load()``; the
    returned image is fully loaded and detached from the file. PIL images are size-checked as
    they are.
    """
    if isinstance(source, Image.Image):
        check_image_size(*source.size, what=what, max_pixels=max_pixels)
        return source
    name = what
    if isinstance(source, (bytes, bytearray)):
        stream: Any = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} not found: check the path")
        stream = path
        name = f"{what} {path}"
    else:
        stream = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                check_image_size(*img.size, what=name, max_pixels=max_pixels)
                img.load()
                return img
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name} is too large to decode ({err}): downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read {name} as an image ({err}): pass a PNG, JPEG, BMP, TIFF or WebP file") from None


def check_finite(value: Any, what: str, fix: str) -> None:
    """Raise ValueError when a tensor or array holds NaN or Inf, naming ``what`` and the ``fix``."""
    import torch

    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{what} holds {bad:,d} NaN/Inf values: {fix}")

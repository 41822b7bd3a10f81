"""Helpers several commands share: image file suffixes, sizes, input folders, output folders, model loading."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipeline import SPADEPipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DTYPES = ("float32", "float16", "bfloat16")


def load_pipeline(model: str | None, device: str = "auto", dtype: str = "float32") -> SPADEPipeline:
    """The pipeline of ``--model`` (the embedded model when None) on ``--device`` in ``--dtype``, without progress bars."""
    from diffusers.utils import logging as diffusers_logging

    from ..devices import resolve_device
    from ..pipeline import SPADEPipeline

    diffusers_logging.disable_progress_bar()
    return SPADEPipeline.from_pretrained(model, torch_dtype=dtype, device=resolve_device(device))


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    """``--size`` '512x256' (width x height) -> (height, width); None -> (None, None)."""
    if text is None:
        return None, None
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--size {text!r} is not WxH: pass e.g. --size 512x256 (width x height)")
    from ..images import MAX_SIDE

    width, height = int(parts[0]), int(parts[1])
    if max(width, height) > MAX_SIDE:
        raise ValueError(
            f"--size {width}x{height} is too large: each side may be at most {MAX_SIDE} pixels; pass e.g. --size 1024x1024"
        )
    return height, width


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder without ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} already exists and is not empty: pick a new folder or pass --overwrite")

"""The dataset formats users choose from by name (`spade train --format NAME`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from spade_core.data.datasets import ADE20KDataset, CityscapesDataset, COCOStuffDataset, FolderDataset
from spade_core.data.transforms import PreprocessConfig

__all__ = ["DATASET_FORMATS", "build_dataset", "available_formats"]


def _hf(root: str | Path, split: str = "train", preprocess: PreprocessConfig | None = None, **kw: Any) -> Dataset:
    """The hf format, imported on use (it needs the optional `datasets` package only then)."""
    from spade_core.data.hf import HFSegmapDataset

    return HFSegmapDataset(root, split, preprocess, **kw)


SYNTHETIC_HELDOUT_SEED = 1_000_000  # base seed of non-train synthetic splits, past any training set's seeds


def _synthetic(
    root: str | Path | None = None, split: str = "train", preprocess: PreprocessConfig | None = None, **kw: Any
) -> Dataset:
    """The synthetic landscapes, imported on use; `root` is ignored (they are rendered).

    A preprocess config sets the rendered size (its output size for a square source) and the
    flip (training only); `seed` seeds the flips. Splits other than train start at
    SYNTHETIC_HELDOUT_SEED unless `base_seed` is given, so they do not repeat training layouts.
    """
    from spade_core.data.synthetic import SyntheticLandscapes

    if preprocess is not None:
        width, height = preprocess.output_size(preprocess.load_size, preprocess.load_size)
        kw.setdefault("size", (height, width))
        kw.setdefault("flip", preprocess.flips)
    if "seed" in kw:
        seed = kw.pop("seed")
        if seed is not None:
            kw.setdefault("flip_seed", seed)
    if split not in ("train", "training"):
        kw.setdefault("base_seed", SYNTHETIC_HELDOUT_SEED)
    return SyntheticLandscapes(**kw)


# name -> callable(root, split="train", preprocess=None, **format_options) -> Dataset
DATASET_FORMATS: dict[str, Callable[..., Dataset]] = {
    "ade20k": ADE20KDataset,
    "cityscapes": CityscapesDataset,
    "coco": COCOStuffDataset,
    "folder": FolderDataset,
    "hf": _hf,
    "synthetic": _synthetic,
}


def available_formats() -> list[str]:
    """Names accepted by `build_dataset`."""
    return sorted(DATASET_FORMATS)


def build_dataset(
    format: str, root: str | Path | None, split: str = "train", preprocess: PreprocessConfig | None = None, **kw: Any
) -> Dataset:
    """Build a dataset of a registered format; `preprocess=None` takes that format's reference defaults
    (training augmentation for the train split, none for the others)."""
    if format not in DATASET_FORMATS:
        raise ValueError(f"unknown dataset format {format!r}: pass one of {', '.join(available_formats())}")
    if root is None and format != "synthetic":
        raise ValueError(f"the {format} format reads files: pass root=<dataset folder>")
    return DATASET_FORMATS[format](root, split, preprocess, **kw)

"""Hugging Face `datasets` as a segmentation-map dataset (needs the optional `datasets` package).

Reads a dataset saved with `save_to_disk` (a local folder) or a Hub dataset resolved through the
local cache (works with HF_HUB_OFFLINE=1 once cached). Columns default to the ADE20K scene-parsing
layout (`image`, `annotation`, raw 0 = unlabeled) with the `ade20k` label set.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spade_core.data.datasets import SegmapDataset, _is_train
from spade_core.data.transforms import PreprocessConfig, preset_preprocess
from spade_core.labels import LabelSet

__all__ = ["HFSegmapDataset", "load_hf_split"]

SPLIT_ALIASES = {
    "train": ("train", "training"),
    "training": ("training", "train"),
    "val": ("val", "validation", "valid"),
    "validation": ("validation", "val", "valid"),
    "test": ("test", "validation", "val"),
}


def _import_datasets() -> Any:
    """The `datasets` module, or an ImportError that says how to install it."""
    try:
        import datasets
    except ModuleNotFoundError:
        raise ImportError("the hf format needs the `datasets` package: pip install datasets") from None
    return datasets


def load_hf_split(source: str | Path, split: str = "train") -> Any:
    """One split of a dataset: a `save_to_disk` folder, or a Hub name resolved through the cache."""
    datasets = _import_datasets()
    path = Path(source)
    if path.exists():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} is not a dataset saved with save_to_disk (no dataset_info.json/state.json): "
                "pass the folder that save_to_disk wrote, or a Hub dataset name"
            ) from None
        if not isinstance(loaded, datasets.DatasetDict):
            return loaded
        for name in SPLIT_ALIASES.get(split, (split,)):
            if name in loaded:
                return loaded[name]
        raise ValueError(f"{path} has no split {split!r}: pass split= one of {', '.join(loaded)}")
    try:
        return datasets.load_dataset(str(source), split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load Hugging Face dataset {source!r} split {split!r} ({type(err).__name__}): pass a folder "
            "written by save_to_disk, or download the dataset once while online so the cache resolves it offline"
        ) from None


def _to_pil(value: Any, what: str, index: int) -> Image.Image:
    """A dataset cell (PIL image, {'bytes','path'} dict, file path or array) as a PIL image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    if isinstance(value, (str, Path)):
        return Image.open(value)
    if value is not None:
        array = np.asarray(value)
        if array.ndim == 2 and array.dtype.kind in "iub":
            return Image.fromarray(array.astype(np.uint8 if array.max(initial=0) < 256 else np.int32))
        if array.ndim == 3 and array.shape[-1] == 3:
            return Image.fromarray(array.astype(np.uint8))
    raise ValueError(
        f"row {index}: the {what} cell is {type(value).__name__}, not an image: store it as a datasets Image "
        "feature, an image path, or a 2-D integer array"
    )


class HFSegmapDataset(SegmapDataset):
    """Rows of a Hugging Face dataset as SPADE samples; image and label columns are configurable."""

    def __init__(
        self,
        source: str | Path,
        split: str = "train",
        preprocess: PreprocessConfig | None = None,
        *,
        image_column: str = "image",
        label_column: str = "annotation",
        instance_column: str | None = None,
        label_set: str | LabelSet = "ade20k",
        seed: int | None = None,
        unknown: str = "error",
        max_dataset_size: int | None = None,
    ) -> None:
        table = load_hf_split(source, split)
        wanted = {"image_column": image_column, "label_column": label_column, "instance_column": instance_column}
        for argument, column in wanted.items():
            if column is not None and column not in table.column_names:
                raise ValueError(
                    f"the dataset has no column {column!r}: pass {argument}= one of {', '.join(table.column_names)}"
                )
        if max_dataset_size is not None:
            table = table.select(range(min(max_dataset_size, len(table))))
        if len(table) == 0:
            raise FileNotFoundError(f"the {split!r} split of {source} is empty: pick a split that has rows")
        super().__init__(
            label_set,
            preprocess or preset_preprocess("hf", _is_train(split)),
            use_instance=instance_column is not None,
            seed=seed,
            unknown=unknown,
        )
        self.table = table
        self.source = str(source)
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.instance_column = instance_column

    def __len__(self) -> int:
        return len(self.table)

    def load(self, index: int) -> tuple[Image.Image, Image.Image, Image.Image | None, str]:
        row = self.table[index]
        image = _to_pil(row[self.image_column], self.image_column, index)
        label = _to_pil(row[self.label_column], self.label_column, index)
        instance = None
        if self.instance_column is not None:
            instance = _to_pil(row[self.instance_column], self.instance_column, index)
        path = getattr(image, "filename", "") or f"{self.source}:{self.split}[{index}]"
        return image.convert("RGB"), label, instance, path

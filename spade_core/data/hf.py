"""Hugging Face `datasets` as a segmentation-map dataset (needs the optional `datasets` package).

Reads a dataset saved with `save_to_disk` (a local folder) or a Hub dataset resolved through the
local cache (works with HF_HUB_OFFLINE=1 once cached). Columns default to the ADE20K scene-parsing
layout (`image`, `annotation`, raw 0 = unlabeled) with the `ade20k` label set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spade_core.data.datasets import SegmapDataset, _is_train
from spade_core.data.transforms import PreprocessConfig, preset_preprocess
from spade_core.images import open_image
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
    """A dataset cell (PIL image, {'bytes','path'} dict, file path or array) as a PIL image, size-checked.

    `what` names the cell in messages (e.g. "label map (column 'annotation', row 3)").
    """
    if isinstance(value, Image.Image):
        return open_image(value, what)
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return open_image(value["bytes"] if value.get("bytes") else value["path"], what)
    if isinstance(value, (str, Path)):
        return open_image(value, what)
    if value is not None:
        array = np.asarray(value)
        if array.ndim == 2 and array.dtype.kind in "iub":
            return Image.fromarray(array.astype(np.uint8 if array.max(initial=0) < 256 else np.int32))
        if array.ndim == 3 and array.shape[-1] == 3:
            return Image.fromarray(array.astype(np.uint8))
    raise ValueError(
        f"the {what} is {type(value).__name__}, not an image: store it as a datasets Image "
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
        table = _undecoded(table, [c for c in wanted.values() if c is not None])
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

    def source_of(self, index: int, kind: str) -> str | None:
        column = {"image": self.image_column, "label": self.label_column, "instance": self.instance_column}.get(kind)
        return f"{self.source}:{self.split}[{index}] column {column!r}" if column else None

    def load(self, index: int) -> tuple[Image.Image, Image.Image, Image.Image | None, str]:
        row = self.table[index]
        where = f"{self.source}:{self.split}[{index}]"
        image = _to_pil(row[self.image_column], f"image ({where} column {self.image_column!r})", index)
        label = _to_pil(row[self.label_column], f"label map ({where} column {self.label_column!r})", index)
        instance = None
        if self.instance_column is not None:
            what = f"instance map ({where} column {self.instance_column!r})"
            instance = _to_pil(row[self.instance_column], what, index)
        path = getattr(image, "filename", "") or where
        return image.convert("RGB"), label, instance, path


def _undecoded(table: Any, columns: list[str]) -> Any:
    """The table with its image columns left as encoded bytes, so that each is size-checked before decoding."""
    datasets = _import_datasets()
    for column in columns:
        feature = table.features.get(column)
        if isinstance(feature, datasets.Image) and feature.decode:
            table = table.cast_column(column, datasets.Image(decode=False))
    return table

"""Datasets and paired preprocessing for training SPADE.

`build_dataset(format, root, split, preprocess)` builds any registered format (`DATASET_FORMATS`:
ade20k, cityscapes, coco, folder, hf, synthetic); every sample is a dict with `label` int64
(1,H,W) class indices, `image` float (3,H,W) in [-1,1], `instance` int64 (1,H,W) where the
format uses instances, and `path`. Pass `seed=` and call `set_epoch()` for reproducible crops/flips.
"""

from spade_core.data.datasets import (
    ADE20KDataset,
    CityscapesDataset,
    COCOStuffDataset,
    FolderDataset,
    PairedFilesDataset,
    SamplePaths,
    SegmapDataset,
    custom_label_set,
    pair_files,
)
from spade_core.data.registry import DATASET_FORMATS, available_formats, build_dataset
from spade_core.data.transforms import (
    PREPROCESS_MODES,
    PreprocessConfig,
    TransformParams,
    draw_params,
    preset_preprocess,
    transform_image,
    transform_map,
)

__all__ = [
    "ADE20KDataset",
    "CityscapesDataset",
    "COCOStuffDataset",
    "DATASET_FORMATS",
    "FolderDataset",
    "PREPROCESS_MODES",
    "PairedFilesDataset",
    "PreprocessConfig",
    "SamplePaths",
    "SegmapDataset",
    "TransformParams",
    "available_formats",
    "build_dataset",
    "custom_label_set",
    "draw_params",
    "pair_files",
    "preset_preprocess",
    "transform_image",
    "transform_map",
]


def __getattr__(name: str):
    """HFSegmapDataset is imported on first use so `datasets` stays optional."""
    if name == "HFSegmapDataset":
        from spade_core.data.hf import HFSegmapDataset

        return HFSegmapDataset
    raise AttributeError(f"module 'spade_core.data' has no attribute {name!r}")

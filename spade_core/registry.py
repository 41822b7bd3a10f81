"""The datasets spade knows, one entry each: label set, network options, preprocessing, evaluation, names.

Every module that used to special-case a dataset by name (presets, label sets, preprocessing, the
trainer's config, model cards, the evaluation protocol, the command line's choices) reads this
table instead, so a new dataset or preset is one ``register_dataset(DatasetEntry(...))`` call.
Plain data only (the standard library): it sits below everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["DATASETS", "DatasetEntry", "Preprocessing", "available_datasets", "dataset_entry", "entry_for_class_count",
           "register_dataset"]


@dataclass(frozen=True)
class Preprocessing:
    """The reference's image preparation for a dataset (its ``preprocess_mode``, load and crop sizes)."""

    mode: str = "resize_and_crop"
    load_size_train: int = 286
    load_size_test: int = 256
    crop_size: int = 256
    aspect_ratio: float = 1.0

    def load_size(self, is_train: bool) -> int:
        """Load size of the training or the test split."""
        return self.load_size_train if is_train else self.load_size_test


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset / model preset.

    ``network`` holds the reference's option names (``label_nc``, ``no_instance``, ``crop_size``,
    ...) over the paper's defaults; ``evaluation`` the paper's segmentation-consistency protocol
    (documentation: which segmenter, which split, the paper's numbers) or None.
    """

    name: str
    display_name: str
    label_set: str
    network: dict[str, Any]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    data_format: str | None = None  # `spade train --format` that reads this dataset's own layout
    hub_dataset_id: str | None = None  # the model card's `datasets:` entry
    evaluation: dict[str, Any] | None = None
    paper: bool = True  # one of the paper's datasets (its presets reproduce the reference exactly)

    @property
    def label_nc(self) -> int:
        """Number of classes."""
        return int(self.network["label_nc"])


_ENTRIES: dict[str, DatasetEntry] = {}
DATASETS = MappingProxyType(_ENTRIES)


def register_dataset(entry: DatasetEntry, overwrite: bool = False) -> None:
    """Add ``entry`` under its name; an existing different entry needs ``overwrite=True``."""
    key = entry.name.lower()
    if key in _ENTRIES and _ENTRIES[key] != entry and not overwrite:
        raise ValueError(f"a different dataset named {entry.name!r} is registered: choose another name or pass overwrite=True")
    _ENTRIES[key] = entry


def available_datasets() -> list[str]:
    """Names of every registered dataset / preset, sorted."""
    return sorted(_ENTRIES)


def dataset_entry(name: str) -> DatasetEntry:
    """The entry called ``name`` (case-insensitive); ValueError listing the names otherwise."""
    key = str(name).lower()
    if key not in _ENTRIES:
        raise ValueError(f"unknown dataset / preset {name!r}: choose one of {', '.join(available_datasets())}")
    return _ENTRIES[key]


def entry_for_class_count(label_nc: int) -> DatasetEntry | None:
    """The paper dataset with ``label_nc`` classes (a checkpoint's most likely label set), or None."""
    matches = [e for e in _ENTRIES.values() if e.paper and e.label_nc == label_nc]
    return matches[0] if len(matches) == 1 else None


register_dataset(DatasetEntry(
    name="ade20k",
    display_name="ADE20K",
    label_set="ade20k",
    # 150 classes + don't-care (raw 0), no instance maps, 256x256.
    network={"label_nc": 150, "contain_dontcare_label": True, "no_instance": True},
    data_format="ade20k",
    hub_dataset_id="ade20k",
    evaluation={
        "segmenter": "UperNet101",
        "segmenter_source": "CSAILVision/semantic-segmentation-pytorch (ResNet-101 UperNet, ADE20K)",
        "num_classes": 150,
        "label_map": "raw ADE20K ids 1..150 -> 0..149; raw 0 (unlabeled) ignored",
        "image_size_hw": (256, 256),
        "split": "validation, 2,000 images",
        "paper_results": {"miou_percent": 38.5, "pixel_accuracy_percent": 79.9, "fid": 33.9},
    },
))
register_dataset(DatasetEntry(
    name="coco",
    display_name="COCO-Stuff",
    label_set="coco",
    # 182 classes + don't-care (raw 255), instance maps, 256x256.
    network={"label_nc": 182, "contain_dontcare_label": True, "no_instance": False},
    data_format="coco",
    hub_dataset_id="coco-stuff",
    evaluation={
        "segmenter": "DeepLabV2",
        "segmenter_source": "kazuto1011/deeplab-pytorch (ResNet-101 DeepLab v2, COCO-Stuff 164k)",
        "num_classes": 182,
        "label_map": "COCO-Stuff ids 0..181 as they are; 255 ignored",
        "image_size_hw": (256, 256),
        "split": "validation, 5,000 images",
        "paper_results": {"miou_percent": 37.4, "pixel_accuracy_percent": 67.9, "fid": 22.6},
    },
))
register_dataset(DatasetEntry(
    name="cityscapes",
    display_name="Cityscapes",
    label_set="cityscapes",
    # 35 label ids, instance maps, 512x256 with one extra upsampling.
    network={
        "label_nc": 35,
        "contain_dontcare_label": False,
        "no_instance": False,
        "crop_size": 512,
        "aspect_ratio": 2.0,
        "num_upsampling_layers": "more",
    },
    preprocessing=Preprocessing("fixed", load_size_train=512, load_size_test=512, crop_size=512, aspect_ratio=2.0),
    data_format="cityscapes",
    hub_dataset_id="cityscapes",
    evaluation={
        "segmenter": "DRN-D-105",
        "segmenter_source": "fyu/drn (DRN-D-105, Cityscapes 19 train classes)",
        "num_classes": 19,
        "label_map": "CITYSCAPES_35_TO_19 (ids -> trainIds, others ignored as 255)",
        "image_size_hw": (256, 512),
        "split": "validation, 500 images",
        "paper_results": {"miou_percent": 62.3, "pixel_accuracy_percent": 81.9, "fid": 71.8},
    },
))
register_dataset(DatasetEntry(
    name="landscape",
    display_name="procedural landscapes",
    label_set="landscape",
    # The embedded painter (spade_core/assets/embedded): 10 painting classes, a style encoder,
    # 128x128, ngf 16 so that its float16 weights stay under 30 MB.
    network={
        "label_nc": 10,
        "contain_dontcare_label": False,
        "no_instance": True,
        "crop_size": 128,
        "ngf": 16,
        "ndf": 32,
        "use_vae": True,
    },
    preprocessing=Preprocessing("resize_and_crop", load_size_train=143, load_size_test=128, crop_size=128),
    data_format="synthetic",
    paper=False,
))

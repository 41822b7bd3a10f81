"""Segmentation-map datasets: the shared base and the folder-based formats (COCO-Stuff, ADE20K,
Cityscapes, plain folders).

Every dataset yields dicts `{"label": int64 (1,H,W) class indices (don't-care = label_nc),
"image": float (3,H,W) in [-1,1], "instance": int64 (1,H,W) ids (only when instances are used),
"path": str}`. Files are paired by name once, at construction, so a mismatched folder fails
before training starts, naming the files.

Every file is opened through `spade_core.images.open_image` (the pixel limit is checked from the
header, before decoding); a corrupt, truncated or oversized file raises a one-line ValueError
naming that file and whether it is the image, the label map or the instance map.

Reproducible augmentation: pass `seed=` and call `set_epoch(epoch)` each epoch; the crop offset
and flip of sample i then come from a generator seeded with (seed, epoch, i), the same on every
rank, worker count and resumed run. Without a seed, Python's global `random` is used, as in the
reference.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from spade_core.data.transforms import PreprocessConfig, draw_params, preset_preprocess, transform_image, transform_map
from spade_core.images import open_image
from spade_core.labels import LabelSet, get_label_set, numbered_label_set

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_EXTENSIONS",
    "SamplePaths",
    "SegmapDataset",
    "PairedFilesDataset",
    "COCOStuffDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "FolderDataset",
    "pair_files",
    "collect_files",
    "custom_label_set",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff")  # lossless only: ids must survive
TRAIN_SPLITS = ("train", "training")
MAX_LISTED = 10  # names listed in a pairing error


def _natural_key(text: str) -> list:
    """Sort key that orders 'img2' before 'img10', as the reference's natural sort does."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _dontcare_fill(label_set: LabelSet) -> int:
    """The raw id a crop pads label maps with: a raw don't-care id when there is one, else 0."""
    return label_set.dontcare_raw_ids[0] if label_set.dontcare_raw_ids else 0


@dataclass(frozen=True)
class SamplePaths:
    """The files of one sample; instance is None when the format uses no instance maps."""

    image: Path
    label: Path
    instance: Path | None = None


class SegmapDataset(Dataset):
    """Base of all formats: preprocessing, raw-id mapping and seeding; subclasses load raw samples.

    A subclass implements `__len__` and `load(index) -> (image, label, instance | None, path)` with
    PIL images: the photograph, the raw-id label map and the raw instance map.
    """

    def __init__(
        self,
        label_set: str | LabelSet,
        preprocess: PreprocessConfig,
        *,
        use_instance: bool = False,
        seed: int | None = None,
        unknown: str = "error",
    ) -> None:
        self.label_set = get_label_set(label_set)
        self.label_set.raw_to_labels(torch.zeros(0, dtype=torch.int64), unknown=unknown)  # checks `unknown` now
        self.preprocess = preprocess
        self.use_instance = use_instance
        self.seed = seed
        self.unknown = unknown
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops and flips `seed` reproduces (call once per epoch)."""
        self.epoch = int(epoch)

    def rng_for(self, index: int) -> random.Random | None:
        """The per-sample generator when seeded (string seeds hash identically in every process)."""
        if self.seed is None:
            return None
        return random.Random(f"spade:{self.seed}:{self.epoch}:{index}")

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Image.Image, Image.Image, Image.Image | None, str]:
        """Raw sample `index`: (RGB photograph, raw label map, raw instance map or None, path)."""
        raise NotImplementedError

    def source_of(self, index: int, kind: str) -> str | None:
        """Where the `kind` ('image', 'label' or 'instance') of sample `index` comes from, for messages."""
        return None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        """Sample `index` preprocessed: label, image, instance (if used) and path."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        image, label, instance, path = self.load(index)
        for kind, name, other in (("label", "label map", label), ("instance", "instance map", instance)):
            if other is not None and other.size != image.size:
                source = self.source_of(index, kind)
                raise ValueError(
                    f"{path}: the image is {image.width}x{image.height} but its {name} is "
                    f"{other.width}x{other.height}" + (f" ({source})" if source else "") + ": give both the same size"
                )
        params = draw_params(self.preprocess, label.size, self.rng_for(index))
        raw = transform_map(label, self.preprocess, params, fill=_dontcare_fill(self.label_set))
        try:
            classes = self.label_set.raw_to_labels(raw, unknown=self.unknown)
        except ValueError as err:
            source = self.source_of(index, "label")
            where = f"label map {source}" if source else f"the label map of {path}"
            raise ValueError(f"{where}: {err}") from None
        sample: dict[str, torch.Tensor | str] = {
            "label": classes,
            "image": transform_image(image, self.preprocess, params),
        }
        if self.use_instance:
            if instance is None:
                raise ValueError(f"{path}: no instance map for this sample: provide one or pass use_instance=False")
            sample["instance"] = transform_map(instance, self.preprocess, params)
        sample["path"] = path
        return sample


class PairedFilesDataset(SegmapDataset):
    """A dataset over a list of (image, label[, instance]) files already paired."""

    def __init__(
        self,
        samples: Sequence[SamplePaths],
        label_set: str | LabelSet,
        preprocess: PreprocessConfig,
        *,
        use_instance: bool = False,
        seed: int | None = None,
        unknown: str = "error",
        max_dataset_size: int | None = None,
    ) -> None:
        super().__init__(label_set, preprocess, use_instance=use_instance, seed=seed, unknown=unknown)
        self.samples = list(samples)[:max_dataset_size]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, Image.Image, Image.Image | None, str]:
        paths = self.samples[index]
        image = open_image(paths.image, "image").convert("RGB")
        label = open_image(paths.label, "label map")
        instance = None
        if self.use_instance and paths.instance is not None:
            instance = open_image(paths.instance, "instance map")
        return image, label, instance, str(paths.image)

    def source_of(self, index: int, kind: str) -> str | None:
        paths = self.samples[index]
        found = {"image": paths.image, "label": paths.label, "instance": paths.instance}.get(kind)
        return str(found) if found is not None else None


def collect_files(
    folder: Path,
    extensions: Sequence[str],
    *,
    suffix: str = "",
    recursive: bool = False,
) -> dict[str, Path]:
    """Files in folder keyed by relative path without extension (and without `suffix`).

    Two files with one key (a.jpg and a.png) raise ValueError naming both.
    """
    found: dict[str, Path] = {}
    pattern = "**/*" if recursive else "*"
    for path in folder.glob(pattern):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in found:
            raise ValueError(
                f"two files in {folder} share the name {stem!r}: {found[stem].name} and {path.name}: keep one"
            )
        found[stem] = path
    return found


def _listed(paths: dict[str, Path], keys: set[str], folder: Path | None) -> str:
    """The first MAX_LISTED of these files by name (relative to folder), with a count of the rest."""
    chosen = [paths[k] for k in sorted(keys, key=_natural_key)]
    shown = [p.relative_to(folder).as_posix() if folder is not None else p.name for p in chosen]
    text = ", ".join(shown[:MAX_LISTED])
    if len(shown) > MAX_LISTED:
        text += f", ... (+{len(shown) - MAX_LISTED} more)"
    return text


def _count(n: int, singular: str, plural: str) -> str:
    """'1 image has' / '3 images have'."""
    return f"{n} {singular if n == 1 else plural}"


def pair_files(
    images: dict[str, Path],
    labels: dict[str, Path],
    instances: dict[str, Path] | None = None,
    *,
    folders: tuple[Path | None, Path | None, Path | None] = (None, None, None),
    skip_unpaired: bool = False,
) -> list[SamplePaths]:
    """Pair files that share a key; unpaired files raise one ValueError listing them by name.

    With `skip_unpaired=True` unpaired files are dropped instead. `folders` (image, label,
    instance) makes the listed names relative to them (e.g. `city/x.png`).
    """
    paired = set(images) & set(labels)
    keys = paired & set(instances) if instances is not None else paired
    problems = []
    if no_label := set(images) - set(labels):
        problems.append(f"{_count(len(no_label), 'image has', 'images have')} no label: "
                        f"{_listed(images, no_label, folders[0])}")
    if no_image := set(labels) - set(images):
        problems.append(f"{_count(len(no_image), 'label has', 'labels have')} no image: "
                        f"{_listed(labels, no_image, folders[1])}")
    if instances is not None:
        if no_inst := paired - set(instances):
            problems.append(f"{_count(len(no_inst), 'label has', 'labels have')} no instance map: "
                            f"{_listed(labels, no_inst, folders[1])}")
        if orphans := set(instances) - paired:
            problems.append(f"{_count(len(orphans), 'instance map has', 'instance maps have')} no image/label "
                            f"pair: {_listed(instances, orphans, folders[2])}")
    if problems and not skip_unpaired:
        hint = " (or use_instance=False)" if instances is not None else ""
        raise ValueError(
            "; ".join(problems)
            + f" — fix the folders or pass skip_unpaired=True to use the {len(keys)} complete samples{hint}"
        )
    return [
        SamplePaths(images[k], labels[k], instances[k] if instances is not None else None)
        for k in sorted(keys, key=_natural_key)
    ]


def _require_dir(folder: Path, layout: str) -> None:
    """FileNotFoundError naming the expected layout when a dataset folder is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"missing folder {folder}: expected the layout {layout}; check root and split")


def _require_files(found: dict[str, Path], folder: Path, layout: str) -> None:
    """FileNotFoundError naming the expected layout when a dataset folder has no usable files."""
    if not found:
        raise FileNotFoundError(f"no usable files in {folder}: expected the layout {layout}; check root and split")


def _is_train(split: str) -> bool:
    return split in TRAIN_SPLITS


def _reference_split(split: str, names: dict[str, str]) -> str:
    """Map a user split to a folder name ('test' reads the validation set, as in the reference)."""
    if split not in names:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(sorted(names))}")
    return names[split]


def _scan(
    layout: str,
    image_dir: Path,
    label_dir: Path,
    instance_dir: Path | None,
    *,
    image_ext: Sequence[str] = IMAGE_EXTENSIONS,
    label_ext: Sequence[str] = LABEL_EXTENSIONS,
    suffixes: tuple[str, str, str] = ("", "", ""),
    recursive: bool = False,
    skip_unpaired: bool = False,
) -> list[SamplePaths]:
    """List, check and pair the files of one split."""
    dirs = [image_dir, label_dir] + ([instance_dir] if instance_dir is not None else [])
    for folder in dirs:
        _require_dir(folder, layout)
    images = collect_files(image_dir, image_ext, suffix=suffixes[0], recursive=recursive)
    labels = collect_files(label_dir, label_ext, suffix=suffixes[1], recursive=recursive)
    _require_files(images, image_dir, layout)
    _require_files(labels, label_dir, layout)
    instances = None
    if instance_dir is not None:
        instances = collect_files(instance_dir, label_ext, suffix=suffixes[2], recursive=recursive)
        _require_files(instances, instance_dir, layout)
    return pair_files(
        images, labels, instances, folders=(image_dir, label_dir, instance_dir), skip_unpaired=skip_unpaired
    )


class COCOStuffDataset(PairedFilesDataset):
    """COCO-Stuff in the reference layout: `{split}_img/*.jpg`, `{split}_label/*.png` (raw ids,
    255 = unlabeled), `{split}_inst/*.png` (instance ids, used by default)."""

    SPLITS = {"train": "train", "val": "val", "test": "val"}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: PreprocessConfig | None = None,
        *,
        use_instance: bool | None = None,
        label_set: str | LabelSet = "coco",
        skip_unpaired: bool = False,
        seed: int | None = None,
        unknown: str = "error",
        max_dataset_size: int | None = None,
    ) -> None:
        labels = get_label_set(label_set)
        use_instance = labels.use_instance if use_instance is None else use_instance
        phase = _reference_split(split, self.SPLITS)
        root = Path(root)
        layout = f"{root}/{phase}_img/*.jpg + {phase}_label/*.png" + (f" + {phase}_inst/*.png" if use_instance else "")
        samples = _scan(
            layout,
            root / f"{phase}_img",
            root / f"{phase}_label",
            root / f"{phase}_inst" if use_instance else None,
            skip_unpaired=skip_unpaired,
        )
        super().__init__(
            samples,
            labels,
            preprocess or preset_preprocess("coco", _is_train(split)),
            use_instance=use_instance,
            seed=seed,
            unknown=unknown,
            max_dataset_size=max_dataset_size,
        )


class ADE20KDataset(PairedFilesDataset):
    """ADEChallengeData2016: `images/{training,validation}/*.jpg` and
    `annotations/{training,validation}/*.png` (raw 0 = unlabeled -> don't-care); no instances."""

    SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation",
              "test": "validation"}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: PreprocessConfig | None = None,
        *,
        label_set: str | LabelSet = "ade20k",
        skip_unpaired: bool = False,
        seed: int | None = None,
        unknown: str = "error",
        max_dataset_size: int | None = None,
    ) -> None:
        phase = _reference_split(split, self.SPLITS)
        root = Path(root)
        layout = f"{root}/images/{phase}/*.jpg + {root}/annotations/{phase}/*.png"
        samples = _scan(layout, root / "images" / phase, root / "annotations" / phase, None, skip_unpaired=skip_unpaired)
        super().__init__(
            samples,
            label_set,
            preprocess or preset_preprocess("ade20k", _is_train(split)),
            use_instance=False,
            seed=seed,
            unknown=unknown,
            max_dataset_size=max_dataset_size,
        )


class CityscapesDataset(PairedFilesDataset):
    """Cityscapes: `leftImg8bit/{split}/<city>/*_leftImg8bit.png`,
    `gtFine/{split}/<city>/*_gtFine_labelIds.png` and `*_gtFine_instanceIds.png` (used by default)."""

    SPLITS = {"train": "train", "val": "val", "test": "val"}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: PreprocessConfig | None = None,
        *,
        use_instance: bool | None = None,
        label_set: str | LabelSet = "cityscapes",
        skip_unpaired: bool = False,
        seed: int | None = None,
        unknown: str = "error",
        max_dataset_size: int | None = None,
    ) -> None:
        labels = get_label_set(label_set)
        use_instance = labels.use_instance if use_instance is None else use_instance
        phase = _reference_split(split, self.SPLITS)
        root = Path(root)
        gt = root / "gtFine" / phase
        layout = (
            f"{root}/leftImg8bit/{phase}/<city>/*_leftImg8bit.png + gtFine/{phase}/<city>/*_gtFine_labelIds.png"
            + (" + *_gtFine_instanceIds.png" if use_instance else "")
        )
        samples = _scan(
            layout,
            root / "leftImg8bit" / phase,
            gt,
            gt if use_instance else None,
            image_ext=(".png",),
            label_ext=(".png",),
            suffixes=("_leftImg8bit", "_gtFine_labelIds", "_gtFine_instanceIds"),
            recursive=True,
            skip_unpaired=skip_unpaired,
        )
        super().__init__(
            samples,
            labels,
            preprocess or preset_preprocess("cityscapes", _is_train(split)),
            use_instance=use_instance,
            seed=seed,
            unknown=unknown,
            max_dataset_size=max_dataset_size,
        )


def custom_label_set(
    label_nc: int,
    *,
    contain_dontcare_label: bool = False,
    dontcare_id: int | None = None,
    use_instance: bool = False,
    name: str = "custom",
) -> LabelSet:
    """A LabelSet for a user's own raw ids 0..label_nc-1 (``spade_core.labels.numbered_label_set``'s classes and colours).

    `dontcare_id` is the raw id read as don't-care; it implies a don't-care class. A don't-care
    class without an id reads 255 as don't-care, as the reference's custom dataset does.
    """
    if dontcare_id is not None:
        contain_dontcare_label = True
    elif contain_dontcare_label:
        dontcare_id = 255
    return numbered_label_set(
        label_nc,
        contain_dontcare_label=contain_dontcare_label,
        dontcare_raw_ids=() if dontcare_id is None else (int(dontcare_id),),
        use_instance=use_instance,
        name=name,
    )


class FolderDataset(PairedFilesDataset):
    """Any image folder + label folder [+ instance folder], matched by file stem.

    Default layout: `root/images`, `root/labels`, `root/instances` (optional), or the same under
    `root/<split>/`. Classes come from `label_set` (a name or LabelSet) or from `label_nc` with
    `contain_dontcare_label` / `dontcare_id` (the raw id read as don't-care, e.g. 255).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: PreprocessConfig | None = None,
        *,
        label_set: str | LabelSet | None = None,
        label_nc: int | None = None,
        contain_dontcare_label: bool = False,
        dontcare_id: int | None = None,
        image_dir: str | Path = "images",
        label_dir: str | Path = "labels",
        instance_dir: str | Path | None = None,
        use_instance: bool | None = None,
        skip_unpaired: bool = False,
        seed: int | None = None,
        unknown: str = "error",
        max_dataset_size: int | None = None,
    ) -> None:
        root = Path(root)
        base = root / split if (root / split / image_dir).is_dir() else root
        images, labels = base / image_dir, base / label_dir
        instances = base / (instance_dir or "instances")
        if use_instance is None:
            use_instance = instance_dir is not None or instances.is_dir()
        if label_set is None:
            if label_nc is None:
                raise ValueError(
                    "the folder format needs its classes: pass label_nc=<number of classes> "
                    "(with dontcare_id=255 if 255 marks unlabeled pixels) or label_set='ade20k'|'coco'|..."
                )
            label_set = custom_label_set(
                label_nc,
                contain_dontcare_label=contain_dontcare_label,
                dontcare_id=dontcare_id,
                use_instance=use_instance,
            )
        layout = f"{images}/*.jpg|png + {labels}/*.png" + (f" + {instances}/*.png" if use_instance else "")
        samples = _scan(layout, images, labels, instances if use_instance else None, skip_unpaired=skip_unpaired)
        super().__init__(
            samples,
            label_set,
            preprocess or preset_preprocess("folder", _is_train(split)),
            use_instance=use_instance,
            seed=seed,
            unknown=unknown,
            max_dataset_size=max_dataset_size,
        )

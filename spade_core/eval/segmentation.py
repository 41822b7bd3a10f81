"""Segmentation consistency: segment generated images and score them against the input label maps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import DATASETS

IGNORE_LABEL = 255

# Official Cityscapes id -> trainId table (cityscapesScripts `labels.py`); ids not listed are ignored.
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_35_TO_19: dict[int, int] = {i: _CITYSCAPES_TRAIN_IDS.get(i, IGNORE_LABEL) for i in range(35)}

CITYSCAPES_19_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# How the paper (Park et al. 2019, Sec. 4 and Table 1) measured segmentation consistency, per dataset
# (spade_core.registry). Documentation only: the segmenter is pluggable, and these networks are not shipped.
PAPER_PROTOCOL: dict[str, dict[str, Any]] = {
    name: dict(entry.evaluation) for name, entry in DATASETS.items() if entry.evaluation is not None
}

LabelMap = Mapping[int, int] | torch.Tensor


def apply_label_map(labels: torch.Tensor, label_map: LabelMap, fill: int = IGNORE_LABEL) -> torch.Tensor:
    """Map dataset label ids to segmenter classes; ids the map does not cover become `fill`."""
    labels = labels.long()
    if isinstance(label_map, torch.Tensor):
        lut = label_map.long().to(labels.device)
    else:
        if not label_map:
            raise ValueError("label_map is empty: pass a dict like CITYSCAPES_35_TO_19 or None")
        if min(label_map) < 0:
            raise ValueError(f"label_map has a negative key {min(label_map)}: keys are dataset label ids >= 0")
        lut = torch.full((max(label_map) + 1,), fill, dtype=torch.long)
        for source, target in label_map.items():
            lut[source] = target
        lut = lut.to(labels.device)
    if labels.numel() and labels.min() < 0:
        raise ValueError(f"labels contain negative values ({int(labels.min())}): pass class indices >= 0")
    outside = labels >= lut.numel()
    mapped = lut[labels.clamp(max=lut.numel() - 1)]
    return torch.where(outside, torch.full_like(mapped, fill), mapped)


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(C, C) int64 counts with rows = target class, columns = predicted class; `ignore_index` pixels skipped."""
    pred, target = torch.as_tensor(pred).long(), torch.as_tensor(target).long()
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape: "
            "resize the prediction to the label map"
        )
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    pred, target = pred[keep].cpu(), target[keep].cpu()
    for name, values in (("target", target), ("prediction", pred)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.numel():
            found = sorted(set(bad.unique()[:5].tolist()))
            fix = "pass ignore_index or a label_map" if name == "target" else "check the segmenter's number of classes"
            raise ValueError(f"{name} has values {found} outside 0..{num_classes - 1}: {fix}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes).view(
        num_classes, num_classes
    )


def mean_iou(conf: torch.Tensor) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU from a confusion matrix (rows = target).

    Classes absent from both target and prediction have no IoU (None) and are left out of the mean;
    with no counted pixels at all, mIoU and accuracy are None.
    """
    conf = torch.as_tensor(conf).double()
    if conf.dim() != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"expected a square (C, C) confusion matrix, got {tuple(conf.shape)}")
    hits = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - hits
    present = union > 0
    iou = torch.where(present, hits / union.clamp(min=1), torch.zeros_like(hits))
    total = conf.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else None,
        "pixel_accuracy": float(hits.sum() / total) if total > 0 else None,
        "per_class_iou": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist())],
    }


Segmenter = nn.Module | Callable[[torch.Tensor], torch.Tensor]


class SegmentationConsistency:
    """Accumulates the confusion matrix of `segmenter(generated images)` against the input labels.

    `segmenter` maps images in [0, 1], (N, 3, H, W), to logits (N, C, h, w) or labels (N, h, w); outputs
    are resized to the label map (logits bilinearly, labels nearest). `label_map` maps dataset labels
    to the segmenter's classes first (its unmapped ids count as ignored, 255 unless `ignore_index`).
    A module is called as it is, on its own device: put it in eval mode first.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        num_classes: int,
        ignore_index: int | None = None,
        label_map: LabelMap | None = None,
    ) -> None:
        if not callable(segmenter):  # ValueError, like every user mistake in spade's API (DESIGN.md)
            raise ValueError(  # noqa: TRY004
                f"segmenter is a {type(segmenter).__name__}, not callable: pass an nn.Module or a function"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}: pass the segmenter's class count")
        self.segmenter = segmenter
        self.num_classes = num_classes
        self.label_map = label_map
        self.ignore_index = IGNORE_LABEL if ignore_index is None and label_map is not None else ignore_index
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.num_images = 0

    @torch.no_grad()
    def predict(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Class labels (N, H, W) for images in [0, 1], resized to `size`."""
        device = module_device(self.segmenter)
        out = self.segmenter(images.to(device) if device is not None else images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ValueError(  # noqa: TRY004
                f"segmenter returned {type(out).__name__}: return a tensor of logits or labels"
            )
        if out.dim() == 4:
            if out.shape[1] != self.num_classes:
                raise ValueError(
                    f"segmenter returned {out.shape[1]} channels but num_classes={self.num_classes}: "
                    "pass the segmenter's class count"
                )
            if tuple(out.shape[-2:]) != tuple(size):
                out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
            return out.argmax(1)
        if out.dim() == 3:
            if tuple(out.shape[-2:]) != tuple(size):
                out = F.interpolate(out[:, None].float(), size=size, mode="nearest")[:, 0]
            return out.long()
        raise ValueError(
            f"segmenter output has shape {tuple(out.shape)}: return logits (N, C, H, W) or labels (N, H, W)"
        )

    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: images in [0, 1], (N, 3, H, W), and their input label maps (N, H, W)."""
        self.conf += self.batch_confusion(images, labels)
        self.num_images += images.shape[0]

    def batch_confusion(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The (C, C) confusion matrix of one batch, without adding it to the running total."""
        if labels.dim() != 3 or images.dim() != 4 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"expected images (N, 3, H, W) and labels (N, H, W), got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}: pass one label map per image"
            )
        target = labels.long().cpu()
        if self.label_map is not None:
            target = apply_label_map(target, self.label_map)
        pred = self.predict(images, tuple(target.shape[-2:])).cpu()
        return confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Any]:
        """mIoU, pixel accuracy and per-class IoU over everything added so far."""
        return mean_iou(self.conf)


def module_device(obj: object) -> torch.device | None:
    """The device of an nn.Module's first parameter or buffer, or None for plain callables."""
    if isinstance(obj, nn.Module):
        for tensor in obj.parameters():
            return tensor.device
        for tensor in obj.buffers():
            return tensor.device
    return None

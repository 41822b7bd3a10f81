"""The metrics `evaluate` iterates: each one sees batches, keeps resumable state and reports its numbers.

A metric is one class (subclass `Metric`): `measure(batch)` computes a batch's contribution without
changing any state and `accumulate(contribution)` adds it, so an interruption never leaves half a
batch counted; `state_dict()` / `load_state_dict()` round-trip that state through numpy arrays (the
runner saves them in its progress file); `result()` returns the numbers, details and skip reasons.
`observe_real(batch)` sees every batch's real images, including batches a resumed run skips.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from spade_core.eval.diversity import mean_pairwise_distance
from spade_core.eval.fid import (
    FeatureStatsCache,
    frechet_distance_from_features,
    kernel_inception_distance,
)
from spade_core.eval.segmentation import (
    LabelMap,
    SegmentationConsistency,
    Segmenter,
    module_device,
)

KID_SUBSET_SIZE = 1000
KID_NUM_SUBSETS = 100


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], rounded to 8 bits as if saved to PNG (what file-based FID tools see)."""
    return torch.round(((images.float() + 1) / 2).clamp(0, 1) * 255) / 255


def fingerprint(obj: object) -> str:
    """A stable hex digest of a model's weights (or a callable's qualified name), for cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    target = getattr(obj, "__self__", obj)
    if isinstance(target, nn.Module):
        digest.update(type(target).__qualname__.encode())
        for name, tensor in target.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    name = getattr(obj, "__qualname__", type(obj).__qualname__)
    digest.update(f"{getattr(obj, '__module__', '')}.{name}".encode())
    return digest.hexdigest()


def describe_label_map(label_map: LabelMap | None) -> str | None:
    """A short JSON-friendly description of a label map (its contents, for cache keys and reports)."""
    if label_map is None:
        return None
    if isinstance(label_map, torch.Tensor):
        return "lut:" + hashlib.blake2b(label_map.long().cpu().numpy().tobytes(), digest_size=8).hexdigest()
    return "map:" + hashlib.blake2b(json.dumps(sorted(label_map.items())).encode(), digest_size=8).hexdigest()


@dataclass
class EvalBatch:
    """One batch as metrics see it: the data, the scored draw (`fake`) and a way to make more draws."""

    index: int
    start: int  # position of the batch's first sample in the dataset
    ids: list[str]  # content hash per sample
    labels: torch.Tensor  # (N, H, W) int64
    instances: torch.Tensor | None
    real: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    fake: torch.Tensor | None = None  # draw 0, (N, 3, H, W) in [-1, 1]; None in observe_real
    generate: Callable[[int], torch.Tensor] | None = None  # draw k >= 1 of this batch, in [-1, 1]

    @cached_property
    def real01(self) -> torch.Tensor:
        """The real images in [0, 1], rounded to 8 bits."""
        return to_unit_range(self.real)

    @cached_property
    def fake01(self) -> torch.Tensor:
        """The scored generated images in [0, 1], rounded to 8 bits."""
        if self.fake is None:
            raise ValueError("this batch has no generated images yet: use fake01 in measure(), not observe_real()")
        return to_unit_range(self.fake)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class MetricResult:
    """What one metric adds to the report: numbers, details, skip reasons and cache notes."""

    values: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)


class Metric:
    """Base class of evaluation metrics; a new metric overrides `measure`, `accumulate`, `result` and its state."""

    name: str = ""  # unique among the metrics of one evaluation; prefixes its state in the progress file
    keys: ClassVar[tuple[str, ...]] = ()  # the report["metrics"] keys it produces

    def settings(self) -> dict[str, Any]:
        """JSON-friendly settings that change the numbers; saved progress is resumed only when they agree."""
        return {}

    def observe_real(self, batch: EvalBatch) -> None:
        """See a batch's real images (every batch, also those a resumed run does not generate again)."""

    def measure(self, batch: EvalBatch) -> Any:
        """The contribution of one generated batch, computed without changing the metric's state."""
        raise NotImplementedError

    def accumulate(self, contribution: Any) -> None:
        """Add a contribution returned by `measure`."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """The accumulated state as numpy arrays (saved for resuming)."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what `state_dict` returned."""

    def checkpoint(self) -> None:
        """Save the metric's own caches; called whenever the runner saves its progress."""

    def result(self) -> MetricResult:
        """The final numbers (report["metrics"]), details and skip reasons."""
        raise NotImplementedError

    @classmethod
    def table_rows(cls, values: Mapping[str, float], details: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(name, value) rows of the printed table for this metric's keys present in `values`."""
        return [(key, f"{values[key]:.4f}") for key in cls.keys if key in values]


class SkippedMetric(Metric):
    """A metric that was not configured: it only reports why its keys are missing."""

    def __init__(self, keys: tuple[str, ...], reason: str) -> None:
        self.skipped_keys, self.reason = tuple(keys), reason
        self.name = "skipped:" + ",".join(self.skipped_keys)

    def measure(self, batch: EvalBatch) -> None:
        """Nothing to measure."""
        return

    def accumulate(self, contribution: Any) -> None:
        """Nothing to add."""

    def result(self) -> MetricResult:
        """Each key skipped with the reason."""
        return MetricResult(skipped={key: self.reason for key in self.skipped_keys})


def _extract(feature_fn: Callable[[torch.Tensor], torch.Tensor], images01: torch.Tensor) -> np.ndarray:
    device = module_device(feature_fn)
    feats = feature_fn(images01.to(device) if device is not None else images01)
    return feats.detach().float().flatten(1).cpu().numpy()


class FIDKIDMetric(Metric):
    """FID and KID between Inception features of real and generated images (both from one extractor).

    With `cache_dir`, real features are cached per sample (reused by later runs as far as the data
    agrees) and a partial cache is written whenever the runner saves progress.
    """

    name = "fid_kid"
    keys = ("fid", "kid", "kid_std")

    def __init__(
        self, inception: Callable[[torch.Tensor], torch.Tensor], cache_dir: str | Path | None = None, seed: int = 0
    ) -> None:
        self.inception, self.seed = inception, seed
        self.key = fingerprint(inception)
        self.real_cache = self.cached_real = None
        if cache_dir is not None:
            self.real_cache = FeatureStatsCache(
                Path(cache_dir) / f"real_features_{self.key[:16]}.npz", key=f"inception={self.key};uint8-rounded"
            )
            self.cached_real = self.real_cache.load()
        self.real_reusable = self.cached_real is not None
        self.real_chunks: list[np.ndarray] = []
        self.real_ids: list[str] = []
        self.real_from_cache = 0
        self.fake_features: list[np.ndarray] = []

    def settings(self) -> dict[str, Any]:
        """The feature extractor's weights."""
        return {"inception": self.key}

    def observe_real(self, batch: EvalBatch) -> None:
        """Real features from the cache while it agrees with the data, else from the extractor."""
        start, n = batch.start, len(batch)
        if self.real_reusable and self.cached_real.sample_ids[start:start + n] == batch.ids:
            self.real_chunks.append(self.cached_real.features[start:start + n])
            self.real_from_cache += n
        else:
            self.real_reusable = False
            self.real_chunks.append(_extract(self.inception, batch.real01))
        self.real_ids.extend(batch.ids)

    def measure(self, batch: EvalBatch) -> np.ndarray:
        """Features of the generated images."""
        return _extract(self.inception, batch.fake01)

    def accumulate(self, contribution: np.ndarray) -> None:
        """Keep the batch's generated features."""
        self.fake_features.append(contribution)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The generated features so far (real ones live in the real-feature cache)."""
        feats = np.concatenate(self.fake_features) if self.fake_features else np.zeros((0, 0), np.float32)
        return {"fake_features": feats.astype(np.float32)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the generated features."""
        feats = state["fake_features"]
        self.fake_features = [feats] if feats.size else []

    def checkpoint(self) -> None:
        """Write the real features computed so far as a partial cache."""
        if self.real_cache is not None and self.real_chunks and len(self.real_ids) > self.real_from_cache:
            self.real_cache.save(np.concatenate(self.real_chunks), self.real_ids, complete=False)

    def result(self) -> MetricResult:
        """FID, KID (mean and std over subsets), feature counts and the real cache's use."""
        out = MetricResult()
        num_samples = len(self.real_ids)
        real = np.concatenate(self.real_chunks)
        fake = np.concatenate(self.fake_features)
        if self.real_cache is not None:
            # Rewrite the cache when rows were computed, or to mark a fully reused partial cache complete;
            # a larger cache this run used a prefix of is kept as it is.
            cached = self.cached_real
            finished_partial = cached is not None and not cached.complete and len(cached.sample_ids) == num_samples
            if self.real_from_cache < num_samples or finished_partial:
                self.real_cache.save(real, self.real_ids, complete=True)
            loaded = self.real_from_cache
            out.cache["real_features"] = (
                "loaded" if loaded == num_samples else "partly loaded" if loaded else "computed"
            )
            out.cache["real_features_from_cache"] = loaded
        out.details.update(
            feature_extractor=type(self.inception).__name__,
            feature_dim=int(real.shape[1]),
            num_real_features=int(real.shape[0]),
            num_generated_features=int(fake.shape[0]),
        )
        if num_samples < 2:
            out.skipped["fid"] = out.skipped["kid"] = "FID/KID need at least 2 samples: evaluate more images"
            return out
        out.values["fid"] = frechet_distance_from_features(real, fake)
        subset = min(KID_SUBSET_SIZE, num_samples)
        out.values["kid"], out.values["kid_std"] = kernel_inception_distance(
            real, fake, num_subsets=KID_NUM_SUBSETS, subset_size=subset, seed=self.seed
        )
        out.details.update(kid_subset_size=subset, kid_num_subsets=KID_NUM_SUBSETS)
        if num_samples <= real.shape[1]:
            out.details["fid_note"] = (
                f"{num_samples} samples <= {real.shape[1]} feature dims: FID is biased upwards at this size; "
                "compare only runs with equal sample counts"
            )
        return out

    @classmethod
    def table_rows(cls, values: Mapping[str, float], details: Mapping[str, Any]) -> list[tuple[str, str]]:
        """FID, and KID with its standard deviation."""
        rows = []
        if "fid" in values:
            rows.append(("FID", f"{values['fid']:.4f}"))
        if "kid" in values:
            rows.append(("KID", f"{values['kid']:.5f} ± {values.get('kid_std', 0.0):.5f}"))
        return rows


class SegmentationMetric(Metric):
    """Segmentation consistency: mIoU and pixel accuracy of `segmenter(generated)` against the input labels."""

    name = "segmentation"
    keys = ("miou", "pixel_accuracy")

    def __init__(
        self,
        segmenter: Segmenter,
        num_classes: int | None,
        ignore_index: int | None = None,
        label_map: LabelMap | None = None,
    ) -> None:
        if num_classes is None:
            raise ValueError("a segmenter needs num_classes: pass the number of classes the segmenter predicts")
        self.segmenter, self.label_map = segmenter, label_map
        self.seg = SegmentationConsistency(segmenter, num_classes, ignore_index, label_map)

    def settings(self) -> dict[str, Any]:
        """The segmenter's weights, its classes and the label mapping."""
        return {
            "segmenter": fingerprint(self.segmenter),
            "num_classes": self.seg.num_classes,
            "ignore_index": self.seg.ignore_index,
            "label_map": describe_label_map(self.label_map),
        }

    def measure(self, batch: EvalBatch) -> tuple[torch.Tensor, int]:
        """The batch's confusion matrix and image count."""
        return self.seg.batch_confusion(batch.fake01, batch.labels), len(batch)

    def accumulate(self, contribution: tuple[torch.Tensor, int]) -> None:
        """Add the confusion matrix."""
        conf, n = contribution
        self.seg.conf += conf
        self.seg.num_images += n

    def state_dict(self) -> dict[str, np.ndarray]:
        """The confusion matrix and the number of segmented images."""
        return {"conf": self.seg.conf.numpy().copy(), "num_images": np.array(self.seg.num_images)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the confusion matrix."""
        self.seg.conf = torch.from_numpy(np.array(state["conf"], dtype=np.int64))
        self.seg.num_images = int(state["num_images"])

    def result(self) -> MetricResult:
        """mIoU and pixel accuracy; per-class IoU in the details."""
        scores = self.seg.compute()
        out = MetricResult()
        out.details.update(
            segmenter=getattr(self.segmenter, "__qualname__", type(self.segmenter).__name__),
            num_classes=self.seg.num_classes,
            ignore_index=self.seg.ignore_index,
            label_map=describe_label_map(self.label_map),
            num_segmented=self.seg.num_images,
            per_class_iou=scores["per_class_iou"],
        )
        if scores["miou"] is None:
            reason = "every label pixel was ignored: check ignore_index / label_map"
            out.skipped["miou"] = out.skipped["pixel_accuracy"] = reason
        else:
            out.values["miou"], out.values["pixel_accuracy"] = scores["miou"], scores["pixel_accuracy"]
        return out

    @classmethod
    def table_rows(cls, values: Mapping[str, float], details: Mapping[str, Any]) -> list[tuple[str, str]]:
        """mIoU and pixel accuracy in percent."""
        if "miou" not in values:
            return []
        return [("mIoU", f"{100 * values['miou']:.2f} %"), ("pixel accuracy", f"{100 * values['pixel_accuracy']:.2f} %")]


class DiversityMetric(Metric):
    """Mean pairwise distance between `num_draws` outputs per layout (LPIPS with `lpips_fn`, else L1)."""

    name = "diversity"
    keys = ("diversity",)

    def __init__(
        self, num_draws: int, lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        if num_draws < 2:
            raise ValueError(f"diversity_seeds={num_draws} gives no pairs: use 0 to skip diversity or 2 or more")
        self.num_draws, self.lpips_fn = num_draws, lpips_fn
        self.total, self.count, self.metric, self.note = 0.0, 0, "", ""

    def settings(self) -> dict[str, Any]:
        """The number of draws and the LPIPS network."""
        return {"diversity_seeds": self.num_draws, "lpips": fingerprint(self.lpips_fn) if self.lpips_fn else ""}

    def measure(self, batch: EvalBatch) -> tuple[float, int, str, str]:
        """Generate the extra draws and score the batch's pairwise distance."""
        draws = [batch.fake] + [batch.generate(k) for k in range(1, self.num_draws)]
        scored = mean_pairwise_distance(draws, metric="lpips", lpips_fn=self.lpips_fn)
        return scored["value"] * len(batch), len(batch), scored["metric"], scored.get("note", "")

    def accumulate(self, contribution: tuple[float, int, str, str]) -> None:
        """Add the batch's sum of distances."""
        value, n, self.metric, self.note = contribution
        self.total += value
        self.count += n

    def state_dict(self) -> dict[str, np.ndarray]:
        """The running sum, count and the distance used."""
        return {
            "sum": np.array(self.total),
            "count": np.array(self.count),
            "metric": np.array(self.metric),
            "note": np.array(self.note),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the running sum."""
        self.total, self.count = float(state["sum"]), int(state["count"])
        self.metric, self.note = str(state["metric"]), str(state["note"])

    def result(self) -> MetricResult:
        """The mean distance per layout."""
        out = MetricResult(values={"diversity": self.total / max(self.count, 1)})
        out.details.update(diversity_metric=self.metric, diversity_seeds=self.num_draws)
        if self.note:
            out.details["diversity_note"] = self.note
        return out

    @classmethod
    def table_rows(cls, values: Mapping[str, float], details: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The distance, named."""
        if "diversity" not in values:
            return []
        return [(f"diversity ({details.get('diversity_metric', '?')})", f"{values['diversity']:.4f}")]


STANDARD_METRICS: tuple[type[Metric], ...] = (FIDKIDMetric, SegmentationMetric, DiversityMetric)

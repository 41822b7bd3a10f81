"""`evaluate`: run a generator over a labelled dataset and report FID, KID, segmentation consistency and diversity.

Progress is written under `cache_dir` (real-image features, reusable by later runs, and the partial
state of this run), so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spade_core.eval.diversity import mean_pairwise_distance
from spade_core.eval.fid import (
    FeatureStatsCache,
    frechet_distance_from_features,
    kernel_inception_distance,
    save_npz_atomic,
)
from spade_core.eval.segmentation import (
    LabelMap,
    SegmentationConsistency,
    Segmenter,
    module_device,
)

GenerateFn = Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor]

DIVERSITY_SEED_STRIDE = 1_000_003  # extra diversity draws use seeds far from the main draws' seed + batch_index
KID_SUBSET_SIZE = 1000
KID_NUM_SUBSETS = 100
_SAVE_EVERY_S = 60.0


def draw_seed(seed: int, batch_index: int, draw: int = 0) -> int:
    """The seed passed to `generate_fn` for one batch and draw; draw 0 is the image scored by FID/mIoU."""
    return seed + batch_index + draw * DIVERSITY_SEED_STRIDE


def _to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], rounded to 8 bits as if saved to PNG (what file-based FID tools see)."""
    return torch.round(((images.float() + 1) / 2).clamp(0, 1) * 255) / 255


def _fingerprint(obj: object) -> str:
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


def _sample_id(label: torch.Tensor, image: torch.Tensor, instance: torch.Tensor | None) -> str:
    """Content hash of one sample, so caches are reused exactly as far as the data agrees."""
    digest = hashlib.blake2b(digest_size=12)
    for part in (label, image, instance):
        if part is not None:
            part = part.detach().cpu().contiguous()
            digest.update(f"{tuple(part.shape)}{part.dtype}".encode())
            digest.update(part.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_sample(index: int, sample: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(sample, Mapping) or "label" not in sample or "image" not in sample:
        raise ValueError(f"sample {index} is not a dict with 'label' and 'image': yield dict(label=..., image=...)")
    label, image = torch.as_tensor(sample["label"]), torch.as_tensor(sample["image"])
    if label.dim() != 2 or label.is_floating_point():
        raise ValueError(
            f"sample {index}: 'label' must be an integer (H, W) map, got {label.dtype} {tuple(label.shape)}: "
            "pass class indices without a channel dimension"
        )
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(
            f"sample {index}: 'image' must be a float (3, H, W) tensor in [-1, 1], got {image.dtype} "
            f"{tuple(image.shape)}: convert with image.float() / 127.5 - 1"
        )
    instance = sample.get("instance")
    return label.long(), image, None if instance is None else torch.as_tensor(instance)


def _batches(samples: Iterable[Mapping[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
    """Group samples into stacked batches with one content id per sample."""
    chunk: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    start = 0
    for index, sample in enumerate(samples):
        chunk.append(_check_sample(index, sample))
        if len(chunk) == batch_size:
            yield _collate(chunk, start)
            start += len(chunk)
            chunk = []
    if chunk:
        yield _collate(chunk, start)


def _collate(chunk: list, start: int) -> dict[str, Any]:
    labels, images, instances = zip(*chunk)
    has_instance = [inst is not None for inst in instances]
    if any(has_instance) and not all(has_instance):
        raise ValueError(f"samples {start}..{start + len(chunk) - 1} mix with and without 'instance': give all or none")
    try:
        batch = {
            "labels": torch.stack(labels),
            "images": torch.stack(images),
            "instances": torch.stack(instances) if all(has_instance) else None,
        }
    except RuntimeError as err:
        raise ValueError(
            f"samples {start}..{start + len(chunk) - 1} differ in size ({err}): resize them alike or use batch_size=1"
        ) from err
    batch["ids"] = [_sample_id(*parts) for parts in chunk]
    return batch


def _check_generated(out: Any, labels: torch.Tensor) -> torch.Tensor:
    expected = (labels.shape[0], 3, *labels.shape[-2:])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"generate_fn returned {got}, expected images {expected} in [-1, 1]: return one RGB image per label map"
        )
    return out.detach()


def _extract(feature_fn: Callable[[torch.Tensor], torch.Tensor], images01: torch.Tensor) -> np.ndarray:
    device = module_device(feature_fn)
    feats = feature_fn(images01.to(device) if device is not None else images01)
    return feats.detach().float().flatten(1).cpu().numpy()


class _Progress:
    """This run's partial state (generated features, confusion matrix, diversity sums) in one `.npz`."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path, self.key = path, key
        self.batches_done = 0
        self.sample_ids: list[str] = []
        self.fake_features: list[np.ndarray] = []
        self.conf: np.ndarray | None = None
        self.div_sum, self.div_count, self.div_metric, self.div_note = 0.0, 0, "", ""

    def load(self) -> bool:
        if self.path is None or not self.path.is_file():
            return False
        with np.load(self.path, allow_pickle=False) as data:
            if str(data["key"]) != self.key:
                return False
            self.batches_done = int(data["batches_done"])
            self.sample_ids = [str(s) for s in data["sample_ids"]]
            feats = data["fake_features"]
            self.fake_features = [feats] if feats.size else []
            self.conf = data["conf"] if data["conf"].size else None
            self.div_sum, self.div_count = float(data["div_sum"]), int(data["div_count"])
            self.div_metric, self.div_note = str(data["div_metric"]), str(data["div_note"])
        return self.batches_done > 0

    def save(self) -> None:
        if self.path is None:
            return
        feats = np.concatenate(self.fake_features) if self.fake_features else np.zeros((0, 0), np.float32)
        save_npz_atomic(
            self.path,
            key=np.array(self.key),
            batches_done=np.array(self.batches_done),
            sample_ids=np.array(self.sample_ids, dtype=str),
            fake_features=feats.astype(np.float32),
            conf=self.conf if self.conf is not None else np.zeros(0, np.int64),
            div_sum=np.array(self.div_sum),
            div_count=np.array(self.div_count),
            div_metric=np.array(self.div_metric),
            div_note=np.array(self.div_note),
        )


def evaluate(
    generate_fn: GenerateFn,
    samples: Iterable[Mapping[str, Any]],
    *,
    inception: Callable[[torch.Tensor], torch.Tensor] | None = None,
    segmenter: Segmenter | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    label_map: LabelMap | None = None,
    diversity_seeds: int = 0,
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
    lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Evaluate `generate_fn(labels (N,H,W), instances|None, seed) -> images (N,3,H,W) in [-1,1]` on `samples`.

    `samples` yields dicts {"label": (H, W) int64, "image": (3, H, W) in [-1, 1], optional "instance"}.
    FID/KID need `inception` (images in [0, 1] -> (N, D) features, e.g. `FIDInceptionV3.from_pretrained()`),
    mIoU needs `segmenter` and `num_classes`, diversity needs `diversity_seeds >= 2` (LPIPS with
    `lpips_fn`, else L1). Batch b is generated with seed `draw_seed(seed, b)` (diversity draws k with
    `draw_seed(seed, b, k)`); images are rounded to 8 bits before scoring, as saved PNGs would be.
    With `cache_dir`, real features are cached for later runs and an interrupted run resumes.
    Returns a JSON-serialisable report; skipped metrics are listed with the reason.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if segmenter is not None and num_classes is None:
        raise ValueError("a segmenter needs num_classes: pass the number of classes the segmenter predicts")
    if diversity_seeds == 1 or diversity_seeds < 0:
        raise ValueError(f"diversity_seeds={diversity_seeds} gives no pairs: use 0 to skip diversity or 2 or more")
    cache_path = Path(cache_dir) if cache_dir is not None else None

    seg = SegmentationConsistency(segmenter, num_classes, ignore_index, label_map) if segmenter is not None else None
    inception_key = _fingerprint(inception) if inception is not None else ""
    settings = {
        "inception": inception_key,
        "segmenter": _fingerprint(segmenter) if segmenter is not None else "",
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "label_map": _describe_label_map(label_map),
        "diversity_seeds": diversity_seeds,
        "lpips": _fingerprint(lpips_fn) if lpips_fn is not None else "",
        "batch_size": batch_size,
        "seed": seed,
    }
    settings_key = json.dumps(settings, sort_keys=True)
    run = _Progress(
        cache_path / f"progress_{hashlib.blake2b(settings_key.encode(), digest_size=8).hexdigest()}.npz"
        if cache_path is not None
        else None,
        settings_key,
    )
    resumed_batches = run.batches_done if run.load() else 0
    if resumed_batches and seg is not None and run.conf is not None:
        seg.conf += torch.from_numpy(run.conf)
        seg.num_images = len(run.sample_ids)

    real_cache = cached_real = None
    if inception is not None and cache_path is not None:
        real_cache = FeatureStatsCache(
            cache_path / f"real_features_{inception_key[:16]}.npz", key=f"inception={inception_key};uint8-rounded"
        )
        cached_real = real_cache.load()
    real_chunks: list[np.ndarray] = []
    real_ids: list[str] = []
    real_from_cache = 0
    real_reusable = cached_real is not None

    def save_state() -> None:
        run.save()
        if real_cache is not None and real_chunks and len(real_ids) > real_from_cache:
            real_cache.save(np.concatenate(real_chunks), real_ids, complete=False)

    total = math.ceil(len(samples) / batch_size) if hasattr(samples, "__len__") else None
    bar = tqdm(total=total, disable=not progress, desc="evaluate", unit="batch")
    last_save = time.monotonic()
    num_batches = num_samples = 0
    try:
        with torch.no_grad():
            for batch_index, batch in enumerate(_batches(samples, batch_size)):
                ids, labels, n = batch["ids"], batch["labels"], len(batch["ids"])
                start = num_samples
                num_samples += n
                num_batches += 1

                if inception is not None:
                    if real_reusable and cached_real.sample_ids[start:start + n] == ids:
                        real_chunks.append(cached_real.features[start:start + n])
                        real_from_cache += n
                    else:
                        real_reusable = False
                        real_chunks.append(_extract(inception, _to_unit_range(batch["images"])))
                    real_ids.extend(ids)

                if batch_index < run.batches_done:
                    if run.sample_ids[start:start + n] != ids:
                        raise ValueError(
                            f"{run.path} was written for different samples (batch {batch_index} differs): "
                            "delete it or pass another cache_dir"
                        )
                    bar.update(1)
                    continue

                fake = _check_generated(
                    generate_fn(labels, batch["instances"], draw_seed(seed, batch_index)), labels
                )
                fake01 = _to_unit_range(fake)
                fake_feats = _extract(inception, fake01) if inception is not None else None
                conf = seg.batch_confusion(fake01, labels) if seg is not None else None
                diversity = None
                if diversity_seeds >= 2:
                    draws = [fake] + [
                        _check_generated(
                            generate_fn(labels, batch["instances"], draw_seed(seed, batch_index, k)), labels
                        )
                        for k in range(1, diversity_seeds)
                    ]
                    diversity = mean_pairwise_distance(draws, metric="lpips", lpips_fn=lpips_fn)

                # Commit the batch only once all of it is computed, so saved progress never holds half a batch.
                if fake_feats is not None:
                    run.fake_features.append(fake_feats)
                if conf is not None:
                    seg.conf += conf
                    seg.num_images += n
                    run.conf = seg.conf.numpy().copy()
                if diversity is not None:
                    run.div_sum += diversity["value"] * n
                    run.div_count += n
                    run.div_metric, run.div_note = diversity["metric"], diversity.get("note", "")
                run.sample_ids.extend(ids)
                run.batches_done = batch_index + 1
                bar.update(1)
                if time.monotonic() - last_save > _SAVE_EVERY_S:
                    save_state()
                    last_save = time.monotonic()
    except BaseException:
        save_state()
        raise
    finally:
        bar.close()

    if num_samples == 0:
        raise ValueError("samples is empty: pass a dataset that yields at least 2 samples")
    if run.batches_done > num_batches:
        raise ValueError(
            f"{run.path} holds {run.batches_done} batches but the samples give {num_batches}: "
            "delete it or pass another cache_dir"
        )

    report: dict[str, Any] = {
        "num_samples": num_samples,
        "num_batches": num_batches,
        "batch_size": batch_size,
        "seed": seed,
        "metrics": {},
        "skipped": {},
        "details": {},
        "cache": {
            "dir": str(cache_path) if cache_path is not None else None,
            "resumed_batches": resumed_batches,
        },
    }
    metrics, skipped, details = report["metrics"], report["skipped"], report["details"]

    if inception is None:
        reason = "no inception model given: pass inception=FIDInceptionV3.from_pretrained()"
        skipped["fid"] = skipped["kid"] = reason
    else:
        real = np.concatenate(real_chunks)
        fake_feats = np.concatenate(run.fake_features)
        if real_cache is not None:
            # Rewrite the cache when rows were computed, or to mark a fully reused partial cache complete;
            # a larger cache this run used a prefix of is kept as it is.
            finished_partial = (
                cached_real is not None and not cached_real.complete and len(cached_real.sample_ids) == num_samples
            )
            if real_from_cache < num_samples or finished_partial:
                real_cache.save(real, real_ids, complete=True)
            report["cache"]["real_features"] = (
                "loaded" if real_from_cache == num_samples else "partly loaded" if real_from_cache else "computed"
            )
            report["cache"]["real_features_from_cache"] = real_from_cache
        details.update(
            feature_extractor=type(inception).__name__,
            feature_dim=int(real.shape[1]),
            num_real_features=int(real.shape[0]),
            num_generated_features=int(fake_feats.shape[0]),
        )
        if num_samples < 2:
            skipped["fid"] = skipped["kid"] = "FID/KID need at least 2 samples: evaluate more images"
        else:
            metrics["fid"] = frechet_distance_from_features(real, fake_feats)
            subset = min(KID_SUBSET_SIZE, num_samples)
            metrics["kid"], metrics["kid_std"] = kernel_inception_distance(
                real, fake_feats, num_subsets=KID_NUM_SUBSETS, subset_size=subset, seed=seed
            )
            details.update(kid_subset_size=subset, kid_num_subsets=KID_NUM_SUBSETS)
            if num_samples <= real.shape[1]:
                details["fid_note"] = (
                    f"{num_samples} samples <= {real.shape[1]} feature dims: FID is biased upwards at this size; "
                    "compare only runs with equal sample counts"
                )

    if seg is None:
        skipped["miou"] = skipped["pixel_accuracy"] = "no segmenter given: pass segmenter=... and num_classes=..."
    else:
        scores = seg.compute()
        details.update(
            segmenter=getattr(segmenter, "__qualname__", type(segmenter).__name__),
            num_classes=num_classes,
            ignore_index=seg.ignore_index,
            label_map=_describe_label_map(label_map),
            num_segmented=seg.num_images,
            per_class_iou=scores["per_class_iou"],
        )
        if scores["miou"] is None:
            skipped["miou"] = skipped["pixel_accuracy"] = "every label pixel was ignored: check ignore_index / label_map"
        else:
            metrics["miou"], metrics["pixel_accuracy"] = scores["miou"], scores["pixel_accuracy"]

    if diversity_seeds < 2:
        skipped["diversity"] = "diversity_seeds < 2: pass diversity_seeds=2 or more"
    else:
        metrics["diversity"] = run.div_sum / max(run.div_count, 1)
        details.update(diversity_metric=run.div_metric, diversity_seeds=diversity_seeds)
        if run.div_note:
            details["diversity_note"] = run.div_note

    if run.path is not None and run.path.exists():
        run.path.unlink()
    return report


def _describe_label_map(label_map: LabelMap | None) -> str | None:
    """A short JSON-friendly description of a label map (its contents, for cache keys and reports)."""
    if label_map is None:
        return None
    if isinstance(label_map, torch.Tensor):
        return "lut:" + hashlib.blake2b(label_map.long().cpu().numpy().tobytes(), digest_size=8).hexdigest()
    return "map:" + hashlib.blake2b(json.dumps(sorted(label_map.items())).encode(), digest_size=8).hexdigest()


def format_report_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of an `evaluate` report, for printing."""
    metrics, details = report.get("metrics", {}), report.get("details", {})
    rows: list[tuple[str, str]] = []
    if "fid" in metrics:
        rows.append(("FID", f"{metrics['fid']:.4f}"))
    if "kid" in metrics:
        rows.append(("KID", f"{metrics['kid']:.5f} ± {metrics.get('kid_std', 0.0):.5f}"))
    if "miou" in metrics:
        rows.append(("mIoU", f"{100 * metrics['miou']:.2f} %"))
        rows.append(("pixel accuracy", f"{100 * metrics['pixel_accuracy']:.2f} %"))
    if "diversity" in metrics:
        rows.append((f"diversity ({details.get('diversity_metric', '?')})", f"{metrics['diversity']:.4f}"))
    width = max([len(name) for name, _ in rows] + [len("metric")])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 16}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"samples: {report.get('num_samples', 0)} in {report.get('num_batches', 0)} batches")
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    for key in ("fid_note", "diversity_note"):
        if key in details:
            lines.append(f"note: {details[key]}")
    return "\n".join(lines)

"""`evaluate`: run a generator over a labelled dataset and score it with a list of metric objects.

The runner knows no metric: it batches the samples, generates each batch once, hands it to every
metric (`spade_core.eval.metrics.Metric`) and merges their results into one report. Progress is
written under `cache_dir` (the metrics' state after each finished batch), so an interrupted
evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spade_core.eval.fid import save_npz_atomic
from spade_core.eval.metrics import (
    DiversityMetric,
    EvalBatch,
    FIDKIDMetric,
    Metric,
    SegmentationMetric,
    SkippedMetric,
)
from spade_core.eval.segmentation import LabelMap, Segmenter

GenerateFn = Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor]

DIVERSITY_SEED_STRIDE = 1_000_003  # extra diversity draws use seeds far from the main draws' seed + batch_index
_SAVE_EVERY_S = 60.0


def draw_seed(seed: int, batch_index: int, draw: int = 0) -> int:
    """The seed passed to `generate_fn` for one batch and draw; draw 0 is the image scored by FID/mIoU."""
    return seed + batch_index + draw * DIVERSITY_SEED_STRIDE


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


class _Progress:
    """This run's partial state (batches done, their sample ids, every metric's state) in one `.npz`."""

    def __init__(self, path: Path | None, key: str, metrics: Sequence[Metric]) -> None:
        self.path, self.key, self.metrics = path, key, metrics
        self.batches_done = 0
        self.sample_ids: list[str] = []

    def load(self) -> bool:
        """Restore a matching progress file into the metrics; False when there is none."""
        if self.path is None or not self.path.is_file():
            return False
        with np.load(self.path, allow_pickle=False) as data:
            if str(data["key"]) != self.key:
                return False
            self.batches_done = int(data["batches_done"])
            self.sample_ids = [str(s) for s in data["sample_ids"]]
            for index, metric in enumerate(self.metrics):
                prefix = f"m{index}."
                metric.load_state_dict({k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)})
        return self.batches_done > 0

    def save(self) -> None:
        """Write the metrics' state after the last finished batch, and let each save its own caches."""
        for metric in self.metrics:
            metric.checkpoint()
        if self.path is None:
            return
        arrays = {
            f"m{index}.{name}": np.asarray(value)
            for index, metric in enumerate(self.metrics)
            for name, value in metric.state_dict().items()
        }
        save_npz_atomic(
            self.path,
            key=np.array(self.key),
            batches_done=np.array(self.batches_done),
            sample_ids=np.array(self.sample_ids, dtype=str),
            **arrays,
        )


def standard_metrics(
    *,
    inception: Callable[[torch.Tensor], torch.Tensor] | None = None,
    segmenter: Segmenter | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    label_map: LabelMap | None = None,
    diversity_seeds: int = 0,
    lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> list[Metric]:
    """FID/KID, segmentation consistency and diversity as configured; unconfigured ones report why they are skipped."""
    if diversity_seeds == 1 or diversity_seeds < 0:
        raise ValueError(f"diversity_seeds={diversity_seeds} gives no pairs: use 0 to skip diversity or 2 or more")
    return [
        FIDKIDMetric(inception, cache_dir, seed)
        if inception is not None
        else SkippedMetric(("fid", "kid"), "no inception model given: pass inception=FIDInceptionV3.from_pretrained()"),
        SegmentationMetric(segmenter, num_classes, ignore_index, label_map)
        if segmenter is not None
        else SkippedMetric(("miou", "pixel_accuracy"), "no segmenter given: pass segmenter=... and num_classes=..."),
        DiversityMetric(diversity_seeds, lpips_fn)
        if diversity_seeds
        else SkippedMetric(("diversity",), "diversity_seeds < 2: pass diversity_seeds=2 or more"),
    ]


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
    metrics: Sequence[Metric] = (),
) -> dict[str, Any]:
    """Evaluate `generate_fn(labels (N,H,W), instances|None, seed) -> images (N,3,H,W) in [-1,1]` on `samples`.

    `samples` yields dicts {"label": (H, W) int64, "image": (3, H, W) in [-1, 1], optional "instance"}.
    FID/KID need `inception` (images in [0, 1] -> (N, D) features, e.g. `FIDInceptionV3.from_pretrained()`),
    mIoU needs `segmenter` and `num_classes`, diversity needs `diversity_seeds >= 2` (LPIPS with
    `lpips_fn`, else L1); `metrics` adds further `Metric` objects after these. Batch b is generated with
    seed `draw_seed(seed, b)` (diversity draws k with `draw_seed(seed, b, k)`); images are rounded to
    8 bits before scoring, as saved PNGs would be. With `cache_dir`, real features are cached for later
    runs and an interrupted run resumes. Returns a JSON-serialisable report; skipped metrics are listed
    with the reason.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    all_metrics = standard_metrics(
        inception=inception, segmenter=segmenter, num_classes=num_classes, ignore_index=ignore_index,
        label_map=label_map, diversity_seeds=diversity_seeds, lpips_fn=lpips_fn, cache_dir=cache_dir, seed=seed,
    ) + list(metrics)
    return run_metrics(generate_fn, samples, all_metrics, batch_size=batch_size, cache_dir=cache_dir,
                       progress=progress, seed=seed)


def run_metrics(
    generate_fn: GenerateFn,
    samples: Iterable[Mapping[str, Any]],
    metrics: Sequence[Metric],
    *,
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """The loop of `evaluate` over any list of metrics: generate each batch once, feed every metric, merge results."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for metric in metrics:
        if not isinstance(metric, Metric):
            raise ValueError(  # noqa: TRY004 - ValueError for every user mistake (DESIGN.md)
                f"metrics holds a {type(metric).__name__}: pass instances of spade_core.eval.Metric"
            )
    names = [metric.name for metric in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat ({', '.join(names)}): give each metric a unique name")
    cache_path = Path(cache_dir) if cache_dir is not None else None
    settings_key = json.dumps(
        {"batch_size": batch_size, "seed": seed, "metrics": [[m.name, m.settings()] for m in metrics]},
        sort_keys=True,
    )
    run = _Progress(
        cache_path / f"progress_{hashlib.blake2b(settings_key.encode(), digest_size=8).hexdigest()}.npz"
        if cache_path is not None
        else None,
        settings_key,
        metrics,
    )
    resumed_batches = run.batches_done if run.load() else 0

    total = math.ceil(len(samples) / batch_size) if hasattr(samples, "__len__") else None
    bar = tqdm(total=total, disable=not progress, desc="evaluate", unit="batch")
    last_save = time.monotonic()
    num_batches = num_samples = 0
    try:
        with torch.no_grad():
            for batch_index, data in enumerate(_batches(samples, batch_size)):
                labels, instances = data["labels"], data["instances"]
                batch = EvalBatch(batch_index, num_samples, data["ids"], labels, instances, data["images"])
                num_samples += len(batch)
                num_batches += 1
                for metric in metrics:
                    metric.observe_real(batch)

                if batch_index < run.batches_done:
                    if run.sample_ids[batch.start:batch.start + len(batch)] != batch.ids:
                        raise ValueError(
                            f"{run.path} was written for different samples (batch {batch_index} differs): "
                            "delete it or pass another cache_dir"
                        )
                    bar.update(1)
                    continue

                def draw(k: int, labels: torch.Tensor = labels, instances: Any = instances, b: int = batch_index) -> torch.Tensor:
                    """Draw k of this batch, checked."""
                    return _check_generated(generate_fn(labels, instances, draw_seed(seed, b, k)), labels)

                batch.fake, batch.generate = draw(0), draw
                contributions = [metric.measure(batch) for metric in metrics]
                # Commit the batch only once every metric has measured it, so saved progress never holds half a batch.
                for metric, contribution in zip(metrics, contributions):
                    metric.accumulate(contribution)
                run.sample_ids.extend(batch.ids)
                run.batches_done = batch_index + 1
                bar.update(1)
                if time.monotonic() - last_save > _SAVE_EVERY_S:
                    run.save()
                    last_save = time.monotonic()
    except BaseException:
        run.save()
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
    for metric in metrics:
        result = metric.result()
        report["metrics"].update(result.values)
        report["skipped"].update(result.skipped)
        report["details"].update(result.details)
        report["cache"].update(result.cache)

    if run.path is not None and run.path.exists():
        run.path.unlink()
    return report


def format_report_table(report: Mapping[str, Any], metrics: Sequence[Metric | type[Metric]] = ()) -> str:
    """A plain-text table of an `evaluate` report, for printing.

    Each metric class formats its own rows (`Metric.table_rows`): the standard ones and those in
    `metrics`; any other number in the report gets a plain row.
    """
    from spade_core.eval.metrics import STANDARD_METRICS

    values, details = report.get("metrics", {}), report.get("details", {})
    rows: list[tuple[str, str]] = []
    claimed: set[str] = set()
    for metric in (*STANDARD_METRICS, *metrics):
        if claimed.isdisjoint(metric.keys):
            rows += metric.table_rows(values, details)
            claimed.update(metric.keys)
    rows += [(name, f"{value:.4f}") for name, value in values.items() if name not in claimed]
    width = max([len(name) for name, _ in rows] + [len("metric")])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 16}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"samples: {report.get('num_samples', 0)} in {report.get('num_batches', 0)} batches")
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    for key, note in details.items():
        if key.endswith("_note"):
            lines.append(f"note: {note}")
    return "\n".join(lines)

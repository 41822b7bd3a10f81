"""Evaluation of semantic image synthesis: FID/KID, segmentation consistency (mIoU) and diversity.

Each metric is one `Metric` class (`metrics.py`) that `evaluate` (`runner.py`) iterates; segmenters,
including the shipped landscape one, load through `segmenters.py`.

Names load on first use (PEP 562), so `spade eval --help` reading `PAPER_PROTOCOL` does not
import the runner, Inception or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spade_core.eval.diversity import mean_pairwise_distance
    from spade_core.eval.fid import (
        CachedFeatures,
        FeatureStatsCache,
        feature_statistics,
        frechet_distance,
        frechet_distance_from_features,
        kernel_inception_distance,
    )
    from spade_core.eval.inception import (
        INCEPTION_WEIGHTS_ENV,
        INCEPTION_WEIGHTS_FILENAME,
        INCEPTION_WEIGHTS_URL,
        FIDInceptionV3,
    )
    from spade_core.eval.metrics import (
        DiversityMetric,
        EvalBatch,
        FIDKIDMetric,
        Metric,
        MetricResult,
        SegmentationMetric,
        SkippedMetric,
    )
    from spade_core.eval.runner import (
        draw_seed,
        evaluate,
        format_report_table,
        run_metrics,
        standard_metrics,
    )
    from spade_core.eval.segmentation import (
        CITYSCAPES_19_CLASSES,
        CITYSCAPES_35_TO_19,
        IGNORE_LABEL,
        PAPER_PROTOCOL,
        SegmentationConsistency,
        apply_label_map,
        confusion_matrix,
        mean_iou,
    )
    from spade_core.eval.segmenters import (
        LANDSCAPE_SEGMENTER_DIR,
        LandscapeSegmenter,
        default_segmenter,
        load_landscape_segmenter,
        load_segmenter,
        save_landscape_segmenter,
    )

_EXPORTS: dict[str, str] = {
    'mean_pairwise_distance': 'spade_core.eval.diversity',
    'CachedFeatures': 'spade_core.eval.fid',
    'FeatureStatsCache': 'spade_core.eval.fid',
    'feature_statistics': 'spade_core.eval.fid',
    'frechet_distance': 'spade_core.eval.fid',
    'frechet_distance_from_features': 'spade_core.eval.fid',
    'kernel_inception_distance': 'spade_core.eval.fid',
    'INCEPTION_WEIGHTS_ENV': 'spade_core.eval.inception',
    'INCEPTION_WEIGHTS_FILENAME': 'spade_core.eval.inception',
    'INCEPTION_WEIGHTS_URL': 'spade_core.eval.inception',
    'FIDInceptionV3': 'spade_core.eval.inception',
    'DiversityMetric': 'spade_core.eval.metrics',
    'EvalBatch': 'spade_core.eval.metrics',
    'FIDKIDMetric': 'spade_core.eval.metrics',
    'Metric': 'spade_core.eval.metrics',
    'MetricResult': 'spade_core.eval.metrics',
    'SegmentationMetric': 'spade_core.eval.metrics',
    'SkippedMetric': 'spade_core.eval.metrics',
    'draw_seed': 'spade_core.eval.runner',
    'evaluate': 'spade_core.eval.runner',
    'format_report_table': 'spade_core.eval.runner',
    'run_metrics': 'spade_core.eval.runner',
    'standard_metrics': 'spade_core.eval.runner',
    'CITYSCAPES_19_CLASSES': 'spade_core.eval.segmentation',
    'CITYSCAPES_35_TO_19': 'spade_core.eval.segmentation',
    'IGNORE_LABEL': 'spade_core.eval.segmentation',
    'PAPER_PROTOCOL': 'spade_core.eval.segmentation',
    'SegmentationConsistency': 'spade_core.eval.segmentation',
    'apply_label_map': 'spade_core.eval.segmentation',
    'confusion_matrix': 'spade_core.eval.segmentation',
    'mean_iou': 'spade_core.eval.segmentation',
    'LANDSCAPE_SEGMENTER_DIR': 'spade_core.eval.segmenters',
    'LandscapeSegmenter': 'spade_core.eval.segmenters',
    'default_segmenter': 'spade_core.eval.segmenters',
    'load_landscape_segmenter': 'spade_core.eval.segmenters',
    'load_segmenter': 'spade_core.eval.segmenters',
    'save_landscape_segmenter': 'spade_core.eval.segmenters',
}

__all__ = [
    "CITYSCAPES_19_CLASSES",
    "CITYSCAPES_35_TO_19",
    "IGNORE_LABEL",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "LANDSCAPE_SEGMENTER_DIR",
    "PAPER_PROTOCOL",
    "CachedFeatures",
    "DiversityMetric",
    "EvalBatch",
    "FIDInceptionV3",
    "FIDKIDMetric",
    "FeatureStatsCache",
    "LandscapeSegmenter",
    "Metric",
    "MetricResult",
    "SegmentationConsistency",
    "SegmentationMetric",
    "SkippedMetric",
    "apply_label_map",
    "confusion_matrix",
    "default_segmenter",
    "draw_seed",
    "evaluate",
    "feature_statistics",
    "format_report_table",
    "frechet_distance",
    "frechet_distance_from_features",
    "kernel_inception_distance",
    "load_landscape_segmenter",
    "load_segmenter",
    "mean_iou",
    "mean_pairwise_distance",
    "run_metrics",
    "save_landscape_segmenter",
    "standard_metrics",
]


def __getattr__(name: str) -> Any:
    """Import an exported name from its submodule on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The exported names, for tab completion."""
    return sorted(__all__)

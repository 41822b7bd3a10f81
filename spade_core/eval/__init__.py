"""Evaluation of semantic image synthesis: FID/KID, segmentation consistency (mIoU) and diversity.

Each metric is one `Metric` class (`metrics.py`) that `evaluate` (`runner.py`) iterates; segmenters,
including the shipped landscape one, load through `segmenters.py`.
"""

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

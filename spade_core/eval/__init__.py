"""Evaluation of semantic image synthesis: FID/KID, segmentation consistency (mIoU) and diversity."""

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
from spade_core.eval.runner import draw_seed, evaluate, format_report_table
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

__all__ = [
    "CITYSCAPES_19_CLASSES",
    "CITYSCAPES_35_TO_19",
    "IGNORE_LABEL",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "PAPER_PROTOCOL",
    "CachedFeatures",
    "FIDInceptionV3",
    "FeatureStatsCache",
    "SegmentationConsistency",
    "apply_label_map",
    "confusion_matrix",
    "draw_seed",
    "evaluate",
    "feature_statistics",
    "format_report_table",
    "frechet_distance",
    "frechet_distance_from_features",
    "kernel_inception_distance",
    "mean_iou",
    "mean_pairwise_distance",
]

"""Fréchet Inception Distance, Kernel Inception Distance and an on-disk cache of real-image features."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_bytes

_IMAGINARY_TOLERANCE = 1e-3


def _scipy_linalg():
    """scipy.linalg, imported on first use so `spade_core.eval` loads without the `eval` extra."""
    try:
        from scipy import linalg
    except ImportError as err:
        raise ImportError("FID needs scipy: pip install 'spade[eval]' (or pip install scipy)") from err
    return linalg


def _as_features(features: np.ndarray | torch.Tensor, name: str = "features") -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {array.shape}: stack one row per image")
    return array


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64, as FID uses them."""
    array = _as_features(features)
    if array.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, got {array.shape[0]}: evaluate more images")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    d = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)). When the product's square root
    is not finite (singular covariances) `eps * I` is added to both; a negligible imaginary part
    from round-off is dropped, a large one raises `ValueError`.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}: "
            "compute both with the same feature extractor"
        )
    diff = mu1 - mu2
    linalg = _scipy_linalg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled just below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(covmean.imag)) if covmean.size else 0.0
        if largest > _IMAGINARY_TOLERANCE:
            raise ValueError(
                f"sqrtm of the covariance product has an imaginary part of {largest:.3g}: "
                "the statistics are ill-conditioned; use more images or frechet_distance_from_features"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_features(
    features1: np.ndarray | torch.Tensor, features2: np.ndarray | torch.Tensor, method: str = "auto"
) -> float:
    """FID straight from two (N, D) feature sets.

    With fewer images than feature dimensions the covariances are singular and `sqrtm` is slow and
    ill-conditioned, so "auto" then uses the exact identity tr sqrt(S1 S2) = ||A B^T||_* / sqrt((n1-1)(n2-1))
    (A, B the centred features); otherwise it calls `frechet_distance` ("sqrtm"). "svd" forces the former.
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ ({f1.shape[1]} vs {f2.shape[1]}): use one feature extractor for both")
    if method not in ("auto", "svd", "sqrtm"):
        raise ValueError(f"unknown method '{method}': use 'auto', 'svd' or 'sqrtm'")
    n1, n2, dim = f1.shape[0], f2.shape[0], f1.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"need at least 2 images per set, got {n1} and {n2}: evaluate more images")
    if method == "sqrtm" or (method == "auto" and min(n1, n2) > dim):
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a, b = f1 - mu1, f2 - mu2
    trace1 = np.sum(a * a) / (n1 - 1)
    trace2 = np.sum(b * b) / (n2 - 1)
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2.0 * cross)


def _polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3."""
    m, dim = x.shape

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        k = a @ np.ascontiguousarray(b.T) / dim + 1
        return k * k * k

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
    features1: np.ndarray | torch.Tensor,
    features2: np.ndarray | torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std of the unbiased polynomial-kernel MMD^2 over random subsets.

    `subset_size` is clipped to the smaller set; subsets are drawn without replacement with `seed`.
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ ({f1.shape[1]} vs {f2.shape[1]}): use one feature extractor for both")
    size = min(subset_size, f1.shape[0], f2.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {f1.shape[0]} and {f2.shape[0]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    rng = np.random.default_rng(seed)
    values = [
        _polynomial_mmd(
            f1[rng.choice(f1.shape[0], size, replace=False)], f2[rng.choice(f2.shape[0], size, replace=False)]
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


@dataclass
class CachedFeatures:
    """What a `FeatureStatsCache` holds: features (N, D), one id per row, and mu/sigma once complete."""

    key: str
    features: np.ndarray
    sample_ids: list[str]
    complete: bool
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None


class FeatureStatsCache:
    """Real-image features and statistics saved as one `.npz`, so later or resumed evaluations skip them.

    `key` describes how features were made (extractor, preprocessing); `sample_ids` (e.g. content
    hashes) describe the data row by row, so a cache is reused exactly as far as the data agrees.
    """

    def __init__(self, path: str | os.PathLike, key: str) -> None:
        self.path = Path(path)
        self.key = key

    def load(self) -> CachedFeatures | None:
        """The cached entry, or None when there is no file or it was made with another key."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["key"]) != self.key:
                    return None
                complete = bool(data["complete"])
                return CachedFeatures(
                    key=self.key,
                    features=data["features"],
                    sample_ids=[str(s) for s in data["sample_ids"]],
                    complete=complete,
                    mu=data["mu"] if complete else None,
                    sigma=data["sigma"] if complete else None,
                )
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"feature cache {self.path} is unreadable ({err}): delete it to recompute") from err

    def save(self, features: np.ndarray, sample_ids: list[str], complete: bool) -> CachedFeatures:
        """Write features (and, when `complete`, their mu/sigma) atomically; returns what was written."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape[0] != len(sample_ids):
            raise ValueError(f"{features.shape[0]} feature rows but {len(sample_ids)} sample ids: pass one id per row")
        mu = sigma = None
        if complete and features.shape[0] >= 2:
            mu, sigma = feature_statistics(features)
        entry = CachedFeatures(self.key, features, list(sample_ids), complete and mu is not None, mu, sigma)
        empty = np.zeros(0)
        save_npz_atomic(
            self.path,
            key=np.array(self.key),
            features=features,
            sample_ids=np.array(sample_ids, dtype=str),
            complete=np.array(entry.complete),
            mu=mu if mu is not None else empty,
            sigma=sigma if sigma is not None else empty,
        )
        return entry


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Save arrays to `path` through a temporary file, so an interruption never leaves half a cache."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
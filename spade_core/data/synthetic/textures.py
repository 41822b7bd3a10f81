"""Photo textures (scikit-image's `grass` and `gravel`, shipped with it; no download) as blur pyramids.

Without scikit-image a procedural stand-in is used and one logged line says how to get the real ones.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from .noise import gaussian_blur, spectral_noise

TEXTURE_LEVELS = (0.0, 1.5, 3.0, 6.0, 12.0)  # blur sigmas of the texture pyramid (a poor man's mipmap)


@functools.lru_cache(maxsize=1)
def textures() -> dict[str, np.ndarray]:
    """High-passed, unit-std photo textures as (levels, 512, 512) float32 pyramids, built once."""
    try:
        from skimage import data as skdata

        raw = {name: getattr(skdata, name)() for name in ("grass", "gravel")}
    except (ImportError, OSError, ValueError) as err:  # no package, or a data file it would download
        logging.getLogger(__name__).warning(
            "scikit-image textures unavailable (%s): using procedural textures; "
            "pip install scikit-image for photographic ones",
            type(err).__name__,
        )
        rng = np.random.default_rng(0)
        raw = {name: spectral_noise(rng, (512, 512), beta) for name, beta in
               (("grass", 0.8), ("gravel", 1.2))}
    out = {}
    for name, img in raw.items():
        img = np.asarray(img, dtype=np.float32)
        img = img - gaussian_blur(img, 24.0)  # drop the photo's uneven illumination
        img = np.clip(img / (img.std() + 1e-6), -2.5, 2.5)  # no single crater or stone dominates
        out[name] = np.stack([gaussian_blur(img, s) for s in TEXTURE_LEVELS])
    return out


def _wrap(idx: np.ndarray, n: int) -> np.ndarray:
    """Mirrored-repeat integer indices into 0..n-1, so non-tiling photos repeat without seams."""
    i = np.floor(idx).astype(np.int64) % (2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def sample(tex: np.ndarray, rows: np.ndarray, cols: np.ndarray, level: np.ndarray | int = 0) -> np.ndarray:
    """Nearest lookup in a (levels, n, n) texture pyramid at float coordinates."""
    n = tex.shape[-1]
    return tex[level, _wrap(rows, n), _wrap(cols, n)]

"""Procedural landscapes: label maps plus photo-like images, the training data of the embedded model.

The layout (horizon, fractal mountain ridges with snow and rock, clouds, lakes / rivers / sea with
sand shores, grass, tree clusters, a road) comes from the seed alone. The style (time of day,
season, weather and a few continuous knobs) only changes how that layout is painted, so a VAE
style encoder has a real, layout-independent signal to learn. Everything is numpy (one
`np.random.default_rng` stream per purpose), so a seed gives identical bytes on a given install.

Textures are the photographs shipped inside scikit-image (`grass`, `gravel`; no download);
without scikit-image a procedural stand-in is used and a warning says how to get the real ones.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from spade_core.labels import LabelSet, register_label_set

__all__ = [
    "LANDSCAPE_CLASSES",
    "LandscapeSample",
    "LandscapeStyle",
    "SyntheticLandscapes",
    "landscape_label_set",
    "render_landscape",
    "write_synthetic_dataset",
]

# Class indices; the order is a contract (assets/labels/landscape.json, trained weights).
LANDSCAPE_CLASSES: tuple[str, ...] = (
    "sky", "cloud", "mountain", "rock", "snow", "grass", "tree", "water", "sand", "road",
)
SKY, CLOUD, MOUNTAIN, ROCK, SNOW, GRASS, TREE, WATER, SAND, ROAD = range(len(LANDSCAPE_CLASSES))

TIMES_OF_DAY: tuple[str, ...] = ("day", "sunset", "dusk")
SEASONS: tuple[str, ...] = ("summer", "autumn", "winter")
WEATHERS: tuple[str, ...] = ("clear", "overcast", "hazy")

MIN_SIZE = 32  # smaller maps cannot hold a recognisable horizon, ridge and trees
NOISE_ROWS = 128  # layout noise is drawn on a fixed grid, so a seed's layout barely depends on size


# --------------------------------------------------------------------------------------- style


@dataclass(frozen=True)
class LandscapeStyle:
    """How a layout is painted; nothing here changes the label map."""

    time_of_day: str = "day"  # day | sunset | dusk: sky colours, sun height, light colour
    season: str = "summer"  # summer | autumn | winter: vegetation, ground and water colours
    weather: str = "clear"  # clear | overcast | hazy: sun strength, sky greyness, distance haze
    sun_x: float = 0.35  # horizontal sun position in [0, 1], left to right; sets the light direction
    haze: float = 0.3  # extra distance haze in [0, 1]
    saturation: float = 1.0  # colour saturation multiplier in [0.5, 1.5]
    exposure: float = 1.0  # brightness multiplier in [0.5, 1.5]
    warmth: float = 0.0  # colour temperature shift in [-1, 1], cool to warm

    def __post_init__(self) -> None:
        for name, options in (("time_of_day", TIMES_OF_DAY), ("season", SEASONS), ("weather", WEATHERS)):
            if getattr(self, name) not in options:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported: pass one of {', '.join(options)}")
        for name, lo, hi in (("sun_x", 0, 1), ("haze", 0, 1), ("saturation", 0.5, 1.5),
                             ("exposure", 0.5, 1.5), ("warmth", -1, 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r} is out of range: pass a number in [{lo}, {hi}]")
            object.__setattr__(self, name, float(value))

    @classmethod
    def random(cls, rng: np.random.Generator) -> LandscapeStyle:
        """A style drawn from the distribution the synthetic dataset uses."""
        return cls(
            time_of_day=TIMES_OF_DAY[rng.choice(3, p=[0.5, 0.3, 0.2])],
            season=SEASONS[rng.choice(3, p=[0.45, 0.3, 0.25])],
            weather=WEATHERS[rng.choice(3, p=[0.55, 0.25, 0.2])],
            sun_x=round(float(rng.uniform(0.1, 0.9)), 4),
            haze=round(float(rng.uniform(0.0, 1.0)), 4),
            saturation=round(float(rng.uniform(0.8, 1.2)), 4),
            exposure=round(float(rng.uniform(0.88, 1.12)), 4),
            warmth=round(float(rng.uniform(-1.0, 1.0)), 4),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; `LandscapeStyle(**d)` reads it back."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LandscapeSample:
    """One rendered landscape: labels (H,W) uint8 indices into LANDSCAPE_CLASSES, image (H,W,3) uint8 RGB."""

    seed: int
    labels: np.ndarray
    image: np.ndarray
    style: LandscapeStyle


# --------------------------------------------------------------------------------------- noise


def _spectral_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float,
                    stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Periodic 1/f^beta noise (zero mean, unit std); stretch (sy, sx) > 1 elongates along that axis."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None] * stretch[0]
    fx = np.fft.rfftfreq(w)[None, :] * stretch[1]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    noise = np.fft.irfft2(spec, s=shape)
    return ((noise - noise.mean()) / (noise.std() + 1e-12)).astype(np.float32)


def _noise_1d(rng: np.random.Generator, n: int, beta: float, period: int = 1024) -> np.ndarray:
    """A window of n samples from periodic 1D 1/f^beta noise, scaled to [-1, 1]."""
    f = np.fft.rfftfreq(period)
    f[0] = 1.0
    amp = f ** (-beta / 2)
    amp[0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    line = np.fft.irfft(spec, n=period)[: period // 2]
    line = np.interp(np.linspace(0, len(line) - 1, n), np.arange(len(line)), line)
    return (2 * (line - line.min()) / (np.ptp(line) + 1e-12) - 1).astype(np.float32)


def _smooth_1d(line: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 1D profile, edges extended."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    padded = np.pad(line, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def _upsample(field_: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a float field to (h, w)."""
    return np.asarray(Image.fromarray(field_.astype(np.float32)).resize((w, h), Image.BILINEAR))


def _wrap(idx: np.ndarray, n: int) -> np.ndarray:
    """Mirrored-repeat integer indices into 0..n-1, so non-tiling photos repeat without seams."""
    i = np.floor(idx).astype(np.int64) % (2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def _sample(tex: np.ndarray, rows: np.ndarray, cols: np.ndarray, level: np.ndarray | int = 0) -> np.ndarray:
    """Nearest lookup in a (levels, n, n) texture pyramid at float coordinates."""
    n = tex.shape[-1]
    return tex[level, _wrap(rows, n), _wrap(cols, n)]


def _sample_periodic(field_: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a periodic 2D field at float coordinates."""
    h, w = field_.shape
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0).astype(np.float32), (cols - c0).astype(np.float32)
    r0, c0 = r0.astype(np.int64) % h, c0.astype(np.int64) % w
    r1, c1 = (r0 + 1) % h, (c0 + 1) % w
    top = field_[r0, c0] * (1 - fc) + field_[r0, c1] * fc
    bottom = field_[r1, c0] * (1 - fc) + field_[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur of a square float image through the FFT."""
    if sigma <= 0:
        return img
    f = np.fft.fftfreq(img.shape[0])
    g = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * g)).astype(np.float32)


TEXTURE_LEVELS = (0.0, 1.5, 3.0, 6.0, 12.0)  # blur sigmas of the texture pyramid (a poor man's mipmap)


@functools.lru_cache(maxsize=1)
def _textures() -> dict[str, np.ndarray]:
    """High-passed, unit-std photo textures as (levels, 512, 512) float32 pyramids, built once."""
    try:
        from skimage import data as skdata

        raw = {name: getattr(skdata, name)() for name in ("grass", "gravel")}
    except (ImportError, OSError, ValueError) as err:  # no package, or a data file it would download
        warnings.warn(
            f"scikit-image textures unavailable ({type(err).__name__}): using procedural textures; "
            "pip install scikit-image for photographic ones",
            stacklevel=3,
        )
        rng = np.random.default_rng(0)
        raw = {name: _spectral_noise(rng, (512, 512), beta) for name, beta in
               (("grass", 0.8), ("gravel", 1.2))}
    out = {}
    for name, img in raw.items():
        img = np.asarray(img, dtype=np.float32)
        img = img - _gaussian_blur(img, 24.0)  # drop the photo's uneven illumination
        img = np.clip(img / (img.std() + 1e-6), -2.5, 2.5)  # no single crater or stone dominates
        out[name] = np.stack([_gaussian_blur(img, s) for s in TEXTURE_LEVELS])
    return out


# --------------------------------------------------------------------------------------- layout


@dataclass
class _Layout:
    """The seed-determined scene: labels plus the geometry the painter needs (all (H, W) arrays)."""

    labels: np.ndarray  # uint8 class indices
    depth: np.ndarray  # float32 world distance (camera height = 1); inf for sky
    nx: np.ndarray  # float32 pseudo-normal, x component (objects and mountains; 0 on flat ground)
    ny: np.ndarray  # float32 pseudo-normal, y component (image y grows downward; -1 faces up)
    var: np.ndarray  # float32 per-object variation in [0, 1] (tree colour, rock tint)
    conifer: np.ndarray  # bool, tree pixels of conifers
    trunk: np.ndarray  # bool, tree pixels of trunks
    cloud: np.ndarray  # float32 cloud density above the coverage threshold (> 0 inside clouds)
    road_u: np.ndarray  # float32 lateral road coordinate in [-1, 1] across the road
    gx: np.ndarray  # float32 ground-plane x (world units) below the horizon
    gz: np.ndarray  # float32 ground-plane depth below the horizon
    patch: np.ndarray  # float32 low-frequency unit-std noise for colour variation
    streak: np.ndarray  # float32 vertically stretched unit-std noise (gullies, strata)
    grain: np.ndarray  # float32 per-pixel N(0, 1) sensor grain
    horizon: float  # horizon row as a fraction of the height
    aspect: float  # width / height


def _disk_mask(rr: np.ndarray, cc: np.ndarray, circles: list[tuple[float, float, float]]) -> np.ndarray:
    """Union of circles (row, col, radius) over a coordinate box."""
    mask = np.zeros(np.broadcast_shapes(rr.shape, cc.shape), dtype=bool)
    for r, c, rad in circles:
        mask |= (rr - r) ** 2 + (cc - c) ** 2 <= rad * rad
    return mask


def _make_layout(rng: np.random.Generator, grain_rng: np.random.Generator, h: int, w: int) -> _Layout:
    """Draw a landscape layout: ground and water first, then mountains, clouds, trees and boulders.

    `rng` makes no draw whose count depends on the size, so a seed keeps its layout at any size.
    """
    aspect = w / h
    gw = max(8, round(NOISE_ROWS * aspect))

    def big(beta: float, stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        return _upsample(_spectral_noise(rng, (NOISE_ROWS, gw), beta, stretch), h, w)

    edge = big(1.8)  # shoreline / snow-line wobble
    patch = big(2.6)  # large patches: beaches, meadow colour
    streak = big(2.2, (4.0, 1.0))  # vertical gullies on mountains
    cloud_field = _spectral_noise(rng, (256, 256), 2.6)
    shore_field = _spectral_noise(rng, (128, 128), 2.2)

    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]  # row in height units, (H, 1)
    x = (((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * aspect)[None, :]  # column in height units
    hz = float(rng.uniform(0.38, 0.58))
    d = v - hz
    ground = np.broadcast_to(d > 0, (h, w))
    gz = np.where(d > 0, 1.0 / np.maximum(d, 1e-4), np.inf).astype(np.float32) * np.ones((1, w), np.float32)
    gx = (x * np.where(np.isfinite(gz), gz, 0)).astype(np.float32)
    gzf = np.where(ground, gz, 1e6)  # finite stand-in so the formulas below stay warning-free

    # Shore wobble drawn on the ground plane, so it shrinks with distance like the water does.
    shore_noise = _sample_periodic(shore_field, gzf * 4.0, np.where(ground, gx, 0) * 4.0)
    shore_noise *= np.clip(10.0 / gzf, 0.2, 1.0)
    labels = np.where(ground, GRASS, SKY).astype(np.uint8)
    depth = gz.copy()
    nx = np.zeros((h, w), np.float32)
    ny = np.zeros((h, w), np.float32)
    var = np.zeros((h, w), np.float32)
    conifer = np.zeros((h, w), bool)
    trunk = np.zeros((h, w), bool)
    road_u = np.zeros((h, w), np.float32)

    # Water: none, a lake, a river or the sea, with sand shores.
    water_kind = rng.choice(["none", "lake", "river", "sea"], p=[0.25, 0.35, 0.25, 0.15])
    lake_side = 0.0
    if water_kind == "lake":
        z0 = math.exp(rng.uniform(math.log(3.0), math.log(14.0)))
        rad = rng.uniform(0.25, 0.6) * z0
        stretch = rng.uniform(1.0, 2.5)
        x0 = rng.uniform(-0.35, 0.35) * aspect * z0
        lake_side = math.copysign(1.0, x0)
        with np.errstate(invalid="ignore"):
            rr = np.sqrt(((gx - x0) / (rad * stretch)) ** 2 + ((gzf - z0) / rad) ** 2) + 0.12 * shore_noise
        shore = rng.uniform(0.05, 0.3)
        labels[ground & (rr < 1 + shore) & (patch > rng.uniform(-1.2, 0.3))] = SAND
        labels[ground & (rr < 1)] = WATER
    elif water_kind == "river":
        period, amp = rng.uniform(5, 14), rng.uniform(0.3, 1.5)
        phase, drift = rng.uniform(0, 2 * math.pi), rng.uniform(-0.12, 0.12) * aspect
        x0, half = rng.uniform(-0.6, 0.6) * aspect, rng.uniform(0.18, 0.45)
        centre = x0 + amp * np.sin(2 * math.pi * gzf / period + phase) + drift * gzf
        with np.errstate(invalid="ignore"):
            off = np.abs(gx - centre) / half + 0.15 * shore_noise
        bank = rng.uniform(0.2, 0.9) / half
        labels[ground & (off < 1 + bank) & (patch > rng.uniform(-0.8, 0.5))] = SAND
        labels[ground & (off < 1)] = WATER
    elif water_kind == "sea":
        shore = rng.uniform(0.03, 0.12) + 0.015 * _noise_1d(rng, w, 2.0)[None, :]
        beach = rng.uniform(0.04, 0.25) + 0.02 * edge
        labels[ground & (d < shore + beach)] = SAND
        labels[ground & (d < shore)] = WATER

    # A road, kept on the side away from a lake.
    if water_kind in ("none", "lake") and rng.random() < 0.4:
        side = -lake_side if lake_side else math.copysign(1.0, rng.uniform(-1, 1))
        x0 = side * rng.uniform(0.0, 0.5)
        slope = rng.uniform(-0.12, 0.12) * aspect
        bend_amp, bend_period = rng.uniform(0.0, 1.2), rng.uniform(6, 20)
        half = rng.uniform(0.25, 0.45)
        end = math.exp(rng.uniform(math.log(12), math.log(200)))
        centre = x0 + slope * (gzf - 2) + bend_amp * np.sin(gzf / bend_period * 2 * math.pi)
        with np.errstate(invalid="ignore"):
            u = (gx - centre) / half
        road = ground & (np.abs(u) < 1) & (gzf < end) & (labels != WATER)
        labels[road] = ROAD
        road_u[road] = u[road]

    # Mountain ridges, far to near; the farthest may carry snow caps, all get rock outcrops.
    n_ridges = int(rng.choice(4, p=[0.12, 0.3, 0.38, 0.2]))
    for k in range(n_ridges):
        base = hz + (0.0 if k == 0 else rng.uniform(0.004, 0.02) * k)
        amp = rng.uniform(0.14, 0.36) * hz * (0.6**k)
        lift = rng.uniform(0.0, 0.12) * hz * (0.6**k)
        profile = lift + amp * (1 + _noise_1d(rng, w, rng.uniform(2.4, 3.0)))
        limit = base - 0.14  # keep sky above every peak, with a soft, not flat-topped, cap
        profile = limit * np.tanh(np.maximum(profile, 0) / limit)
        peak = float(profile.max()) + 1e-6
        top = base - profile[None, :]
        mask = (v >= top) & (v < base) & (profile[None, :] > 0.004)
        labels[mask] = MOUNTAIN
        depth[mask] = 60.0 if k == 0 else 1.0 / (base - hz)
        # Faces: below the crest the slope of an ever smoother profile decides where a face points,
        # so lit and shaded facets fan out from each peak as on real ridges.
        below = np.clip((v - top) / peak, 0, 1)  # 0 on the crest, 1 a full peak height lower
        slopes = np.stack([np.gradient(_smooth_1d(profile, s * w / 256)) * w / aspect for s in (1, 3, 7, 14, 28)])
        level = np.minimum((below * 6).astype(np.int64), len(slopes) - 1)
        face = np.tanh(1.6 * slopes[level, np.arange(w)[None, :]])
        nx[mask] = np.clip(-0.8 * face - 0.12 * streak, -0.95, 0.95)[mask]
        ny[mask] = -0.3
        var[mask] = rng.random()
        alt = (base - v) / peak  # 0 at the ridge foot, 1 at the highest peak
        if k == 0 and rng.random() < 0.75 or k == 1 and rng.random() < 0.3:
            line = rng.uniform(0.4, 0.75)
            snow = mask & (alt > line + 0.08 * edge - 0.05 * streak)
            labels[snow] = SNOW
            labels[snow & (streak + 0.5 * edge > 1.6)] = ROCK
        bare = mask & (labels == MOUNTAIN)
        labels[bare & (0.6 * streak + 0.6 * edge + 1.2 * alt > rng.uniform(1.4, 2.2))] = ROCK

    sky = labels == SKY
    # Clouds: a noise field on a plane above the camera, so they flatten towards the horizon.
    coverage = 0.0 if rng.random() < 0.15 else float(rng.uniform(0.08, 0.5))
    cloud = np.zeros((h, w), np.float32)
    scale = rng.uniform(25, 60)
    off_r, off_c = rng.uniform(0, 256, size=2)
    n_sky = int(np.ceil(hz * h))  # rows that can hold sky
    if coverage > 0 and sky.any():
        vs = v[:n_sky]
        elev = np.maximum(hz - vs, 1e-3)  # (rows, 1)
        rows_c, cols_c = 0.15 / elev * scale + off_r + 0 * x, x / elev * scale * 0.13 + off_c
        dens = _sample_periodic(cloud_field, rows_c, cols_c)
        dens += 0.3 * _sample_periodic(cloud_field, rows_c * 3.7 + 91, cols_c * 3.7 + 17)  # finer billows
        dens = dens * np.clip((hz - vs) / 0.08, 0.15, 1.0)  # thin out near the horizon
        sky_top = sky[:n_sky]
        thr = float(np.quantile(dens[sky_top], 1 - coverage))
        inside = sky_top & (dens > thr)
        labels[:n_sky][inside] = CLOUD
        cloud[:n_sky][inside] = dens[inside] - thr + 1e-3

    # Trees: clusters of deciduous or conifer trees, plus sometimes a distant forest band.
    trees: list[tuple] = []  # (depth, x, height, conifer, variation, crown lobes)
    for _ in range(int(rng.integers(0, 8))):
        zc = math.exp(rng.uniform(math.log(3.2), math.log(20)))
        xc = rng.uniform(-0.5, 0.5) * aspect * zc
        is_conifer = bool(rng.random() < 0.4)
        spread = rng.uniform(0.4, 2.5) * (zc / 6) ** 0.5
        for _ in range(int(rng.integers(3, 20))):
            z = max(3.0, zc + rng.normal(0, spread * 0.5))
            trees.append((z, xc + rng.normal(0, spread), rng.uniform(0.3, 0.75) * (1.3 if is_conifer else 1.0),
                          is_conifer, float(rng.random()), rng.random((3, 3))))
    if rng.random() < 0.45:
        zf = rng.uniform(10, 40)
        lo, hi = sorted(rng.uniform(-0.6, 0.6, size=2) * aspect * zf)
        is_conifer = bool(rng.random() < 0.6)
        for xt in np.arange(lo, hi, rng.uniform(0.25, 0.45)):
            trees.append((zf * rng.uniform(1.0, 1.25), float(xt + rng.normal(0, 0.1)),
                          rng.uniform(0.5, 0.9) * (1.3 if is_conifer else 1.0), is_conifer, float(rng.random()),
                          rng.random((3, 3))))
    boulders = []
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 5))):
            z = rng.uniform(2.5, 9)
            boulders.append((z, rng.uniform(-0.5, 0.5) * aspect * z, rng.uniform(0.06, 0.22), float(rng.random())))

    standing = labels.copy()  # what a tree or boulder stands on (before any object is drawn)
    objects = [(t[0], "tree", t) for t in trees] + [(b[0], "rock", b) for b in boulders]
    for z, kind, spec in sorted(objects, key=lambda o: -o[0]):
        row_b = (hz + 1 / z) * h
        col_b = (spec[1] / z) / aspect * w + w / 2
        rb, cb = int(min(row_b, h - 1)), int(col_b)
        if not 0 <= cb < w or row_b >= h + 2:
            continue
        if standing[rb, cb] not in ((GRASS,) if kind == "tree" else (GRASS, SAND)):
            continue
        s = h / z  # pixels per world unit at this depth
        if kind == "tree":
            _, _, height, is_conifer, variation, lobes = spec
            _draw_tree(labels, depth, nx, ny, var, conifer, trunk, row_b, col_b, height * s, is_conifer,
                       variation, z, lobes)
        else:
            _, _, radius, variation = spec
            rx, ry = radius * s * 1.3, radius * s * 0.85
            r0, r1 = int(max(0, row_b - 2 * ry - 1)), int(min(h, row_b + 1))
            c0, c1 = int(max(0, col_b - rx - 1)), int(min(w, col_b + rx + 2))
            if r1 <= r0 or c1 <= c0:
                continue
            rr, cc = np.mgrid[r0:r1, c0:c1].astype(np.float32)
            ex, ey = (cc - col_b) / rx, (rr - (row_b - 0.8 * ry)) / ry
            m = (ex * ex + ey * ey <= 1) & (rr <= row_b)
            _put(labels, depth, nx, ny, var, r0, c0, m, ROCK, z, ex, ey, variation)

    return _Layout(labels=labels, depth=depth.astype(np.float32), nx=nx, ny=ny, var=var, conifer=conifer,
                   trunk=trunk, cloud=cloud, road_u=road_u, gx=gx, gz=gz, patch=patch, streak=streak,
                   grain=grain_rng.standard_normal((h, w)).astype(np.float32),
                   horizon=hz, aspect=aspect)


def _put(labels, depth, nx, ny, var, r0, c0, mask, cls, z, ex, ey, variation) -> None:
    """Write one object's pixels (mask over the box at r0, c0) into the layout arrays."""
    sl = (slice(r0, r0 + mask.shape[0]), slice(c0, c0 + mask.shape[1]))
    labels[sl][mask] = cls
    depth[sl][mask] = z
    nx[sl][mask] = np.clip(ex, -1, 1)[mask]
    ny[sl][mask] = np.clip(ey, -1, 1)[mask]
    var[sl][mask] = variation


def _draw_tree(labels, depth, nx, ny, var, conifer, trunks, row_b, col_b, height, is_conifer, variation, z,
               lobes) -> None:
    """Draw one tree standing at (row_b, col_b), `height` pixels tall; `lobes` (3, 3) in [0, 1) shape its crown."""
    h, w = labels.shape
    half = height * (0.24 if is_conifer else 0.36)
    r0, r1 = int(max(0, row_b - height - 1)), int(min(h, row_b + 1))
    c0, c1 = int(max(0, col_b - half * 1.4 - 1)), int(min(w, col_b + half * 1.4 + 2))
    if r1 <= r0 or c1 <= c0:
        return
    rr, cc = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    trunk = (np.abs(cc - col_b) <= max(0.5, 0.04 * height)) & (rr <= row_b) & (rr >= row_b - 0.35 * height)
    if is_conifer:
        apex, foot = row_b - height, row_b - 0.12 * height
        t = np.clip((rr - apex) / (foot - apex), 0, 1)
        tiers = 0.75 + 0.25 * ((t * 4) % 1.0)  # saw-tooth silhouette of branch tiers
        crown = (np.abs(cc - col_b) <= half * t * tiers) & (rr <= foot) & (rr >= apex)
        ex = (cc - col_b) / np.maximum(half * t, 1e-3)
        ey = 2 * t - 1.2
    else:
        rad = half * 0.8
        cy = row_b - height + rad
        circles = [(cy, col_b, rad)] + [
            (cy + (0.9 * a - 0.4) * rad, col_b + (1.4 * b - 0.7) * rad, rad * (0.55 + 0.25 * c)) for a, b, c in lobes
        ]
        crown = _disk_mask(rr, cc, circles)
        ex, ey = (cc - col_b) / (rad * 1.4), (rr - cy) / (rad * 1.4)
    mask = crown | trunk
    ex = np.where(crown, ex, 0.0)
    ey = np.where(crown, ey, 0.9)
    _put(labels, depth, nx, ny, var, r0, c0, mask, TREE, z, ex, ey, variation)
    conifer[r0:r1, c0:c1][mask] = is_conifer
    trunks[r0:r1, c0:c1][mask] = ~crown[mask]


# --------------------------------------------------------------------------------------- painting

_SKY_COLOURS = {  # (zenith, horizon) RGB in [0, 1]
    "day": ((0.20, 0.42, 0.82), (0.68, 0.80, 0.93)),
    "sunset": ((0.20, 0.22, 0.50), (1.00, 0.58, 0.28)),
    "dusk": ((0.05, 0.06, 0.18), (0.48, 0.30, 0.45)),
}
_LIGHT = {  # sun colour, sun strength, ambient colour, sun elevation (radians), sun row above horizon
    "day": ((1.0, 0.96, 0.88), 0.75, (0.52, 0.58, 0.70), 0.95, 0.55),
    "sunset": ((1.0, 0.62, 0.32), 0.95, (0.40, 0.33, 0.44), 0.17, 0.07),
    "dusk": ((0.55, 0.40, 0.55), 0.15, (0.27, 0.27, 0.42), -0.05, -0.03),
}
_CLOUD_COLOURS = {  # lit top, shadowed base
    "day": ((1.0, 1.0, 1.0), (0.66, 0.69, 0.78)),
    "sunset": ((1.0, 0.70, 0.50), (0.42, 0.32, 0.48)),
    "dusk": ((0.50, 0.38, 0.52), (0.16, 0.15, 0.26)),
}
_ALBEDO = {  # per season: class -> RGB albedo
    "summer": {GRASS: (0.30, 0.55, 0.14), MOUNTAIN: (0.40, 0.35, 0.30), ROCK: (0.50, 0.49, 0.47),
               SNOW: (0.96, 0.97, 1.0), SAND: (0.88, 0.77, 0.55), ROAD: (0.30, 0.29, 0.29),
               WATER: (0.04, 0.20, 0.26)},
    "autumn": {GRASS: (0.47, 0.46, 0.17), MOUNTAIN: (0.46, 0.36, 0.28), ROCK: (0.52, 0.48, 0.44),
               SNOW: (0.96, 0.97, 1.0), SAND: (0.80, 0.68, 0.48), ROAD: (0.33, 0.30, 0.28),
               WATER: (0.08, 0.16, 0.16)},
    "winter": {GRASS: (0.90, 0.92, 0.96), MOUNTAIN: (0.52, 0.52, 0.56), ROCK: (0.46, 0.46, 0.48),
               SNOW: (0.97, 0.98, 1.0), SAND: (0.80, 0.75, 0.66), ROAD: (0.50, 0.50, 0.53),
               WATER: (0.38, 0.48, 0.58)},
}
_TREE_COLOURS = {  # deciduous options (picked by per-tree variation), conifer colour
    "summer": (((0.10, 0.33, 0.08), (0.16, 0.40, 0.10), (0.22, 0.42, 0.12)), (0.05, 0.22, 0.10)),
    "autumn": (((0.80, 0.38, 0.06), (0.65, 0.16, 0.06), (0.85, 0.62, 0.10), (0.45, 0.40, 0.10)), (0.06, 0.22, 0.10)),
    "winter": (((0.34, 0.29, 0.26), (0.40, 0.35, 0.31)), (0.06, 0.18, 0.12)),
}


def _mix(a: np.ndarray, b: np.ndarray | tuple, t: np.ndarray | float) -> np.ndarray:
    """Linear interpolation a -> b by t (broadcasting)."""
    return a + (np.asarray(b, np.float32) - a) * t


def _paint(lay: _Layout, style: LandscapeStyle) -> np.ndarray:
    """Paint a layout in a style: sky, clouds, lit and textured ground, reflections, haze, grading."""
    labels = lay.labels
    h, w = labels.shape
    tex = _textures()
    hz = lay.horizon
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    x = (((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * lay.aspect)[None, :]
    rows = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    cols = np.arange(w, dtype=np.float32)[None, :] * np.ones((h, 1), np.float32)
    s_img = 256.0 / h  # image-space textures keep their look at any resolution

    zenith, horizon_c = (np.asarray(c, np.float32) for c in _SKY_COLOURS[style.time_of_day])
    sun_c, sun_k, ambient, elev, sun_row = _LIGHT[style.time_of_day]
    sun_c, ambient = np.asarray(sun_c, np.float32), np.asarray(ambient, np.float32)
    cloud_lit, cloud_dark = (np.asarray(c, np.float32) for c in _CLOUD_COLOURS[style.time_of_day])
    haze_density = 0.002 + 0.012 * style.haze
    if style.weather == "overcast":
        grey = np.float32({"day": 0.72, "sunset": 0.55, "dusk": 0.36}[style.time_of_day])
        zenith = _mix(zenith, grey * np.array([0.95, 0.97, 1.0], np.float32), 0.85)
        horizon_c = _mix(horizon_c, grey * np.array([1.02, 1.0, 0.98], np.float32) * 1.1, 0.8)
        ambient = _mix(ambient, np.full(3, grey * 1.05, np.float32), 0.7)
        sun_k *= 0.15
        cloud_lit, cloud_dark = grey * np.float32(1.08) * np.ones(3, np.float32), cloud_dark * 0.6 + grey * 0.35
        haze_density += 0.01
    elif style.weather == "hazy":
        zenith = _mix(zenith, horizon_c, 0.45)
        horizon_c = _mix(horizon_c, (0.92, 0.90, 0.86), 0.45 if style.time_of_day == "day" else 0.2)
        sun_k *= 0.6
        ambient = ambient * 1.1
        haze_density += 0.035

    # Sky: zenith-to-horizon gradient plus the sun's glow (a disc when it is in view).
    t = np.clip((hz - v) / max(hz, 1e-3), 0, 1) ** 0.6
    img = np.broadcast_to(_mix(horizon_c, zenith, t[..., None]), (h, w, 3)).copy()
    sun_x = (style.sun_x - 0.5) * lay.aspect
    sun_y = hz - sun_row
    dist2 = (x - sun_x) ** 2 + ((v - sun_y) * 1.6) ** 2
    glow = {"day": 0.25, "sunset": 0.55, "dusk": 0.3}[style.time_of_day] * (0.3 if style.weather == "overcast" else 1)
    img += (glow * np.exp(-dist2 / 0.06))[..., None] * sun_c
    if style.weather != "overcast" and style.time_of_day != "dusk":
        img += (np.clip((0.028 - np.sqrt(dist2)) / 0.006, 0, 1) * 0.9)[..., None] * sun_c
    sky_at_horizon = img[min(h - 1, int(hz * h))][None].copy()  # (1, W, 3): haze colour per column

    # Lighting: pseudo-normals against the sun direction (in front of the camera when it is in view).
    lx = (style.sun_x - 0.5) * 2 * math.cos(elev)
    ly = math.sin(elev)
    lz = 0.45 if style.time_of_day == "day" else -0.15
    norm = math.sqrt(lx * lx + ly * ly + lz * lz)
    lx, ly, lz = lx / norm, ly / norm, lz / norm
    nz = np.sqrt(np.clip(1 - lay.nx**2 - lay.ny**2, 0, 1))
    flat = lay.nx == 0
    lam = np.where(flat, max(ly, 0.0), np.clip(lay.nx * lx - lay.ny * ly + nz * lz, 0, 1))
    light = ambient + sun_c * (sun_k * lam)[..., None]

    albedo = _ALBEDO[style.season]
    colour = np.zeros((h, w, 3), np.float32)
    for cls, rgb in albedo.items():
        colour[labels == cls] = rgb
    detail = np.zeros((h, w), np.float32)  # texture, as a relative brightness change

    gz = np.where(np.isfinite(lay.gz), lay.gz, 1e4)
    level = np.clip(np.log2(np.maximum(gz, 1) / 1.6), 0, len(TEXTURE_LEVELS) - 1).astype(np.int64)
    wobble = 3 * lay.patch  # a gentle warp so tiled photos do not line up

    m = labels == GRASS
    if m.any():
        gx, gzz, lv = lay.gx[m], gz[m], level[m]
        detail[m] = 0.35 * _sample(tex["grass"], gzz * 160 + wobble[m], gx * 160, lv)
        patch = lay.patch[m][:, None]
        if style.season == "winter":
            bare = np.clip(lay.patch[m] * 0.8 - 0.6 + 0.3 * _sample(tex["grass"], gzz * 160, gx * 160, lv), 0, 1)
            colour[m] = _mix(colour[m], (0.42, 0.40, 0.30), bare[:, None])
            detail[m] *= 0.4
        else:
            colour[m] = _mix(colour[m], (0.55, 0.58, 0.22) if style.season == "summer" else (0.45, 0.30, 0.12),
                             np.clip(patch * 0.25 + 0.1, 0, 0.5))
    m = labels == SAND
    if m.any():
        detail[m] = 0.15 * _sample(tex["gravel"], gz[m] * 300, lay.gx[m] * 300, level[m])
    m = labels == ROAD
    if m.any():
        u = lay.road_u[m]
        detail[m] = 0.18 * _sample(tex["gravel"], gz[m] * 260, lay.gx[m] * 260, level[m])
        colour[m] *= (1 - 0.25 * np.clip(np.abs(u) - 0.75, 0, 1) * 4)[:, None]  # worn, darker edges
        if style.season == "winter":
            tracks = np.exp(-((np.abs(u) - 0.45) / 0.12) ** 2)
            colour[m] = _mix(colour[m], (0.28, 0.27, 0.27), tracks[:, None] * 0.8)
        else:
            dash = (np.abs(u) < 0.05) & ((gz[m] * 1.5) % 1 < 0.5) & (gz[m] < 40)
            colour[m] = np.where(dash[:, None], np.float32([0.85, 0.82, 0.6]), colour[m])
    m = labels == MOUNTAIN
    if m.any():
        detail[m] = (0.12 * _sample(tex["grass"], rows[m] * s_img * 0.7, cols[m] * s_img * 0.7, 1)
                     + 0.15 * _sample(tex["gravel"], rows[m] * s_img * 0.5, cols[m] * s_img * 0.5, 1)
                     + 0.06 * lay.streak[m])
        colour[m] *= (0.85 + 0.3 * lay.var[m] + 0.08 * lay.patch[m])[:, None]
        if style.season == "summer":
            low = np.clip((rows[m] / h - hz + 0.06) / 0.06, 0, 1) * 0.5  # green lower slopes
            colour[m] = _mix(colour[m], (0.25, 0.40, 0.18), low[:, None])
    m = labels == ROCK
    if m.any():
        detail[m] = 0.35 * _sample(tex["gravel"], rows[m] * s_img * 0.4, cols[m] * s_img * 0.4, 0)
        colour[m] *= (0.85 + 0.3 * lay.var[m])[:, None]
    m = labels == SNOW
    if m.any():
        detail[m] = 0.06 * _sample(tex["gravel"], rows[m] * s_img * 0.5, cols[m] * s_img * 0.5, 2)
    m = labels == TREE
    if m.any():
        deciduous, conifer_c = _TREE_COLOURS[style.season]
        choice = np.minimum((lay.var[m] * len(deciduous)).astype(np.int64), len(deciduous) - 1)
        tree_rgb = np.asarray(deciduous, np.float32)[choice]
        tree_rgb[lay.conifer[m]] = conifer_c
        tree_rgb[lay.trunk[m]] = (0.25, 0.18, 0.12)
        if style.season == "winter":
            tree_rgb = _mix(tree_rgb, (0.92, 0.94, 0.97), np.clip(-lay.ny[m] - 0.1, 0, 1)[:, None] * 0.9)
        colour[m] = tree_rgb
        detail[m] = 0.45 * _sample(tex["gravel"], rows[m] * s_img * 0.9, cols[m] * s_img * 0.9, 0)

    img_land = colour * light * (1 + detail)[..., None]
    land = (labels != SKY) & (labels != CLOUD) & (labels != WATER)
    img[land] = img_land[land]

    # Clouds: lit from above and from the sun's side, soft at their edges.
    m = labels == CLOUD
    if m.any():
        dens = lay.cloud
        above = np.roll(dens, 3, axis=0)
        lit = np.clip(0.55 + 6 * (dens - above) - 1.5 * dens + 0.15 * np.sign(x - sun_x) * -1, 0, 1)
        c = _mix(cloud_dark, cloud_lit, lit[..., None])
        alpha = np.clip(dens / 0.25, 0.35, 1.0)[..., None]
        img[m] = _mix(img[m], c[m], alpha[m])

    # Water: the mirrored scene above the horizon, rippled, over the water's own colour.
    m = labels == WATER
    if m.any():
        hp = hz * h
        ripple = _sample(tex["grass"], gz[m] * 700, lay.gx[m] * 60, level[m])
        mirror = np.clip(2 * hp - rows[m] - 1 + ripple * 1.5 * (rows[m] - hp) / h * 8, 0, h - 1).astype(np.int64)
        mcol = np.clip(cols[m] + ripple * 1.2, 0, w - 1).astype(np.int64)
        reflected = img[mirror, mcol]
        near = np.clip((rows[m] / h - hz) / 0.25, 0, 1)
        fresnel = (0.85 - 0.45 * near)[:, None]
        deep = colour[m] * light[m]
        water = _mix(deep, reflected, fresnel) * (1 + 0.08 * ripple)[:, None]
        if style.season == "winter":
            water = _mix(water, colour[m] * light[m] * (1 + 0.05 * ripple)[:, None], 0.45)
        if style.time_of_day != "dusk" and style.weather != "overcast":
            glitter = np.exp(-((x[0][cols[m].astype(np.int64)] - sun_x) / 0.08) ** 2) * np.clip(ripple, 0, None)
            water = water + (0.35 * glitter)[:, None] * sun_c
        img[m] = water

    # Distance haze towards the horizon colour, then grading: exposure, warmth, saturation, grain.
    fog = np.minimum(1 - np.exp(-np.where(np.isfinite(lay.depth), lay.depth, 0) * haze_density), 0.65)
    fog = np.where((labels == SKY) | (labels == CLOUD), 0, fog)
    img = _mix(img, sky_at_horizon, fog[..., None])
    img *= style.exposure
    img *= np.array([1 + 0.07 * style.warmth, 1.0, 1 - 0.07 * style.warmth], np.float32)
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = _mix(lum[..., None], img, style.saturation)
    yy, xx = (v - 0.5) * 2, (x / lay.aspect) * 2
    img *= (1 - 0.12 * (xx * xx + yy * yy))[..., None]
    img += 0.012 * lay.grain[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------- API


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """`size` -> (height, width), with a clear error for anything unusable."""
    hw = (size, size) if isinstance(size, (int, np.integer)) else None
    if isinstance(size, (tuple, list)):
        hw = tuple(size)
    if hw is None or len(hw) != 2 or not all(isinstance(s, (int, np.integer)) for s in hw):
        raise ValueError(f"size={size!r} is not usable: pass an int or a (height, width) tuple of ints")
    if min(hw) < MIN_SIZE:
        raise ValueError(f"size={size!r} is too small for a landscape: pass sizes of at least {MIN_SIZE} pixels")
    return int(hw[0]), int(hw[1])


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not usable: pass a non-negative int")
    return int(seed)


def render_landscape(seed: int, size: int | tuple[int, int] = 256,
                     style: LandscapeStyle | None = None) -> LandscapeSample:
    """Render the landscape of `seed` at `size` (int or (height, width)); the layout depends on the
    seed only, so passing `style` repaints the same label map in another look."""
    seed = _check_seed(seed)
    h, w = _check_size(size)
    if style is not None and not isinstance(style, LandscapeStyle):
        raise ValueError(f"style must be a LandscapeStyle or None, got {type(style).__name__}: "
                         "pass LandscapeStyle(time_of_day=..., season=..., weather=...) or None")
    layout_seq, style_seq, grain_seq = np.random.SeedSequence(seed).spawn(3)
    if style is None:
        style = LandscapeStyle.random(np.random.default_rng(style_seq))
    layout = _make_layout(np.random.default_rng(layout_seq), np.random.default_rng(grain_seq), h, w)
    return LandscapeSample(seed=seed, labels=layout.labels, image=_paint(layout, style), style=style)


@functools.lru_cache(maxsize=1)
def landscape_label_set() -> LabelSet:
    """The synthetic landscapes' LabelSet (assets/labels/landscape.json), registered as "landscape"."""
    path = resources.files("spade_core").joinpath("assets", "labels", "landscape.json")
    label_set = LabelSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
    if label_set.class_names != LANDSCAPE_CLASSES:
        raise ValueError(f"{path} lists classes {label_set.class_names} but the renderer draws "
                         f"{LANDSCAPE_CLASSES}: restore the JSON to the renderer's class order")
    register_label_set(label_set)
    return label_set


_README = """# Synthetic landscapes

Procedurally rendered by `spade_core.data.synthetic.write_synthetic_dataset` ({num} samples,
{h}x{w} pixels, seeds {first}..{last}). Same code and seed -> the same bytes.

- `images/<id>.png`: RGB photo-like render.
- `labels/<id>.png`: 8-bit grayscale (mode L); each pixel is a class index 0..{top} of the
  `landscape` label set (no don't-care, no instance maps). `<id>` is the seed, zero-padded.
- `styles.jsonl`: one JSON object per line, `{{"id", "seed", "style"}}`, the style the image was
  painted with (time_of_day, season, weather, sun_x, haze, saturation, exposure, warmth). The
  layout depends on the seed only; the style changes the look, never the labels.

Read it with the `folder` format (images + labels matched by stem), e.g.
`FolderDataset(root, label_set="landscape")` once `landscape_label_set()` has registered the set.
`SyntheticLandscapes` renders the same samples on the fly, without files.

| index | class | colour |
| --- | --- | --- |
{table}
"""


def write_synthetic_dataset(out_dir: str | Path, num: int, size: int | tuple[int, int] = 256,
                            seed: int = 0, overwrite: bool = False) -> Path:
    """Render seeds seed..seed+num-1 into `out_dir` (images/, labels/, styles.jsonl, README.md),
    the image-folder + label-folder layout the `folder` dataset format reads."""
    if not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num={num!r} is not usable: pass the number of samples to write, at least 1")
    seed = _check_seed(seed)
    h, w = _check_size(size)
    out = Path(out_dir)
    images, labels = out / "images", out / "labels"
    if not overwrite and any(p.is_dir() and any(p.iterdir()) for p in (images, labels)):
        raise ValueError(f"{out} already holds a dataset: pick an empty out_dir or pass overwrite=True")
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    with open(out / "styles.jsonl", "w", encoding="utf-8") as styles:
        for s in range(seed, seed + int(num)):
            sample = render_landscape(s, (h, w))
            stem = f"{s:08d}"
            Image.fromarray(sample.image, "RGB").save(images / f"{stem}.png")
            Image.fromarray(sample.labels, "L").save(labels / f"{stem}.png")
            styles.write(json.dumps({"id": stem, "seed": s, "style": sample.style.to_dict()}) + "\n")
    label_set = landscape_label_set()
    table = "\n".join(f"| {i} | {n} | rgb{tuple(c)} |" for i, n, c in label_set.legend())
    (out / "README.md").write_text(
        _README.format(num=num, h=h, w=w, first=seed, last=seed + num - 1, top=label_set.label_nc - 1, table=table),
        encoding="utf-8",
    )
    return out


class SyntheticLandscapes(Dataset):
    """Landscapes rendered on the fly: item i is seed `base_seed + i`, so no files are needed.

    Items: {"label": int64 (1,H,W), "image": float32 (3,H,W) in [-1, 1], "path": "synthetic://<seed>",
    "style": dict}. With `flip`, item i is mirrored when a generator seeded with (flip_seed, i) says so.
    """

    def __init__(self, length: int = 10000, size: int | tuple[int, int] = 256, base_seed: int = 0,
                 flip: bool = False, flip_seed: int = 0, style: LandscapeStyle | None = None) -> None:
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length={length!r} is not usable: pass the number of samples, at least 1")
        self.length = int(length)
        self.size = _check_size(size)
        self.base_seed = _check_seed(base_seed)
        self.flip = bool(flip)
        self.flip_seed = _check_seed(flip_seed)
        self.style = style
        self.label_set = landscape_label_set()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} is out of range for {self.length} synthetic landscapes")
        index %= self.length
        seed = self.base_seed + index
        sample = render_landscape(seed, self.size, self.style)
        labels, image = sample.labels, sample.image
        if self.flip and np.random.default_rng([self.flip_seed, index]).random() < 0.5:
            labels, image = labels[:, ::-1], image[:, ::-1]
        label = torch.from_numpy(np.ascontiguousarray(labels)).long()[None]  # (1, H, W) int64
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
        return {"label": label, "image": img, "path": f"synthetic://{seed}", "style": sample.style.to_dict()}

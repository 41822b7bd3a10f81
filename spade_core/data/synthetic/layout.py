"""The seed-determined scene: a ground plane under a horizon, water, a road, mountain ridges, clouds,
trees and boulders, as a label map plus the geometry the painter needs.

Every step draws from one `rng` in a fixed order and makes no draw whose count depends on the size,
so a seed keeps its layout at any size; reordering the steps changes every layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .classes import CLOUD, GRASS, MOUNTAIN, ROAD, ROCK, SAND, SKY, SNOW, WATER
from .noise import noise_1d, sample_periodic, smooth_1d, spectral_noise, upsample
from .objects import draw_objects, scatter_objects

NOISE_ROWS = 128  # layout noise is drawn on a fixed grid, so a seed's layout barely depends on size


@dataclass
class Layout:
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


def make_layout(rng: np.random.Generator, grain_rng: np.random.Generator, h: int, w: int) -> Layout:
    """Draw a landscape layout: ground and water first, then a road, mountains, clouds, trees and boulders."""
    aspect = w / h
    gw = max(8, round(NOISE_ROWS * aspect))

    def big(beta: float, stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        return upsample(spectral_noise(rng, (NOISE_ROWS, gw), beta, stretch), h, w)

    edge = big(1.8)  # shoreline / snow-line wobble
    patch = big(2.6)  # large patches: beaches, meadow colour
    streak = big(2.2, (4.0, 1.0))  # vertical gullies on mountains
    cloud_field = spectral_noise(rng, (256, 256), 2.6)
    shore_field = spectral_noise(rng, (128, 128), 2.2)

    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]  # row in height units, (H, 1)
    x = (((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * aspect)[None, :]  # column in height units
    hz = float(rng.uniform(0.38, 0.58))
    d = v - hz
    ground = np.broadcast_to(d > 0, (h, w))
    gz = np.where(d > 0, 1.0 / np.maximum(d, 1e-4), np.inf).astype(np.float32) * np.ones((1, w), np.float32)
    gx = (x * np.where(np.isfinite(gz), gz, 0)).astype(np.float32)
    gzf = np.where(ground, gz, 1e6)  # finite stand-in so the formulas below stay warning-free

    labels = np.where(ground, GRASS, SKY).astype(np.uint8)
    depth = gz.copy()
    nx = np.zeros((h, w), np.float32)
    ny = np.zeros((h, w), np.float32)
    var = np.zeros((h, w), np.float32)
    conifer = np.zeros((h, w), bool)
    trunk = np.zeros((h, w), bool)
    road_u = np.zeros((h, w), np.float32)

    # Shore wobble drawn on the ground plane, so it shrinks with distance like the water does.
    shore_noise = sample_periodic(shore_field, gzf * 4.0, np.where(ground, gx, 0) * 4.0)
    shore_noise *= np.clip(10.0 / gzf, 0.2, 1.0)
    water_kind, lake_side = _water(rng, labels, ground, d, gx, gzf, aspect, edge, patch, shore_noise)
    if water_kind in ("none", "lake") and rng.random() < 0.4:  # a road, kept on the side away from a lake
        _road(rng, labels, road_u, ground, gx, gzf, aspect, lake_side)
    _ridges(rng, labels, depth, nx, ny, var, v, hz, aspect, edge, streak)
    cloud = _clouds(rng, labels, cloud_field, v, x, hz)
    draw_objects(scatter_objects(rng, aspect), hz, aspect, labels, depth, nx, ny, var, conifer, trunk)

    return Layout(labels=labels, depth=depth.astype(np.float32), nx=nx, ny=ny, var=var, conifer=conifer,
                  trunk=trunk, cloud=cloud, road_u=road_u, gx=gx, gz=gz, patch=patch, streak=streak,
                  grain=grain_rng.standard_normal((h, w)).astype(np.float32),
                  horizon=hz, aspect=aspect)


def _water(rng: np.random.Generator, labels: np.ndarray, ground: np.ndarray, d: np.ndarray, gx: np.ndarray,
           gzf: np.ndarray, aspect: float, edge: np.ndarray, patch: np.ndarray,
           shore_noise: np.ndarray) -> tuple[str, float]:
    """None, a lake, a river or the sea, with sand shores; returns the kind and the lake's side (-1, 0, 1)."""
    w = labels.shape[1]
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
        shore = rng.uniform(0.03, 0.12) + 0.015 * noise_1d(rng, w, 2.0)[None, :]
        beach = rng.uniform(0.04, 0.25) + 0.02 * edge
        labels[ground & (d < shore + beach)] = SAND
        labels[ground & (d < shore)] = WATER
    return str(water_kind), lake_side


def _road(rng: np.random.Generator, labels: np.ndarray, road_u: np.ndarray, ground: np.ndarray, gx: np.ndarray,
          gzf: np.ndarray, aspect: float, lake_side: float) -> None:
    """A gently bending road into the distance, on the side away from a lake; it never crosses water."""
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


def _ridges(rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray, nx: np.ndarray, ny: np.ndarray,
            var: np.ndarray, v: np.ndarray, hz: float, aspect: float, edge: np.ndarray, streak: np.ndarray) -> None:
    """Mountain ridges, far to near; the farthest may carry snow caps, all get rock outcrops."""
    w = labels.shape[1]
    n_ridges = int(rng.choice(4, p=[0.12, 0.3, 0.38, 0.2]))
    for k in range(n_ridges):
        base = hz + (0.0 if k == 0 else rng.uniform(0.004, 0.02) * k)
        amp = rng.uniform(0.14, 0.36) * hz * (0.6**k)
        lift = rng.uniform(0.0, 0.12) * hz * (0.6**k)
        profile = lift + amp * (1 + noise_1d(rng, w, rng.uniform(2.4, 3.0)))
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
        slopes = np.stack([np.gradient(smooth_1d(profile, s * w / 256)) * w / aspect for s in (1, 3, 7, 14, 28)])
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


def _clouds(rng: np.random.Generator, labels: np.ndarray, cloud_field: np.ndarray, v: np.ndarray, x: np.ndarray,
            hz: float) -> np.ndarray:
    """Clouds from a noise field on a plane above the camera (so they flatten towards the horizon);
    returns their density above the coverage threshold, 0 outside clouds."""
    h, w = labels.shape
    sky = labels == SKY
    coverage = 0.0 if rng.random() < 0.15 else float(rng.uniform(0.08, 0.5))
    cloud = np.zeros((h, w), np.float32)
    scale = rng.uniform(25, 60)
    off_r, off_c = rng.uniform(0, 256, size=2)
    n_sky = int(np.ceil(hz * h))  # rows that can hold sky
    if coverage > 0 and sky.any():
        vs = v[:n_sky]
        elev = np.maximum(hz - vs, 1e-3)  # (rows, 1)
        rows_c, cols_c = 0.15 / elev * scale + off_r + 0 * x, x / elev * scale * 0.13 + off_c
        dens = sample_periodic(cloud_field, rows_c, cols_c)
        dens += 0.3 * sample_periodic(cloud_field, rows_c * 3.7 + 91, cols_c * 3.7 + 17)  # finer billows
        dens = dens * np.clip((hz - vs) / 0.08, 0.15, 1.0)  # thin out near the horizon
        sky_top = sky[:n_sky]
        thr = float(np.quantile(dens[sky_top], 1 - coverage))
        inside = sky_top & (dens > thr)
        labels[:n_sky][inside] = CLOUD
        cloud[:n_sky][inside] = dens[inside] - thr + 1e-3
    return cloud

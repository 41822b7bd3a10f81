"""Paint a layout in a style: sky, lit and textured ground, clouds, reflections, haze, then grading."""

from __future__ import annotations

import math

import numpy as np

from .classes import CLOUD, GRASS, MOUNTAIN, ROAD, ROCK, SAND, SKY, SNOW, TREE, WATER
from .colours import ALBEDO, TREE_COLOURS, Lighting, lighting, mix
from .layout import Layout
from .style import LandscapeStyle
from .textures import TEXTURE_LEVELS, sample, textures


def paint(lay: Layout, style: LandscapeStyle) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image of `lay` painted in `style`."""
    labels = lay.labels
    h, w = labels.shape
    tex = textures()
    lit = lighting(style)
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]  # row in height units, (H, 1)
    x = (((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * lay.aspect)[None, :]  # column in height units
    rows = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    cols = np.arange(w, dtype=np.float32)[None, :] * np.ones((h, 1), np.float32)
    gz = np.where(np.isfinite(lay.gz), lay.gz, 1e4)
    level = np.clip(np.log2(np.maximum(gz, 1) / 1.6), 0, len(TEXTURE_LEVELS) - 1).astype(np.int64)  # pyramid level
    sun_x = (style.sun_x - 0.5) * lay.aspect

    img = _sky(lay, style, lit, v, x, sun_x)
    sky_at_horizon = img[min(h - 1, int(lay.horizon * h))][None].copy()  # (1, W, 3): haze colour per column
    light = _light(lay, style, lit)
    colour, detail = _surfaces(lay, style, tex, rows, cols, gz, level)
    img_land = colour * light * (1 + detail)[..., None]
    land = (labels != SKY) & (labels != CLOUD) & (labels != WATER)
    img[land] = img_land[land]
    _clouds(img, lay, lit, x, sun_x)
    _water(img, lay, style, lit, tex, colour, light, rows, cols, x, gz, level, sun_x)
    return _grade(img, lay, style, lit, sky_at_horizon, v, x)


def _sky(lay: Layout, style: LandscapeStyle, lit: Lighting, v: np.ndarray, x: np.ndarray,
         sun_x: float) -> np.ndarray:
    """Zenith-to-horizon gradient plus the sun's glow (a disc when it is in view), over the whole frame."""
    h, w = lay.labels.shape
    hz = lay.horizon
    t = np.clip((hz - v) / max(hz, 1e-3), 0, 1) ** 0.6
    img = np.broadcast_to(mix(lit.horizon, lit.zenith, t[..., None]), (h, w, 3)).copy()
    sun_y = hz - lit.sun_row
    dist2 = (x - sun_x) ** 2 + ((v - sun_y) * 1.6) ** 2
    glow = {"day": 0.25, "sunset": 0.55, "dusk": 0.3}[style.time_of_day] * (0.3 if style.weather == "overcast" else 1)
    img += (glow * np.exp(-dist2 / 0.06))[..., None] * lit.sun
    if style.weather != "overcast" and style.time_of_day != "dusk":
        img += (np.clip((0.028 - np.sqrt(dist2)) / 0.006, 0, 1) * 0.9)[..., None] * lit.sun
    return img


def _light(lay: Layout, style: LandscapeStyle, lit: Lighting) -> np.ndarray:
    """(H, W, 3) incoming light: ambient plus the sun on pseudo-normals (in front of the camera when in view)."""
    elev = lit.elevation
    lx = (style.sun_x - 0.5) * 2 * math.cos(elev)
    ly = math.sin(elev)
    lz = 0.45 if style.time_of_day == "day" else -0.15
    norm = math.sqrt(lx * lx + ly * ly + lz * lz)
    lx, ly, lz = lx / norm, ly / norm, lz / norm
    nz = np.sqrt(np.clip(1 - lay.nx**2 - lay.ny**2, 0, 1))
    flat = lay.nx == 0
    lam = np.where(flat, max(ly, 0.0), np.clip(lay.nx * lx - lay.ny * ly + nz * lz, 0, 1))
    return lit.ambient + lit.sun * (lit.sun_strength * lam)[..., None]


def _surfaces(lay: Layout, style: LandscapeStyle, tex: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray,
              gz: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) albedo and (H, W) texture detail (a relative brightness change) of every class."""
    labels = lay.labels
    h, w = labels.shape
    hz = lay.horizon
    s_img = 256.0 / h  # image-space textures keep their look at any resolution
    colour = np.zeros((h, w, 3), np.float32)
    for cls, rgb in ALBEDO[style.season].items():
        colour[labels == cls] = rgb
    detail = np.zeros((h, w), np.float32)
    wobble = 3 * lay.patch  # a gentle warp so tiled photos do not line up

    m = labels == GRASS
    if m.any():
        gx, gzz, lv = lay.gx[m], gz[m], level[m]
        detail[m] = 0.35 * sample(tex["grass"], gzz * 160 + wobble[m], gx * 160, lv)
        patch = lay.patch[m][:, None]
        if style.season == "winter":
            bare = np.clip(lay.patch[m] * 0.8 - 0.6 + 0.3 * sample(tex["grass"], gzz * 160, gx * 160, lv), 0, 1)
            colour[m] = mix(colour[m], (0.42, 0.40, 0.30), bare[:, None])
            detail[m] *= 0.4
        else:
            colour[m] = mix(colour[m], (0.55, 0.58, 0.22) if style.season == "summer" else (0.45, 0.30, 0.12),
                            np.clip(patch * 0.25 + 0.1, 0, 0.5))
    m = labels == SAND
    if m.any():
        detail[m] = 0.15 * sample(tex["gravel"], gz[m] * 300, lay.gx[m] * 300, level[m])
    m = labels == ROAD
    if m.any():
        u = lay.road_u[m]
        detail[m] = 0.18 * sample(tex["gravel"], gz[m] * 260, lay.gx[m] * 260, level[m])
        colour[m] *= (1 - 0.25 * np.clip(np.abs(u) - 0.75, 0, 1) * 4)[:, None]  # worn, darker edges
        if style.season == "winter":
            tracks = np.exp(-((np.abs(u) - 0.45) / 0.12) ** 2)
            colour[m] = mix(colour[m], (0.28, 0.27, 0.27), tracks[:, None] * 0.8)
        else:
            dash = (np.abs(u) < 0.05) & ((gz[m] * 1.5) % 1 < 0.5) & (gz[m] < 40)
            colour[m] = np.where(dash[:, None], np.float32([0.85, 0.82, 0.6]), colour[m])
    m = labels == MOUNTAIN
    if m.any():
        detail[m] = (0.12 * sample(tex["grass"], rows[m] * s_img * 0.7, cols[m] * s_img * 0.7, 1)
                     + 0.15 * sample(tex["gravel"], rows[m] * s_img * 0.5, cols[m] * s_img * 0.5, 1)
                     + 0.06 * lay.streak[m])
        colour[m] *= (0.85 + 0.3 * lay.var[m] + 0.08 * lay.patch[m])[:, None]
        if style.season == "summer":
            low = np.clip((rows[m] / h - hz + 0.06) / 0.06, 0, 1) * 0.5  # green lower slopes
            colour[m] = mix(colour[m], (0.25, 0.40, 0.18), low[:, None])
    m = labels == ROCK
    if m.any():
        detail[m] = 0.35 * sample(tex["gravel"], rows[m] * s_img * 0.4, cols[m] * s_img * 0.4, 0)
        colour[m] *= (0.85 + 0.3 * lay.var[m])[:, None]
    m = labels == SNOW
    if m.any():
        detail[m] = 0.06 * sample(tex["gravel"], rows[m] * s_img * 0.5, cols[m] * s_img * 0.5, 2)
    m = labels == TREE
    if m.any():
        deciduous, conifer_c = TREE_COLOURS[style.season]
        choice = np.minimum((lay.var[m] * len(deciduous)).astype(np.int64), len(deciduous) - 1)
        tree_rgb = np.asarray(deciduous, np.float32)[choice]
        tree_rgb[lay.conifer[m]] = conifer_c
        tree_rgb[lay.trunk[m]] = (0.25, 0.18, 0.12)
        if style.season == "winter":
            tree_rgb = mix(tree_rgb, (0.92, 0.94, 0.97), np.clip(-lay.ny[m] - 0.1, 0, 1)[:, None] * 0.9)
        colour[m] = tree_rgb
        detail[m] = 0.45 * sample(tex["gravel"], rows[m] * s_img * 0.9, cols[m] * s_img * 0.9, 0)
    return colour, detail


def _clouds(img: np.ndarray, lay: Layout, lit: Lighting, x: np.ndarray, sun_x: float) -> None:
    """Clouds over the sky in `img`: lit from above and from the sun's side, soft at their edges."""
    m = lay.labels == CLOUD
    if m.any():
        dens = lay.cloud
        above = np.roll(dens, 3, axis=0)
        shade = np.clip(0.55 + 6 * (dens - above) - 1.5 * dens + 0.15 * np.sign(x - sun_x) * -1, 0, 1)
        c = mix(lit.cloud_dark, lit.cloud_lit, shade[..., None])
        alpha = np.clip(dens / 0.25, 0.35, 1.0)[..., None]
        img[m] = mix(img[m], c[m], alpha[m])


def _water(img: np.ndarray, lay: Layout, style: LandscapeStyle, lit: Lighting, tex: dict[str, np.ndarray],
           colour: np.ndarray, light: np.ndarray, rows: np.ndarray, cols: np.ndarray, x: np.ndarray, gz: np.ndarray,
           level: np.ndarray, sun_x: float) -> None:
    """Water in `img`: the mirrored scene above the horizon, rippled, over the water's own colour."""
    m = lay.labels == WATER
    if m.any():
        h, w = lay.labels.shape
        hz = lay.horizon
        hp = hz * h
        ripple = sample(tex["grass"], gz[m] * 700, lay.gx[m] * 60, level[m])
        mirror = np.clip(2 * hp - rows[m] - 1 + ripple * 1.5 * (rows[m] - hp) / h * 8, 0, h - 1).astype(np.int64)
        mcol = np.clip(cols[m] + ripple * 1.2, 0, w - 1).astype(np.int64)
        reflected = img[mirror, mcol]
        near = np.clip((rows[m] / h - hz) / 0.25, 0, 1)
        fresnel = (0.85 - 0.45 * near)[:, None]
        deep = colour[m] * light[m]
        water = mix(deep, reflected, fresnel) * (1 + 0.08 * ripple)[:, None]
        if style.season == "winter":
            water = mix(water, colour[m] * light[m] * (1 + 0.05 * ripple)[:, None], 0.45)
        if style.time_of_day != "dusk" and style.weather != "overcast":
            glitter = np.exp(-((x[0][cols[m].astype(np.int64)] - sun_x) / 0.08) ** 2) * np.clip(ripple, 0, None)
            water = water + (0.35 * glitter)[:, None] * lit.sun
        img[m] = water


def _grade(img: np.ndarray, lay: Layout, style: LandscapeStyle, lit: Lighting, sky_at_horizon: np.ndarray,
           v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Distance haze towards the horizon colour, then exposure, warmth, saturation, vignette and grain; to uint8."""
    labels = lay.labels
    fog = np.minimum(1 - np.exp(-np.where(np.isfinite(lay.depth), lay.depth, 0) * lit.haze_density), 0.65)
    fog = np.where((labels == SKY) | (labels == CLOUD), 0, fog)
    img = mix(img, sky_at_horizon, fog[..., None])
    img *= style.exposure
    img *= np.array([1 + 0.07 * style.warmth, 1.0, 1 - 0.07 * style.warmth], np.float32)
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = mix(lum[..., None], img, style.saturation)
    yy, xx = (v - 0.5) * 2, (x / lay.aspect) * 2
    img *= (1 - 0.12 * (xx * xx + yy * yy))[..., None]
    img += 0.012 * lay.grain[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

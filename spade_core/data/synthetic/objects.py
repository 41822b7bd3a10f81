"""Trees and boulders: scattered on the ground plane from the layout seed, drawn far to near."""

from __future__ import annotations

import math

import numpy as np

from .classes import GRASS, ROCK, SAND, TREE


def scatter_objects(rng: np.random.Generator, aspect: float) -> list[tuple[float, str, tuple]]:
    """Draw tree clusters, sometimes a distant forest band, and boulders as (depth, kind, spec), far first."""
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
    boulders = []  # (depth, x, radius, variation)
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 5))):
            z = rng.uniform(2.5, 9)
            boulders.append((z, rng.uniform(-0.5, 0.5) * aspect * z, rng.uniform(0.06, 0.22), float(rng.random())))
    objects = [(t[0], "tree", t) for t in trees] + [(b[0], "rock", b) for b in boulders]
    return sorted(objects, key=lambda o: -o[0])


def draw_objects(objects: list[tuple[float, str, tuple]], horizon: float, aspect: float, labels, depth, nx, ny,
                 var, conifer, trunk) -> None:
    """Draw each object standing on the ground it lands on (trees on grass, boulders on grass or sand)."""
    h, w = labels.shape
    standing = labels.copy()  # what a tree or boulder stands on (before any object is drawn)
    for z, kind, spec in objects:
        row_b = (horizon + 1 / z) * h
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


def _disk_mask(rr: np.ndarray, cc: np.ndarray, circles: list[tuple[float, float, float]]) -> np.ndarray:
    """Union of circles (row, col, radius) over a coordinate box."""
    mask = np.zeros(np.broadcast_shapes(rr.shape, cc.shape), dtype=bool)
    for r, c, rad in circles:
        mask |= (rr - r) ** 2 + (cc - c) ** 2 <= rad * rad
    return mask


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

"""Canvas helpers for the demo, free of Gradio: starting layouts, painted canvas -> labels, legend.

Layouts are drawn at run time from the loaded model's class names (a "sky" class, a "grass" or
"terrain" class, ...), so they fit whatever label set a model carries. Label maps here are
int64 class indices (H,W); canvases are uint8 RGB(A) (H,W,3|4).
"""

from __future__ import annotations

import html
import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from spade_core.labels import LabelSet

__all__ = [
    "Scene",
    "blank_layout",
    "canvas_to_labels",
    "example_layouts",
    "find_class",
    "legend_html",
    "scene_layout",
]

# Class-name words that stand for a painting role, most typical first (ADE20K, COCO-Stuff,
# Cityscapes and the embedded landscape set all name their classes with some of these).
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "sky": ("sky",),
    "cloud": ("cloud", "clouds"),
    "mountain": ("mountain", "hill", "mount"),
    "snow": ("snow",),
    "rock": ("rock", "stone"),
    "grass": ("grass", "field", "terrain", "ground", "dirt", "land"),
    "tree": ("tree", "trees", "vegetation", "bush", "plant"),
    "water": ("water", "sea", "lake", "river"),
    "sand": ("sand", "beach"),
    "road": ("road", "path", "sidewalk"),
}


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z]+", name.lower()) if w]


def find_class(label_set: LabelSet, role: str) -> int | None:
    """Index of the class that best plays `role` ('sky', 'grass', ...), or None if none fits."""
    names = [n.lower() for n in label_set.class_names]
    for word in ROLE_WORDS.get(role, (role,)):
        for i, name in enumerate(names):
            if name == word:
                return i
        for i, name in enumerate(names):
            if word in _words(name):
                return i
    return None


def _ground_class(label_set: LabelSet) -> int:
    for role in ("grass", "water", "sand", "road"):
        idx = find_class(label_set, role)
        if idx is not None:
            return idx
    return min(1, label_set.label_nc - 1)


def blank_layout(label_set: LabelSet, height: int, width: int) -> np.ndarray:
    """A plain start (H,W): the top half a sky-like class, the bottom half a ground-like one."""
    sky = find_class(label_set, "sky")
    labels = np.full((height, width), _ground_class(label_set), dtype=np.int64)
    labels[: height // 2] = 0 if sky is None else sky
    return labels


# A shape: ("poly", [(x, y), ...]) or ("ellipse", (cx, cy, rx, ry)), coordinates in 0..1.
Shape = tuple[str, object]


class Scene:
    """A named layout drawn role by role (later strokes on top), the way a user would paint it."""

    def __init__(self, name: str, strokes: list[tuple[str, Shape]]) -> None:
        self.name = name
        self.strokes = strokes

    def roles(self) -> set[str]:
        """Every role the scene paints."""
        return {role for role, _ in self.strokes}


def _ridge(y0: float, peaks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A mountain polygon: the baseline at height y0 and a ridge through (x, y) peaks and saddles."""
    return [(0.0, y0), *peaks, (1.0, y0)]


SCENES: tuple[Scene, ...] = (
    Scene("Mountain lake", [
        ("sky", ("poly", [(0, 0), (1, 0), (1, 1), (0, 1)])),
        ("cloud", ("ellipse", (0.22, 0.14, 0.14, 0.05))),
        ("cloud", ("ellipse", (0.7, 0.1, 0.18, 0.045))),
        ("mountain", ("poly", _ridge(0.62, [(0, 0.45), (0.18, 0.3), (0.3, 0.4), (0.5, 0.2),
                                           (0.66, 0.36), (0.82, 0.26), (1, 0.42)]))),
        ("snow", ("poly", [(0.44, 0.27), (0.5, 0.2), (0.56, 0.27), (0.5, 0.25)])),
        ("snow", ("poly", [(0.77, 0.3), (0.82, 0.26), (0.87, 0.3), (0.82, 0.29)])),
        ("grass", ("poly", [(0, 0.6), (1, 0.58), (1, 1), (0, 1)])),
        ("water", ("ellipse", (0.52, 0.74, 0.34, 0.1))),
        ("tree", ("ellipse", (0.06, 0.62, 0.08, 0.14))),
        ("tree", ("ellipse", (0.94, 0.6, 0.07, 0.13))),
    ]),
    Scene("Beach", [
        ("sky", ("poly", [(0, 0), (1, 0), (1, 1), (0, 1)])),
        ("cloud", ("ellipse", (0.35, 0.18, 0.2, 0.05))),
        ("water", ("poly", [(0, 0.48), (1, 0.48), (1, 1), (0, 1)])),
        ("sand", ("poly", [(0, 0.72), (0.3, 0.68), (0.6, 0.74), (1, 0.66), (1, 1), (0, 1)])),
        ("rock", ("ellipse", (0.85, 0.7, 0.09, 0.06))),
    ]),
    Scene("Forest road", [
        ("sky", ("poly", [(0, 0), (1, 0), (1, 1), (0, 1)])),
        ("mountain", ("poly", _ridge(0.5, [(0, 0.38), (0.25, 0.28), (0.45, 0.36), (0.7, 0.25), (1, 0.34)]))),
        ("grass", ("poly", [(0, 0.5), (1, 0.5), (1, 1), (0, 1)])),
        ("tree", ("poly", [(0, 0.3), (0.12, 0.34), (0.3, 0.42), (0.38, 0.55), (0, 0.7)])),
        ("tree", ("poly", [(1, 0.32), (0.85, 0.36), (0.66, 0.44), (0.6, 0.55), (1, 0.68)])),
        ("road", ("poly", [(0.47, 0.5), (0.53, 0.5), (0.8, 1), (0.2, 1)])),
    ]),
    Scene("Snowy peaks", [
        ("sky", ("poly", [(0, 0), (1, 0), (1, 1), (0, 1)])),
        ("mountain", ("poly", _ridge(0.75, [(0, 0.5), (0.25, 0.18), (0.42, 0.4), (0.62, 0.12),
                                           (0.8, 0.35), (1, 0.28)]))),
        ("snow", ("poly", [(0.14, 0.32), (0.25, 0.18), (0.34, 0.3), (0.27, 0.36), (0.2, 0.3)])),
        ("snow", ("poly", [(0.5, 0.28), (0.62, 0.12), (0.72, 0.25), (0.63, 0.3), (0.57, 0.24)])),
        ("rock", ("ellipse", (0.42, 0.62, 0.1, 0.05))),
        ("tree", ("poly", [(0, 0.7), (0.35, 0.66), (0.7, 0.7), (1, 0.64), (1, 1), (0, 1)])),
        ("grass", ("poly", [(0, 0.86), (0.5, 0.82), (1, 0.88), (1, 1), (0, 1)])),
    ]),
)


def scene_layout(scene: Scene, label_set: LabelSet, height: int, width: int) -> np.ndarray:
    """Draw `scene` (H,W) with the classes `label_set` has; roles it lacks are left out."""
    canvas = Image.fromarray(blank_layout(label_set, height, width).astype(np.int32), mode="I")
    draw = ImageDraw.Draw(canvas)
    for role, (kind, geometry) in scene.strokes:
        idx = find_class(label_set, role)
        if idx is None:
            continue
        if kind == "poly":
            draw.polygon([(x * (width - 1), y * (height - 1)) for x, y in geometry], fill=idx)
        else:
            cx, cy, rx, ry = geometry
            box = [(cx - rx) * width, (cy - ry) * height, (cx + rx) * width, (cy + ry) * height]
            draw.ellipse(box, fill=idx)
    return np.asarray(canvas).astype(np.int64)


def example_layouts(label_set: LabelSet, height: int, width: int, min_roles: int = 3) -> list[tuple[str, np.ndarray]]:
    """(name, labels (H,W)) for each built-in scene the label set can paint at least `min_roles` roles of."""
    found = {role for role in ROLE_WORDS if find_class(label_set, role) is not None}
    return [
        (scene.name, scene_layout(scene, label_set, height, width))
        for scene in SCENES
        if len(scene.roles() & found) >= min_roles
    ]


def _palette_keys(label_set: LabelSet) -> np.ndarray:
    colors = np.asarray(label_set.palette, dtype=np.int64)
    if label_set.contain_dontcare_label:
        colors = np.concatenate([colors, np.zeros((1, 3), dtype=np.int64)])
    return (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]


def _settle_blends(labels: torch.Tensor, exact: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Give blended (non-palette) pixels the most common exact class within `radius`.

    An anti-aliased edge between two classes holds in-between colours whose nearest palette
    entry can be a third class; taking the neighbours' class keeps edges clean.
    """
    present = torch.unique(labels[exact])
    if present.numel() == 0 or bool(exact.all()):
        return labels
    votes = ((labels[None] == present[:, None, None]) & exact[None]).float()  # (K, H, W)
    size = 2 * radius + 1
    counts = F.avg_pool2d(votes[None], size, stride=1, padding=radius, count_include_pad=False)[0]
    best, winner = counts.max(0)
    fix = ~exact & (best > 0)
    out = labels.clone()
    out[fix] = present[winner[fix]]
    return out


def canvas_to_labels(canvas: np.ndarray, label_set: LabelSet, background: np.ndarray | None = None) -> torch.Tensor:
    """A painted canvas, uint8 RGB(A) (H,W,3|4) -> int64 class indices (H,W).

    Colours snap to the nearest class colour; blended edge pixels take their neighbours' class.
    Transparent pixels show `background` (class indices, H,W) if given; a fully transparent
    canvas raises ValueError.
    """
    arr = np.asarray(canvas)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"the canvas must be an RGB(A) image (H,W,3|4), got shape {arr.shape}")
    rgb = arr[..., :3].astype(np.float32)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255
        if not alpha.any():
            raise ValueError("the canvas is empty: start from the blank canvas or an example layout, then paint")
        if (alpha < 1).any():
            if background is None:
                background = blank_layout(label_set, arr.shape[0], arr.shape[1])
            under = label_set.colorize(background).astype(np.float32)
            rgb = rgb * alpha + under * (1 - alpha)
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.int64)
    labels = label_set.colors_to_labels(rgb, nearest=True)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    exact = torch.from_numpy(np.isin(keys, _palette_keys(label_set)))
    return _settle_blends(labels, exact)


def legend_html(label_set: LabelSet) -> str:
    """An HTML legend: one colour swatch and name per class (index in the tooltip)."""
    items = []
    for idx, name, color in label_set.legend():
        hex_color = "#{:02x}{:02x}{:02x}".format(*color)
        items.append(
            f'<span title="class {idx}: {html.escape(name)} ({hex_color})" data-color="{hex_color}" '
            f'data-name="{html.escape(name)}" style="display:inline-flex;align-items:center;gap:6px;'
            'margin:2px 10px 2px 0;white-space:nowrap;cursor:pointer">'
            f'<span style="width:18px;height:18px;border-radius:4px;background:{hex_color};'
            'border:1px solid rgba(0,0,0,.35);display:inline-block"></span>'
            f"{html.escape(name)}</span>"
        )
    return (
        '<div class="spade-legend" style="display:flex;flex-wrap:wrap;max-height:180px;overflow-y:auto;'
        f'font-size:14px;line-height:1.3">{"".join(items)}</div>'
    )

"""Rendered landscapes as files (`write_synthetic_dataset`, the `folder` format's layout) or as a
torch Dataset rendered on the fly (`SyntheticLandscapes`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .classes import landscape_label_set
from .render import check_seed, check_size, render_landscape
from .style import LandscapeStyle

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
`FolderDataset(root, label_set="landscape")` (a built-in label set).
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
    seed = check_seed(seed)
    h, w = check_size(size)
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
        self.size = check_size(size)
        self.base_seed = check_seed(base_seed)
        self.flip = bool(flip)
        self.flip_seed = check_seed(flip_seed)
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

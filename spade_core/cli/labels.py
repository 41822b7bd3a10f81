"""``spade palette``: a label set's classes and colours, as text, a legend image or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .common import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from PIL import Image

    from ..labels import LabelSet


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade palette``."""
    from ..registry import DATASETS

    built_in = ", ".join(sorted({entry.label_set for entry in DATASETS.values()}))
    p.add_argument("label_set", metavar="LABELSET",
                   help=f"built-in name ({built_in}), a label set JSON file or a pipeline folder")
    p.add_argument("--out", metavar="legend.png", help="write a legend image of the classes and colours")
    p.add_argument("--json", metavar="palette.json", help="write the label set (names, palette, ids) as JSON")


def read_label_set(text: str) -> LabelSet:
    """A label set by built-in name, from a label set JSON file, or from a pipeline folder."""
    from ..files import read_json
    from ..labels import LabelSet, get_label_set

    path = Path(text).expanduser()
    if path.is_dir():
        from ..hub.folder import read_label_set as read_folder_label_set

        return read_folder_label_set(path)
    if path.is_file():
        return LabelSet.from_dict(read_json(path, "pass a label set JSON file (spade palette NAME --json FILE writes one)"))
    return get_label_set(text)


def draw_legend(label_set: LabelSet, columns: int | None = None) -> Image.Image:
    """A white image listing every class as a colour swatch, its index and name."""
    from PIL import Image, ImageDraw, ImageFont

    entries = [(str(i), name, color) for i, name, color in label_set.legend()]
    if label_set.contain_dontcare_label:
        entries.append((str(label_set.label_nc), "(don't care)", (0, 0, 0)))
    columns = columns or max(1, min(4, (len(entries) + 29) // 30))
    rows = (len(entries) + columns - 1) // columns
    font = ImageFont.load_default()
    widest = max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(f"{i} {n}", font=font) for i, n, _ in entries)
    row_h, swatch, pad = 20, 28, 8
    col_w = int(swatch + 2 * pad + widest + pad)
    image = Image.new("RGB", (columns * col_w + pad, rows * row_h + 2 * pad + row_h), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), f"{label_set.name}: {label_set.label_nc} classes", fill="black", font=font)
    for k, (index, name, color) in enumerate(entries):
        x, y = pad + (k // rows) * col_w, pad + row_h + (k % rows) * row_h
        draw.rectangle([x, y + 2, x + swatch, y + row_h - 3], fill=tuple(color), outline=(128, 128, 128))
        draw.text((x + swatch + pad, y + 4), f"{index} {name}", fill="black", font=font)
    return image


def run(args: argparse.Namespace) -> int:
    """Print a label set, or write its legend image / JSON."""
    label_set = read_label_set(args.label_set)
    if args.out:
        out = Path(args.out).expanduser()
        if out.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"--out {out} is not an image file name: use e.g. legend.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_legend(label_set).save(out)
        print(f"wrote {out}")
    if args.json:
        out = Path(args.json).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(label_set.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    if not args.out and not args.json:
        print(f"# {label_set.name}: {label_set.label_nc} classes")
        for index, name, (r, g, b) in label_set.legend():
            print(f"{index:>4}  #{r:02X}{g:02X}{b:02X}  {name}")
    return 0

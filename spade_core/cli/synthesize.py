"""``spade synthesize``: segmentation maps (files or folders) -> images named after them."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from .common import DTYPES, IMAGE_SUFFIXES, parse_size

# Label maps are stored losslessly; a folder's JPEGs are photos (e.g. renders beside their layouts), not label maps.
LABEL_MAP_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
PROGRESS_FROM = 4  # show a progress bar from this many images on


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade synthesize``."""
    p.add_argument("segmap", nargs="+", metavar="SEGMAP", help="label map files, or folders of them (PNG, BMP, TIFF)")
    p.add_argument("--model", metavar="REPO|DIR", help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--style", metavar="IMAGE", help="style reference photo (models trained with the VAE encoder)")
    p.add_argument("--instance", metavar="PATH", help="instance map, or a folder of them named like the segmaps")
    p.add_argument("--seed", type=int, help="seed for the style code (same seed, same images); random by default")
    p.add_argument("--num", type=int, default=1, metavar="N", help="images per segmap (default 1)")
    p.add_argument("--size", metavar="WxH", help="output width x height, e.g. 512x256 (default: the model's native size)")
    p.add_argument("--out", default="outputs", metavar="PATH|DIR",
                   help="output folder (default ./outputs), or an image path for a single image")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="inference precision (default float32)")
    p.add_argument("--nearest-color", action="store_true", help="snap unknown colours of RGB segmaps to the nearest class")
    p.add_argument("--unknown", default="error", choices=("error", "dontcare"),
                   help="labels outside the label set: fail (default) or treat as don't-care")


def collect_segmaps(paths: list[str]) -> list[Path]:
    """Files as given; folders expanded to their label map files (sorted), leaving photos beside them out."""
    found: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in LABEL_MAP_SUFFIXES)
            if not files:
                raise FileNotFoundError(
                    f"folder {path} holds no label maps ({', '.join(LABEL_MAP_SUFFIXES)}): pass segmap files"
                )
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"segmap {path} not found: check the path")
    return found


def output_paths(inputs: list[Path], out: str, num: int) -> list[list[Path]]:
    """Per input, the paths of its ``num`` images: ``<stem>.png`` or ``<stem>_<k>.png``."""
    target = Path(out).expanduser()
    if target.suffix.lower() in IMAGE_SUFFIXES:
        if len(inputs) > 1 or num > 1:
            raise ValueError(
                f"--out {out} names one image but {len(inputs) * num} will be written: pass a folder instead"
            )
        paths = [[target]]
    else:
        stems: dict[str, Path] = {}
        for path in inputs:
            if path.stem in stems:
                raise ValueError(
                    f"{stems[path.stem]} and {path} would both write {path.stem}.png: rename one, or run them separately"
                )
            stems[path.stem] = path
        suffixes = [""] if num == 1 else [f"_{k}" for k in range(num)]
        paths = [[target / f"{p.stem}{s}.png" for s in suffixes] for p in inputs]
    sources = {p.resolve() for p in inputs}
    for path in (p for group in paths for p in group):
        if path.resolve() in sources:
            raise ValueError(f"writing {path} would overwrite an input segmap: pass another --out")
    return paths


def instance_paths(instance: str | None, inputs: list[Path]) -> list[Path | None]:
    """The ``--instance`` map of each segmap: one file for one segmap, or a folder matched by file stem."""
    if instance is None:
        return [None] * len(inputs)
    path = Path(instance).expanduser()
    if path.is_file():
        if len(inputs) > 1:
            raise ValueError("--instance names one file but several segmaps were given: pass a folder matched by file stem")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"instance map {path} not found: pass a file or a folder of instance maps")
    by_stem = {p.stem: p for p in path.iterdir() if p.is_file() and p.suffix.lower() in LABEL_MAP_SUFFIXES}
    missing = [p.name for p in inputs if p.stem not in by_stem]
    if missing:
        raise FileNotFoundError(
            f"no instance map in {path} for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: "
            "name instance maps like their segmaps"
        )
    return [by_stem[p.stem] for p in inputs]


def run(args: argparse.Namespace) -> int:
    """Render every segmap; names follow the inputs.

    The networks load from the pipeline folder and run through spade_core.synthesis, the function
    SPADEPipeline calls too, without importing the pipeline class (start-up time).
    """
    if args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    height, width = parse_size(args.size)
    inputs = collect_segmaps(args.segmap)
    outputs = output_paths(inputs, args.out, args.num)
    instances = instance_paths(args.instance, inputs)
    from ..devices import resolve_device
    from ..hub.folder import load_components, resolve_pipeline_folder
    from ..synthesis import FastNetworkCache, encode_style, synthesize, to_output

    folder = resolve_pipeline_folder(args.model)
    generator, encoder, label_set = load_components(folder, dtype=args.dtype, device=resolve_device(args.device))
    style = encode_style(encoder, generator, args.style) if args.style else None
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    cache = FastNetworkCache()
    from tqdm.auto import tqdm

    total = len(inputs) * args.num
    written: list[Path] = []
    # Only on a terminal (disable=None), and cleared on exit, so that an error stays the one line it should be.
    disable = True if total < PROGRESS_FROM else None
    with tqdm(total=total, unit="image", disable=disable, leave=False, file=sys.stderr) as bar:
        for segmap, instance, targets in zip(inputs, instances, outputs):
            images = synthesize(
                generator,
                label_set,
                segmap,
                encoder=encoder,
                style=style,
                instance_map=instance,
                num_images_per_segmap=args.num,
                seed=seed,
                height=height,
                width=width,
                nearest_color=args.nearest_color,
                unknown=args.unknown,
                cache=cache,
            )
            for image, target in zip(to_output(images, "pil"), targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target)
                written.append(target)
                bar.update(1)
    where = written[0] if len(written) == 1 else f"{len(written)} images to {written[0].parent}"
    seeded = f" (seed {seed})" if generator.config.use_vae else ""
    print(f"wrote {where}{seeded}")
    return 0

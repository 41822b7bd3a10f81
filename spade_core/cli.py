"""The ``spade`` command: one function pair (arguments, run) per subcommand, listed in COMMANDS.

User mistakes print one line (``spade: error: ...``) and exit with status 2; heavy imports
(torch, diffusers) happen inside the subcommands so that ``spade --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from .labels import LabelSet
    from .pipeline import SPADEPipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DTYPES = ("float32", "float16", "bfloat16")
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
PROGRESS_FROM = 4  # show a progress bar from this many images on
# Optional dependencies by import name -> (what to call it, the extra that installs it).
EXTRAS = {
    "gradio": ("Gradio", "demo"),
    "gradio_client": ("Gradio", "demo"),
    "datasets": ("the datasets library", "train"),
    "skimage": ("scikit-image", "train"),
    "scipy": ("SciPy", "eval"),
    "yaml": ("PyYAML", "train"),
    "tensorboard": ("TensorBoard", "train"),
    "accelerate": ("Accelerate", "train"),
}
# Keyword names in library messages -> the flags that set them, per command (hints in CLI words).
CLI_WORDS: dict[str, list[tuple[str, str]]] = {
    "synthesize": [
        (r"\bomit height/width\b", "omit --size"),
        (r"\b(?:a smaller )?height/width\b", "a smaller --size"),
        (r"\ba lower num_images_per_segmap\b", "a lower --num"),
        (r"\bnum_images_per_segmap\b", "--num"),
        (r"\bstyle_image / style / latents\b", "--style"),
        (r"\bstyle_image\b", "--style"),
        (r"\binstance_map\b", "--instance"),
        (r"pass nearest=True \(nearest_color=True when coercing a segmap\)", "pass --nearest-color"),
        (r"\bpass unknown='dontcare'", "pass --unknown dontcare"),
        (r"torch_dtype=torch\.float32", "--dtype float32"),
    ],
    "push": [(r"\bdry_run=True\b", "--dry-run")],
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in the house format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"spade: error: {message} (see `{self.prog} --help`)\n")


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument builder and runner (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------- helpers


def _load_pipeline(model: str | None, device: str = "auto", dtype: str = "float32") -> SPADEPipeline:
    from diffusers.utils import logging as diffusers_logging

    from .pipeline import SPADEPipeline, resolve_device

    diffusers_logging.disable_progress_bar()
    return SPADEPipeline.from_pretrained(model, torch_dtype=dtype, device=resolve_device(device))


def _parse_size(text: str | None) -> tuple[int | None, int | None]:
    """'512x256' (W x H) -> (height, width)."""
    if text is None:
        return None, None
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--size {text!r} is not WxH: pass e.g. --size 512x256 (width x height)")
    from .images import MAX_SIDE

    width, height = int(parts[0]), int(parts[1])
    if max(width, height) > MAX_SIDE:
        raise ValueError(
            f"--size {width}x{height} is too large: each side may be at most {MAX_SIDE} pixels; pass e.g. --size 1024x1024"
        )
    return height, width


def _collect_images(paths: list[str], what: str) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted)."""
    found: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}): pass {what} files")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{what} {path} not found: check the path")
    return found


def _output_paths(inputs: list[Path], out: str, num: int) -> list[list[Path]]:
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


def _instance_paths(instance: str | None, inputs: list[Path]) -> list[Path | None]:
    if instance is None:
        return [None] * len(inputs)
    path = Path(instance).expanduser()
    if path.is_file():
        if len(inputs) > 1:
            raise ValueError("--instance names one file but several segmaps were given: pass a folder matched by file stem")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"instance map {path} not found: pass a file or a folder of instance maps")
    by_stem = {p.stem: p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [p.name for p in inputs if p.stem not in by_stem]
    if missing:
        raise FileNotFoundError(
            f"no instance map in {path} for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: "
            "name instance maps like their segmaps"
        )
    return [by_stem[p.stem] for p in inputs]


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} already exists and is not empty: pick a new folder or pass --overwrite")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _in_cli_words(command: str | None, message: str) -> str:
    """A library message with its keyword-argument hints replaced by the flags of ``command``."""
    for pattern, flag in CLI_WORDS.get(command or "", []):
        message = re.sub(pattern, flag, message)
    return message


def _missing_extra(command: str | None, err: ImportError) -> str | None:
    """The one-line message for an optional dependency that is not installed, or None for our own modules.

    The missing module is read from the error or the import error it replaced (``raise ... from None``
    keeps it as the context); an error that names no module but says how to install is passed on.
    """
    name = ""
    seen: BaseException | None = err
    while seen is not None and not name:
        if isinstance(seen, ImportError):
            name = seen.name or ""
            match = None if name else re.search(r"No module named '([\w.]+)'", str(seen))
            name = (match.group(1) if match else name).split(".")[0]
        seen = seen.__cause__ or seen.__context__
    if not name:
        return _one_line(err) if "pip install" in str(err) else None
    if name in ("spade_core", "spade_nodes"):
        return None
    what, extra = EXTRAS.get(name, (f"the Python package {name}", None))
    install = f"pip install 'spade[{extra}]'" if extra else f"pip install {name}"
    who = f"spade {command}" if command else "spade"
    return f"{who} needs {what}, which is not installed here: {install}"


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Connection failures of the HTTP stacks already loaded (no import when none is)."""
    if "huggingface_hub" not in sys.modules:
        return (ConnectionError, TimeoutError)
    from .hub.publish import network_errors

    return network_errors()


# torch reports a failed CPU allocation as a RuntimeError ("DefaultCPUAllocator: can't allocate memory").
_OOM = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)


def _memory_error_types() -> tuple[type[BaseException], ...]:
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return (MemoryError, oom) if oom is not None else (MemoryError,)


# ----------------------------------------------------------------------------- synthesize


def _add_synthesize(p: argparse.ArgumentParser) -> None:
    p.add_argument("segmap", nargs="+", metavar="SEGMAP", help="label map files, or folders of them")
    p.add_argument("--model", metavar="REPO|DIR", help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--style", metavar="IMAGE", help="style reference photo (models trained with the VAE encoder)")
    p.add_argument("--instance", metavar="PATH", help="instance map, or a folder of them named like the segmaps")
    p.add_argument("--seed", type=int, help="seed for the style code (same seed, same images); random by default")
    p.add_argument("--num", type=int, default=1, metavar="N", help="images per segmap (default 1)")
    p.add_argument("--size", metavar="WxH", help="output size, e.g. 512x256 (default: the model's native size)")
    p.add_argument("--out", default="outputs", metavar="PATH|DIR",
                   help="output folder (default ./outputs), or an image path for a single image")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="inference precision (default float32)")
    p.add_argument("--nearest-color", action="store_true", help="snap unknown colours of RGB segmaps to the nearest class")
    p.add_argument("--unknown", default="error", choices=("error", "dontcare"),
                   help="labels outside the label set: fail (default) or treat as don't-care")


def cmd_synthesize(args: argparse.Namespace) -> int:
    """Render every segmap; names follow the inputs."""
    if args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    height, width = _parse_size(args.size)
    inputs = _collect_images(args.segmap, "segmap")
    outputs = _output_paths(inputs, args.out, args.num)
    instances = _instance_paths(args.instance, inputs)
    pipe = _load_pipeline(args.model, args.device, args.dtype)
    style = pipe.encode_style(args.style) if args.style else None
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    from tqdm.auto import tqdm

    total = len(inputs) * args.num
    written: list[Path] = []
    with tqdm(total=total, unit="image", disable=total < PROGRESS_FROM, file=sys.stderr) as bar:
        for segmap, instance, targets in zip(inputs, instances, outputs):
            images = pipe(
                segmap,
                style=style,
                instance_map=instance,
                num_images_per_segmap=args.num,
                seed=seed,
                height=height,
                width=width,
                nearest_color=args.nearest_color,
                unknown=args.unknown,
            ).images
            for image, target in zip(images, targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target)
                written.append(target)
                bar.update(1)
    where = written[0] if len(written) == 1 else f"{len(written)} images to {written[0].parent}"
    seeded = f" (seed {seed})" if pipe.generator.config.use_vae else ""
    print(f"wrote {where}{seeded}")
    return 0


# ----------------------------------------------------------------------------- convert-nvlabs


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", help="folder with latest_net_G.pth (+ _E, _D)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", metavar="NAME", help="reference configuration: ade20k, coco or cityscapes")
    source.add_argument("--opt", metavar="opt.txt", help="the run's opt.txt, written beside its checkpoints")
    p.add_argument("--label-set", metavar="NAME",
                   help="label set to ship (default: by preset, else by class count 150/182/35, else numbered)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def cmd_convert_nvlabs(args: argparse.Namespace) -> int:
    """NVlabs checkpoints -> a pipeline folder (+ discriminator/ for fine-tuning), CC BY-NC-SA 4.0 card."""
    from .hub.model_card import NVLABS_LICENSE, write_model_card
    from .hub.nvlabs import convert_nvlabs_checkpoint
    from .labels import available_label_sets
    from .pipeline import SPADEPipeline, matching_label_set

    out = Path(args.out).expanduser()
    _check_out_dir(out, args.overwrite)
    nets = convert_nvlabs_checkpoint(args.checkpoint_dir, preset=args.preset, opt_file=args.opt)
    name = args.label_set or (args.preset if args.preset in available_label_sets() else None)
    label_set = matching_label_set(nets.generator, name)
    pipe = SPADEPipeline(generator=nets.generator, encoder=nets.encoder, label_set=label_set)
    pipe.save_pretrained(out, model_card=False)
    if nets.discriminator is not None:
        nets.discriminator.save_pretrained(out / "discriminator")
    source = Path(args.checkpoint_dir).name
    how = f"preset `{args.preset}`" if args.preset else f"its `opt.txt` ({nets.options.get('name', 'unnamed run')})"
    write_model_card(
        out,
        license=NVLABS_LICENSE,
        source=f"Converted losslessly from the NVlabs/SPADE checkpoint `{source}` with {how}; outputs equal the reference's.",
    )
    parts = ["generator"] + ["encoder"] * (nets.encoder is not None) + ["discriminator"] * (nets.discriminator is not None)
    print(f"wrote {out} ({', '.join(parts)}; label set {label_set.name}, {label_set.label_nc} classes)")
    return 0


# ----------------------------------------------------------------------------- export


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run folder (spade train --out)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator instead of its EMA copy")
    p.add_argument("--license", default="other", help="licence for the model card (default: other)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def cmd_export(args: argparse.Namespace) -> int:
    """A training run's latest checkpoint -> a pipeline folder."""
    try:
        from .train.checkpoint import load_run_networks
    except ImportError as err:
        raise ValueError(f"spade export needs the trainer, which is not available here ({err}): pip install 'spade[train]'") from None
    from .hub.model_card import write_model_card
    from .pipeline import SPADEPipeline

    out = Path(args.out).expanduser()
    _check_out_dir(out, args.overwrite)
    nets = load_run_networks(args.run_dir)
    use_ema = not args.no_ema and nets.get("ema_generator") is not None
    generator = nets["ema_generator"] if use_ema else nets["generator"]
    pipe = SPADEPipeline(generator=generator, encoder=nets.get("encoder"), label_set=nets.get("label_set"))
    pipe.save_pretrained(out, model_card=False)
    which = "EMA generator" if use_ema else "generator"
    step = f", step {nets['step']}" if nets.get("step") is not None else ""
    write_model_card(out, license=args.license, source=f"Trained with `spade train` (run `{Path(args.run_dir).name}`{step}, {which}).")
    print(f"wrote {out} ({which}{', encoder' if pipe.encoder is not None else ''}; label set {pipe.label_set.name})")
    return 0


# ----------------------------------------------------------------------------- train


def _add_train(p: argparse.ArgumentParser) -> None:
    try:
        from .train.command import add_train_arguments
    except ImportError as err:
        p.set_defaults(train_unavailable=str(err))
        p.add_argument("train_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    add_train_arguments(p)


def _add_train_stub(p: argparse.ArgumentParser) -> None:
    p.add_argument("train_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def cmd_train(args: argparse.Namespace) -> int:
    """Delegate to the trainer (spade_core.train.command)."""
    missing = getattr(args, "train_unavailable", None)
    if missing is not None:
        raise ValueError(f"spade train is not available in this installation ({missing}): pip install 'spade[train]'")
    from .train.command import run_train

    return int(run_train(args) or 0)


# ----------------------------------------------------------------------------- palette


def _add_palette(p: argparse.ArgumentParser) -> None:
    p.add_argument("label_set", metavar="LABELSET",
                   help="built-in name (ade20k, coco, cityscapes), a label set JSON file or a pipeline folder")
    p.add_argument("--out", metavar="legend.png", help="write a legend image of the classes and colours")
    p.add_argument("--json", metavar="palette.json", help="write the label set (names, palette, ids) as JSON")


def _read_label_set(text: str) -> LabelSet:
    from .labels import LabelSet, get_label_set

    path = Path(text).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{path} has no model_index.json: pass a pipeline folder, a JSON file or a built-in name")
        data = json.loads(index.read_text(encoding="utf-8")).get("label_set")
        if not isinstance(data, dict):
            raise ValueError(f"{index} holds no label set: re-save the pipeline with SPADEPipeline.save_pretrained")
        return LabelSet.from_dict(data)
    if path.is_file():
        try:
            return LabelSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}): pass a label set JSON file") from None
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


def cmd_palette(args: argparse.Namespace) -> int:
    """Print a label set, or write its legend image / JSON."""
    label_set = _read_label_set(args.label_set)
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


# ----------------------------------------------------------------------------- push


def _add_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="pipeline folder to upload")
    p.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="Hub repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="check and write the card, list the files, upload nothing")
    p.add_argument("--license", help="licence for the model card (default: keep the card's, else other)")
    p.add_argument("--commit-message", default="Upload SPADE pipeline", help="commit message on the Hub")


def cmd_push(args: argparse.Namespace) -> int:
    """Validate a pipeline folder with one synthesis, refresh its card, upload it."""
    import numpy as np

    from .hub.model_card import write_model_card
    from .hub.publish import hub_offline, push_folder, upload_plan

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"pipeline folder {folder} not found: pass the folder written by save_pretrained")
    upload_plan(folder, args.repo_id)
    if not args.dry_run and hub_offline():
        raise ValueError("cannot upload in offline mode (HF_HUB_OFFLINE is set): unset it, or pass --dry-run to check the folder")
    pipe = _load_pipeline(str(folder), "cpu")
    images = pipe(pipe.example_segmap(), seed=0, output_type="np").images
    if not np.isfinite(images).all():
        raise ValueError(f"{folder} produces non-finite images: the weights are broken; re-export or re-convert them")
    write_model_card(folder, repo_id=args.repo_id, license=args.license)
    plan = push_folder(folder, args.repo_id, private=args.private, dry_run=args.dry_run, commit_message=args.commit_message)
    for name, size in plan.files:
        print(f"{size:>12,d}  {name}")
    total = f"{len(plan.files)} files, {plan.total_bytes:,d} bytes"
    if plan.dry_run:
        print(f"dry run: would upload {total} to {args.repo_id}{' (private)' if args.private else ''}; nothing uploaded")
    else:
        print(f"uploaded {total} to {plan.url}")
    return 0


# ----------------------------------------------------------------------------- eval


def _add_eval(p: argparse.ArgumentParser) -> None:
    """eval_command imports only the standard library at module level, so the parser stays quick."""
    from .eval_command import add_eval_arguments

    add_eval_arguments(p)


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a model on a labelled dataset (spade_core.eval_command)."""
    from .eval_command import run_eval

    return run_eval(args)


# ----------------------------------------------------------------------------- data


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["synthetic"], help="what to generate (synthetic: procedural landscapes)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write (images/, labels/, styles.jsonl)")
    p.add_argument("--num", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample k uses seed + k")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")


def cmd_data(args: argparse.Namespace) -> int:
    """Write a rendered landscape dataset readable by `spade train --format folder --label-set landscape`."""
    from .data.synthetic import write_synthetic_dataset

    if args.num < 1 or args.size < 32:
        raise ValueError(f"--num must be >= 1 and --size >= 32 (got {args.num}, {args.size})")
    out = write_synthetic_dataset(args.out, args.num, args.size, args.seed, overwrite=args.overwrite)
    print(f"wrote {args.num} landscapes of {args.size}x{args.size} to {out}")
    return 0


# ----------------------------------------------------------------------------- demo


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="REPO|DIR", help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument("--concurrency", type=int, default=1, help="requests synthesized at the same time (default 1)")


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio painting demo until interrupted."""
    from .demo import launch_demo

    launch_demo(model=args.model, host=args.host, port=args.port, share=args.share, concurrency_limit=args.concurrency)
    return 0


# ----------------------------------------------------------------------------- main

COMMANDS: list[Command] = [
    Command("synthesize", "turn segmentation maps into images", _add_synthesize, cmd_synthesize),
    Command("convert-nvlabs", "convert NVlabs/SPADE checkpoints to a pipeline folder", _add_convert, cmd_convert_nvlabs),
    Command("export", "turn a training run into a pipeline folder", _add_export, cmd_export),
    Command("train", "train or fine-tune a model", _add_train, cmd_train),
    Command("palette", "show a label set's classes and colours", _add_palette, cmd_palette),
    Command("push", "upload a pipeline folder to the Hugging Face Hub", _add_push, cmd_push),
    Command("eval", "score a model on a labelled dataset (FID, KID, mIoU)", _add_eval, cmd_eval),
    Command("data", "generate training data (procedural landscapes)", _add_data, cmd_data),
    Command("demo", "paint a layout in the browser (Gradio app)", _add_demo, cmd_demo),
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; the trainer's arguments are only imported when ``train`` is the command."""
    from . import __version__

    parser = _Parser(prog="spade", description="SPADE semantic image synthesis (Park et al., CVPR 2019).")
    parser.add_argument("--version", action="version", version=f"spade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help[0].upper() + command.help[1:] + ".")
        add = command.add_arguments
        if command.name == "train" and chosen != "train":
            add = _add_train_stub
        add(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spade`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    if getattr(args, "run", None) is None:
        names = ", ".join(c.name for c in COMMANDS)
        print(f"spade: error: choose a command ({names}); see `spade --help`", file=sys.stderr)
        return 2
    command = getattr(args, "command", None)
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as err:
        return _fail(_in_cli_words(command, _one_line(err)))
    except ImportError as err:
        message = _missing_extra(command, err)
        if message is None:
            raise
        return _fail(message)
    except Exception as err:  # network and memory failures are the user's to fix, not tracebacks
        if isinstance(err, _network_error_types()):
            fix = "retry, or pass --dry-run to check the folder without uploading" if command == "push" else (
                "check the connection and retry, or use local files (HF_HUB_OFFLINE=1 with a cached model)"
            )
            return _fail(f"the Hugging Face Hub or the network could not be reached ({_one_line(err)[:200]}): {fix}")
        if isinstance(err, _memory_error_types()) or (isinstance(err, RuntimeError) and _OOM.search(str(err))):
            hint = "a smaller --size or --num" if command == "synthesize" else "smaller inputs or settings"
            return _fail(f"out of memory during spade {command} ({_one_line(err)[:200]}): try {hint}, or free memory")
        raise
    except KeyboardInterrupt:
        print("spade: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"spade: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

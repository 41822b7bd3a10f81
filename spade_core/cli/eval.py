"""`spade eval`: score a pipeline on a labelled dataset (FID, KID, mIoU, pixel accuracy, diversity).

The glue between the command line, the pipeline, the dataset formats and `spade_core.eval.evaluate`
(segmenters load through `spade_core.eval.segmenters`). It imports only the standard library at
module level so that building the parser stays quick; torch and friends load when the command runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from ..data import PreprocessConfig
    from ..pipeline import SPADEPipeline

SYNTHETIC_DEFAULT_NUM = 1000  # rendered layouts scored by --format synthetic without --num
SEGMENTER_LABEL_MAPS = ("cityscapes-19",)  # --segmenter-label-map choices
_PROTOCOL_EPILOG = object()  # placeholder epilog, expanded from PAPER_PROTOCOL only when help is shown
_CACHE_MARKER = "spade_eval_model.json"  # which model the partial progress in a --cache-dir belongs to


# ----------------------------------------------------------------------------- arguments


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the protocol table's line breaks and builds it on demand (it needs torch)."""

    def add_text(self, text: Any) -> None:
        super().add_text(paper_protocol_text() if text is _PROTOCOL_EPILOG else text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `spade eval` options; the epilog lists the paper's segmentation protocol per dataset."""
    p.formatter_class = _HelpFormatter
    p.epilog = _PROTOCOL_EPILOG  # type: ignore[assignment]
    p.add_argument("--model", metavar="REPO|DIR", help="pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--data", metavar="DIR", help="dataset root (a Hub dataset id for --format hf; not needed for synthetic)")
    from ..data.registry import available_formats

    p.add_argument("--format", required=True, metavar="NAME", help=f"dataset format: {', '.join(available_formats())}")
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--num", type=int, metavar="N",
                   help=f"score the first N samples (default: the whole split; synthetic: {SYNTHETIC_DEFAULT_NUM})")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images generated at once (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the style codes and KID subsets (default 0): same seed, same report")
    fid = p.add_mutually_exclusive_group()
    fid.add_argument("--inception", metavar="FILE",
                     help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth; default: $SPADE_INCEPTION_WEIGHTS, "
                          "else the download cache)")
    fid.add_argument("--no-fid", action="store_true", help="skip FID/KID (no Inception weights needed)")
    p.add_argument("--segmenter", metavar="MODULE:FACTORY",
                   help="segmentation network for mIoU: FACTORY() (or FACTORY(weights) with --segmenter-weights) "
                        "returns a module or callable mapping images [0,1] (N,3,H,W) to logits (N,C,h,w) or labels "
                        "(N,h,w); MODULE is importable (current folder or PYTHONPATH) or a path to a .py file "
                        "(default for landscape models: the shipped landscape segmenter)")
    p.add_argument("--segmenter-weights", metavar="FILE",
                   help="alone: a whole segmenter saved with torch.export.save (.pt2, dynamic batch size) or as "
                        "TorchScript; with --segmenter: the file passed to its factory. Load only files you trust")
    p.add_argument("--segmenter-classes", type=int, metavar="C",
                   help="classes the segmenter predicts (default: its num_classes attribute, 19 with "
                        "--segmenter-label-map cityscapes-19, else the model's class count)")
    p.add_argument("--segmenter-label-map", choices=SEGMENTER_LABEL_MAPS,
                   help="map the model's classes to the segmenter's first (cityscapes-19: ids -> 19 trainIds)")
    p.add_argument("--diversity-seeds", type=int, default=0, metavar="K",
                   help="also score diversity: K >= 2 draws per layout, mean pairwise L1 (default 0: off)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="keep real-image features (reused by later runs) and partial progress (an interrupted run resumes)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--out", required=True, metavar="report.json", help="where to write the JSON report")


def paper_protocol_text() -> str:
    """How the paper measured segmentation consistency, per dataset (from PAPER_PROTOCOL)."""
    from ..eval import PAPER_PROTOCOL

    lines = [
        "segmentation consistency as in the paper (Park et al. 2019, Table 1); these networks are not",
        "shipped with spade: wrap one with --segmenter MODULE:FACTORY. Landscape models (the embedded one,",
        "--format synthetic) are scored with the shipped landscape segmenter unless you pass one.",
    ]
    for name, entry in PAPER_PROTOCOL.items():
        h, w = entry["image_size_hw"]
        paper = entry["paper_results"]
        lines += [
            f"  {name}: {entry['segmenter']} - {entry['segmenter_source']}",
            f"      {entry['num_classes']} classes; {entry['label_map']}",
            (
                f"      {h}x{w} (HxW), {entry['split']}; paper: mIoU {paper['miou_percent']}, "
                f"accuracy {paper['pixel_accuracy_percent']}, FID {paper['fid']}"
            ),
        ]
    lines.append("  cityscapes needs --segmenter-label-map cityscapes-19 (the 35 label ids -> 19 trainIds).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Build the model, dataset, Inception and segmenter of `args`, evaluate, print the table, write the JSON."""
    _check_arguments(args)
    from ..data import available_formats

    if args.format not in available_formats():
        raise ValueError(f"unknown dataset format {args.format!r}: pass --format one of {', '.join(available_formats())}")
    if args.format not in ("synthetic", "hf"):
        if args.data is None:
            raise ValueError(f"--format {args.format} reads files: pass --data DIR (the dataset root)")
        if not Path(args.data).expanduser().is_dir():
            raise FileNotFoundError(f"--data {args.data} is not a folder: pass the root of the {args.format} dataset")
    if args.format == "hf" and args.data is None:
        raise ValueError("--format hf needs --data: a Hub dataset id or a local dataset folder")
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder: pass a file name such as report.json")

    from diffusers.utils import logging as diffusers_logging

    from ..eval import FIDInceptionV3, evaluate, format_report_table
    from ..pipeline import SPADEPipeline, resolve_device

    diffusers_logging.disable_progress_bar()
    device = resolve_device(args.device)
    pipe = SPADEPipeline.from_pretrained(args.model, device=device)
    preprocess = eval_preprocess(args.format, pipe.generator.native_size)
    dataset = build_eval_dataset(args.format, args.data, args.split, pipe, preprocess, num=args.num, seed=args.seed)
    if len(dataset) < 2 and not args.no_fid:
        raise ValueError(f"the {args.split} split holds {len(dataset)} sample: FID/KID need 2 or more (or pass --no-fid)")

    inception = None
    if not args.no_fid:
        try:
            inception = FIDInceptionV3.from_pretrained(args.inception)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; or pass --no-fid to evaluate without FID/KID") from None
        inception = inception.to(device).eval()

    segmenter = load_segmenter(args.segmenter, args.segmenter_weights, device)
    builtin_segmenter = False
    if segmenter is None:
        from ..eval import default_segmenter

        segmenter = default_segmenter(pipe.label_set.name, device)
        builtin_segmenter = segmenter is not None
    num_classes = ignore_index = label_map = None
    if segmenter is not None:
        num_classes, ignore_index, label_map = segmenter_classes(segmenter, pipe, args)

    cache_dir = None
    if args.cache_dir is not None:
        cache_dir = Path(args.cache_dir).expanduser()
        _claim_cache_dir(cache_dir, _run_key(pipe, args, preprocess))

    report = evaluate(
        pipeline_generate_fn(pipe),
        EvalSamples(dataset, use_instance=pipe.generator.config.use_instance),
        inception=inception,
        segmenter=segmenter,
        num_classes=num_classes,
        ignore_index=ignore_index,
        label_map=label_map,
        diversity_seeds=args.diversity_seeds,
        batch_size=args.batch_size,
        cache_dir=cache_dir,
        progress=sys.stderr.isatty(),
        seed=args.seed,
    )
    _command_line_reasons(report, args, builtin_segmenter)
    report["setup"] = _setup(args, pipe, dataset, preprocess, device, num_classes, label_map, builtin_segmenter)
    print(format_report_table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Cheap checks before anything loads."""
    if args.num is not None and args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.diversity_seeds == 1 or args.diversity_seeds < 0:
        raise ValueError(f"--diversity-seeds {args.diversity_seeds} gives no pairs: pass 0 (off) or 2 or more")
    if args.segmenter_classes is not None and args.segmenter_classes < 1:
        raise ValueError(f"--segmenter-classes must be positive, got {args.segmenter_classes}")
    segmenter_options = args.segmenter_classes is not None or args.segmenter_label_map is not None
    if segmenter_options and args.segmenter is None and args.segmenter_weights is None:
        raise ValueError("--segmenter-classes / --segmenter-label-map need a segmenter: pass --segmenter or --segmenter-weights")


# ----------------------------------------------------------------------------- data


def eval_preprocess(format: str, native_size: tuple[int, int]) -> PreprocessConfig:
    """The format's test-time preprocessing, producing the generator's native (height, width).

    Square crop modes keep their mode with load_size = crop_size = the native side (a plain resize,
    as the reference's test configs do); other modes and non-square models resize to the exact size.
    """
    from dataclasses import replace

    from ..data import PreprocessConfig, preset_preprocess

    height, width = native_size
    base = preset_preprocess(format, is_train=False)
    if base.crops and height == width:
        return replace(base, load_size=width, crop_size=width, flip=False)
    return PreprocessConfig("fixed", load_size=width, crop_size=width, aspect_ratio=width / height, flip=False, is_train=False)


def build_eval_dataset(
    format: str,
    root: str | None,
    split: str,
    pipe: SPADEPipeline,
    preprocess: PreprocessConfig,
    *,
    num: int | None = None,
    seed: int = 0,
) -> Dataset:
    """The dataset read with the model's own label set (so class indices mean the model's classes)."""
    from ..data import build_dataset
    from ..labels import get_label_set
    from ..registry import DATASETS

    cfg = pipe.generator.config
    paper = {entry.data_format: entry for entry in DATASETS.values() if entry.paper and entry.data_format}
    if format in paper:
        expected = get_label_set(paper[format].label_set)
        if expected.label_nc != pipe.label_set.label_nc:
            raise ValueError(
                f"--format {format} holds {expected.name} labels ({expected.label_nc} classes) but the model's label set "
                f"'{pipe.label_set.name}' has {pipe.label_set.label_nc}: evaluate the model on data of its own classes"
                + (" (the embedded model: --format synthetic)" if pipe.label_set.name == "landscape" else "")
            )
    options: dict[str, Any] = {"seed": seed}
    if format == "synthetic":
        options["length"] = num or SYNTHETIC_DEFAULT_NUM
    else:
        options.update(label_set=pipe.label_set, max_dataset_size=num)
        reads_instances = format in paper and not paper[format].network.get("no_instance", True)
        if reads_instances or (format == "folder" and not cfg.use_instance):
            options["use_instance"] = bool(cfg.use_instance)
    dataset = build_dataset(format, root, split, preprocess, **options)
    ours, theirs = pipe.label_set, dataset.label_set
    if (theirs.label_nc, tuple(theirs.class_names)) != (ours.label_nc, tuple(ours.class_names)):
        raise ValueError(
            f"the {format} data uses the label set '{theirs.name}' ({theirs.label_nc} classes) but the model's is "
            f"'{ours.name}' ({ours.label_nc} classes): evaluate the model on data of its own classes"
        )
    if len(dataset) == 0:
        raise FileNotFoundError(f"the {split} split of {root} holds no samples: check --data and --split")
    return dataset


class EvalSamples:
    """A dataset's samples as `evaluate` takes them: label (H,W) int64, image (3,H,W) [-1,1], instance (H,W)."""

    def __init__(self, dataset: Dataset, use_instance: bool) -> None:
        self.dataset = dataset
        self.use_instance = use_instance

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self.dataset)):
            sample = self.dataset[index]
            item = {"label": sample["label"][0], "image": sample["image"]}
            if self.use_instance and sample.get("instance") is not None:
                item["instance"] = sample["instance"][0]
            yield item


def pipeline_generate_fn(pipe: SPADEPipeline) -> Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor]:
    """`evaluate`'s generate_fn: class-index labels (N,H,W) [+ instance ids] and a seed -> images (N,3,H,W) in [-1,1]."""

    def generate(labels: torch.Tensor, instances: torch.Tensor | None, seed: int) -> torch.Tensor:
        images = pipe(labels, instance_map=instances, seed=seed, output_type="pt").images  # [0, 1]
        return images * 2 - 1

    return generate


# ----------------------------------------------------------------------------- segmenter


def load_segmenter(spec: str | None, weights: str | None, device: torch.device) -> Any:
    """`--segmenter MODULE:FACTORY` [`--segmenter-weights FILE`], or a saved segmenter alone; None without either."""
    from ..eval import load_segmenter as load

    return load(spec, weights, device, spec_name="--segmenter", weights_name="--segmenter-weights")


def segmenter_classes(segmenter: Any, pipe: SPADEPipeline, args: argparse.Namespace) -> tuple[int, int | None, Any]:
    """(num_classes, ignore_index, label_map) for scoring the segmenter against the model's class indices."""
    label_set = pipe.label_set
    label_map = None
    if args.segmenter_label_map == "cityscapes-19":
        from ..eval import CITYSCAPES_35_TO_19

        if label_set.label_nc != 35:
            raise ValueError(
                f"--segmenter-label-map cityscapes-19 maps the 35 Cityscapes ids but the model has {label_set.label_nc} "
                "classes: drop the option"
            )
        label_map = CITYSCAPES_35_TO_19
    num_classes = args.segmenter_classes or getattr(segmenter, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 1:
        num_classes = 19 if label_map is not None else label_set.label_nc
    # Without a label map the targets are the model's class indices; its don't-care index is ignored.
    ignore_index = label_set.label_nc if label_map is None and label_set.contain_dontcare_label else None
    return num_classes, ignore_index, label_map


# ----------------------------------------------------------------------------- cache and report


def _run_key(pipe: SPADEPipeline, args: argparse.Namespace, preprocess: PreprocessConfig) -> str:
    """Identity of the generated images: the generator's weights and the data options.

    `evaluate` keys its partial progress on the metric settings and the data, not on the generator,
    so a run interrupted with another model must not be resumed by this one (see `_claim_cache_dir`).
    """
    from ..eval.metrics import fingerprint

    digest = hashlib.blake2b(digest_size=16)
    digest.update(fingerprint(pipe.generator).encode())
    digest.update(json.dumps([args.format, args.split, args.num, repr(preprocess)]).encode())
    return digest.hexdigest()


def _claim_cache_dir(cache_dir: Path, key: str) -> None:
    """Drop partial progress left by a different model, then record this run's model."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise NotADirectoryError(f"--cache-dir {cache_dir} is a file: pass a folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker = cache_dir / _CACHE_MARKER
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8")).get("run_key")
        except (json.JSONDecodeError, AttributeError):
            previous = None
    if previous != key:
        stale = sorted(cache_dir.glob("progress_*.npz"))
        for path in stale:
            path.unlink()
        if stale:
            print(f"note: discarded the partial progress of another model or dataset in {cache_dir}", file=sys.stderr)
    marker.write_text(json.dumps({"run_key": key}) + "\n", encoding="utf-8")


def _command_line_reasons(report: dict[str, Any], args: argparse.Namespace, builtin_segmenter: bool) -> None:
    """Skip reasons in the command line's terms instead of the Python API's."""
    skipped = report["skipped"]
    if args.no_fid:
        for name in ("fid", "kid"):
            skipped[name] = "--no-fid given: FID/KID not computed"
    if args.segmenter is None and args.segmenter_weights is None and not builtin_segmenter:
        for name in ("miou", "pixel_accuracy"):
            skipped[name] = "no segmenter: pass --segmenter MODULE:FACTORY or --segmenter-weights FILE"
    if args.diversity_seeds < 2:
        skipped["diversity"] = "off: pass --diversity-seeds 2 or more"


def _setup(
    args: argparse.Namespace,
    pipe: SPADEPipeline,
    dataset: Dataset,
    preprocess: PreprocessConfig,
    device: torch.device,
    num_classes: int | None,
    label_map: Any,
    builtin_segmenter: bool,
) -> dict[str, Any]:
    """What was evaluated, for the report."""
    from ..eval import INCEPTION_WEIGHTS_ENV, PAPER_PROTOCOL

    if args.no_fid:
        inception = None
    elif args.inception:
        inception = str(Path(args.inception).expanduser())
    else:
        inception = os.environ.get(INCEPTION_WEIGHTS_ENV) or "download cache"
    return {
        "model": args.model or "embedded",
        "label_set": pipe.label_set.name,
        "format": args.format,
        "data": args.data,
        "split": args.split,
        "num_samples": len(dataset),
        "image_size_hw": list(pipe.generator.native_size),
        "preprocess": {
            "mode": preprocess.preprocess_mode,
            "load_size": preprocess.load_size,
            "crop_size": preprocess.crop_size,
            "aspect_ratio": preprocess.aspect_ratio,
        },
        "seed": args.seed,
        "device": str(device),
        "inception_weights": inception,
        "segmenter": "builtin:landscape (spade_core/assets/segmenter)" if builtin_segmenter else args.segmenter,
        "segmenter_weights": args.segmenter_weights,
        "segmenter_classes": num_classes,
        "segmenter_label_map": args.segmenter_label_map if label_map is not None else None,
        "paper_protocol": PAPER_PROTOCOL.get(args.format),
    }


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in a report -> plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

"""Model folders: ``spade convert-nvlabs``, ``spade export`` (both write a pipeline folder) and ``spade push``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import check_out_dir, load_pipeline


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade convert-nvlabs``."""
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", help="folder with latest_net_G.pth (+ _E, _D)")
    source = p.add_mutually_exclusive_group(required=True)
    from ..registry import DATASETS

    paper = ", ".join(name for name, entry in DATASETS.items() if entry.paper)
    source.add_argument("--preset", metavar="NAME", help=f"reference configuration: {paper}")
    source.add_argument("--opt", metavar="opt.txt", help="the run's opt.txt, written beside its checkpoints")
    p.add_argument("--label-set", metavar="NAME",
                   help="label set to ship (default: by preset, else the paper dataset with the model's class count, else numbered)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run_convert(args: argparse.Namespace) -> int:
    """NVlabs checkpoints -> a pipeline folder (+ discriminator/ for fine-tuning), CC BY-NC-SA 4.0 card."""
    from ..hub.export import convert_nvlabs_to_folder

    check_out_dir(Path(args.out).expanduser(), args.overwrite)
    result = convert_nvlabs_to_folder(
        args.checkpoint_dir, args.out, preset=args.preset, opt_file=args.opt, label_set_name=args.label_set,
        overwrite=args.overwrite,
    )
    print(f"wrote {result.path} ({result.describe()})")
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade export``."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run folder (spade train --out)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator instead of its EMA copy")
    p.add_argument("--license", default="other", help="licence for the model card (default: other)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run_export(args: argparse.Namespace) -> int:
    """A training run's latest checkpoint -> a pipeline folder."""
    from ..hub.export import export_run

    check_out_dir(Path(args.out).expanduser(), args.overwrite)
    result = export_run(args.run_dir, args.out, use_ema=not args.no_ema, license=args.license, overwrite=args.overwrite)
    print(f"wrote {result.path} ({result.describe()})")
    return 0


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade push``."""
    p.add_argument("folder", metavar="DIR", help="pipeline folder to upload")
    p.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="Hub repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="check and write the card, list the files, upload nothing")
    p.add_argument("--license", help="licence for the model card (default: keep the card's, else other)")
    p.add_argument("--commit-message", default="Upload SPADE pipeline", help="commit message on the Hub")


def run_push(args: argparse.Namespace) -> int:
    """Validate a pipeline folder with one synthesis, refresh its card, upload it."""
    import numpy as np

    from ..hub.model_card import write_model_card
    from ..hub.publish import hub_offline, push_folder, upload_plan

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"pipeline folder {folder} not found: pass the folder written by save_pretrained")
    upload_plan(folder, args.repo_id)
    if not args.dry_run and hub_offline():
        raise ValueError("cannot upload in offline mode (HF_HUB_OFFLINE is set): unset it, or pass --dry-run to check the folder")
    pipe = load_pipeline(str(folder), "cpu")
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

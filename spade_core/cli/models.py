"""Model folders: ``spade convert-nvlabs``, ``spade export`` (both write a pipeline folder) and ``spade push``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import check_out_dir, load_pipeline


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade convert-nvlabs``."""
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", help="folder with latest_net_G.pth (+ _E, _D)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", metavar="NAME", help="reference configuration: ade20k, coco or cityscapes")
    source.add_argument("--opt", metavar="opt.txt", help="the run's opt.txt, written beside its checkpoints")
    p.add_argument("--label-set", metavar="NAME",
                   help="label set to ship (default: by preset, else by class count 150/182/35, else numbered)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run_convert(args: argparse.Namespace) -> int:
    """NVlabs checkpoints -> a pipeline folder (+ discriminator/ for fine-tuning), CC BY-NC-SA 4.0 card."""
    from ..hub.model_card import NVLABS_LICENSE, write_model_card
    from ..hub.nvlabs import convert_nvlabs_checkpoint
    from ..labels import available_label_sets
    from ..pipeline import SPADEPipeline, matching_label_set

    out = Path(args.out).expanduser()
    check_out_dir(out, args.overwrite)
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


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade export``."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run folder (spade train --out)")
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator instead of its EMA copy")
    p.add_argument("--license", default="other", help="licence for the model card (default: other)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run_export(args: argparse.Namespace) -> int:
    """A training run's latest checkpoint -> a pipeline folder."""
    from ..hub.model_card import write_model_card
    from ..pipeline import SPADEPipeline
    from ..train.checkpoint import load_run_networks

    out = Path(args.out).expanduser()
    check_out_dir(out, args.overwrite)
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

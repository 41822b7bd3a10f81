"""``spade data``: write a training dataset (procedural landscapes)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade data``."""
    p.add_argument("kind", choices=["synthetic"], help="what to generate (synthetic: procedural landscapes)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write (images/, labels/, styles.jsonl)")
    p.add_argument("--num", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample k uses seed + k")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")


def run(args: argparse.Namespace) -> int:
    """Write a rendered landscape dataset readable by `spade train --format folder --label-set landscape`."""
    from ..data.synthetic import write_synthetic_dataset

    if args.num < 1 or args.size < 32:
        raise ValueError(f"--num must be >= 1 and --size >= 32 (got {args.num}, {args.size})")
    out = write_synthetic_dataset(args.out, args.num, args.size, args.seed, overwrite=args.overwrite)
    print(f"wrote {args.num} landscapes of {args.size}x{args.size} to {out}")
    return 0

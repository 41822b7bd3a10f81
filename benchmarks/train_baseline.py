"""Train the pix2pixHD-style baseline (benchmarks/baselines.py) with our trainer and recipe.

Takes exactly the options of ``spade train``; only the generator is swapped for the baseline,
sized to the SPADE generator that the same options would build (same parameter budget),
so the comparison in ``quality_synthetic.py`` isolates SPADE's normalization.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import matched_baseline

import spade_core.train.trainer as trainer_module
from spade_core.cli import main
from spade_core.train import builders


def _build_with_baseline(config, label_set):
    generator, discriminator, encoder = builders.build_networks(config, label_set)
    budget = sum(p.numel() for p in generator.parameters())
    baseline = matched_baseline(generator.semantic_nc, budget)
    print(f"baseline ngf {baseline.config.ngf}: {sum(p.numel() for p in baseline.parameters()):,} parameters "
          f"(SPADE generator: {budget:,})", flush=True)
    return baseline, discriminator, encoder


if __name__ == "__main__":
    trainer_module.build_networks = _build_with_baseline
    sys.exit(main(["train", *sys.argv[1:]]))

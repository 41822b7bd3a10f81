"""Turn the GPU run of ``train_embedded_gpu.sh`` into the embedded pipeline folder we ship.

The run used the trainer's EMA before it had a warm-up: a flat decay d over n updates leaves a
share d**n of the *initial* weights in the average (22% after 1,500 steps at 0.999). The initial
weights are a pure function of the run's seed and config, so we rebuild them exactly and remove
that share: ema_corrected = (ema - d**n * w0) / (1 - d**n), the standard bias correction. The
trainer now warms its decay up instead, so later runs export the EMA directly.

usage: python examples/scripts/export_embedded.py PACK_RUN_DIR OUT_DIR [--fp16]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from spade_core.labels import get_label_set
from spade_core.models import SPADEEncoder, SPADEGenerator
from spade_core.pipeline import SPADEPipeline
from spade_core.train.builders import build_networks
from spade_core.train.config import TrainConfig
from spade_core.train.ema import remove_initial_share


def initial_generator(config: TrainConfig) -> SPADEGenerator:
    """The generator exactly as the trainer initialised it (same seeding order)."""
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    generator, _, _ = build_networks(config, get_label_set("landscape"))
    return generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="pack/embedded from train_embedded_gpu.sh")
    parser.add_argument("out", type=Path, help="pipeline folder to write")
    parser.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    args = parser.parse_args()
    config = TrainConfig.from_dict(json.loads((args.run / "train_config.json").read_text()))
    state = json.loads((args.run / "training_state.json").read_text())
    ema = SPADEGenerator.from_pretrained(args.run / "ema_generator", torch_dtype=torch.float32)
    generator = remove_initial_share(ema, initial_generator(config), config.ema_decay, int(state["step"])).eval()
    encoder = SPADEEncoder.from_pretrained(args.run / "encoder", torch_dtype=torch.float32).eval()
    pipe = SPADEPipeline(generator=generator, encoder=encoder, label_set=get_label_set("landscape"))
    if args.fp16:
        pipe.to(torch.float16)
    pipe.save_pretrained(args.out)
    print(f"wrote {args.out} from step {state['step']} (EMA share of the initial weights removed: "
          f"{config.ema_decay ** int(state['step']):.3f})")


if __name__ == "__main__":
    main()

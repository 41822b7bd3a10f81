"""Quality of the embedded model, measured the way the paper does (segmentation consistency).

1. Train a small segmentation network on real rendered landscapes (``spade_core.data.synthetic``).
2. On held-out layouts, report its mIoU / pixel accuracy on (a) the real renders (upper bound),
   (b) the embedded SPADE model's images, (c) the pix2pixHD-style baseline of
   ``benchmarks/baselines.py`` trained with the same trainer on the same data (``--baseline``: the
   ``pack/baseline`` folder written by ``examples/scripts/train_embedded_gpu.sh``).
3. Style fidelity: distance between the colour statistics (per-channel mean and std) of a style
   image and the output made with its encoded style, versus outputs with random styles.
4. Diversity: mean pairwise L1 between outputs of one layout for different seeds.

usage: python benchmarks/quality_synthetic.py [--baseline DIR] [--num-eval 100] [--json out.json] [--grid out.png]

The shipped segmenter (spade_core/assets/segmenter, used by `spade eval --format synthetic`) is made by:
    python benchmarks/quality_synthetic.py --export-segmenter spade_core/assets/segmenter \
        --num-train 800 --steps 900 --batch 12 --crop 64 --augment --cosine --num-eval 100
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spade_core.data.synthetic import render_landscape
from spade_core.eval.diversity import mean_pairwise_distance
from spade_core.eval.segmentation import confusion_matrix, mean_iou
from spade_core.eval.segmenters import (
    LandscapeSegmenter,
    load_landscape_segmenter,
    save_landscape_segmenter,
)
from spade_core.labels import get_label_set
from spade_core.pipeline import SPADEPipeline
from spade_core.segmap import one_hot_semantics

SIZE = 128
NUM_CLASSES = 10


def render(seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, H, W) int64 and images (N, 3, H, W) in [0, 1] of rendered landscapes."""
    samples = [render_landscape(s, SIZE) for s in seeds]
    labels = torch.from_numpy(np.stack([s.labels for s in samples])).long()
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    return labels, images


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness/contrast jitter and, for some images, a 3x3 blur (generated images are softer)."""
    n = x.shape[0]
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    x = ((x - mean) * contrast + mean) * gain
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        x[blur] = F.avg_pool2d(x[blur], 3, 1, 1, count_include_pad=False)
    return x.clamp(0, 1)


def train_segmenter(
    num_train: int,
    steps: int,
    batch: int,
    seed: int,
    crop: int = 0,
    augment: bool = False,
    cosine: bool = False,
) -> LandscapeSegmenter:
    """Fit the segmenter on real renders (layouts disjoint from the evaluation ones).

    `crop` > 0 trains on random crop x crop windows (cheaper steps; the network is fully convolutional),
    `augment` adds colour jitter and blur, `cosine` decays the learning rate to zero.
    """
    torch.manual_seed(seed)
    labels, images = render(list(range(2_000_000, 2_000_000 + num_train)))
    net = LandscapeSegmenter(NUM_CLASSES)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, num_train, (batch,), generator=gen)
        x, y = images[idx], labels[idx]
        if crop:
            top = torch.randint(0, SIZE - crop + 1, (batch,), generator=gen).tolist()
            left = torch.randint(0, SIZE - crop + 1, (batch,), generator=gen).tolist()
            x = torch.stack([x[i, :, t : t + crop, c : c + crop] for i, (t, c) in enumerate(zip(top, left))])
            y = torch.stack([y[i, t : t + crop, c : c + crop] for i, (t, c) in enumerate(zip(top, left))])
        if augment:
            x = _augment(x, gen)
        if step % 2:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  segmenter step {step:4d} loss {loss.item():.3f}", flush=True)
    return net.eval()


@torch.no_grad()
def segmentation_scores(segmenter: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    conf = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    for i in range(0, len(images), 16):
        pred = segmenter(images[i : i + 16]).argmax(1)
        conf += confusion_matrix(pred, labels[i : i + 16], NUM_CLASSES)
    scores = mean_iou(conf)
    return {"miou": round(float(scores["miou"]) * 100, 1), "pixel_accuracy": round(float(scores["pixel_accuracy"]) * 100, 1)}


def baseline_generator(pack: Path) -> nn.Module:
    """The baseline's EMA generator, with the flat-EMA share of its initial weights removed."""
    from baselines import Pix2PixHDGenerator
    from train_baseline import _build_with_baseline

    from spade_core.train.config import TrainConfig
    from spade_core.train.ema import remove_initial_share

    config = TrainConfig.from_dict(json.loads((pack / "train_config.json").read_text()))
    steps = int(json.loads((pack / "training_state.json").read_text())["step"])
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    init, _, _ = _build_with_baseline(config, get_label_set("landscape"))
    ema = Pix2PixHDGenerator.from_pretrained(pack / "ema_generator", torch_dtype=torch.float32)
    remove_initial_share(ema, init, config.ema_decay, steps)
    print(f"baseline: step {steps}, {sum(p.numel() for p in ema.parameters()):,} parameters", flush=True)
    return ema.eval()


def colour_stats(images: torch.Tensor) -> torch.Tensor:
    """Per-image (mean, std) of each RGB channel, (N, 6), images in [0, 1]."""
    flat = images.flatten(2)
    return torch.cat([flat.mean(-1), flat.std(-1)], 1)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], rounded to 8 bits as a saved image would be."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description="segmentation consistency, style fidelity and diversity")
    parser.add_argument("--baseline", type=Path, help="pack/baseline folder of the GPU run")
    parser.add_argument("--num-eval", type=int, default=100)
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path, help="write a grid: layout | real | ours (random style) | ours (style)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="segmenter training batch size")
    parser.add_argument("--crop", type=int, default=0, help="train the segmenter on random CROPxCROP windows (0: whole images)")
    parser.add_argument("--augment", action="store_true", help="colour jitter and blur while training the segmenter")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay for the segmenter")
    parser.add_argument("--export-segmenter", type=Path, metavar="DIR",
                        help="only train the segmenter, score it on held-out real renders and write DIR/model.safetensors "
                             "+ DIR/config.json (the package data is spade_core/assets/segmenter)")
    parser.add_argument("--segmenter", type=Path, metavar="DIR",
                        help="score with an exported segmenter (e.g. spade_core/assets/segmenter) instead of training one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.segmenter is not None:
        segmenter = load_landscape_segmenter(args.segmenter)
    else:
        print("training the segmenter on real renders ...", flush=True)
        segmenter = train_segmenter(
            args.num_train, args.steps, args.batch, seed=0, crop=args.crop, augment=args.augment, cosine=args.cosine
        )
    eval_seeds = list(range(3_000_000, 3_000_000 + args.num_eval))
    labels, real = render(eval_seeds)
    if args.export_segmenter is not None:
        export_segmenter(args, segmenter, segmentation_scores(segmenter, real, labels), time.time() - t0)
        return
    style_labels, style_images = render([s + 500_000 for s in eval_seeds])
    del style_labels

    pipe = SPADEPipeline.from_pretrained()
    ours_random = torch.cat([
        pipe(labels[i : i + 8], seed=i, output_type="pt").images for i in range(0, len(labels), 8)
    ])
    ours_styled = torch.cat([
        pipe(labels[i : i + 8], style_image=style_images[i : i + 8], seed=i, output_type="pt").images
        for i in range(0, len(labels), 8)
    ])
    rows = {
        "(a) real renders (upper bound)": segmentation_scores(segmenter, real, labels),
        "(b) SPADE, embedded model (random styles)": segmentation_scores(segmenter, ours_random, labels),
        "(b') SPADE, embedded model (style images)": segmentation_scores(segmenter, ours_styled, labels),
    }
    if args.baseline is not None:
        baseline = baseline_generator(args.baseline)
        with torch.no_grad():
            fake = torch.cat([
                to_unit(baseline(one_hot_semantics(labels[i : i + 8], NUM_CLASSES, False))) for i in range(0, len(labels), 8)
            ])
        rows["(c) pix2pixHD-style baseline"] = segmentation_scores(segmenter, fake, labels)

    target = colour_stats(style_images)
    styled = (colour_stats(ours_styled) - target).norm(dim=1).mean().item()
    random_style = (colour_stats(ours_random) - target).norm(dim=1).mean().item()
    diversity = []
    for i in range(min(20, len(labels))):
        outs = pipe(labels[i : i + 1], seed=1000 + i, num_images_per_segmap=4, output_type="pt").images
        diversity.append(mean_pairwise_distance(list(outs), metric="l1")["value"])
    report = {
        "segmentation_consistency": rows,
        "style_fidelity": {
            "colour_stat_distance_with_style_image": round(styled, 4),
            "colour_stat_distance_with_random_style": round(random_style, 4),
            "ratio": round(styled / random_style, 3),
        },
        "diversity_l1_4_seeds": round(float(np.mean(diversity)), 4),
        "num_eval": args.num_eval,
        "seconds": round(time.time() - t0, 1),
    }
    print("\n| images segmented | mIoU | pixel accuracy |\n| --- | ---: | ---: |")
    for name, s in rows.items():
        print(f"| {name} | {s['miou']} | {s['pixel_accuracy']} |")
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.grid:
        write_grid(args.grid, pipe, labels[:6], real[:6], ours_random[:6], style_images[:6], ours_styled[:6])


def export_segmenter(args: argparse.Namespace, segmenter: LandscapeSegmenter, real: dict[str, float], seconds: float) -> None:
    """Write the trained segmenter and how it was made (recipe, real-render scores) to --export-segmenter."""
    recipe = {
        "script": "benchmarks/quality_synthetic.py",
        "command": "python benchmarks/quality_synthetic.py " + " ".join(sys.argv[1:]),
        "train_seeds": f"render_landscape seeds 2000000..{2_000_000 + args.num_train - 1} at {SIZE}x{SIZE}",
        "steps": args.steps,
        "batch": args.batch,
        "crop": args.crop,
        "augment": args.augment,
        "cosine_lr": args.cosine,
        "threads": args.threads,
        "seconds": round(seconds, 1),
    }
    info = {
        "label_set": "landscape",
        "image_size_hw": [SIZE, SIZE],
        "input": "RGB images in [0, 1], (N, 3, H, W), H and W multiples of 4",
        "num_parameters": sum(p.numel() for p in segmenter.parameters()),
        "real_renders": {
            "miou_percent": real["miou"],
            "pixel_accuracy_percent": real["pixel_accuracy"],
            "held_out": f"render_landscape seeds 3000000..{3_000_000 + args.num_eval - 1}",
        },
        "training": recipe,
    }
    folder = save_landscape_segmenter(segmenter, args.export_segmenter, info)
    print(f"real renders: mIoU {real['miou']} %, pixel accuracy {real['pixel_accuracy']} % ({args.num_eval} held-out layouts)")
    print(f"wrote {folder}")


def write_grid(path: Path, pipe, labels, real, ours, styles, styled) -> None:
    """Rows of: layout | real render | ours (random style) | style image | ours (that style)."""
    from PIL import Image

    def tile(x: torch.Tensor) -> np.ndarray:
        return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    rows = []
    for i in range(len(labels)):
        cells = [pipe.colorize(labels[i].numpy()), tile(real[i]), tile(ours[i]), tile(styles[i]), tile(styled[i])]
        rows.append(np.concatenate(cells, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

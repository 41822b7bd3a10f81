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

from spade_core.data.synthetic import render_landscape  # noqa: E402
from spade_core.eval.diversity import mean_pairwise_distance  # noqa: E402
from spade_core.eval.segmentation import confusion_matrix, mean_iou  # noqa: E402
from spade_core.labels import get_label_set  # noqa: E402
from spade_core.pipeline import SPADEPipeline  # noqa: E402
from spade_core.segmap import one_hot_semantics  # noqa: E402

SIZE = 128
NUM_CLASSES = 10


class SmallSegmenter(nn.Module):
    """A compact encoder-decoder FCN (about 0.3 M parameters): images in [0, 1] -> class logits."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32) -> None:
        super().__init__()

        def block(i: int, o: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.ReLU(True))

        w = width
        self.down1 = nn.Sequential(block(3, w), block(w, w))
        self.down2 = nn.Sequential(block(w, 2 * w, 2), block(2 * w, 2 * w))
        self.down3 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w), block(4 * w, 4 * w))
        self.up2 = block(4 * w + 2 * w, 2 * w)
        self.up1 = block(2 * w + w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x * 2 - 1)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        u2 = self.up2(torch.cat([F.interpolate(d3, scale_factor=2.0), d2], 1))
        u1 = self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0), d1], 1))
        return self.head(u1)


def render(seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, H, W) int64 and images (N, 3, H, W) in [0, 1] of rendered landscapes."""
    samples = [render_landscape(s, SIZE) for s in seeds]
    labels = torch.from_numpy(np.stack([s.labels for s in samples])).long()
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    return labels, images


def train_segmenter(num_train: int, steps: int, batch: int, seed: int) -> SmallSegmenter:
    """Fit the segmenter on real renders (layouts disjoint from the evaluation ones)."""
    torch.manual_seed(seed)
    labels, images = render(list(range(2_000_000, 2_000_000 + num_train)))
    net = SmallSegmenter()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, num_train, (batch,), generator=gen)
        x, y = images[idx], labels[idx]
        if step % 2:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    print("training the segmenter on real renders ...", flush=True)
    segmenter = train_segmenter(args.num_train, args.steps, 8, seed=0)
    eval_seeds = list(range(3_000_000, 3_000_000 + args.num_eval))
    labels, real = render(eval_seeds)
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

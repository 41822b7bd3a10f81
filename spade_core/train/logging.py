"""Run logs: a progress bar with losses and images/s, a JSON-lines metrics file, TensorBoard
scalars and sample grids (when tensorboard is installed), sample PNGs. Rank 0 only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..files import atomic_write_text

METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metric records of a run, skipping a torn last line left by a kill."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written by a run that was killed after its last checkpoint)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def image_grid(columns: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Columns of (N, 3, H, W) images in [-1, 1] -> one (3, H', W') float grid in [0, 1], a row per sample."""
    n, _, h, w = columns[0].shape
    grid = torch.ones(3, n * (h + pad) + pad, len(columns) * (w + pad) + pad)
    for c, images in enumerate(columns):
        images = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
        for r in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y:y + h, x:x + w] = images[r]
    return grid


def save_png(grid: torch.Tensor, path: str | Path) -> Path:
    """A (3, H, W) [0, 1] tensor as an 8-bit PNG, written atomically."""
    path = Path(path)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    tmp = path.with_name(f".tmp-{path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def _tensorboard_writer(log_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


class RunLogger:
    """Progress, metrics and images of a run; every method is a no-op when ``enabled`` is False."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        total_steps: int = 0,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.bar = None
        self.writer = None
        self._images = 0
        self._since = time.perf_counter()
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.run_dir, start_step)
        if tensorboard:
            self.writer = _tensorboard_writer(self.run_dir / TENSORBOARD_DIR, start_step + 1 if start_step else None)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def advance(self, images: int) -> None:
        """One step done that trained on ``images`` images (all ranks together)."""
        if not self.enabled:
            return
        self._images += images
        if self.bar is not None:
            self.bar.update(1)

    def images_per_second(self) -> float:
        """Throughput since the last :meth:`log` call (and restart the count)."""
        now = time.perf_counter()
        rate = self._images / max(now - self._since, 1e-9)
        self._images, self._since = 0, now
        return rate

    def log(self, step: int, values: dict[str, float]) -> None:
        """One metrics record: losses, learning rates, images/s (``step`` is the completed step count)."""
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **values}
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in values.items() if k.startswith(("loss/", "images"))}
            self.bar.set_postfix(shown, refresh=False)

    def log_images(self, step: int, grid: torch.Tensor, tag: str = "samples") -> Path | None:
        """Save a sample grid as ``samples/step_XXXXXXX.png`` and to TensorBoard."""
        if not self.enabled:
            return None
        path = save_png(grid, self.run_dir / SAMPLES_DIR / f"step_{step:07d}.png")
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)
        return path

    def write(self, message: str) -> None:
        """A line that does not break the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

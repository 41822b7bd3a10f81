"""Training-step speed and memory: dense SPADE vs per-pattern SPADE (and other variants), side by side.

One step = generator step + discriminator step + EMA update (no VGG loss), through the Trainer,
on real layouts: the COCO-Stuff sample in ``tests/data/coco_stuff_sample`` (labels mapped onto
the preset's label set, 255 -> don't-care, with their photos as targets). Each (preset, size,
batch, variant) runs in a fresh process, one after another, so peaks are its own:

* speed: timed steps after warm-up steps (memory is measured over the same steps run again after
  them), and the ratio to the "dense" variant of the same row;
  with ``--rounds R`` the variants run R times, alternating, and each reports its fastest round
  (a shared machine's slow spells only add time);
* tensors above static: the peak of live tensor memory during a step minus what is live when it
  starts (weights, gradients, optimizer state, EMA copy), i.e. the memory the step itself needs
  (activations, temporaries): CUDA's ``max_memory_allocated`` minus ``memory_allocated``, and on CPU
  the same quantity from the profiler's allocation records over those steps run once more (the
  allocator keeps no such statistics); the target's measure, independent of how the C library's
  heap fragments;
* process peak: CUDA's peak reserved memory, or on CPU the peak resident set (VmHWM), and the process
  above static: that peak minus what the process held before the memory steps, measured with freed heap
  returned to the OS (``malloc_trim``) and the peak mark reset (``/proc/self/clear_refs``); on CPU
  this includes the heap's fragmentation (free holes the next allocations did not fit).

    python benchmarks/train_step.py                                   # ADE20K 256 (batch 1, 2), landscape 128
    python benchmarks/train_step.py --runs ade20k:128:1 --variants dense,pattern,pattern+grad_ckpt
    python benchmarks/train_step.py --runs landscape:128:2 --variants dense,pattern,floor   # the reachable limit
    python benchmarks/train_step.py --device cuda --variants dense,pattern,dense+bf16,pattern+bf16
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "coco_stuff_sample"

VARIANTS: dict[str, dict] = {
    "dense": {"pattern_spade": False},
    "pattern": {"pattern_spade": True},
    "dense+bf16": {"pattern_spade": False, "precision": "bf16"},
    "pattern+bf16": {"pattern_spade": True, "precision": "bf16"},
    "pattern+channels_last": {"pattern_spade": True, "channels_last": True},
    "pattern+grad_ckpt": {"pattern_spade": True, "gradient_checkpointing": True},
    # Not a model: every SPADE layer replaced by a plain per-channel affine batch norm (``spade_floor``).
    # It does strictly less work than any exact SPADE (no label-dependent scale or shift, no MLP, and
    # no gradients or optimizer updates for the SPADE weights), so its step time bounds from below
    # what any per-pattern (or other) SPADE implementation can reach on this machine.
    "floor": {"pattern_spade": True, "spade_floor": True},
}
DEFAULT_RUNS = "ade20k:256:1,ade20k:256:2,landscape:128:2"


class CocoSample:
    """The COCO-Stuff sample as an in-memory dataset for ``label_set`` at ``size`` x ``size``."""

    def __init__(self, size: int, label_set) -> None:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image

        self.label_set = label_set
        self.use_instance = label_set.use_instance
        self.items = []
        for path in sorted((SAMPLE / "train_label").glob("*.png")):
            raw = np.array(Image.open(path)).astype(np.int64)
            dontcare = label_set.label_nc if label_set.contain_dontcare_label else 0
            labels = torch.from_numpy(np.where(raw == 255, dontcare, raw % label_set.label_nc))
            labels = F.interpolate(labels[None, None].float(), size=(size, size), mode="nearest")[0].long()
            photo = Image.open(SAMPLE / "train_img" / f"{path.stem}.jpg").convert("RGB").resize((size, size))
            image = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float() / 127.5 - 1
            item = {"label": labels, "image": image, "path": str(path)}
            inst_path = SAMPLE / "train_inst" / path.name
            if self.use_instance and inst_path.is_file():
                inst = torch.from_numpy(np.array(Image.open(inst_path)).astype(np.int64))[None, None].float()
                item["instance"] = F.interpolate(inst, size=(size, size), mode="nearest")[0].long()
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def tensor_peak_above_start_mib(first, measured: list) -> float:
    """Peak live CPU tensor memory while the ``measured`` calls run, above what is live when they start, in
    MiB, from the profiler's allocation records; ``first()`` runs profiled before them so that the profiler
    knows every block they free (frees of blocks allocated before profiling go unrecorded)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the profiler's start/stop lines and its expected warning
    os.close(devnull)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            first()
            with record_function("measured steps"):
                for call in measured:
                    call()
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
    events = prof.profiler.kineto_results.events()
    start = next(e.start_ns() for e in events if e.name() == "measured steps")
    live, at_start, peak = 0, None, 0
    for event in sorted((e for e in events if e.name() == "[memory]" and e.device_type().name == "CPU"),
                        key=lambda e: e.start_ns()):
        if at_start is None and event.start_ns() >= start:
            at_start = peak = live
        live += event.nbytes()
        peak = max(peak, live)
    return (peak - at_start) / 2**20 if at_start is not None else 0.0


def replace_spade_with_affine_batch_norm(generator) -> None:
    """The "floor" variant: each SPADE layer of ``generator`` computes ``batch_norm(x) * scale + shift``
    with a learnable per-channel scale and shift (plain tensors, so the optimizer and EMA do not see them)."""
    import types

    import torch
    import torch.nn.functional as F

    from spade_core.models.normalization import SPADE

    def affine_batch_norm(self, x, segmap):
        return F.batch_norm(x, None, None, self.floor_scale, self.floor_shift, True)

    for module in generator.modules():
        if isinstance(module, SPADE):
            channels = module.mlp_gamma.out_channels
            module.floor_scale = torch.ones(channels, device=module.mlp_gamma.weight.device, requires_grad=True)
            module.floor_shift = torch.zeros(channels, device=module.mlp_gamma.weight.device, requires_grad=True)
            module.forward = types.MethodType(affine_batch_norm, module)


def measure(args: dict, queue) -> None:
    """Child process: warm-up steps, then timed steps; reports s/step, tensor peak above static, process
    peak and process peak above static."""
    import gc
    import tempfile

    import torch

    from spade_core.labels import get_label_set
    from spade_core.train import TrainConfig
    from spade_core.train.trainer import Trainer, collate

    torch.manual_seed(0)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(format="synthetic", out_dir=out).with_preset(args["preset"])
        data = CocoSample(args["size"], get_label_set(args["preset"]))
        variant = dict(VARIANTS[args["variant"]])
        floor = variant.pop("spade_floor", False)
        options = dict(
            crop_size=args["size"], batch_size=args["batch"], no_vgg=True, progress=False, tensorboard=False,
            device=args["device"], num_workers=0, **variant,
        )
        cfg = dataclasses.replace(cfg, **options)
        trainer = Trainer(cfg, dataset=data)
        if floor:
            replace_spade_with_affine_batch_norm(trainer.generator)
        batches = [collate([data[(i * args["batch"] + j) % len(data)] for j in range(args["batch"])]) for i in range(4)]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        steps = [functools.partial(trainer.train_step, batches[i % len(batches)]) for i in range(args["steps"])]
        for i in range(args["warmup"]):
            trainer.train_step(batches[i % len(batches)])
        sync()
        start = time.perf_counter()
        for step in steps:
            step()
        sync()
        elapsed = time.perf_counter() - start
        # Memory: the same steps again, after the timed ones (returning the freed heap to the OS before
        # them would make them fault it back in, which a training run never does).
        gc.collect()
        if device.type == "cuda":
            static, static_process = torch.cuda.memory_allocated() / 2**20, torch.cuda.memory_reserved() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            static_process = _status_mib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        for step in steps:
            step()
        sync()
        if device.type == "cuda":
            tensors = torch.cuda.max_memory_allocated() / 2**20 - static
            peak = torch.cuda.max_memory_reserved() / 2**20
        else:
            peak = _status_mib("VmHWM")
            tensors = tensor_peak_above_start_mib(steps[-1], steps)
        layout = trainer.generator.label_layout(trainer.prepare(batches[0])[0])
        sizes = [(args["size"] >> s, args["size"] >> s) for s in range(trainer.generator.num_up + 1)]
        sparse = [f"{h}" for h, w in sizes if layout.keys is not None and layout.plan((h, w), 3).sparse]
    queue.put({"s_per_step": elapsed / args["steps"], "tensors_above_static_mib": tensors, "peak_mib": peak,
               "above_static_mib": peak - static_process, "static_mib": static_process,
               "pattern_sizes": ",".join(sparse) or "-"})


def run_one(args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"error": f"exit code {proc.exitcode}"}
    return queue.get()


def _fastest(runs: list[dict]) -> dict:
    """The run with the least s/step (the machine's noise only adds time), with every round's s/step."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    best = dict(min(good, key=lambda r: r["s_per_step"]))
    best["rounds_s_per_step"] = [round(r["s_per_step"], 3) for r in good]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated preset:size:batch")
    parser.add_argument("--variants", default="dense,pattern", help=f"comma-separated, first is the baseline: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="run the variants this many times, alternating; report each one's fastest")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    opts = parser.parse_args(argv)
    variants = [v for v in opts.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    rows = []
    print(f"device {opts.device}, {opts.steps} timed steps after {opts.warmup} warm-up, fastest of {opts.rounds} alternating "
          "round(s), real COCO-Stuff sample layouts, no VGG")
    print(f"{'preset':<10} {'size':>4} {'batch':>5} {'variant':<22} {'s/step':>8} {'speed x':>8} "
          f"{'tensors above static':>20} {'x':>6} {'process peak':>12} {'above static':>12} {'x':>6}  pattern maps")
    for run in opts.runs.split(","):
        preset, size, batch = run.split(":")
        base = None
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(opts.rounds):  # variants alternate, so that slow spells of the machine hit each
            for variant in variants:
                args = {"device": opts.device, "preset": preset, "size": int(size), "batch": int(batch),
                        "variant": variant, "steps": opts.steps, "warmup": opts.warmup, "threads": opts.threads}
                results[variant].append(run_one(args))
        for variant in variants:
            res = {"preset": preset, "size": int(size), "batch": int(batch), "variant": variant,
                   **_fastest(results[variant])}
            rows.append(res)
            if "error" in res:
                print(f"{preset:<10} {size:>4} {batch:>5} {variant:<22} {res['error']}", flush=True)
                continue
            base = base or res
            speed = base["s_per_step"] / res["s_per_step"]
            tensors = res["tensors_above_static_mib"] / base["tensors_above_static_mib"]
            process = res["above_static_mib"] / base["above_static_mib"]
            print(f"{preset:<10} {size:>4} {batch:>5} {variant:<22} {res['s_per_step']:>8.2f} {speed:>7.2f}x "
                  f"{res['tensors_above_static_mib']:>20.0f} {tensors:>5.2f}x {res['peak_mib']:>12.0f} "
                  f"{res['above_static_mib']:>12.0f} {process:>5.2f}x  {res['pattern_sizes']}", flush=True)
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

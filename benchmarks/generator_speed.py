"""Generator inference speed: dense SPADE vs per-pattern SPADE vs ``spade_core.fast.optimize_generator``.

"dense" is ``SPADEGenerator`` with ``pattern_spade = False`` (the reference's computation),
"pattern" the generator's default (per-pattern SPADE), "fast" the inference-only module.

For each preset (random weights with realistic magnitudes) and each layout (real COCO-Stuff label
maps from ``tests/data/coco_stuff_sample`` mapped to the preset's labels, and uniform random
noise as the worst case), the two paths run alternately in one process. Reported: seconds per
image (median, with min-max to show the noise), speed-up, max abs difference, peak memory of one
forward (plus, for the fast path, what it holds between calls: folded weights and reused
buffers), achieved GFLOP/s (the plain forward's FLOPs over each time) beside a large-matmul probe
measured in the same run, and each path's max abs error against a float64 forward (both round
differently, so their difference can exceed either one's own error).

    python benchmarks/generator_speed.py --presets ade20k --size 256 --repeats 3
    python benchmarks/generator_speed.py --device cuda --dtype float16 --json gpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spade_core.fast import optimize_generator  # noqa: E402
from spade_core.models import SPADEGenerator  # noqa: E402
from spade_core.segmap import one_hot_semantics  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "coco_stuff_sample"
EMBEDDED = ROOT / "spade_core" / "assets" / "embedded"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_probe(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of a large square matmul: the machine's attainable rate for this dtype."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def forward_flops(generator: torch.nn.Module, semantics: torch.Tensor, z: torch.Tensor | None) -> float:
    """Multiply-add FLOPs (x2) of the plain forward's convolutions and linear layers."""
    total = 0.0

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2.0 * output.numel() * module.in_channels // module.groups * kh * kw
        else:
            total += 2.0 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in generator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    pattern, generator.pattern_spade = generator.pattern_spade, False  # count the dense computation
    with torch.no_grad():
        generator(semantics, z)
    generator.pattern_spade = pattern
    for hook in hooks:
        hook.remove()
    return total


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory_mb(run, device: torch.device) -> float:
    """Extra memory at the peak of one call of ``run`` (CUDA allocator peak, or CPU peak RSS)."""
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:  # reset the peak-RSS mark (Linux >= 4.0), so that VmHWM is this call's peak
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    base = _rss_mb("VmRSS")
    run()
    return _rss_mb("VmHWM") - base


def held_mb(fast: torch.nn.Module) -> float:
    """Memory the fast module keeps between calls: its folded weights and reused buffers."""
    return fast.held_bytes() / 2**20


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    t = torch.from_numpy(array.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].long()


def semantics(cfg, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
    """labels (N, H, W) -> the model's one-hot input; edges from ``instances`` or else the labels."""
    return one_hot_semantics(labels, cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance, instances)


def layouts(generator: SPADEGenerator, size: tuple[int, int], samples: int, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Name -> one-hot semantics: real COCO-Stuff layouts (mapped to the preset's labels) and noise."""
    cfg = generator.config
    n_classes = cfg.label_nc + int(cfg.contain_dontcare_label)
    out: dict[str, torch.Tensor] = {}
    files = sorted((SAMPLE / "train_label").glob("*.png"))[:samples]
    for path in files:
        raw = np.array(Image.open(path))
        labels = np.where(raw == 255, cfg.label_nc, raw % cfg.label_nc) if cfg.contain_dontcare_label else raw % cfg.label_nc
        labels = resize_nearest(labels, size)
        instances = None
        if cfg.use_instance:
            inst_path = SAMPLE / "train_inst" / path.name
            instances = resize_nearest(np.array(Image.open(inst_path)), size)[None] if inst_path.is_file() else None
        out[f"coco {path.stem[-6:]}"] = semantics(cfg, labels[None].expand(batch, -1, -1), instances)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, n_classes, (batch, *size), generator=gen)
    out["noise (worst)"] = semantics(cfg, noise)
    return out


def build(preset: str, seed: int) -> SPADEGenerator:
    """Preset generator with kaiming weights, small random biases and calibrated batch-norm statistics."""
    if preset == "embedded":
        folder = EMBEDDED / "generator" if (EMBEDDED / "generator").is_dir() else EMBEDDED
        return SPADEGenerator.from_pretrained(folder).eval()
    torch.manual_seed(seed)
    generator = SPADEGenerator.from_preset(preset, init_type="kaiming")
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
    calibrate(generator, seed)
    return generator.eval()


def calibrate(generator: SPADEGenerator, seed: int, passes: int = 3) -> None:
    """Train-mode forwards (half size) bring the spectral-norm vectors near convergence (fresh
    random u, v give tiny sigmas, huge weights and an ill-conditioned network) and set every batch
    norm's running statistics (momentum 1 on the last pass)."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    height, width = generator.native_size
    if not generator.config.use_vae:
        m = generator.size_multiple
        height, width = max(m, height // 2 // m * m), max(m, width // 2 // m * m)
    sem = next(iter(layouts(generator, (height, width), 1, 1, seed).values()))
    momenta = [m.momentum for m in norms]
    generator.train()
    with torch.no_grad():
        for step in range(passes):
            for m in norms:
                m.momentum = 1.0 if step == passes - 1 else 0.1
            generator(sem)
    generator.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def timed(run, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def parse_size(text: str | None, generator: SPADEGenerator) -> tuple[int, int]:
    """'H' (native aspect ratio) or 'HxW'; default the native size."""
    if text is None or generator.config.use_vae:
        return generator.native_size
    if "x" in text:
        h, w = (int(v) for v in text.lower().split("x"))
    else:
        nh, nw = generator.native_size
        h = int(text)
        w = max(generator.size_multiple, round(h * nw / nh / generator.size_multiple) * generator.size_multiple)
    generator.check_size(h, w)
    return h, w


def bench_preset(preset: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, probe: float) -> list[dict]:
    generator = build(preset, args.seed)
    size = parse_size(args.size, generator)
    cases = layouts(generator, size, args.samples, args.batch, args.seed)
    flops = forward_flops(generator, next(iter(cases.values())), None) / args.batch
    exact = copy.deepcopy(generator).double() if args.truth else None
    generator = generator.to(device=device, dtype=dtype)
    fast = optimize_generator(generator)
    dense = copy.deepcopy(generator)
    dense.pattern_spade = False
    z_dim = generator.config.z_dim
    rows = []
    for name, semantics in cases.items():
        semantics = semantics.to(device=device, dtype=dtype)
        z = torch.randn(args.batch, z_dim, device=device, dtype=dtype) if generator.config.use_vae else None
        with torch.no_grad():
            plain_out = dense(semantics, z)
            fast_out = fast(semantics, z)
            diff = (plain_out.float() - fast_out.float()).abs().max().item()
            plain_error = fast_error = float("nan")
            if exact is not None:  # both paths against the float64 forward (on the CPU)
                truth = exact(semantics.cpu().double(), None if z is None else z.cpu().double())
                plain_error = (plain_out.cpu().double() - truth).abs().max().item()
                fast_error = (fast_out.cpu().double() - truth).abs().max().item()
            times: dict[str, list[float]] = {"plain": [], "pattern": [], "fast": []}
            for r in range(args.repeats):  # alternate, and alternate who goes first
                order = [("plain", dense), ("pattern", generator), ("fast", fast)]
                for label, module in order if r % 2 == 0 else order[::-1]:
                    times[label].append(timed(partial(module, semantics, z), device) / args.batch)
            plain_times, fast_times = times["plain"], times["fast"]
            plain_mem = peak_memory_mb(partial(dense, semantics, z), device)
            fast_mem = peak_memory_mb(partial(fast, semantics, z), device)
            held = held_mb(fast)
        plain_s, fast_s = statistics.median(plain_times), statistics.median(fast_times)
        row = {
            "preset": preset,
            "layout": name,
            "size": f"{size[0]}x{size[1]}",
            "plain_s": plain_s,
            "plain_range": [min(plain_times), max(plain_times)],
            "pattern_s": statistics.median(times["pattern"]),
            "pattern_speedup": plain_s / statistics.median(times["pattern"]),
            "fast_s": fast_s,
            "fast_range": [min(fast_times), max(fast_times)],
            "speedup": plain_s / fast_s,
            "max_abs_diff": diff,
            "plain_error_vs_float64": plain_error,
            "fast_error_vs_float64": fast_error,
            "plain_peak_mb": plain_mem,
            "fast_peak_mb": fast_mem,
            "fast_held_mb": held,
            "gflop": flops / 1e9,
            "plain_gflops": flops / plain_s / 1e9,
            "fast_effective_gflops": flops / fast_s / 1e9,
            "probe_gflops": probe,
        }
        rows.append(row)
        print(
            f"  {preset} {name}: dense {plain_s:.3f}s pattern {row['pattern_s']:.3f}s (x{row['pattern_speedup']:.2f}) "
            f"fast {fast_s:.3f}s x{row['speedup']:.2f} diff {diff:.1e} "
            f"(vs float64: plain {plain_error:.1e}, fast {fast_error:.1e})",
            flush=True,
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| preset | layout | size | dense s/img (min-max) | pattern s/img (speed-up) | fast s/img (min-max) | fast speed-up | max abs diff "
        "| error vs float64 plain / fast | peak MB plain / fast (+ held) | GFLOP | GFLOP/s plain / fast (effective) / probe |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['layout']} | {r['size']} "
            f"| {r['plain_s']:.3f} ({r['plain_range'][0]:.2f}-{r['plain_range'][1]:.2f}) "
            f"| {r['pattern_s']:.3f} ({r['pattern_speedup']:.2f}x) "
            f"| {r['fast_s']:.3f} ({r['fast_range'][0]:.2f}-{r['fast_range'][1]:.2f}) "
            f"| {r['speedup']:.2f}x | {r['max_abs_diff']:.1e} "
            f"| {r['plain_error_vs_float64']:.1e} / {r['fast_error_vs_float64']:.1e} "
            f"| {r['plain_peak_mb']:.0f} / {r['fast_peak_mb']:.0f} (+{r['fast_held_mb']:.0f}) | {r['gflop']:.0f} "
            f"| {r['plain_gflops']:.0f} / {r['fast_effective_gflops']:.0f} / {r['probe_gflops']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_presets = ["ade20k", "coco", "cityscapes"] + (["embedded"] if EMBEDDED.is_dir() else [])
    parser.add_argument("--presets", nargs="+", default=default_presets)
    parser.add_argument("--size", default=None, help="output height (native aspect) or HxW; default native")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per path and layout")
    parser.add_argument("--samples", type=int, default=2, help="real COCO-Stuff layouts per preset")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-truth", dest="truth", action="store_false", help="skip the float64 forward that measures each path's error"
    )
    parser.add_argument("--json", default=None, help="also write the rows and environment to this file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    probe = matmul_probe(device, dtype)
    print(f"torch {torch.__version__}, {device}, {args.dtype}, {torch.get_num_threads()} threads; matmul probe {probe:.0f} GFLOP/s")
    rows = []
    for preset in args.presets:
        rows.extend(bench_preset(preset, args, device, dtype, probe))
    probe_after = matmul_probe(device, dtype)
    print(f"matmul probe after: {probe_after:.0f} GFLOP/s (the spread between probes shows the machine's noise)\n")
    print(table(rows))
    if args.json:
        env = {
            "torch": torch.__version__,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "probe_gflops": [probe, probe_after],
            "args": vars(args),
        }
        Path(args.json).write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

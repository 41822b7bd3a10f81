"""Training-step speed and peak memory: precision / memory-format / checkpointing variants side by side.

Each (size, variant) runs in a fresh process so peak memory is its own (CUDA: peak allocated
tensor memory; CPU: peak resident set size of the process). One step = generator step +
discriminator step + EMA update, on random label maps of the ADE20K label set (151 channels).

    python benchmarks/train_step.py                       # CPU, small
    python benchmarks/train_step.py --device cuda --sizes 256 --ngf 64 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

VARIANTS: dict[str, dict] = {
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
    "fp16": {"precision": "fp16"},
    "grad_ckpt": {"gradient_checkpointing": True},
}


class RandomSegmaps:
    """A fixed set of random blocky label maps and images at one size (an in-memory dataset)."""

    def __init__(self, size: int, count: int, label_set) -> None:
        import torch

        gen = torch.Generator().manual_seed(0)
        self.label_set = label_set
        self.use_instance = False
        coarse = torch.randint(0, label_set.label_nc, (count, 1, size // 8, size // 8), generator=gen)
        self.labels = coarse.repeat_interleave(8, 2).repeat_interleave(8, 3)
        self.images = torch.rand(count, 3, size, size, generator=gen) * 2 - 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"label": self.labels[i], "image": self.images[i], "path": f"random://{i}"}


def measure(args: dict, variant: str, queue) -> None:
    """Child process: time ``steps`` training steps after ``warmup`` and report steps/s and peak MiB."""
    import tempfile

    import torch

    from spade_core.labels import get_label_set
    from spade_core.train import TrainConfig
    from spade_core.train.trainer import Trainer, collate

    torch.manual_seed(0)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    data = RandomSegmaps(args["size"], args["batch_size"], get_label_set("ade20k"))
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            format="synthetic", ngf=args["ngf"], ndf=args["ndf"], crop_size=args["size"], batch_size=args["batch_size"],
            no_vgg=True, progress=False, tensorboard=False, out_dir=out, device=args["device"], num_workers=0,
            **VARIANTS[variant],
        )
        trainer = Trainer(cfg, dataset=data)
        batch = collate([data[i] for i in range(len(data))])
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for _ in range(args["warmup"]):
            trainer.train_step(batch)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args["steps"]):
            trainer.train_step(batch)
        sync()
        elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    queue.put({"steps_per_s": args["steps"] / elapsed, "peak_mib": peak})


def run_variant(args: dict, variant: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(args, variant, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"error": f"exit code {proc.exitcode}"}
    return queue.get()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64,128", help="comma-separated crop sizes (multiples of 32)")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--ndf", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    opts = parser.parse_args(argv)
    variants = [v for v in opts.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    results = []
    print(f"device {opts.device}, ngf {opts.ngf}, ndf {opts.ndf}, batch {opts.batch_size}, {opts.steps} timed steps")
    print(f"{'size':>5} {'variant':<20} {'steps/s':>9} {'x fp32':>7} {'peak MiB':>9} {'x fp32':>7}")
    for size in (int(s) for s in opts.sizes.split(",")):
        base = None
        for variant in variants:
            args = {"device": opts.device, "size": size, "ngf": opts.ngf, "ndf": opts.ndf, "batch_size": opts.batch_size,
                    "steps": opts.steps, "warmup": opts.warmup, "threads": opts.threads}
            res = {"size": size, "variant": variant, **run_variant(args, variant)}
            results.append(res)
            if "error" in res:
                print(f"{size:>5} {variant:<20} {res['error']}")
                continue
            base = base or (res if variant == "fp32" else None)
            speed = res["steps_per_s"] / base["steps_per_s"] if base else float("nan")
            memory = res["peak_mib"] / base["peak_mib"] if base else float("nan")
            print(f"{size:>5} {variant:<20} {res['steps_per_s']:>9.3f} {speed:>7.2f} {res['peak_mib']:>9.0f} {memory:>7.2f}",
                  flush=True)
    if opts.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

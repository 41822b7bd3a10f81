#!/usr/bin/env bash
# Train the embedded landscape painter and, side by side with the same recipe and budget, the
# pix2pixHD-style baseline of benchmarks/quality_synthetic.py, on one GPU for SECS seconds each.
# Training is stopped by a hard kill; checkpoints are atomic, so the last complete one is used.
# Results: pack/ (fp16 weights of the EMA generators + encoder, logs, samples) as pack.tar.gz.
set -uo pipefail
SECS=${SECS:-300}
BS=${BS:-16}
WORKERS=${WORKERS:-7}
COMMON=(--format synthetic --crop-size 128 --preprocess-mode fixed --ndf 32 --no-vgg --precision bf16
        --batch-size "$BS" --num-workers "$WORKERS" --checkpoint-every "${CKPT:-100}" --sample-every "${SAMPLE:-400}" --log-every 25
        --no-progress --max-steps 1000000 --niter 1000000 --schedule-unit step --seed 0)
rm -rf runs pack && mkdir -p runs pack
timeout -s KILL "$SECS" python3 -m spade_core.train "${COMMON[@]}" --out runs/embedded --ngf 16 --use-vae \
    > runs/embedded.log 2>&1 &
timeout -s KILL "$SECS" python3 benchmarks/train_baseline.py "${COMMON[@]}" --out runs/baseline --ngf 16 \
    > runs/baseline.log 2>&1 &
wait
tail -n 3 runs/*.log
python3 - <<'PY'
import json, shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
for run in ("embedded", "baseline"):
    root = Path("runs") / run
    if not (root / "checkpoints" / "latest").is_file():
        print(run, "has no complete checkpoint")
        continue
    ckpt = root / "checkpoints" / (root / "checkpoints" / "latest").read_text().strip()
    out = Path("pack") / run
    for net in ("ema_generator", "generator", "encoder"):
        if not (ckpt / net).is_dir() or (net == "generator" and (ckpt / "ema_generator").is_dir()):
            continue
        (out / net).mkdir(parents=True)
        shutil.copy(ckpt / net / "config.json", out / net / "config.json")
        state = load_file(ckpt / net / "diffusion_pytorch_model.safetensors")
        save_file({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()},
                  out / net / "diffusion_pytorch_model.safetensors")
    for name in ("label_set.json", "train_config.json", "training_state.json"):
        if (ckpt / name).is_file():
            shutil.copy(ckpt / name, out / name)
    for name in ("metrics.jsonl", "config.json"):
        shutil.copy(root / name, out / name)
    samples = sorted((root / "samples").glob("*.png"))
    if samples:
        shutil.copy(samples[-1], out / "last_samples.png")
    lines = (root / "metrics.jsonl").read_text().splitlines()
    print(run, ckpt.name, json.loads(lines[-1]) if lines else "no metrics yet")
PY
cp runs/*.log pack/
tar czf pack.tar.gz pack

"""Two CPU processes under torchrun (gloo): DDP keeps the ranks' weights identical and shards the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from spade_core.train import TrainConfig
from spade_core.train.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "tests" / "data" / "coco_stuff_sample"

# Each rank trains, then saves the weights it holds; only rank 0 writes the run's checkpoints and logs.
SCRIPT = """
import json, sys
from safetensors.torch import save_file
from spade_core.train import TrainConfig
from spade_core.train.trainer import Trainer

trainer = Trainer(TrainConfig.from_dict(json.loads(sys.argv[1])))
trainer.train()
state = {}
for name, net in trainer.networks().items():
    state.update({f"{name}.{k}": v.contiguous() for k, v in net.state_dict().items()})
save_file(state, f"{sys.argv[2]}/rank{trainer.ctx.rank}.safetensors")
trainer.close()
"""


def test_two_processes_agree_on_weights_and_split_the_data(tmp_path):
    steps_per_epoch, steps = 2, 3  # 8 images, batch 2 per rank, 2 ranks
    cfg = TrainConfig(
        data_root=str(COCO), format="coco", ngf=2, ndf=4, n_layers_D=2, crop_size=32, spade_hidden_nc=8,
        no_vgg=True, batch_size=2, num_workers=0, progress=False, log_every=1, sample_every=0,
        checkpoint_every=2, max_steps=steps, out_dir=str(tmp_path / "run"), trace_data=True,
        dataset_options={"max_dataset_size": 8}, use_vae=True,
    )
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), json.dumps(cfg.to_dict()), str(tmp_path)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    # Parameters and spectral-norm vectors are bitwise equal; CPU batch-norm running statistics are
    # per rank (SyncBatchNorm only syncs on GPU) and are not compared.
    compared = [k for k in rank0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(compared) > 50
    assert [k for k in compared if not torch.equal(rank0[k], rank1[k])] == []
    assert any(not torch.equal(rank0[k], rank1[k]) for k in rank0 if k.endswith("running_mean"))

    traces = {}
    for r in (0, 1):
        rows = [line.split("\t") for line in (tmp_path / "run" / "data_trace" / f"rank{r}.txt").read_text().splitlines()]
        traces[r] = [path for step, path in rows if int(step) < steps_per_epoch]  # the first epoch
    assert len(traces[0]) == len(traces[1]) == 2 * steps_per_epoch
    assert not set(traces[0]) & set(traces[1])
    assert len(set(traces[0]) | set(traces[1])) == 8

    assert [r["step"] for r in read_metrics(tmp_path / "run")] == list(range(1, steps + 1))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "latest", "step_0000002", "step_0000003"]

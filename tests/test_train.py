"""Training: config, schedules, checkpoint files, learning on real data, and exact kill-and-resume."""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spade_core.cli import main as spade_main
from spade_core.cli.train import add_arguments as add_train_arguments
from spade_core.cli.train import resolve_config
from spade_core.labels import get_label_set
from spade_core.train import TrainConfig, load_run_networks
from spade_core.train import checkpoint as ckpt
from spade_core.train.builders import lr_factor
from spade_core.train.distributed import DistributedContext, ResumableDistributedSampler
from spade_core.train.logging import read_metrics
from spade_core.train.trainer import Trainer, collate

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "tests" / "data" / "coco_stuff_sample"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(out_dir: Path, **changes) -> TrainConfig:
    """A few-hundred-kparam model on 32x32 COCO-Stuff crops, without VGG."""
    base = TrainConfig(
        data_root=str(COCO), format="coco", ngf=2, ndf=4, n_layers_D=3, crop_size=32, spade_hidden_nc=16,
        no_vgg=True, batch_size=2, num_workers=0, out_dir=str(out_dir), progress=False, log_every=1,
        sample_every=0, checkpoint_every=0, max_steps=2,
    )
    return base.updated(changes)


def parse(argv: list[str]) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(argv)


# ----------------------------------------------------------------------------- config


def test_defaults_are_the_reference_recipe():
    cfg = TrainConfig()
    assert cfg.optimizer_settings() == {"generator": (0.0001, (0.0, 0.9)), "discriminator": (0.0004, (0.0, 0.9))}
    assert (cfg.gan_mode, cfg.lambda_feat, cfg.lambda_vgg, cfg.lambda_kld) == ("hinge", 10.0, 10.0, 0.05)
    assert (cfg.norm_G, cfg.norm_D, cfg.ngf, cfg.ndf, cfg.num_D, cfg.n_layers_D) == (
        "spectralspadesyncbatch3x3", "spectralinstance", 64, 64, 2, 4)
    assert cfg.resolved_load_size() == 286
    no_ttur = cfg.updated({"no_TTUR": True}).optimizer_settings()
    assert no_ttur == {"generator": (0.0002, (0.5, 0.999)), "discriminator": (0.0002, (0.5, 0.999))}


def test_config_round_trips_through_yaml_and_json(tmp_path):
    cfg = TrainConfig().with_preset("cityscapes").updated({"ngf": 8, "dataset_options": {"length": 3}})
    assert (cfg.crop_size, cfg.aspect_ratio, cfg.num_upsampling_layers, cfg.preprocess_mode) == (512, 2.0, "more", "fixed")
    cfg.save(tmp_path)
    assert TrainConfig.load(tmp_path / "config.yaml") == cfg
    assert TrainConfig.load(tmp_path / "config.json") == cfg
    text = (tmp_path / "config.yaml").read_text()
    assert text.count("  # ") == len(TrainConfig.field_names())  # every field documented


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown training option.*ngff"):
        TrainConfig.from_dict({"ngff": 3})
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(data_root="x", precision="fp8").validate()
    with pytest.raises(ValueError, match="pass the dataset folder as data_root"):
        TrainConfig(format="coco").validate()


def test_cli_precedence_and_print_config(tmp_path, capsys):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"ngf": 16, "lr": 0.001}))
    argv = ["--preset", "coco", "--config", str(cfg_file), "--ngf", "8", "--set", "num_D=3", "--no-ema",
            "--data", "d", "--format", "coco", "--print-config"]
    cfg = resolve_config(parse(argv))
    assert (cfg.ngf, cfg.lr, cfg.num_D, cfg.ema_decay, cfg.preset, cfg.data_root) == (8, 0.001, 3, None, "coco", "d")
    assert spade_main(["train", *argv]) == 0
    assert "ngf: 8  # generator width" in capsys.readouterr().out


def test_lr_schedule_follows_the_reference_update_rule():
    lr, niter, niter_decay = 0.0002, 3, 4
    current, expected = lr, []
    for epoch in range(1, niter + niter_decay + 1):  # the reference: train epoch, then update_learning_rate(epoch)
        expected.append(current)
        if epoch > niter:
            current -= lr / niter_decay
    ours = [lr * lr_factor(e, niter, niter_decay) for e in range(niter + niter_decay)]
    assert ours == pytest.approx(expected)


def test_sampler_resumes_mid_epoch():
    data = list(range(11))
    ctx = DistributedContext(rank=1, world_size=2)
    sampler = ResumableDistributedSampler(data, ctx, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_start(4)
    assert list(sampler) == full[4:] and len(sampler) == len(full) - 4


# ----------------------------------------------------------------------------- checkpoint files


def test_optimizer_and_rng_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.0, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ckpt.flatten_optimizer("opt", opt.state_dict())
    meta = json.loads(json.dumps(meta))
    restored = ckpt.unflatten_optimizer("opt", tensors, meta)
    other = torch.optim.Adam(model.parameters(), lr=0.5)
    other.load_state_dict(restored)
    assert other.param_groups[0]["betas"] == (0.0, 0.9) and other.param_groups[0]["lr"] == 0.1
    for a, b in zip(opt.state.values(), other.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)

    rng_tensors, rng_meta = ckpt.capture_rng_state()
    rng_meta = json.loads(json.dumps(rng_meta))
    expected = (torch.rand(3), random.random(), np.random.rand())
    ckpt.restore_rng_state(rng_tensors, rng_meta)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    net = torch.nn.Linear(2, 2)
    net.to_json_string = lambda: "{}"  # a plain module standing in for a ConfigMixin network
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"generator": net}, {"x": torch.ones(1)}, {}, {}, {}, keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_0000003", "step_0000004"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000004"
    root = ckpt.checkpoints_root(tmp_path)
    partial = root / ".tmp-step_0000005-123"
    (partial / "generator").mkdir(parents=True)
    (partial / "generator" / ckpt.WEIGHTS_NAME).write_bytes(b"trunc")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000004"
    (root / "latest").write_text("step_0000099\n")  # a pointer to a folder that is gone
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000004"
    assert ckpt.remove_partial(tmp_path) == [partial] and not partial.exists()
    assert not list(tmp_path.rglob(".tmp-*"))


# ----------------------------------------------------------------------------- training


def test_tiny_model_learns_two_coco_images(tmp_path):
    cfg = tiny_config(
        tmp_path / "run", ngf=4, ndf=8, max_steps=150, log_every=10, preprocess_mode="resize", load_size=32,
        no_flip=True, dataset_options={"max_dataset_size": 2}, seed=0,
    )
    trainer = Trainer(cfg)
    semantics, image = trainer.prepare(collate([trainer.dataset[0], trainer.dataset[1]]))

    def l1(generator: torch.nn.Module, train: bool) -> float:
        generator = copy.deepcopy(generator).train(train)  # a train-mode pass would move its statistics
        with torch.no_grad():
            return (generator(semantics) - image).abs().mean().item()

    before = min(l1(trainer.generator, True), l1(trainer.generator, False))
    trainer.train()
    after = l1(trainer.generator, False)
    records = read_metrics(cfg.out_dir)
    assert len(records) == 15
    assert all(torch.isfinite(torch.tensor(v)) for r in records for k, v in r.items() if k.startswith("loss/"))
    assert after <= 0.5 * before, (before, after)


def test_every_option_trains_a_step(tmp_path):
    from spade_core.losses import VGGLoss
    from spade_core.models.vgg import VGG19Features

    cfg = TrainConfig(
        format="synthetic", dataset_options={"length": 4}, ngf=2, ndf=4, n_layers_D=2, crop_size=32,
        spade_hidden_nc=8, batch_size=2, num_workers=0, progress=False, max_steps=2, sample_every=1,
        checkpoint_every=0, use_vae=True, precision="bf16", channels_last=True, out_dir=str(tmp_path / "r"),
        gan_mode="ls",
    )
    trainer = Trainer(cfg, vgg_loss=VGGLoss(vgg=VGG19Features()))
    trainer.train()
    record = read_metrics(cfg.out_dir)[-1]
    assert {"loss/KLD", "loss/GAN", "loss/GAN_Feat", "loss/VGG", "loss/D_Fake", "loss/D_real"} <= set(record)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in record.items() if k.startswith("loss/"))
    assert (Path(cfg.out_dir) / "samples" / "step_0000002.png").is_file()
    nets = load_run_networks(cfg.out_dir)
    assert nets["encoder"] is not None and nets["ema_generator"] is not None
    assert nets["label_set"]["name"] == "landscape"


def test_fp16_uses_a_gradient_scaler(tmp_path):
    cfg = tiny_config(tmp_path / "r", precision="fp16", max_steps=1, dataset_options={"max_dataset_size": 2})
    trainer = Trainer(cfg)
    trainer.train()
    assert all(s.is_enabled() for s in trainer.scalers.values())
    meta = json.loads((ckpt.latest_checkpoint(cfg.out_dir) / ckpt.STATE_JSON).read_text())
    assert meta["scalers"]["generator"]["scale"] > 0
    # fused Adam (with the scaler's unscaling folded in) on the CPU
    assert all(opt.defaults["fused"] for opt in trainer.optimizers.values())


def test_missing_vgg_weights_offline_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SPADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    argv = ["--data", str(COCO), "--format", "coco", "--out", str(tmp_path / "r"), "--ngf", "2", "--ndf", "4",
            "--crop-size", "32", "--set", "spade_hidden_nc=8", "--num-workers", "0"]
    assert spade_main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spade: error:") and "--no-vgg" in err and err.count("\n") == 1


def test_existing_run_needs_resume_and_init_from_loads_weights(tmp_path):
    cfg = tiny_config(tmp_path / "r", max_steps=1, dataset_options={"max_dataset_size": 2})
    Trainer(cfg).train()
    with pytest.raises(ValueError, match="already holds a run .*pass resume=True"):
        Trainer(cfg).train()
    latest = ckpt.latest_checkpoint(cfg.out_dir)
    fine_tune = Trainer(cfg.updated({"out_dir": str(tmp_path / "ft"), "init_from": str(latest), "seed": 9}))
    saved = load_file(str(latest / "discriminator" / ckpt.WEIGHTS_NAME))
    assert all(torch.equal(v, saved[k]) for k, v in fine_tune.discriminator.state_dict().items())


def test_gradient_checkpointing_is_exact():
    from spade_core.models import SPADEGenerator

    torch.manual_seed(0)
    plain = SPADEGenerator.from_preset("ade20k", label_nc=5, ngf=2, crop_size=32, spade_hidden_nc=8).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.enable_gradient_checkpointing()
    semantics = torch.zeros(2, plain.semantic_nc, 32, 32)
    semantics[:, 1, :, :16] = 1
    semantics[:, 2, :, 16:] = 1
    for net in (plain, checkpointed):
        net(semantics).square().mean().backward()
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# ----------------------------------------------------------------------------- kill and resume


def _cli(out: Path, max_steps: int) -> list[str]:
    return [
        sys.executable, "-m", "spade_core.train", "--data", str(COCO), "--format", "coco", "--out", str(out),
        "--max-steps", str(max_steps), "--batch-size", "2", "--crop-size", "32", "--ngf", "2", "--ndf", "4",
        "--no-vgg", "--num-workers", "0", "--log-every", "1", "--checkpoint-every", "3", "--sample-every", "4",
        "--seed", "3", "--no-progress", "--set", "spade_hidden_nc=16", "--set", "n_layers_D=3",
        "--set", "dataset_options={max_dataset_size: 5}", "--set", "ema_decay=0.9",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = ckpt.latest_checkpoint(run_dir)
    out = {f"state.{k}": v for k, v in load_file(str(folder / ckpt.STATE_TENSORS)).items()}
    for name in ("generator", "discriminator", "ema_generator"):
        out.update({f"{name}.{k}": v for k, v in load_file(str(folder / name / ckpt.WEIGHTS_NAME)).items()})
    return out


def test_killed_run_resumes_exactly(tmp_path):
    steps = 10
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(straight, steps), env=_env(), cwd=ROOT, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_cli(killed, steps), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pointer = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not pointer.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert alive, "the run ended before its first checkpoint could be interrupted"
    resumed_from = ckpt.latest_checkpoint(killed)
    step = int(resumed_from.name.split("_")[1])
    assert step < steps
    partial = killed / "checkpoints" / f".tmp-step_{steps - 1:07d}-1"  # as a kill during a write leaves it
    (partial / "generator").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(partial / "generator" / ckpt.WEIGHTS_NAME))

    done = subprocess.run(_cli(killed, steps) + ["--resume"], env=_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"from {resumed_from.name}" in done.stdout
    assert not partial.exists()

    def losses(run: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k.startswith(("step", "loss/", "lr/"))} for r in read_metrics(run)]

    assert losses(killed) == losses(straight) and len(losses(straight)) == steps
    a, b = _checkpoint_tensors(straight), _checkpoint_tensors(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert (killed / "samples" / "step_0000008.png").is_file()

    nets = load_run_networks(killed)
    assert nets["step"] == steps and nets["encoder"] is None and nets["ema_generator"] is not None
    assert not nets["generator"].training
    assert nets["label_set"] == get_label_set("coco").to_dict()
    assert TrainConfig.from_dict(nets["config"]) == TrainConfig.load(killed / "config.yaml")


def test_ema_warm_up_keeps_short_runs_away_from_the_initialisation():
    """After t updates the share of the initial weights is prod(decay_k); warm-up makes it tiny."""
    from spade_core.train.ema import EMA

    live = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(0.0)
    ema = EMA(live, decay=0.999)
    with torch.no_grad():
        live.weight.fill_(1.0)
    for step in range(1500):
        ema.update(live, step)
    # with a flat 0.999 the average would still hold 0.999**1500 = 22% of the initial 0
    assert ema.model.weight.item() > 0.99
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999


def test_remove_initial_share_recovers_a_flat_ema_from_its_initialisation():
    from spade_core.train.ema import EMA, remove_initial_share

    live = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(-3.0)
    initial = copy.deepcopy(live)
    ema = EMA(live, decay=0.99)
    with torch.no_grad():
        live.weight.fill_(2.0)
    for _ in range(50):
        ema.update(live)  # flat decay: 0.99**50 = 61% of the average is still the initial -3
    assert ema.model.weight.item() < 0
    remove_initial_share(ema.model, initial, 0.99, 50)
    assert ema.model.weight.item() == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_discriminator_stacked_input_is_the_nested_cats(channels_last):
    from spade_core.models.discriminator import stacked_input

    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    sem = torch.rand(2, 5, 8, 6, generator=g).contiguous(memory_format=fmt)
    fake = torch.randn(2, 3, 8, 6, generator=g).contiguous(memory_format=fmt).requires_grad_()
    real = torch.randn(2, 3, 8, 6, generator=g).bfloat16().contiguous(memory_format=fmt)
    expected = torch.cat([torch.cat([sem, fake], 1), torch.cat([sem, real], 1)], 0)
    got = stacked_input(sem, torch.cat([fake, real]))
    assert torch.equal(got, expected) and got.dtype == expected.dtype
    assert got.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt)
    weights = torch.randn(expected.shape, generator=g)
    assert torch.equal(*[torch.autograd.grad((t * weights).sum(), fake)[0] for t in (got, expected)])


def test_cpu_trainer_keeps_freed_heap_for_its_large_activations(tmp_path, monkeypatch):
    """A CPU trainer asks glibc to keep large tensors on its heap (no page faults per step); the
    setting applies on Linux unless the user configured the allocator through its environment."""
    from spade_core.train import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_heap", lambda: calls.append(True) or True)
    Trainer(tiny_config(tmp_path / "run", ngf=4, ndf=8, max_steps=1))
    assert calls == [True]
    probe = "from spade_core.devices import keep_freed_heap; print(keep_freed_heap())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    applied = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert applied.stdout.strip() == str(sys.platform.startswith("linux"))
    user_set = subprocess.run(
        [sys.executable, "-c", probe], env={**env, "MALLOC_TRIM_THRESHOLD_": "131072"}, capture_output=True, text=True, check=True
    )
    assert user_set.stdout.strip() == "False"

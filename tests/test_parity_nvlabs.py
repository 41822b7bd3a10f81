"""Numerical parity with the NVlabs reference on every golden case in tests/fixtures/nvlabs/."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import EVAL_CASES, NVLABS, TRAIN_CASES
from safetensors.torch import load_file

from spade_core.hub.nvlabs import convert_nvlabs_checkpoint, save_converted
from spade_core.models import MultiscaleDiscriminator, SPADEEncoder, SPADEGenerator

ATOL_FEATURES = 1e-4  # images, block outputs, discriminator features (README: atol 1e-4 + rtol 1e-4)
ATOL_SMALL = 1e-5  # mu / logvar / z, buffers, losses

G_BLOCKS = ["fc", "head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3", "up_4"]


def _load_case(case: str):
    d = NVLABS / case
    return d, json.loads((d / "case.json").read_text()), load_file(d / "inputs.safetensors"), load_file(d / "expected.safetensors")


def _record_generator_blocks(generator: SPADEGenerator, store: dict, prefix: str) -> list:
    handles = []
    for name in G_BLOCKS:
        if hasattr(generator, name):
            handles.append(
                getattr(generator, name).register_forward_hook(
                    lambda _m, _i, out, name=name: store.__setitem__(f"{prefix}G.{name}", out.detach().clone())
                )
            )
    return handles


def _split_d(preds, batch):
    fake = [[f[:batch] for f in scale] for scale in preds]
    real = [[f[batch:] for f in scale] for scale in preds]
    return fake, real


def _assert_close(name: str, ours: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    ours = ours.detach().reshape(expected.shape).to(expected.dtype)
    if expected.dtype in (torch.int64, torch.int32, torch.uint8):
        assert torch.equal(ours, expected), f"{name} differs"
        return
    torch.testing.assert_close(ours, expected, atol=atol, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def _eval_outputs(nets, inputs, expected) -> dict:
    sem = expected["input_semantics"].float()
    outs: dict[str, torch.Tensor] = {}
    handles = _record_generator_blocks(nets.generator, outs, "")
    z = None
    with torch.no_grad():
        if nets.encoder is not None:
            for i in range(1, 7):
                layer = getattr(nets.encoder, f"layer{i}", None)
                if layer is not None:
                    handles.append(
                        layer.register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(f"E.layer{i}", o.clone()))
                    )
            mu, logvar = nets.encoder(inputs["image"])
            z = inputs["eps"] * torch.exp(0.5 * logvar) + mu
            outs.update(mu=mu, logvar=logvar, z=z)
        fake = nets.generator(sem, z)
        outs["fake_image"] = fake
        if nets.discriminator is not None:
            batch = sem.shape[0]
            preds = nets.discriminator(
                torch.cat([torch.cat([sem, fake], 1), torch.cat([sem, inputs["image"]], 1)], 0)
            )
            fake_f, real_f = _split_d(preds, batch)
            for i, (fs, rs) in enumerate(zip(fake_f, real_f)):
                for j, (f, r) in enumerate(zip(fs, rs)):
                    outs[f"D.fake.{i}.{j}"] = f
                    outs[f"D.real.{i}.{j}"] = r
    for h in handles:
        h.remove()
    return outs


def _compare(outs: dict, expected: dict, skip=("input_semantics",)) -> int:
    checked = 0
    for key, value in expected.items():
        if key in skip:
            continue
        assert key in outs, f"our run produced no {key}"
        small = key in ("mu", "logvar", "z") or ".loss." in key or ".after." in key
        _assert_close(key, outs[key], value, ATOL_SMALL if small else ATOL_FEATURES)
        checked += 1
    return checked


@pytest.mark.parametrize("case", EVAL_CASES)
def test_eval_case_matches_reference(case):
    d, meta, inputs, expected = _load_case(case)
    nets = convert_nvlabs_checkpoint(d, opt_file=d / "opt.txt")
    assert sum(p.numel() for p in nets.generator.parameters()) == meta["params"]["G"]
    outs = _eval_outputs(nets, inputs, expected)
    assert _compare(outs, expected) == len(expected) - 1


@pytest.mark.parametrize("case", EVAL_CASES)
def test_converted_folder_round_trip(case, tmp_path):
    """convert -> save_pretrained (safetensors) -> from_pretrained reproduces the reference outputs."""
    d, _, inputs, expected = _load_case(case)
    nets = convert_nvlabs_checkpoint(d, opt_file=d / "opt.txt")
    save_converted(nets, tmp_path)
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pth"))
    nets.generator = SPADEGenerator.from_pretrained(tmp_path / "generator").eval()
    if nets.encoder is not None:
        nets.encoder = SPADEEncoder.from_pretrained(tmp_path / "encoder").eval()
    if nets.discriminator is not None:
        nets.discriminator = MultiscaleDiscriminator.from_pretrained(tmp_path / "discriminator").eval()
    outs = _eval_outputs(nets, inputs, expected)
    _compare(outs, expected)


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_step_matches_reference(case):
    """Train mode: spectral-norm power iterations, batch statistics, buffer updates and losses."""
    from spade_core.losses import feature_matching_loss, gan_loss

    d, _, inputs, expected = _load_case(case)
    nets = convert_nvlabs_checkpoint(d)
    G, D = nets.generator.train(), nets.discriminator.train()
    sem, image = expected["input_semantics"].float(), inputs["image"]
    batch = sem.shape[0]
    outs: dict[str, torch.Tensor] = {}

    handles = _record_generator_blocks(G, outs, "gstep.")
    fake = G(sem)
    for h in handles:
        h.remove()
    outs["gstep.fake_image"] = fake
    fake_f, real_f = _split_d(D(torch.cat([torch.cat([sem, fake], 1), torch.cat([sem, image], 1)], 0)), batch)
    outs["gstep.loss.GAN"] = gan_loss(fake_f, True, for_discriminator=False)
    outs["gstep.loss.GAN_Feat"] = feature_matching_loss(fake_f, real_f)
    for i, (fs, rs) in enumerate(zip(fake_f, real_f)):
        for j, (f, r) in enumerate(zip(fs, rs)):
            outs[f"gstep.D.fake.{i}.{j}"], outs[f"gstep.D.real.{i}.{j}"] = f, r
    outs.update({f"gstep.after.G.{k}": v.clone() for k, v in G.state_dict().items()})
    outs.update({f"gstep.after.D.{k}": v.clone() for k, v in D.state_dict().items()})

    with torch.no_grad():
        fake = G(sem)
    outs["dstep.fake_image"] = fake
    fake_f, real_f = _split_d(D(torch.cat([torch.cat([sem, fake], 1), torch.cat([sem, image], 1)], 0)), batch)
    outs["dstep.loss.D_Fake"] = gan_loss(fake_f, False, for_discriminator=True)
    outs["dstep.loss.D_real"] = gan_loss(real_f, True, for_discriminator=True)
    for i, (fs, rs) in enumerate(zip(fake_f, real_f)):
        for j, (f, r) in enumerate(zip(fs, rs)):
            outs[f"dstep.D.fake.{i}.{j}"], outs[f"dstep.D.real.{i}.{j}"] = f, r
    outs.update({f"dstep.after.G.{k}": v.clone() for k, v in G.state_dict().items()})
    outs.update({f"dstep.after.D.{k}": v.clone() for k, v in D.state_dict().items()})

    G.eval()
    with torch.no_grad():
        outs["eval_after.fake_image"] = G(sem)
    assert _compare(outs, expected) == len(expected) - 1

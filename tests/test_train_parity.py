"""Training-step parity with the NVlabs reference (fixture v5_train_step_syncbatch).

Runs the Trainer's own generator-step and discriminator-step loss computations on the converted
reference networks and compares the losses and every buffer after each step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spade_core.hub.nvlabs import convert_nvlabs_checkpoint
from spade_core.train.steps import (
    LossSettings,
    discriminator_losses,
    frozen,
    generator_losses,
)

CASE_DIR = Path(__file__).resolve().parent / "fixtures" / "nvlabs" / "v5_train_step_syncbatch"


@pytest.fixture
def case():
    folder = CASE_DIR
    nets = convert_nvlabs_checkpoint(folder)
    expected = load_file(str(folder / "expected.safetensors"))
    inputs = load_file(str(folder / "inputs.safetensors"))
    return nets, expected, inputs


def _check_buffers(expected: dict, prefix: str, modules: dict) -> int:
    checked = 0
    for key, value in expected.items():
        if not key.startswith(prefix):
            continue
        net, name = key[len(prefix):].split(".", 1)
        actual = modules[net].state_dict()[name]
        if name.endswith("num_batches_tracked"):
            assert torch.equal(actual, value.to(actual.dtype)), key
        else:
            torch.testing.assert_close(actual, value, atol=1e-5, rtol=0, msg=key)
        checked += 1
    return checked


def test_generator_and_discriminator_step_match_reference(case):
    torch.manual_seed(0)
    nets, expected, inputs = case
    generator, discriminator = nets.generator.train(), nets.discriminator.train()
    semantics = expected["input_semantics"].float()
    image = inputs["image"]
    settings = LossSettings(gan_mode="hinge", lambda_feat=10.0)
    modules = {"G": generator, "D": discriminator}

    with frozen(discriminator):
        g_losses, fake = generator_losses(generator, discriminator, None, semantics, image, settings)
    torch.testing.assert_close(fake, expected["gstep.fake_image"], atol=1e-4, rtol=1e-4)
    assert set(g_losses) == {"GAN", "GAN_Feat"}
    torch.testing.assert_close(g_losses["GAN"].reshape(1), expected["gstep.loss.GAN"], atol=1e-4, rtol=0)
    torch.testing.assert_close(g_losses["GAN_Feat"].reshape(1), expected["gstep.loss.GAN_Feat"], atol=1e-4, rtol=0)
    assert _check_buffers(expected, "gstep.after.", modules) > 20

    d_losses, fake = discriminator_losses(generator, discriminator, None, semantics, image, settings)
    torch.testing.assert_close(fake, expected["dstep.fake_image"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d_losses["D_Fake"].reshape(1), expected["dstep.loss.D_Fake"], atol=1e-4, rtol=0)
    torch.testing.assert_close(d_losses["D_real"].reshape(1), expected["dstep.loss.D_real"], atol=1e-4, rtol=0)
    assert _check_buffers(expected, "dstep.after.", modules) > 20

    generator.eval()
    with torch.no_grad():
        torch.testing.assert_close(generator(semantics), expected["eval_after.fake_image"], atol=1e-4, rtol=1e-4)


def test_generator_step_gradients_reach_only_the_generator(case):
    nets, expected, inputs = case
    generator, discriminator = nets.generator.train(), nets.discriminator.train()
    semantics = expected["input_semantics"].float()
    with frozen(discriminator):
        losses, _ = generator_losses(generator, discriminator, None, semantics, inputs["image"], LossSettings())
        sum(losses.values()).backward()
    assert all(p.grad is None for p in discriminator.parameters())
    assert all(p.requires_grad for p in discriminator.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in generator.parameters())

"""Losses: reference numbers from the NVlabs train-step fixture, and hand-computed values per mode."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from spade_core.losses import feature_matching_loss, gan_loss, hinge_d_loss, hinge_g_loss, kl_loss
from spade_core.weights import load_state_dict_file

CASE = Path(__file__).parent / "fixtures" / "nvlabs" / "v5_train_step_syncbatch"
NUM_D, N_LAYERS = 2, 4


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(CASE / "expected.safetensors"))


def _stored_features(expected: dict[str, torch.Tensor], prefix: str) -> list[list[torch.Tensor]]:
    return [[expected[f"{prefix}.{i}.{j}"] for j in range(N_LAYERS + 1)] for i in range(NUM_D)]


def _spectral_weight(state: dict[str, torch.Tensor], uv: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """W / sigma with sigma = u . (W v), using the u, v the reference left after its power iteration."""
    w = state[f"{name}.weight_orig"]
    u, v = uv[f"{name}.weight_u"], uv[f"{name}.weight_v"]
    return w / torch.dot(u, w.reshape(w.shape[0], -1) @ v)


def _discriminator_features(x: torch.Tensor, state: dict, uv: dict) -> list[list[torch.Tensor]]:
    """Just enough of the reference's multiscale n-layer D (spectralinstance, kw 4, pad 2) to redo its forward."""
    scales = []
    for i in range(NUM_D):
        p, feats, h = f"discriminator_{i}", [], x
        h = F.leaky_relu(F.conv2d(h, state[f"{p}.model0.0.weight"], state[f"{p}.model0.0.bias"], 2, 2), 0.2)
        feats.append(h)
        for n in range(1, N_LAYERS):
            w = _spectral_weight(state, uv, f"{p}.model{n}.0.0")
            h = F.conv2d(h, w, None, 1 if n == N_LAYERS - 1 else 2, 2)
            h = F.leaky_relu(F.instance_norm(h, eps=1e-5), 0.2)
            feats.append(h)
        feats.append(F.conv2d(h, state[f"{p}.model{N_LAYERS}.0.weight"], state[f"{p}.model{N_LAYERS}.0.bias"], 1, 2))
        scales.append(feats)
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    return scales


def _after_state(expected: dict[str, torch.Tensor], step: str) -> dict[str, torch.Tensor]:
    prefix = f"{step}.after.D."
    return {k[len(prefix):]: v for k, v in expected.items() if k.startswith(prefix)}


def test_generator_step_losses_match_reference(expected: dict[str, torch.Tensor]) -> None:
    fake, real = _stored_features(expected, "gstep.D.fake"), _stored_features(expected, "gstep.D.real")
    gan = gan_loss(fake, target_is_real=True, for_discriminator=False)
    torch.testing.assert_close(gan, expected["gstep.loss.GAN"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(hinge_g_loss(fake), gan)
    feat = feature_matching_loss(fake, real, lambda_feat=10.0)
    torch.testing.assert_close(feat, expected["gstep.loss.GAN_Feat"][0], atol=1e-5, rtol=0)


def test_discriminator_step_losses_match_reference(expected: dict[str, torch.Tensor]) -> None:
    """The fixture stores no dstep D features, so D is re-run on the dstep fake with the stored u, v."""
    state = load_state_dict_file(CASE / "latest_net_D.pth")
    sem = expected["input_semantics"].float()
    image = load_file(str(CASE / "inputs.safetensors"))["image"]

    # The helper D is checked against the stored generator-step features first.
    gstep_input = torch.cat([sem, expected["gstep.fake_image"]], 1)
    gstep = _discriminator_features(gstep_input, state, _after_state(expected, "gstep"))
    for i, j in [(i, j) for i in range(NUM_D) for j in range(N_LAYERS + 1)]:
        torch.testing.assert_close(gstep[i][j], expected[f"gstep.D.fake.{i}.{j}"], atol=1e-4, rtol=1e-4)

    uv = _after_state(expected, "dstep")
    fake = _discriminator_features(torch.cat([sem, expected["dstep.fake_image"]], 1), state, uv)
    real = _discriminator_features(torch.cat([sem, image], 1), state, uv)
    d_fake = gan_loss(fake, target_is_real=False, for_discriminator=True)
    d_real = gan_loss(real, target_is_real=True, for_discriminator=True)
    torch.testing.assert_close(d_fake, expected["dstep.loss.D_Fake"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(d_real, expected["dstep.loss.D_real"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(hinge_d_loss(real, fake), d_fake + d_real)


# Two scales of hand-made logits (with a dummy feature layer before each).
LOGITS_A = torch.tensor([[[[-2.0, 0.5]]], [[[1.5, 0.0]]]])  # (2, 1, 1, 2)
LOGITS_B = torch.tensor([[[[3.0]]], [[[-1.0]]]])  # (2, 1, 1, 1)
PREDS = [[torch.zeros(2, 4, 1, 1), LOGITS_A], [torch.ones(2, 4, 1, 1), LOGITS_B]]


def _bce(x: float, t: float) -> float:
    return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))


def _bce_two_scales(t: float) -> float:
    """Mean BCE of LOGITS_A, of LOGITS_B, then averaged over the two scales."""
    return (sum(_bce(x, t) for x in (-2, 0.5, 1.5, 0)) / 4 + (_bce(3, t) + _bce(-1, t)) / 2) / 2


@pytest.mark.parametrize(
    ("mode", "real", "for_d", "value"),
    [
        # hinge D real: A relu(1-x) = 3, .5, 0, 1 -> 1.125; B 0, 2 -> 1.0
        ("hinge", True, True, (1.125 + 1.0) / 2),
        # hinge D fake: A relu(1+x) = 0, 1.5, 2.5, 1 -> 1.25; B 4, 0 -> 2.0
        ("hinge", False, True, (1.25 + 2.0) / 2),
        # hinge G: -mean A = 0, -mean B = -1
        ("hinge", True, False, (0.0 - 1.0) / 2),
        # ls real: A (x-1)^2 = 9, .25, .25, 1 -> 2.625; B 4, 4 -> 4
        ("ls", True, True, (2.625 + 4.0) / 2),
        # ls fake: A x^2 = 4, .25, 2.25, 0 -> 1.625; B 9, 1 -> 5
        ("ls", False, True, (1.625 + 5.0) / 2),
        ("ls", True, False, (2.625 + 4.0) / 2),
        ("original", True, True, _bce_two_scales(1.0)),
        ("original", False, True, _bce_two_scales(0.0)),
        ("original", True, False, _bce_two_scales(1.0)),
        ("w", True, True, (0.0 - 1.0) / 2),
        ("w", False, True, (0.0 + 1.0) / 2),
        ("w", True, False, (0.0 - 1.0) / 2),
    ],
)
def test_gan_modes_by_hand(mode: str, real: bool, for_d: bool, value: float) -> None:
    loss = gan_loss(PREDS, target_is_real=real, for_discriminator=for_d, mode=mode)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(value, abs=1e-6)


def test_gan_loss_accepts_a_single_tensor_and_rejects_misuse() -> None:
    assert gan_loss(LOGITS_A, True, True).item() == pytest.approx(1.125)
    with pytest.raises(ValueError, match="unknown GAN loss mode 'bogus'.*hinge"):
        gan_loss(PREDS, True, True, mode="bogus")
    with pytest.raises(ValueError, match="target_is_real=True"):
        gan_loss(PREDS, False, for_discriminator=False)


def test_feature_matching_by_hand() -> None:
    fake = [[torch.full((1, 2, 2, 2), 1.0), torch.full((1, 3, 1, 1), 0.5), torch.zeros(1, 1, 1, 1)]]
    real = [[torch.full((1, 2, 2, 2), 3.0), torch.full((1, 3, 1, 1), 0.0), torch.full((1, 1, 1, 1), 9.0)]]
    # logits (last layer) are ignored: (|1-3| + |0.5-0|) * 10 / 1
    assert feature_matching_loss(fake, real).item() == pytest.approx(25.0)
    two = feature_matching_loss(fake * 2, real * 2, lambda_feat=1.0)
    assert two.item() == pytest.approx(2.5)  # two scales, each / num_D
    with pytest.raises(ValueError, match="same discriminator"):
        feature_matching_loss(fake * 2, real)


def test_feature_matching_does_not_differentiate_real() -> None:
    fake = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2)]]
    real = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2)]]
    feature_matching_loss(fake, real).backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None


def test_kl_loss_by_hand() -> None:
    assert kl_loss(torch.zeros(2, 8), torch.zeros(2, 8)).item() == 0.0
    mu = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [-1.0, 0.0]])
    terms = [1 + 0 - 1 - 1, 1 + math.log(2.0) - 4 - 2, 1 - 1 - 0.25 - math.exp(-1.0), 0.0]
    assert kl_loss(mu, logvar, lambda_kld=1.0).item() == pytest.approx(-0.5 * sum(terms), rel=1e-6)
    assert kl_loss(mu, logvar).item() == pytest.approx(-0.5 * sum(terms) * 0.05, rel=1e-6)

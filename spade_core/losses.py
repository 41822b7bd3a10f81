"""SPADE training losses with the reference's semantics: GAN (hinge/ls/original/w), feature matching, KL, VGG.

Every function applies its own lambda (reference defaults), so a trainer just sums the results.
Discriminator outputs are `list[list[Tensor]]`: one list per scale, each layer's output, logits last.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spade_core.models.vgg import VGG19Features

GAN_MODES = ("hinge", "ls", "original", "w")
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

DiscriminatorOutput = torch.Tensor | Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


def _logits_per_scale(preds: DiscriminatorOutput) -> list[torch.Tensor]:
    """The patch logits of each scale: the last layer output of every per-scale list."""
    if isinstance(preds, torch.Tensor):
        return [preds]
    return [p if isinstance(p, torch.Tensor) else p[-1] for p in preds]


def _gan_loss_one_scale(logits: torch.Tensor, target_is_real: bool, for_discriminator: bool, mode: str) -> torch.Tensor:
    if mode == "hinge":
        if not for_discriminator:
            return -logits.mean()
        return F.relu(1 - logits).mean() if target_is_real else F.relu(1 + logits).mean()
    if mode == "w":
        return -logits.mean() if target_is_real else logits.mean()
    target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
    if mode == "ls":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def gan_loss(
    preds: DiscriminatorOutput, target_is_real: bool, for_discriminator: bool, mode: str = "hinge"
) -> torch.Tensor:
    """Adversarial loss averaged over discriminator scales, as the reference's GANLoss (a scalar).

    hinge: D real mean(relu(1-x)), D fake mean(relu(1+x)), G -mean(x); ls: MSE to 1/0;
    original: BCE-with-logits to 1/0; w: -mean(x) real, mean(x) fake.
    """
    if mode not in GAN_MODES:
        raise ValueError(f"unknown GAN loss mode '{mode}': use one of {', '.join(GAN_MODES)}")
    if mode == "hinge" and not for_discriminator and not target_is_real:
        raise ValueError("the generator's hinge loss pushes fakes towards real: call it with target_is_real=True")
    scales = _logits_per_scale(preds)
    if not scales:
        raise ValueError("gan_loss got an empty discriminator output: pass the discriminator's list of scales")
    total = sum(_gan_loss_one_scale(x, target_is_real, for_discriminator, mode) for x in scales)
    return total / len(scales)


def hinge_d_loss(real_preds: DiscriminatorOutput, fake_preds: DiscriminatorOutput) -> torch.Tensor:
    """Discriminator hinge loss D_real + D_Fake (use `gan_loss` for the two parts separately)."""
    return gan_loss(real_preds, True, for_discriminator=True) + gan_loss(fake_preds, False, for_discriminator=True)


def hinge_g_loss(fake_preds: DiscriminatorOutput) -> torch.Tensor:
    """Generator hinge loss: -mean(logits) of the fakes, averaged over scales (the reference's GAN)."""
    return gan_loss(fake_preds, True, for_discriminator=False)


def feature_matching_loss(
    fake_feats: Sequence[Sequence[torch.Tensor]],
    real_feats: Sequence[Sequence[torch.Tensor]],
    lambda_feat: float = 10.0,
) -> torch.Tensor:
    """L1 between discriminator features of fake and real (all layers but the logits), times lambda_feat / num_D."""
    if len(fake_feats) != len(real_feats):
        raise ValueError(
            f"feature_matching_loss got {len(fake_feats)} fake and {len(real_feats)} real scales: "
            "pass the outputs of the same discriminator"
        )
    if not fake_feats:
        raise ValueError("feature_matching_loss got no scales: pass the discriminator's list of per-scale features")
    num_d = len(fake_feats)
    loss = fake_feats[0][0].new_zeros(())
    for fake_scale, real_scale in zip(fake_feats, real_feats):
        for fake, real in zip(fake_scale[:-1], real_scale[:-1]):
            loss = loss + F.l1_loss(fake, real.detach()) * lambda_feat / num_d
    return loss


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor, lambda_kld: float = 0.05) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over batch and dims (as the reference), times lambda_kld."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) * lambda_kld


class VGGLoss(nn.Module):
    """Perceptual loss sum_k w_k * L1(vgg_k(fake), vgg_k(real)), w = 1/32 .. 1, already times `lambda_vgg`.

    The returned value includes `lambda_vgg` (reference default 10): do not multiply it again.
    The VGG is frozen; gradients flow to `fake` only. Images are (N, 3, H, W) in [-1, 1].
    """

    def __init__(
        self,
        vgg: VGG19Features | None = None,
        lambda_vgg: float = 10.0,
        weights_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.vgg = vgg if vgg is not None else VGG19Features.from_pretrained(weights_path)
        self.vgg.requires_grad_(False)
        self.lambda_vgg = lambda_vgg

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Weighted VGG feature L1 between `fake` and `real` (the target, not differentiated)."""
        if fake.shape != real.shape:
            raise ValueError(
                f"VGGLoss got fake {tuple(fake.shape)} and real {tuple(real.shape)}: pass images of the same shape"
            )
        fake_feats = self.vgg(fake)
        with torch.no_grad():
            real_feats = self.vgg(real)
        loss = sum(w * F.l1_loss(f, r) for w, f, r in zip(VGG_LAYER_WEIGHTS, fake_feats, real_feats))
        return loss * self.lambda_vgg

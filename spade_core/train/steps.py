"""The loss computations of one generator step and one discriminator step, as the reference does them.

These are the functions the Trainer runs (and the training-step parity test checks against the
NVlabs fixtures); they compute losses and leave backward passes and optimizer updates to the
caller. Networks may be DistributedDataParallel-wrapped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..losses import feature_matching_loss, gan_loss, kl_loss
from ..models import reparameterize

Features = list[list[torch.Tensor]]


@dataclass(frozen=True)
class LossSettings:
    """Which losses a step computes and their weights (the reference's names and defaults)."""

    gan_mode: str = "hinge"
    lambda_feat: float = 10.0
    no_ganFeat_loss: bool = False
    lambda_kld: float = 0.05


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Parameters of ``module`` need no gradient inside the block (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def split_predictions(preds: Features) -> tuple[Features, Features]:
    """Discriminator output on the batch [fake; real] -> (fake part, real part), per scale and layer."""
    fake = [[t[: t.shape[0] // 2] for t in scale] for scale in preds]
    real = [[t[t.shape[0] // 2:] for t in scale] for scale in preds]
    return fake, real


def discriminate(
    discriminator: nn.Module, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor
) -> tuple[Features, Features]:
    """One discriminator call on [cat(sem, fake); cat(sem, real)] (the reference batches them so that
    batch statistics see both), returned as float32 (fake features, real features).

    It goes through the discriminator's training form (images ``cat([fake, real])`` sharing the
    layouts ``semantics``), so input gradients are computed for the image channels only and the
    semantic channels' work is done once for both halves (``MultiscaleDiscriminator.forward``).
    """
    semantics = semantics.detach() if semantics.requires_grad else semantics  # the same tensor: reusable
    preds = discriminator(images=torch.cat([fake, real]), semantics=semantics)
    preds = [[t.float() for t in scale] for scale in preds]
    return split_predictions(preds)


def generate(
    generator: nn.Module,
    encoder: nn.Module | None,
    semantics: torch.Tensor,
    image: torch.Tensor,
    eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """fake = G(semantics, z), z from the encoder's reparameterization of ``image`` when there is an
    encoder (``eps`` is its N(0, 1) draw); returns (fake, mu, logvar)."""
    if encoder is None:
        return generator(semantics), None, None
    mu, logvar = encoder(image)
    mu, logvar = mu.float(), logvar.float()
    z = reparameterize(mu, logvar, eps)
    return generator(semantics, z), mu, logvar


def generator_losses(
    generator: nn.Module,
    discriminator: nn.Module,
    encoder: nn.Module | None,
    semantics: torch.Tensor,
    image: torch.Tensor,
    settings: LossSettings,
    vgg_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    eps: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The generator step's losses (``GAN``, ``GAN_Feat``, ``VGG``, ``KLD`` as enabled) and the fake image.

    Everything is differentiable w.r.t. the generator (and encoder); pass the discriminator with
    its parameters frozen to keep its gradients out of this step.
    """
    fake, mu, logvar = generate(generator, encoder, semantics, image, eps)
    losses: dict[str, torch.Tensor] = {}
    if mu is not None:
        losses["KLD"] = kl_loss(mu, logvar, settings.lambda_kld)
    pred_fake, pred_real = discriminate(discriminator, semantics, fake, image)
    losses["GAN"] = gan_loss(pred_fake, True, for_discriminator=False, mode=settings.gan_mode)
    if not settings.no_ganFeat_loss:
        losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, settings.lambda_feat)
    if vgg_loss is not None:
        losses["VGG"] = vgg_loss(fake.float(), image.float())
    return losses, fake


def discriminator_losses(
    generator: nn.Module,
    discriminator: nn.Module,
    encoder: nn.Module | None,
    semantics: torch.Tensor,
    image: torch.Tensor,
    settings: LossSettings,
    eps: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The discriminator step's losses ``D_Fake`` and ``D_real``, and the fake image.

    The fake is regenerated without gradients (the networks stay in train mode, so spectral norm
    iterates and batch norm updates its statistics, as in the reference).
    """
    with torch.no_grad():
        fake, _, _ = generate(generator, encoder, semantics, image, eps)
    fake = fake.detach()
    pred_fake, pred_real = discriminate(discriminator, semantics, fake, image)
    losses = {
        "D_Fake": gan_loss(pred_fake, False, for_discriminator=True, mode=settings.gan_mode),
        "D_real": gan_loss(pred_real, True, for_discriminator=True, mode=settings.gan_mode),
    }
    return losses, fake

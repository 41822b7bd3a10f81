"""SPADEEncoder: the VAE style encoder, image -> (mu, logvar) of the style code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import init_weights, normalized_conv, run_layers
from .validation import validate_network_config


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, 1) unless given."""
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return eps * torch.exp(0.5 * logvar) + mu


class SPADEEncoder(ModelMixin, ConfigMixin):
    """Stride-2 conv stack + two linear heads predicting the style code's mean and log-variance.

    The image is resized (bilinear) to 256x256 and passes 6 conv layers when ``crop_size >= 256``,
    as in the reference. For smaller models (which the reference cannot build: its 5-layer
    encoder would meet an 8x8 map) it is resized to 128x128 and passes 5 layers; both end at 4x4.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        ngf: int = 64,
        z_dim: int = 256,
        crop_size: int = 256,
        spectral_norm: bool = True,
        norm: str = "instance",
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ) -> None:
        validate_network_config("encoder", locals())
        super().__init__()
        nf = ngf
        widths = [3, nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        if crop_size >= 256:
            widths.append(8 * nf)
        for i in range(1, len(widths)):
            conv = nn.Conv2d(widths[i - 1], widths[i], 3, stride=2, padding=1)
            self.add_module(f"layer{i}", normalized_conv(conv, norm, spectral_norm))
        self.num_layers = len(widths) - 1
        self.image_size = 4 * 2**self.num_layers
        self.fc_mu = nn.Linear(8 * nf * 4 * 4, z_dim)
        self.fc_var = nn.Linear(8 * nf * 4 * 4, z_dim)
        init_weights(self, init_type, init_gain)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (N, 3, H, W) in [-1, 1] -> (mu, logvar), each (N, z_dim)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"the style encoder expects an RGB batch (N, 3, H, W) in [-1, 1], got shape {tuple(image.shape)}")
        s = self.image_size
        x = image
        if tuple(x.shape[2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        for i in range(1, self.num_layers + 1):
            x = run_layers(getattr(self, f"layer{i}"), x if i == 1 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SPADEEncoder":
        """The reference encoder of a preset, with overrides."""
        from .presets import build_from_preset, encoder_kwargs

        return build_from_preset(cls, encoder_kwargs, name, overrides)

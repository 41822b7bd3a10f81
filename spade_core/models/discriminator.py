"""Multi-scale PatchGAN discriminator returning every layer's features (for feature matching)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import init_weights, normalized_conv, run_layers
from .validation import validate_network_config


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs, stride 2 except the last two; every layer's output is returned."""

    def __init__(
        self, input_nc: int, ndf: int = 64, n_layers: int = 4, spectral_norm: bool = True, norm: str = "instance"
    ) -> None:
        super().__init__()
        kw, pad = 4, 2
        nf = ndf
        # In-place activations: what they overwrite (a conv or norm output) no backward needs, and
        # each layer then keeps one activation for the backward instead of two.
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(input_nc, nf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2, inplace=True))
        ]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            conv = nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=pad)
            layers.append(nn.Sequential(normalized_conv(conv, norm, spectral_norm), nn.LeakyReLU(0.2, inplace=True)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, kw, stride=1, padding=pad)))
        for i, layer in enumerate(layers):
            self.add_module(f"model{i}", layer)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.children():
            x = run_layers(layer, x)  # spectral convs without a saved normalized weight
            features.append(x)
        return features


class MultiscaleDiscriminator(ModelMixin, ConfigMixin):
    """``num_D`` PatchGANs on the input at successively halved resolutions (3x3 average pooling).

    ``forward(cat([semantics, image], 1))`` -> one list per scale (finest first) of every layer's
    output, the last being the patch logits.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        label_nc: int = 182,
        contain_dontcare_label: bool = True,
        use_instance: bool = True,
        output_nc: int = 3,
        ndf: int = 64,
        n_layers_D: int = 4,
        num_D: int = 2,
        spectral_norm: bool = True,
        norm: str = "instance",
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ) -> None:
        validate_network_config("discriminator", locals())
        super().__init__()
        if n_layers_D < 1 or num_D < 1:
            raise ValueError(f"n_layers_D and num_D must be >= 1, got {n_layers_D} and {num_D}")
        for i in range(num_D):
            self.add_module(
                f"discriminator_{i}",
                NLayerDiscriminator(self.input_nc, ndf, n_layers_D, spectral_norm, norm),
            )
        init_weights(self, init_type, init_gain)

    @property
    def input_nc(self) -> int:
        """Semantic channels + image channels."""
        cfg = self.config
        return cfg.label_nc + int(cfg.contain_dontcare_label) + int(cfg.use_instance) + cfg.output_nc

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x (N, semantic_nc + 3, H, W) -> [[layer outputs] per scale]."""
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(
                f"the discriminator expects cat([semantics, image], 1) with {self.input_nc} channels, got shape {tuple(x.shape)}"
            )
        results = []
        for i in range(self.config.num_D):
            results.append(getattr(self, f"discriminator_{i}")(x))
            if i + 1 < self.config.num_D:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
        return results

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MultiscaleDiscriminator":
        """The reference discriminator of a preset, with overrides."""
        from .presets import build_from_preset, discriminator_kwargs

        return build_from_preset(cls, discriminator_kwargs, name, overrides)

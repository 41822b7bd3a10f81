"""The baseline the SPADE paper compares against: a pix2pixHD-style encoder-decoder generator.

It sees the semantic map only at its input and uses ordinary (unconditional) batch norm
everywhere, so layout information has to survive the normalization layers — the weakness SPADE
was designed to remove. Used by ``quality_synthetic.py`` with the same trainer and budget.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Pix2PixHDGenerator(ModelMixin, ConfigMixin):
    """Segmap-at-input generator: 7x7 stem, ``n_down`` stride-2 convs, residual blocks, mirrored
    upsampling (nearest + conv), 7x7 head with tanh. Same ``forward(semantics, z=None)`` as SPADE's."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, semantic_nc: int, ngf: int = 32, n_down: int = 3, n_blocks: int = 6, max_nc: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(semantic_nc, ngf, 7), nn.BatchNorm2d(ngf), nn.ReLU(True)]
        nc = ngf
        widths = []
        for _ in range(n_down):
            out = min(nc * 2, max_nc)
            layers += [nn.Conv2d(nc, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(True)]
            widths.append(nc)
            nc = out
        layers += [_ResidualBlock(nc) for _ in range(n_blocks)]
        for out in reversed(widths):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nc, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(True)]
            nc = out
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(nc, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """semantics (N, semantic_nc, H, W) one-hot -> (N, 3, H, W) in [-1, 1]; ``z`` is ignored."""
        return self.model(semantics)


def matched_baseline(semantic_nc: int, target_params: int, n_down: int = 3, n_blocks: int = 6) -> Pix2PixHDGenerator:
    """The widest baseline whose parameter count does not exceed ``target_params``."""
    best = None
    for ngf in range(8, 257):
        with torch.device("meta"):
            net = Pix2PixHDGenerator(semantic_nc, ngf, n_down, n_blocks)
        if sum(p.numel() for p in net.parameters()) > target_params:
            break
        best = ngf
    if best is None:
        raise ValueError(f"no baseline fits in {target_params} parameters")
    return Pix2PixHDGenerator(semantic_nc, best, n_down, n_blocks)

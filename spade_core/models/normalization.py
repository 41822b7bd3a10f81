"""SPADE: spatially-adaptive (de)normalization (Park et al. 2019, Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import param_free_norm


class SPADE(nn.Module):
    """Normalize ``x`` without affine parameters, then modulate it with a per-pixel scale and
    bias predicted from the semantic map: ``x_norm * (1 + gamma(seg)) + beta(seg)``.

    Submodule names (``param_free_norm``, ``mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``) are the
    reference's: weight compat requires them.
    """

    def __init__(
        self,
        norm_nc: int,
        label_nc: int,
        param_free_norm_type: str = "syncbatch",
        kernel_size: int = 3,
        hidden_nc: int = 128,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"SPADE kernel_size must be odd (3 or 5), got {kernel_size}")
        self.param_free_norm = param_free_norm(param_free_norm_type, norm_nc)
        padding = kernel_size // 2
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_nc, hidden_nc, kernel_size, padding=padding),
            nn.ReLU(),
        )
        self.mlp_gamma = nn.Conv2d(hidden_nc, norm_nc, kernel_size, padding=padding)
        self.mlp_beta = nn.Conv2d(hidden_nc, norm_nc, kernel_size, padding=padding)

    def modulation(self, segmap: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) for feature maps of spatial ``size``; segmap resized with legacy nearest."""
        segmap = F.interpolate(segmap, size=size, mode="nearest")
        hidden = self.mlp_shared(segmap)
        return self.mlp_gamma(hidden), self.mlp_beta(hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """x (N,C,H,W) features; segmap (N,semantic_nc,H',W') one-hot at any resolution."""
        normalized = self.param_free_norm(x)
        gamma, beta = self.modulation(segmap, x.shape[2:])
        return normalized * (1 + gamma) + beta

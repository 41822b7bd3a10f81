"""SPADE: spatially-adaptive (de)normalization (Park et al. 2019, Eq. 1).

Given a ``LabelLayout`` (what the generator passes) instead of a plain one-hot tensor, the
modulation runs per label pattern (``spade_core.models.patterns``): same numbers up to float
summation order, forward and backward. On those layers the parameter-free norm is fused with
the modulation (``patterns.norm_modulate``, where ``layers.fused_norm`` covers the norm): the
backward recomputes the normalized map from ``x`` instead of keeping a second full-size copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import fused_norm, has_spectral_norm, param_free_norm
from .patterns import (
    LabelLayout,
    is_channels_last,
    modulate,
    norm_modulate,
    one_hot_table,
    pattern_rows,
    per_pixel,
    window_rows,
)


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
        self.kernel_size = kernel_size
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

    def uses_patterns(self, layout: LabelLayout) -> bool:
        """Whether this layer can modulate per pattern of ``layout``: its convs are plain (no
        spectral-norm hook) and its input width matches the layout's channels."""
        shared = self.mlp_shared[0]
        plain = not any(has_spectral_norm(m) for m in (shared, self.mlp_gamma, self.mlp_beta))
        biased = all(m.bias is not None for m in (shared, self.mlp_gamma, self.mlp_beta))
        return plain and biased and shared.in_channels == layout.n_classes + int(layout.use_edge)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor | LabelLayout) -> torch.Tensor:
        """x (N,C,H,W) features; segmap (N,semantic_nc,H',W') one-hot at any resolution, or a
        ``LabelLayout`` of it (per-pattern modulation where the layout has few patterns)."""
        plan = None
        if isinstance(segmap, LabelLayout):
            plan = segmap.plan(x.shape[2:], self.kernel_size) if self.uses_patterns(segmap) else None
            if plan is None:
                segmap = segmap.semantics
        if plan is None:
            normalized = self.param_free_norm(x)
            gamma, beta = self.modulation(segmap, x.shape[2:])
            return normalized * (1 + gamma) + beta
        fused = fused_norm(self.param_free_norm, x) if plan.sparse else None
        normalized = self.param_free_norm(x) if fused is None else None
        shared = self.mlp_shared[0]
        table = one_hot_table(shared.weight, segmap.n_classes, segmap.use_edge)
        hidden = F.relu(window_rows(plan, table, shared.bias))  # mlp_shared as a look-up
        if plan.sparse:
            bias = torch.cat([self.mlp_gamma.bias + 1, self.mlp_beta.bias])  # the "1 +" of (1 + gamma)
            rows = pattern_rows(plan, hidden, (self.mlp_gamma.weight, self.mlp_beta.weight), bias)
            if fused is None:
                return modulate(normalized, rows, plan.pattern_ids)
            return norm_modulate(
                x, rows, plan.pattern_ids, fused.mode, fused.running_mean, fused.running_var, fused.momentum, fused.eps
            )
        hidden_map = per_pixel(hidden, plan.hidden_ids, is_channels_last(x))
        return normalized * (1 + self.mlp_gamma(hidden_map)) + self.mlp_beta(hidden_map)

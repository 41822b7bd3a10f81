"""The SPADE residual block: two SPADE -> LeakyReLU -> conv stages plus a (learned) shortcut."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_weight, fusable_conv, maybe_spectral_norm, spectral_conv
from .normalization import SPADE
from .patterns import LabelLayout, norm_modulate_conv


class SPADEResnetBlock(nn.Module):
    """Residual block whose every normalization is SPADE-modulated by the semantic map.

    A 1x1 shortcut conv (with its own SPADE) is learned when ``fin != fout``.
    """

    def __init__(
        self,
        fin: int,
        fout: int,
        semantic_nc: int,
        spectral_norm: bool = True,
        param_free_norm: str = "syncbatch",
        spade_kernel_size: int = 3,
        spade_hidden_nc: int = 128,
    ) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = maybe_spectral_norm(nn.Conv2d(fin, fmiddle, 3, padding=1), spectral_norm)
        self.conv_1 = maybe_spectral_norm(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral_norm)
        if self.learned_shortcut:
            self.conv_s = maybe_spectral_norm(nn.Conv2d(fin, fout, 1, bias=False), spectral_norm)
        spade = dict(
            label_nc=semantic_nc,
            param_free_norm_type=param_free_norm,
            kernel_size=spade_kernel_size,
            hidden_nc=spade_hidden_nc,
        )
        self.norm_0 = SPADE(fin, **spade)
        self.norm_1 = SPADE(fmiddle, **spade)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, **spade)

    def shortcut(self, x: torch.Tensor, seg: torch.Tensor | LabelLayout) -> torch.Tensor:
        """The (learned) shortcut branch."""
        if self.learned_shortcut:
            return _stage(self.norm_s, self.conv_s, x, seg, None)
        return x

    def forward(self, x: torch.Tensor, seg: torch.Tensor | LabelLayout) -> torch.Tensor:
        """x (N,fin,H,W), seg (N,semantic_nc,H',W') or its ``LabelLayout`` -> (N,fout,H,W)."""
        x_s = self.shortcut(x, seg)
        dx = _stage(self.norm_0, self.conv_0, x, seg, 0.2)
        dx = _stage(self.norm_1, self.conv_1, dx, seg, 0.2)
        return x_s + dx


def _stage(
    norm: SPADE, conv: nn.Module, x: torch.Tensor, seg: torch.Tensor | LabelLayout, slope: float | None
) -> torch.Tensor:
    """``conv(leaky_relu(norm(x, seg), slope))`` (``slope`` None: no activation).

    Where the SPADE layer runs per pattern with a fused norm, the conv is plain or spectral and
    gradients are recorded, the whole stage is one autograd node (``patterns.norm_modulate_conv``)
    that keeps ``x``, not the conv's input, for the backward. Otherwise: the SPADE output is a fresh
    tensor no backward needs, so the activation runs in place, and spectral convs go through
    ``spectral_conv`` (the backward keeps weight_orig, not a normalized copy).
    """
    parts = norm.fused_modulation(x, seg) if torch.is_grad_enabled() and fusable_conv(conv) else None
    if parts is not None:
        fused, table, ids = parts
        weight, sigma = conv_weight(conv)
        return norm_modulate_conv(x, table, ids, fused, weight, sigma, conv, slope)
    a = norm(x, seg)
    if slope is not None:
        a = F.leaky_relu(a, slope, inplace=True)
    return spectral_conv(conv, a)

"""The SPADE residual block: two SPADE -> LeakyReLU -> conv stages plus a (learned) shortcut."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import maybe_spectral_norm, spectral_conv
from .normalization import SPADE
from .patterns import LabelLayout


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
            return spectral_conv(self.conv_s, self.norm_s(x, seg))
        return x

    def forward(self, x: torch.Tensor, seg: torch.Tensor | LabelLayout) -> torch.Tensor:
        """x (N,fin,H,W), seg (N,semantic_nc,H',W') or its ``LabelLayout`` -> (N,fout,H,W)."""
        x_s = self.shortcut(x, seg)
        # In place: the SPADE output is a fresh tensor no backward needs, so the activation keeps one copy.
        # Spectral convs through ``spectral_conv``: backward keeps weight_orig, not a normalized copy.
        dx = spectral_conv(self.conv_0, F.leaky_relu(self.norm_0(x, seg), 0.2, inplace=True))
        dx = spectral_conv(self.conv_1, F.leaky_relu(self.norm_1(dx, seg), 0.2, inplace=True))
        return x_s + dx

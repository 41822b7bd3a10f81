"""The InceptionV3 variant that FID is defined with (TF "2015-12-05" graph, as ported by pytorch-fid).

Module names, parameter shapes and block quirks follow `pt_inception-2015-12-05-6726825d.pth` so that
file loads as it is (weight compat requires the names below; do not rename them).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ENV = "SPADE_INCEPTION_WEIGHTS"
FEATURE_DIM = 2048
INPUT_SIZE = 299
MIN_SIZE_WITHOUT_RESIZE = 75  # smallest input whose last reduction block still has one pixel


class ConvBN(nn.Module):
    """Bias-free convolution, batch norm (eps 1e-3, as in the TF graph) and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int | tuple[int, int], **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 "SAME" average pool divides by the number of real (non-padding) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches (out: 224 + pool_ch channels)."""

    def __init__(self, in_ch: int, pool_ch: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 64, 1)
        self.branch5x5_1 = ConvBN(in_ch, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_ch, pool_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class ReductionB(nn.Module):
    """35x35 -> 17x17 reduction (288 -> 768 channels)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (768 -> 768 channels)."""

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 192, 1)
        self.branch7x7_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class ReductionD(nn.Module):
    """17x17 -> 8x8 reduction (768 -> 1280 channels)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_ch, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_ch, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class MixedE(nn.Module):
    """8x8 block with split 1x3 / 3x1 heads (out: 2048 channels).

    The FID graph pools the last block (Mixed_7c) with a 3x3 max pool where the first one
    (Mixed_7b) uses the padding-excluding average pool; `max_pool` selects that quirk.
    """

    def __init__(self, in_ch: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(in_ch, 320, 1)
        self.branch3x3_1 = ConvBN(in_ch, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_ch, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 returning the 2048-d pool3 features that FID and KID are computed on.

    `forward` takes images in [0, 1], (N, 3, H, W), resizes them bilinearly to 299x299 (unless
    `resize_input=False`, which FID comparisons should not use) and maps them to [-1, 1] as the TF
    graph expects. Build with random weights for tests; use `from_pretrained()` for real numbers.
    """

    def __init__(self, resize_input: bool = True) -> None:
        super().__init__()
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = MixedA(192, pool_ch=32)
        self.Mixed_5c = MixedA(256, pool_ch=64)
        self.Mixed_5d = MixedA(288, pool_ch=64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = MixedC(768, c7=128)
        self.Mixed_6c = MixedC(768, c7=160)
        self.Mixed_6d = MixedC(768, c7=160)
        self.Mixed_6e = MixedC(768, c7=192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = MixedE(1280, max_pool=False)
        self.Mixed_7c = MixedE(2048, max_pool=True)
        # The 1008-way classifier is unused for pool3 features; weight compat requires it.
        self.fc = nn.Linear(FEATURE_DIM, 1008)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # Keeps random-weight activations from vanishing, so test features are not all zero.
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        self.eval()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1], (N, 3, H, W), to pool3 features (N, 2048)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}: "
                "add a batch dimension or convert grey images to RGB"
            )
        if not self.resize_input and min(images.shape[-2:]) < MIN_SIZE_WITHOUT_RESIZE:
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} are too small without resizing: "
                f"use at least {MIN_SIZE_WITHOUT_RESIZE}x{MIN_SIZE_WITHOUT_RESIZE} or resize_input=True"
            )
        x = images.to(self.fc.weight.dtype)
        if self.resize_input:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147) at 299
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ends at (N, 2048, 8, 8)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None) -> FIDInceptionV3:
        """Load the FID weights from `path`, else `$SPADE_INCEPTION_WEIGHTS`, else the download cache."""
        from spade_core.weights import download_weights, load_state_dict_file

        source = path if path is not None else os.environ.get(INCEPTION_WEIGHTS_ENV) or None
        if source is not None:
            file = Path(source).expanduser()
            if not file.is_file():
                origin = "path" if path is not None else f"${INCEPTION_WEIGHTS_ENV}"
                raise FileNotFoundError(
                    f"Inception weights not found at {file} (from {origin}): download {INCEPTION_WEIGHTS_URL} "
                    f"there, or point {INCEPTION_WEIGHTS_ENV} at {INCEPTION_WEIGHTS_FILENAME}"
                )
        else:
            file = download_weights(
                INCEPTION_WEIGHTS_URL,
                INCEPTION_WEIGHTS_FILENAME,
                INCEPTION_WEIGHTS_ENV,
                hint="FID/KID need these Inception weights; segmentation and diversity metrics do not",
            )
        model = cls()
        model.load_weights(load_state_dict_file(file))
        return model

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a pytorch-fid Inception state dict, naming the first mismatching keys on failure."""
        state = dict(state_dict)
        for name, buffer in self.state_dict().items():
            if name.endswith("num_batches_tracked") and name not in state:
                state[name] = torch.zeros_like(buffer)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise ValueError(
                "these are not the pytorch-fid Inception weights (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}): "
                f"use {INCEPTION_WEIGHTS_FILENAME} from {INCEPTION_WEIGHTS_URL}"
            )
        self.load_state_dict(state)

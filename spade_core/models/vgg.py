"""VGG19 convolutional trunk for the perceptual (VGG) loss, loadable from torchvision's weight file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from spade_core.weights import download_weights, load_state_dict_file

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_ENV_VAR = "SPADE_VGG19_WEIGHTS"

# VGG19 ("configuration E"): conv widths, "M" = 2x2 max-pool. Weight compat requires this exact
# layout: each conv and each ReLU/pool takes one `features.<i>` index, as in torchvision.
_VGG19_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)
# features indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the reference's five slices).
FEATURE_INDICES: tuple[int, ...] = (1, 6, 11, 20, 29)
FEATURE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _build_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for item in _VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            in_channels = int(item)
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk returning relu1_1 .. relu5_1, with torchvision's `features.<i>` key names.

    Images go in as (N, 3, H, W) in [-1, 1], fed straight to VGG like the SPADE reference does;
    `imagenet_normalize=True` opts into mapping them to [0, 1] and ImageNet mean/std first.
    """

    def __init__(self, imagenet_normalize: bool = False) -> None:
        super().__init__()
        self.features = _build_features()
        self.imagenet_normalize = imagenet_normalize
        # Non-persistent so the state dict keeps torchvision's key set exactly.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the five activations [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1] of `x`."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"VGG19Features expects images (N, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}: pass RGB batches"
            )
        if self.imagenet_normalize:
            x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        outputs = []
        for index, layer in enumerate(self.features[: FEATURE_INDICES[-1] + 1]):
            x = layer(x)
            if index in FEATURE_INDICES:
                outputs.append(x)
        return outputs

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, imagenet_normalize: bool = False
    ) -> VGG19Features:
        """Load torchvision's ImageNet VGG19 weights from `path`, `$SPADE_VGG19_WEIGHTS` or the cache.

        Without either, `vgg19-dcbb9e9d.pth` is downloaded once into the spade cache; offline and
        missing raises FileNotFoundError telling where to put it (or to train with `--no-vgg`).
        """
        if path is None and os.environ.get(VGG19_ENV_VAR):
            path = os.environ[VGG19_ENV_VAR]
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"{VGG19_ENV_VAR}={path} does not exist: point it at {VGG19_FILENAME} "
                    f"(from {VGG19_URL}) or unset it"
                )
        if path is None:
            path = download_weights(
                VGG19_URL,
                VGG19_FILENAME,
                VGG19_ENV_VAR,
                hash_prefix="dcbb9e9d",
                hint="or train without the VGG loss with --no-vgg",
            )
        state = load_state_dict_file(path)
        model = cls(imagenet_normalize=imagenet_normalize)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _check_layout(model.state_dict(), state, path)
        model.load_state_dict(state)
        return model


def _check_layout(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: object) -> None:
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [
        f"{k} has shape {list(found[k].shape)}, expected {list(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems)" if len(problems) > 5 else "")
        raise ValueError(
            f"VGG19 weights in {source} do not match torchvision's vgg19 layout ({shown}): "
            f"use torchvision's {VGG19_FILENAME} or a safetensors copy of it"
        )

"""Paired preprocessing of (image, label map, instance map) with the reference's semantics.

One set of random parameters (crop offset, flip) is drawn per sample and applied identically to
the photograph (bicubic), the label map and the instance map (both nearest neighbour), so the three
stay pixel-aligned. Sizes follow the NVlabs preprocess modes; see `PreprocessConfig`.

Randomness: `draw_params` takes a `random.Random`. The datasets build one per sample from
(seed, epoch, index) when a seed is given, so every rank, worker and resumed run sees the same
crops and flips; without a seed they use Python's global `random` module as the reference does
(PyTorch's DataLoader seeds it per worker).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from spade_core.registry import DATASETS, Preprocessing

__all__ = [
    "PREPROCESS_MODES",
    "PreprocessConfig",
    "TransformParams",
    "draw_params",
    "image_to_tensor",
    "map_to_array",
    "preset_preprocess",
    "transform_image",
    "transform_map",
]

# The reference's --preprocess_mode choices; "crop" in a name means a square crop of crop_size.
PREPROCESS_MODES: tuple[str, ...] = (
    "resize_and_crop",
    "scale_width_and_crop",
    "scale_shortside_and_crop",
    "crop",
    "resize",
    "scale_width",
    "scale_shortside",
    "fixed",
    "none",
)

# The 'none' mode rounds each side to a multiple of this (the reference's make-power-of-2 base).
NONE_MODE_BASE = 32


@dataclass(frozen=True)
class PreprocessConfig:
    """How a sample is resized, cropped and flipped; the fields keep the reference's meaning.

    At test time (is_train=False) flips are off but a *_and_crop mode still draws its crop offset,
    as the reference does; the presets' test configs set load_size == crop_size, so the offset is
    0. For other test configs pass the dataset a seed to make the crops reproducible.
    """

    preprocess_mode: str = "resize_and_crop"  # one of PREPROCESS_MODES
    load_size: int = 286  # side after 'resize' (square), width after 'scale_width', short side after 'scale_shortside'
    crop_size: int = 256  # square crop side for *crop* modes; output width for 'fixed'
    aspect_ratio: float = 1.0  # width / height; 'fixed' outputs (crop_size, round(crop_size / aspect_ratio))
    flip: bool = True  # random horizontal flip (training only), the reference's `not no_flip`
    is_train: bool = True  # flips only happen in training

    def __post_init__(self) -> None:
        if self.preprocess_mode not in PREPROCESS_MODES:
            raise ValueError(
                f"unknown preprocess_mode {self.preprocess_mode!r}: use one of {', '.join(PREPROCESS_MODES)}"
            )
        if self.load_size < 1 or self.crop_size < 1:
            raise ValueError(
                f"load_size ({self.load_size}) and crop_size ({self.crop_size}) must be positive: pass sizes >= 1"
            )
        if self.aspect_ratio <= 0:
            raise ValueError(f"aspect_ratio must be positive, got {self.aspect_ratio}: pass width / height, e.g. 2.0")
        if self.preprocess_mode == "resize_and_crop" and self.load_size < self.crop_size:
            raise ValueError(
                f"load_size ({self.load_size}) is smaller than crop_size ({self.crop_size}) with "
                "preprocess_mode='resize_and_crop': set load_size >= crop_size"
            )

    @property
    def crops(self) -> bool:
        """Whether this mode ends with a square crop of crop_size."""
        return "crop" in self.preprocess_mode

    @property
    def flips(self) -> bool:
        """Whether a drawn flip is applied (training with flip enabled)."""
        return self.is_train and self.flip

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, before any crop.

        'scale_shortside' scales the short side to load_size; the reference leaves the short side
        at its original length there (a bug), which we do not reproduce. No preset uses it.
        """
        mode = self.preprocess_mode
        if "resize" in mode:
            return self.load_size, self.load_size
        if "scale_width" in mode:
            if width == self.load_size:
                return width, height
            return self.load_size, int(self.load_size * height / width)
        if "scale_shortside" in mode:
            short, long = min(width, height), max(width, height)
            if short == self.load_size:
                return width, height
            new_long = int(self.load_size * long / short)
            return (self.load_size, new_long) if width == short else (new_long, self.load_size)
        if mode == "none":
            return _round_to_base(width), _round_to_base(height)
        if mode == "fixed":
            return self.crop_size, round(self.crop_size / self.aspect_ratio)
        return width, height

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a preprocessed sample whose source is width x height."""
        if self.crops:
            return self.crop_size, self.crop_size
        return self.resized_size(width, height)


def _round_to_base(side: int, base: int = NONE_MODE_BASE) -> int:
    """Nearest multiple of base (at least base), as the reference's 'none' mode sizes images."""
    return max(base, int(round(side / base) * base))


def preset_preprocess(name: str, is_train: bool = True) -> PreprocessConfig:
    """The reference's preprocessing for a registered dataset (spade_core.registry), else the custom defaults.

    Custom folders (the reference's custom dataset): resize to 286 (256 at test time) and crop 256.
    """
    entry = DATASETS.get(str(name).lower())
    prep = entry.preprocessing if entry is not None else Preprocessing()
    return PreprocessConfig(
        prep.mode,
        load_size=prep.load_size(is_train),
        crop_size=prep.crop_size,
        aspect_ratio=prep.aspect_ratio,
        is_train=is_train,
    )


@dataclass(frozen=True)
class TransformParams:
    """The random draws shared by the image, label and instance map of one sample."""

    crop_pos: tuple[int, int] = (0, 0)  # (x, y) of the crop's top-left corner in the resized image
    flip: bool = False  # drawn in test too, but only applied when config.flips


def draw_params(config: PreprocessConfig, size: tuple[int, int], rng: random.Random | None = None) -> TransformParams:
    """Draw crop offset and flip for a source of size (width, height), in the reference's order.

    The offset is drawn uniformly so that the crop fits in the resized image (0 when it does not),
    then the flip as a coin toss; `rng` defaults to Python's global `random` module.
    """
    rng = random if rng is None else rng
    new_w, new_h = config.resized_size(*size)
    x = rng.randint(0, max(0, new_w - config.crop_size))
    y = rng.randint(0, max(0, new_h - config.crop_size))
    flip = rng.random() > 0.5
    return TransformParams(crop_pos=(x, y), flip=flip)


def _crop(img: Image.Image, pos: tuple[int, int], size: int, fill: int | tuple[int, ...]) -> Image.Image:
    """Square crop; a window past the border is padded with `fill` (PIL alone would pad with 0)."""
    x, y = pos
    box = (x, y, x + size, y + size)
    if x >= 0 and y >= 0 and box[2] <= img.width and box[3] <= img.height:
        return img.crop(box)
    canvas = Image.new(img.mode, (size, size), fill)
    if img.mode == "P":
        canvas.putpalette(img.getpalette() or [])
    canvas.paste(img.crop((x, y, min(box[2], img.width), min(box[3], img.height))), (0, 0))
    return canvas


def _geometry(
    img: Image.Image,
    config: PreprocessConfig,
    params: TransformParams,
    resample: Image.Resampling,
    fill: int | tuple[int, ...],
) -> Image.Image:
    """Resize, crop and flip a PIL image as the config and params say."""
    size = config.resized_size(img.width, img.height)
    if size != (img.width, img.height):
        img = img.resize(size, resample)
    if config.crops:
        img = _crop(img, params.crop_pos, config.crop_size, fill)
    if config.flips and params.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (3, H, W) in [-1, 1], computed as the reference's ToTensor + Normalize."""
    array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    return tensor.sub_(0.5).div_(0.5)


def map_to_array(img: Image.Image) -> np.ndarray:
    """Single-channel id map (PIL mode L, P, I, I;16) -> int64 (H, W) array of its raw values."""
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise ValueError(
            f"a label or instance map must be a single-channel id image (mode L, P, I or I;16), got mode "
            f"{img.mode}: save it as a grayscale/indexed PNG of class ids, or convert colours to ids first"
        )
    return np.asarray(img).astype(np.int64)


def transform_image(img: Image.Image, config: PreprocessConfig, params: TransformParams) -> torch.Tensor:
    """Photograph -> float (3, H, W) in [-1, 1]: bicubic resize, crop (black padding), flip."""
    out = _geometry(img.convert("RGB"), config, params, Image.Resampling.BICUBIC, (0, 0, 0))
    return image_to_tensor(out)


def transform_map(
    img: Image.Image, config: PreprocessConfig, params: TransformParams, fill: int = 0
) -> torch.Tensor:
    """Label or instance map -> int64 (1, H, W) of raw ids: nearest resize, crop, flip.

    `fill` is the raw id given to pixels a crop window adds past the border (the datasets pass a
    raw don't-care id when the label set has one; the reference pads with 0).
    """
    out = _geometry(img, config, params, Image.Resampling.NEAREST, fill)
    return torch.from_numpy(map_to_array(out)).unsqueeze(0)

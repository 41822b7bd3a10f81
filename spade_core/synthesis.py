"""The core of inference: segmap (+ style) -> images, one function for the pipeline, the CLI and the nodes.

``synthesize(generator, label_set, segmap, ...)`` does everything ``SPADEPipeline.__call__`` does
short of the output format: read and resize the segmap, build the one-hot semantics, draw the
style codes of VAE models (from a seed, a style image, a (mu, logvar) pair or given latents), run
the generator (or its exact fast twin, cached by ``FastNetworkCache``) and check the result.
It needs only our model classes, not diffusers' pipeline machinery, so a command line that calls
it starts in the time ``import torch`` and the model classes take.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .devices import denormals_flushed
from .fast import optimize_generator
from .images import MAX_SIDE, check_finite, check_image_size, open_image
from .labels import LabelSet, check_label_set
from .models import SPADEEncoder, SPADEGenerator
from .models.encoder import reparameterize
from .segmap import coerce_instance_map, coerce_segmap, one_hot_semantics, resize_labels

__all__ = [
    "MAX_INFERENCE_BYTES",
    "FastNetworkCache",
    "draw_style_codes",
    "encode_style",
    "estimate_inference_bytes",
    "max_inference_bytes",
    "prepare_semantics",
    "style_tensor",
    "synthesize",
    "to_output",
]

# One synthesis call may use this much memory for the generator's activations (estimated before
# anything is allocated); $SPADE_MAX_INFERENCE_BYTES overrides it.
MAX_INFERENCE_BYTES = 16 * 1024**3
_ENV_INFERENCE_BYTES = "SPADE_MAX_INFERENCE_BYTES"


# ----------------------------------------------------------------------------- bounds


def max_inference_bytes() -> int:
    """The activation-memory limit of one call: ``$SPADE_MAX_INFERENCE_BYTES`` when set, else MAX_INFERENCE_BYTES."""
    text = os.environ.get(_ENV_INFERENCE_BYTES, "").strip()
    if not text:
        return MAX_INFERENCE_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{_ENV_INFERENCE_BYTES}={text!r} is not a positive integer: set it to a byte count, e.g. 34359738368")
    return int(text)


def estimate_inference_bytes(generator: SPADEGenerator, batch: int, height: int, width: int) -> int:
    """Bytes the generator's activations need for ``batch`` images of ``height`` x ``width`` (an upper estimate).

    At full resolution the last SPADE block holds the one-hot map, the SPADE hidden layer and
    about a dozen feature maps of its width at once; earlier blocks are smaller.
    """
    cfg = generator.config
    per_pixel = generator.semantic_nc + int(getattr(cfg, "spade_hidden_nc", 128)) + 12 * int(cfg.ngf)
    element = torch.finfo(generator.dtype).bits // 8
    return int(batch) * int(height) * int(width) * per_pixel * element


def _check_request_size(generator: SPADEGenerator, batch: int, height: int, width: int) -> None:
    """Refuse a synthesis whose activations would pass the memory limit, before allocating anything."""
    need, limit = estimate_inference_bytes(generator, batch, height, width), max_inference_bytes()
    if need > limit:
        raise ValueError(
            f"{batch} image(s) of {height}x{width} (HxW) need about {need / 1e9:.1f} GB for the generator, over the "
            f"limit of {limit / 1e9:.1f} GB: pass a smaller height/width, a lower num_images_per_segmap or fewer "
            f"segmaps at once (or raise {_ENV_INFERENCE_BYTES})"
        )


def _rows_for(t: torch.Tensor, n: int, k: int, what: str) -> torch.Tensor:
    """Broadcast per-segmap rows to the n*k outputs: 1 row -> all, n rows -> k each, n*k rows -> as they are."""
    rows = t.shape[0]
    if rows == n * k:
        return t
    if rows == 1:
        return t.expand(n * k, *t.shape[1:])
    if rows == n:
        return t.repeat_interleave(k, 0)
    raise ValueError(f"got {rows} {what} for {n} segmap(s) x {k} image(s) each: pass 1, {n} or {n * k}")


# ----------------------------------------------------------------------------- semantics


def prepare_semantics(
    generator: SPADEGenerator,
    label_set: LabelSet,
    segmap: Any,
    instance_map: Any = None,
    height: int | None = None,
    width: int | None = None,
    num_images_per_segmap: int = 1,
    nearest_color: bool = False,
    unknown: str = "error",
) -> torch.Tensor:
    """Segmap(s) -> the generator's one-hot input (N*k, semantic_nc, H, W) on its device, in its dtype.

    Labels (and instance ids) are resized with legacy nearest to ``height`` x ``width``
    (default: native size); each segmap's map is repeated ``num_images_per_segmap`` times.
    """
    if isinstance(num_images_per_segmap, bool) or not isinstance(num_images_per_segmap, int) or num_images_per_segmap < 1:
        raise ValueError(f"num_images_per_segmap must be a positive integer, got {num_images_per_segmap!r}")
    gen = generator
    native_h, native_w = gen.native_size
    size = (height or native_h, width or native_w)
    for side, name in zip(size, ("height", "width")):
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
            raise ValueError(f"{name} must be a positive integer, got {side!r}")
        if side > MAX_SIDE:
            raise ValueError(f"{name} {side} is over the limit of {MAX_SIDE} pixels per side: pass a smaller height/width")
    size = (int(size[0]), int(size[1]))
    gen.check_size(*size)
    _check_request_size(gen, num_images_per_segmap, *size)
    cfg = gen.config
    k = num_images_per_segmap
    labels = coerce_segmap(segmap, label_set, nearest_color=nearest_color, unknown=unknown)
    _check_request_size(gen, labels.shape[0] * k, *size)
    instance = None
    if instance_map is not None:
        if not cfg.use_instance:
            raise ValueError("this model has no instance edge channel: drop instance_map")
        instance = coerce_instance_map(instance_map, size=tuple(labels.shape[-2:]))
        instance = _rows_for(instance, labels.shape[0], 1, "instance maps")
        instance = resize_labels(instance, size).repeat_interleave(k, 0).to(gen.device)
    labels = resize_labels(labels, size).repeat_interleave(k, 0)
    return one_hot_semantics(
        labels.to(gen.device), cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance, instance, dtype=gen.dtype
    )


# ----------------------------------------------------------------------------- style


def style_tensor(image: Any) -> torch.Tensor:
    """A style image (path, PIL, numpy (H,W,3)/(N,H,W,3), tensor (3,H,W)/(N,3,H,W)) -> float (N,3,H,W) in [0,1]."""
    accepted = (
        "pass a path, a PIL image, a numpy array (H,W,3) / (N,H,W,3) or a tensor (3,H,W) / (N,3,H,W), "
        "uint8 0..255 or float in [0, 1]"
    )
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"style image not found: {path} (check the path)")
        image = open_image(path, "style image")
    if isinstance(image, PIL.Image.Image):
        check_image_size(image.width, image.height, "style image")
        array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
    if isinstance(image, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(image))
        if x.ndim in (3, 4) and x.shape[-1] in (3, 4):
            x = x[..., :3].movedim(-1, -3)
        else:
            raise ValueError(f"style image array has shape {tuple(image.shape)}: {accepted}")
    elif isinstance(image, torch.Tensor):
        x = image.detach()
    else:
        raise ValueError(f"style image of type {type(image).__name__} is not supported: {accepted}")  # noqa: TRY004
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3 or x.numel() == 0:
        raise ValueError(f"style image has shape {tuple(x.shape)} (channels first for tensors): {accepted}")
    check_image_size(x.shape[-1], x.shape[-2], "style image")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise ValueError(f"style image has dtype {x.dtype}: {accepted}")
    check_finite(x, "style image", "replace the NaN/Inf pixels (e.g. numpy.nan_to_num) or pass a uint8 image")
    x = x.float()
    low, high = float(x.min()), float(x.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"style image values span {low:.3g}..{high:.3g} but must lie in [0, 1]: pass (x + 1) / 2 for images in [-1, 1]"
        )
    return x.clamp(0, 1)


def encode_style(
    encoder: SPADEEncoder | None, generator: SPADEGenerator, image: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Style image(s) -> (mu, logvar), each float32 (N, z_dim), for reuse as ``style=(mu, logvar)``.

    Images are resized (bicubic, antialiased) to the model's native size, as the reference's
    data loader does before its encoder.
    """
    if encoder is None:
        if not generator.config.use_vae:
            raise ValueError(
                "this model was trained without the VAE style encoder, so it takes no style image: drop "
                "style_image"
            )
        raise ValueError(
            "this pipeline has a VAE generator but no encoder/ folder, so it only makes random styles: drop "
            "style_image, or load a folder that includes the encoder"
        )
    x = style_tensor(image)
    size = generator.native_size
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            mu, logvar = encoder((x * 2 - 1).to(encoder.device, encoder.dtype))
    finally:
        encoder.train(was_training)
    check_finite(logvar, "the style encoder's output", "the encoder's weights are broken, or the image overflowed reduced precision: load the model with torch_dtype=torch.float32")
    return mu.float(), logvar.float()


def draw_style_codes(
    generator: SPADEGenerator,
    encoder: SPADEEncoder | None,
    n: int,
    k: int,
    style_image: Any = None,
    style: tuple[torch.Tensor, torch.Tensor] | None = None,
    latents: torch.Tensor | None = None,
    rng: torch.Generator | None = None,
) -> torch.Tensor | None:
    """z (n*k, z_dim) on the model's device and dtype, or None for models without a style code.

    The noise is drawn in float32 on ``rng``'s device (CPU without one), so a seed gives the
    same codes on every run.
    """
    cfg = generator.config
    device, dtype = generator.device, generator.dtype
    if not cfg.use_vae:
        if style_image is not None or style is not None or latents is not None:
            raise ValueError(
                "this model was trained without the VAE style encoder, so it takes no style: drop "
                "style_image / style / latents"
            )
        return None
    if sum(x is not None for x in (style_image, style, latents)) > 1:
        raise ValueError("pass only one of style_image, style=(mu, logvar) and latents")
    if latents is not None:
        z = torch.as_tensor(latents)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"latents must have shape (N, {cfg.z_dim}), got {tuple(z.shape)}")
        check_finite(z, "latents", f"pass finite numbers, e.g. torch.randn(N, {cfg.z_dim})")
        return _rows_for(z, n, k, "latents").to(device, dtype)
    mu = logvar = None
    if style_image is not None:
        mu, logvar = encode_style(encoder, generator, style_image)
    elif style is not None:
        if not isinstance(style, (tuple, list)) or len(style) != 2:
            raise ValueError("style must be the pair (mu, logvar) returned by pipe.encode_style(image)")
        mu, logvar = (torch.as_tensor(t).float() for t in style)
        mu, logvar = (t[None] if t.ndim == 1 else t for t in (mu, logvar))
        if mu.shape != logvar.shape or mu.ndim != 2 or mu.shape[1] != cfg.z_dim:
            raise ValueError(
                f"style (mu, logvar) must be two tensors of shape (N, {cfg.z_dim}), got {tuple(mu.shape)} and "
                f"{tuple(logvar.shape)}: pass what pipe.encode_style(image) returns"
            )
        check_finite(mu, "style mu", "pass the (mu, logvar) that pipe.encode_style(image) returns")
        check_finite(logvar, "style logvar", "pass the (mu, logvar) that pipe.encode_style(image) returns")
    eps_device = rng.device if rng is not None else torch.device("cpu")
    eps = torch.randn((n * k, cfg.z_dim), generator=rng, device=eps_device, dtype=torch.float32)
    if mu is None:
        return eps.to(device, dtype)
    mu = _rows_for(mu, n, k, "style codes").to(device)
    logvar = _rows_for(logvar, n, k, "style codes").to(device)
    z = reparameterize(mu, logvar, eps=eps.to(device)).to(dtype)
    check_finite(z, "the style code drawn from style (mu, logvar)", "logvar is too large; pass the pair pipe.encode_style(image) returns")
    return z


# ----------------------------------------------------------------------------- the network


class FastNetworkCache:
    """The generator's exact fast inference module (``spade_core.fast``), kept between calls and
    rebuilt when the generator, its device, dtype or weights change.

    The fast module is a snapshot of folded weights, so in-place weight updates (optimizer steps,
    ``load_state_dict``) must rebuild it; they are detected through each tensor's version counter
    (``Tensor._version``: neither torch nor ``spade_core.fast`` offers a public one).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._network: torch.nn.Module | None = None

    def clear(self) -> None:
        """Drop the cached module (it is rebuilt on the next call)."""
        self._key = self._network = None

    @staticmethod
    def _weights_version(generator: SPADEGenerator) -> int:
        # Tensors created under torch.inference_mode (as ComfyUI loads models) have no version
        # counter and never change in place.
        return sum(0 if t.is_inference() else t._version for t in [*generator.parameters(), *generator.buffers()])

    def network(self, generator: SPADEGenerator, use_fast: bool = True) -> torch.nn.Module:
        """``generator`` itself, or its fast twin where that pays off (CPU) and ``use_fast`` is on."""
        # The fast path pays off on CPU; on CUDA it measured slower than the plain forward
        # (dense convolutions are cheap there), so GPUs run the plain generator.
        if not use_fast or generator.device.type != "cpu":
            return generator
        key = (id(generator), generator.device, generator.dtype, self._weights_version(generator))
        if self._network is None or self._key != key:
            with torch.no_grad():
                self._network = optimize_generator(generator)
            self._key = key
        return self._network


def _run(
    generator: SPADEGenerator, semantics: torch.Tensor, z: torch.Tensor | None, use_fast: bool, cache: FastNetworkCache
) -> torch.Tensor:
    """The eval-mode output in [-1, 1] (the generator's train/eval mode restored afterwards), checked finite."""
    was_training = generator.training
    generator.eval()
    try:
        network = cache.network(generator, use_fast)  # built outside inference mode: its buffers stay normal tensors
        with torch.inference_mode(), denormals_flushed(semantics.device):
            images = network(semantics, z)
    finally:
        generator.train(was_training)
    fix = "the model's weights or inputs are broken" + (
        "; in reduced precision it may have overflowed: load it with torch_dtype=torch.float32"
        if generator.dtype != torch.float32 else ""
    )
    check_finite(images, "the generator's output", fix)
    return images


def synthesize(
    generator: SPADEGenerator,
    label_set: LabelSet,
    segmap: Any,
    *,
    encoder: SPADEEncoder | None = None,
    style_image: Any = None,
    style: tuple[torch.Tensor, torch.Tensor] | None = None,
    instance_map: Any = None,
    num_images_per_segmap: int = 1,
    generator_rng: torch.Generator | None = None,
    seed: int | None = None,
    height: int | None = None,
    width: int | None = None,
    nearest_color: bool = False,
    unknown: str = "error",
    latents: torch.Tensor | None = None,
    use_fast: bool = True,
    cache: FastNetworkCache | None = None,
) -> torch.Tensor:
    """Segmap(s) (any form spade_core.segmap accepts) -> images, float (N*k, 3, H, W) in [0, 1] on the model's device.

    The segmap is resized (nearest) to ``height`` x ``width``, by default the native size.
    VAE models draw their style code from ``generator_rng`` / ``seed`` (on CPU, so a seed gives
    the same images on every run of one device), around the style of ``style_image`` (encoded
    by ``encoder``) or ``style=(mu, logvar)`` when given; ``latents`` (N, z_dim) sets the codes
    directly. ``cache`` keeps the fast network between calls (without one it is built per call).
    """
    if seed is not None and generator_rng is not None:
        raise ValueError("pass seed or generator_rng, not both")
    if seed is not None:
        generator_rng = torch.Generator("cpu").manual_seed(int(seed))
    check_label_set(label_set, generator)
    semantics = prepare_semantics(
        generator, label_set, segmap, instance_map, height, width, num_images_per_segmap,
        nearest_color=nearest_color, unknown=unknown,
    )
    k = num_images_per_segmap
    z = draw_style_codes(generator, encoder, semantics.shape[0] // k, k, style_image, style, latents, generator_rng)
    images = _run(generator, semantics, z, use_fast, cache if cache is not None else FastNetworkCache())
    return (images.float() / 2 + 0.5).clamp(0, 1)


def to_output(images: torch.Tensor, output_type: str = "pil") -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Images (N,3,H,W) in [0, 1] as ``output_type``: "pil" (list, 8-bit RGB), "np" (N,H,W,3) float or "pt" as they are."""
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    return [PIL.Image.fromarray(im) for im in (array * 255).round().astype(np.uint8)]

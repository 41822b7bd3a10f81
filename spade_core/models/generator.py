"""SPADEGenerator: semantic map (+ optional style code z) -> image in [-1, 1]."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .blocks import SPADEResnetBlock
from .layers import PARAM_FREE_NORMS, UPSAMPLING_LAYERS, init_weights, replaying
from .patterns import LabelLayout
from .validation import validate_network_config


def latent_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: str) -> tuple[int, int]:
    """(height, width) of the first feature map, as the reference computes it.

    ``round`` is Python's (half to even): crop 320, aspect 2, 'more' gives height round(2.5) = 2.
    """
    n = UPSAMPLING_LAYERS[num_upsampling_layers]
    sw = crop_size // (2**n)
    sh = round(sw / aspect_ratio)
    return sh, sw


def native_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: str) -> tuple[int, int]:
    """(height, width) of the images a generator of this configuration makes at its native size."""
    sh, sw = latent_size(crop_size, aspect_ratio, num_upsampling_layers)
    step = 2 ** UPSAMPLING_LAYERS[num_upsampling_layers]
    return sh * step, sw * step


class _Upsample2x(torch.autograd.Function):
    """Nearest x2 upsampling of an NCHW map, as ``F.interpolate(x, scale_factor=2)`` computes it,
    with the forward as one expanding copy: torch's CPU kernel first copies many-channel small maps
    into another layout (17 ms instead of 0.7 ms at 1024 x 16 x 16). The backward is torch's own."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        ctx.input_size = [n, c, h, w]
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        h, w = ctx.input_size[2:]
        return torch.ops.aten.upsample_nearest2d_backward(grad, [2 * h, 2 * w], ctx.input_size, 2.0, 2.0)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")``, the same numbers, faster for NCHW maps on the CPU."""
    if x.device.type != "cpu" or not x.is_contiguous() or x.dim() != 4:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return _Upsample2x.apply(x)


def downsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.interpolate(x, size=(H // factor, W // factor), mode="nearest")`` for H, W multiples of
    ``factor``: legacy nearest then picks every ``factor``-th pixel, a strided view (torch's kernel
    copies the whole map first: 14 ms for ADE20K's 151 x 256 x 256 semantics)."""
    height, width = x.shape[2:]
    if height % factor or width % factor:
        return F.interpolate(x, size=(height // factor, width // factor), mode="nearest")
    return x[:, :, ::factor, ::factor]


@dataclass(frozen=True)
class BlockStep:
    """One step of the generator's block schedule: the map doubles (nearest) before ``block`` if ``upsample``."""

    name: str
    block: SPADEResnetBlock
    upsample: bool


class SPADEGenerator(ModelMixin, ConfigMixin):
    """The SPADE generator: a stack of SPADE residual blocks upsampling from a small latent map.

    The latent map is either the downsampled semantic map through a 3x3 conv (``use_vae=False``)
    or a linear projection of a style code ``z`` (``use_vae=True``). Channel widths are
    16·ngf -> ... -> ngf (-> ngf/2 with 'most' upsampling).

    SPADE layers modulate per label pattern (``spade_core.models.patterns``) when the semantics
    are an exact one-hot map; set ``pattern_spade = False`` for the dense computation (the same
    numbers up to float summation order, forward and backward).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        label_nc: int = 182,
        contain_dontcare_label: bool = True,
        use_instance: bool = True,
        ngf: int = 64,
        z_dim: int = 256,
        use_vae: bool = False,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        num_upsampling_layers: str = "normal",
        spectral_norm: bool = True,
        param_free_norm: str = "syncbatch",
        spade_kernel_size: int = 3,
        spade_hidden_nc: int = 128,
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ) -> None:
        validate_network_config("generator", locals())
        super().__init__()
        if num_upsampling_layers not in UPSAMPLING_LAYERS:
            raise ValueError(
                f"num_upsampling_layers must be one of {', '.join(UPSAMPLING_LAYERS)}, got {num_upsampling_layers!r}"
            )
        if param_free_norm not in PARAM_FREE_NORMS:
            raise ValueError(f"param_free_norm must be one of {', '.join(PARAM_FREE_NORMS)}, got {param_free_norm!r}")
        sh, sw = latent_size(crop_size, aspect_ratio, num_upsampling_layers)
        if sh < 1 or sw < 1:
            raise ValueError(
                f"crop_size {crop_size} with aspect_ratio {aspect_ratio} and {num_upsampling_layers!r} upsampling "
                f"gives an empty latent map: use crop_size >= {2 ** UPSAMPLING_LAYERS[num_upsampling_layers]}"
            )
        self.num_up = UPSAMPLING_LAYERS[num_upsampling_layers]
        self.sh, self.sw = sh, sw
        nf = ngf
        sem = self.semantic_nc
        block = dict(
            semantic_nc=sem,
            spectral_norm=spectral_norm,
            param_free_norm=param_free_norm,
            spade_kernel_size=spade_kernel_size,
            spade_hidden_nc=spade_hidden_nc,
        )
        if use_vae:
            self.fc = nn.Linear(z_dim, 16 * nf * sw * sh)
        else:
            self.fc = nn.Conv2d(sem, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, **block)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, **block)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, **block)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, **block)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, **block)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, **block)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, **block)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = SPADEResnetBlock(1 * nf, nf // 2, **block)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)
        self.gradient_checkpointing = False
        self.pattern_spade = True
        self._reused_layouts: list[LabelLayout] | None = None
        init_weights(self, init_type, init_gain)

    @property
    def semantic_nc(self) -> int:
        """Input channels: classes, + don't-care, + instance edges (the reference's order)."""
        cfg = self.config
        return cfg.label_nc + int(cfg.contain_dontcare_label) + int(cfg.use_instance)

    @property
    def size_multiple(self) -> int:
        """Output sides must be multiples of this (2 ** number of upsamplings)."""
        return 2**self.num_up

    @property
    def native_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at."""
        return self.sh * self.size_multiple, self.sw * self.size_multiple

    def check_size(self, height: int, width: int) -> None:
        """Raise a ValueError naming the sizes that work if (height, width) is unsupported."""
        m = self.size_multiple
        if height % m or width % m or height < m or width < m:
            raise ValueError(
                f"size {height}x{width} (HxW) is not supported: both sides must be positive multiples of {m} "
                f"(e.g. {max(m, height // m * m)}x{max(m, width // m * m)}); the native size is "
                f"{self.native_size[0]}x{self.native_size[1]}"
            )

    def style_map(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Style code z (N, z_dim) -> the first feature map (N, 16·ngf, h, w) of a ``use_vae`` model.

        ``fc(z)`` is laid out at the native latent size (sh, sw), as the reference does; another
        ``size`` (the requested image size / ``size_multiple``) resizes that map bilinearly
        (align_corners=False): smooth and deterministic, so a style code gives the same coarse
        layout of colours at every size, where nearest would repeat whole cells unevenly when
        the sizes are not multiples. At the native size the map is used as it is.
        """
        x = self.fc(z).view(-1, 16 * self.config.ngf, self.sh, self.sw)
        if size is not None and tuple(size) != (self.sh, self.sw):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x

    def schedule(self) -> list[BlockStep]:
        """The SPADE blocks in forward order, each with whether the map doubles right before it."""
        more = self.config.num_upsampling_layers in ("more", "most")
        steps = [
            BlockStep("head_0", self.head_0, False),
            BlockStep("G_middle_0", self.G_middle_0, True),
            BlockStep("G_middle_1", self.G_middle_1, more),
        ]
        names = ["up_0", "up_1", "up_2", "up_3"] + (["up_4"] if self.config.num_upsampling_layers == "most" else [])
        return steps + [BlockStep(name, getattr(self, name), True) for name in names]

    def label_layout(self, semantics: torch.Tensor) -> LabelLayout:
        """The ``LabelLayout`` the blocks receive (per-pattern SPADE unless ``pattern_spade`` is off);
        inside ``reusing_layouts`` the same one for the same semantics tensor."""
        if self._reused_layouts is not None:
            for layout in self._reused_layouts:
                if layout.semantics is semantics and layout.patterns == self.pattern_spade:
                    return layout
        cfg = self.config
        n_classes = cfg.label_nc + int(cfg.contain_dontcare_label)
        layout = LabelLayout(semantics, n_classes, bool(cfg.use_instance), patterns=self.pattern_spade)
        if self._reused_layouts is not None:
            self._reused_layouts.append(layout)
        return layout

    @contextmanager
    def reusing_layouts(self) -> Iterator[None]:
        """Forwards inside build the label layout (its per-resolution pattern plans) once per
        semantics tensor: a training step's generator and discriminator steps share it. The
        semantics must not change in place meanwhile (the layout holds the tensor, so identity is safe)."""
        outer = self._reused_layouts
        self._reused_layouts = [] if outer is None else outer
        try:
            yield
        finally:
            self._reused_layouts = outer

    def check_inputs(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> None:
        """Raise a ValueError naming the fix if ``semantics`` / ``z`` do not fit this model."""
        if semantics.dim() != 4 or semantics.shape[1] != self.semantic_nc:
            raise ValueError(
                f"semantics must be a one-hot map (N, {self.semantic_nc}, H, W) for this model "
                f"(label_nc {self.config.label_nc}, don't-care {self.config.contain_dontcare_label}, "
                f"instance edges {self.config.use_instance}); got shape {tuple(semantics.shape)}: "
                "build it with spade_core.segmap.one_hot_semantics"
            )
        self.check_size(semantics.shape[2], semantics.shape[3])
        if z is not None and (z.dim() != 2 or z.shape != (semantics.shape[0], self.config.z_dim)):
            raise ValueError(
                f"z must have shape (N, {self.config.z_dim}) with N = {semantics.shape[0]}, got {tuple(z.shape)}"
            )

    def _block(self, block: nn.Module, x: torch.Tensor, seg: LabelLayout) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(
                block, x, seg, use_reentrant=False, context_fn=lambda: (nullcontext(), replaying(block))
            )
        return block(x, seg)

    def forward(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """semantics (N, semantic_nc, H, W) float one-hot; z (N, z_dim) or None -> (N, 3, H, W) in [-1, 1].

        With ``use_vae`` a missing ``z`` is drawn from N(0, 1). At the native size the result is
        the reference's; other sizes (multiples of ``size_multiple``) scale the latent map.
        """
        self.check_inputs(semantics, z)
        layout = self.label_layout(semantics)
        if self.config.use_vae:
            if z is None:
                z = torch.randn(semantics.shape[0], self.config.z_dim, device=semantics.device, dtype=semantics.dtype)
            up = self.size_multiple
            x = self.style_map(z, (semantics.shape[2] // up, semantics.shape[3] // up))
        else:
            up = self.size_multiple
            x = self.fc(downsample_nearest(semantics, up))
        for step in self.schedule():
            if step.upsample:
                x = upsample2x(x)
            x = self._block(step.block, x, layout)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.tanh(x)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SPADEGenerator":
        """The reference configuration of a preset ('ade20k', 'coco', 'cityscapes', ...) with overrides."""
        from .presets import build_from_preset, generator_kwargs

        return build_from_preset(cls, generator_kwargs, name, overrides)

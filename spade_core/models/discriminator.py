"""Multi-scale PatchGAN discriminator returning every layer's features (for feature matching)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import (
    autocast_dtype,
    init_weights,
    normalized_conv,
    run_layers,
    zero_padded_conv2d,
)
from .patterns import is_channels_last, label_keys, one_hot_table
from .validation import validate_network_config


class _ImageGradConv(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` for an x whose last channels hold ``images``: the input gradient
    goes to ``images`` only, through the image channels' slice of the weight. The semantic channels
    (150+ for ADE20K against 3 image ones) are constants in training, so the full input gradient,
    its pooling backward and its copies are never computed; x itself is saved only when the
    weight needs a gradient. Under autocast, x, the weight and the bias are cast as for a conv."""

    @staticmethod
    def forward(ctx, x, images, weight, bias, stride, padding, dtype):
        if dtype is not None:
            x, bias = x.to(dtype), None if bias is None else bias.to(dtype)
        ctx.conv, ctx.dtype = (list(stride), list(padding)), dtype
        ctx.images_shape, ctx.images_dtype = images.shape, images.dtype
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.save_for_backward(x if ctx.needs_input_grad[2] else None, weight)
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, weight if dtype is None else weight.to(dtype), bias, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.conv
        cast = weight if ctx.dtype is None else weight.to(ctx.dtype)
        grad_images = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            channels = ctx.images_shape[1]
            shape_only = grad.new_zeros(()).expand(ctx.images_shape)  # only its shape matters
            grad_images = torch.ops.aten.convolution_backward(
                grad, shape_only, cast[:, -channels:].contiguous(), None, stride, padding, [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0].to(ctx.images_dtype)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad, x, cast, ctx.bias_sizes, stride, padding, [1, 1], False, [0, 0], 1,
                [False, ctx.needs_input_grad[2], ctx.needs_input_grad[3]],
            )
            grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        return None, grad_images, grad_weight, grad_bias, None, None, None


def _plain_conv(module: nn.Module) -> bool:
    """A conv ``_ImageGradConv`` or ``_shared_semantics_conv`` can stand in for: no hooks at all,
    no dilation, one group."""
    return zero_padded_conv2d(module) and not module._forward_pre_hooks and module.dilation == (1, 1) and module.groups == 1


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """One scale down, as the multiscale discriminator pools between its scales (3x3 average,
    stride 2, padding not counted)."""
    return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)


def stacked_input(semantics: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``cat([semantics repeated, images], 1)`` for ``images`` holding a whole number of batches of
    ``semantics``' size (fake and real stacked), written once into one tensor (nested cats write the
    large semantic channels twice). Same dtype promotion and memory format as the cats."""
    n, labels = semantics.shape[:2]
    copies = images.shape[0] // n
    out = torch.empty(
        (copies * n, labels + images.shape[1], *semantics.shape[2:]),
        dtype=torch.promote_types(semantics.dtype, images.dtype), device=semantics.device,
        memory_format=torch.channels_last if is_channels_last(semantics) else torch.contiguous_format,
    )
    for i in range(copies):
        out[i * n : (i + 1) * n, :labels] = semantics
    out[:, labels:] = images
    return out


def _one_hot_conv(
    keys: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, n_classes: int,
    use_edge: bool, channels_last: bool,
) -> torch.Tensor:
    """``conv2d(one_hot, weight, bias)`` for the one-hot map whose label keys are ``keys`` (N, H, W):
    per output pixel, the sum of one weight column per tap, picked by the key under the tap (an
    ``embedding_bag`` over ``one_hot_table``; positions in the padding pick its zero rows).
    Differentiable in weight and bias; (N, out, h, w), channels-last memory or else each channel's
    plane contiguous (one 2D transpose: 2-4x faster to add to an NCHW map than the NHWC view)."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    table = one_hot_table(weight, n_classes, use_edge)
    outside = table.shape[0] // (kh * kw) - 1  # the table's last key: zero rows
    grid = F.pad(keys, (pw, pw, ph, ph), value=outside)
    windows = grid.unfold(1, kh, sh).unfold(2, kw, sw)  # (N, h, w, kh, kw)
    taps = torch.arange(kh * kw, device=keys.device).view(kh, kw)
    index = (windows * (kh * kw) + taps).reshape(-1, kh * kw)
    rows = F.embedding_bag(index, table, mode="sum")
    if bias is not None:
        rows = rows + bias
    n, h, w = windows.shape[:3]
    if channels_last:
        return rows.view(n, h, w, -1).permute(0, 3, 1, 2)
    return rows.t().contiguous().view(-1, n, h, w).transpose(0, 1)


def _shared_semantics_conv(
    conv: nn.Conv2d, semantics: torch.Tensor, images: torch.Tensor, keys: torch.Tensor | None, n_classes: int, use_edge: bool
) -> torch.Tensor:
    """``conv(cat([semantics repeated, images], 1))`` as conv(images, W_image) plus the semantic
    channels' term, computed once for the copies that share it: as a look-up when the semantics
    are a one-hot map (``keys``), else as a conv over ``semantics`` alone. The semantic channels
    get no input gradient. Under autocast the image conv runs as autocast runs convs."""
    labels = semantics.shape[1]
    out = F.conv2d(images, conv.weight[:, labels:], None, conv.stride, conv.padding)
    if keys is not None:
        term = _one_hot_conv(
            keys, conv.weight[:, :labels], conv.bias, conv.stride, conv.padding, n_classes, use_edge, is_channels_last(out)
        )
    else:
        term = F.conv2d(semantics, conv.weight[:, :labels], conv.bias, conv.stride, conv.padding)
    n = semantics.shape[0]
    out.view(-1, n, *out.shape[1:]).add_(term.to(out.dtype))  # the conv's output: its backward does not need it
    return out


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs, stride 2 except the last two; every layer's output is returned."""

    def __init__(
        self, input_nc: int, ndf: int = 64, n_layers: int = 4, spectral_norm: bool = True, norm: str = "instance"
    ) -> None:
        super().__init__()
        kw, pad = 4, 2
        nf = ndf
        # In-place activations: what they overwrite (a conv or norm output) no backward needs, and
        # each layer then keeps one activation for the backward instead of two.
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(input_nc, nf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2, inplace=True))
        ]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            conv = nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=pad)
            layers.append(nn.Sequential(normalized_conv(conv, norm, spectral_norm), nn.LeakyReLU(0.2, inplace=True)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, kw, stride=1, padding=pad)))
        for i, layer in enumerate(layers):
            self.add_module(f"model{i}", layer)

    def forward(self, x: torch.Tensor, images: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer's output for input ``x``; ``images``: see ``MultiscaleDiscriminator.forward``."""
        features = []
        for i, layer in enumerate(self.children()):
            if i == 0 and images is not None:
                x = self._first_layer(layer, x, images)
            else:
                x = run_layers(layer, x)  # spectral convs without a saved normalized weight
            features.append(x)
        return features

    def forward_shared(
        self, semantics: torch.Tensor, images: torch.Tensor, keys: torch.Tensor | None, n_classes: int, use_edge: bool
    ) -> list[torch.Tensor]:
        """``forward(cat([semantics repeated, images], 1))`` with the first conv's semantic term
        computed once for all copies (``_shared_semantics_conv``)."""
        first, *layers = list(self.children())
        conv, *rest = list(first)
        if not _plain_conv(conv):  # a conv this path does not cover: the whole input, as one tensor
            return self.forward(stacked_input(semantics, images.detach()), images)
        x = _shared_semantics_conv(conv, semantics, images, keys, n_classes, use_edge)
        for module in rest:
            x = module(x)
        features = [x]
        for layer in layers:
            x = run_layers(layer, x)
            features.append(x)
        return features

    @staticmethod
    def _first_layer(layer: nn.Sequential, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        conv, *rest = list(layer)
        if not _plain_conv(conv):  # a conv this path does not cover: x with the images' gradient, as one tensor
            return run_layers(layer, torch.cat([x[:, : x.shape[1] - images.shape[1]], images.to(x.dtype)], 1))
        dtype = autocast_dtype(x.device.type) if x.dtype != torch.float64 else None
        x = _ImageGradConv.apply(x, images, conv.weight, conv.bias, conv.stride, conv.padding, dtype)
        for module in rest:
            x = module(x)
        return x


class MultiscaleDiscriminator(ModelMixin, ConfigMixin):
    """``num_D`` PatchGANs on the input at successively halved resolutions (3x3 average pooling).

    ``forward(cat([semantics, image], 1))`` -> one list per scale (finest first) of every layer's
    output, the last being the patch logits.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        label_nc: int = 182,
        contain_dontcare_label: bool = True,
        use_instance: bool = True,
        output_nc: int = 3,
        ndf: int = 64,
        n_layers_D: int = 4,
        num_D: int = 2,
        spectral_norm: bool = True,
        norm: str = "instance",
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ) -> None:
        validate_network_config("discriminator", locals())
        super().__init__()
        if n_layers_D < 1 or num_D < 1:
            raise ValueError(f"n_layers_D and num_D must be >= 1, got {n_layers_D} and {num_D}")
        for i in range(num_D):
            self.add_module(
                f"discriminator_{i}",
                NLayerDiscriminator(self.input_nc, ndf, n_layers_D, spectral_norm, norm),
            )
        init_weights(self, init_type, init_gain)
        # How the training form computes the first convs' semantic channels (not configuration:
        # same outputs): once per shared layout, as look-ups on one-hot maps; False: the stacked input.
        self.semantic_lookups = True
        self._reused_semantics: list[tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]] | None = None

    @property
    def input_nc(self) -> int:
        """Semantic channels + image channels."""
        cfg = self.config
        return cfg.label_nc + int(cfg.contain_dontcare_label) + int(cfg.use_instance) + cfg.output_nc

    def forward(
        self, x: torch.Tensor | None = None, images: torch.Tensor | None = None, semantics: torch.Tensor | None = None
    ) -> list[list[torch.Tensor]]:
        """x (N, semantic_nc + 3, H, W) -> [[layer outputs] per scale].

        Training form, ``D(images=images, semantics=semantics)``: images (k * N, 3, H, W), k batches
        (fake and real) that share the layouts ``semantics`` (N, semantic_nc, H, W); the outputs
        are those of ``D(cat([semantics repeated k times, images], 1))``. Input gradients reach
        ``images`` only (the semantics must need none): nobody computes the semantic channels'
        input gradient, which the losses never use. With ``semantic_lookups`` the first convs'
        semantic term is computed once per layout (a look-up on one-hot maps) and the stacked input
        is never built.
        """
        if x is None:
            return self._forward_training(images, semantics)
        if images is not None or semantics is not None:
            raise ValueError("pass either x, or images and semantics (the training form)")
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(
                f"the discriminator expects cat([semantics, image], 1) with {self.input_nc} channels, got shape {tuple(x.shape)}"
            )
        return self._scales(x)

    def _forward_training(self, images: torch.Tensor | None, semantics: torch.Tensor | None) -> list[list[torch.Tensor]]:
        cfg = self.config
        labels = self.input_nc - cfg.output_nc
        if images is None or semantics is None:
            raise ValueError("the discriminator's training form needs both images and semantics")
        n = semantics.shape[0]
        if (
            semantics.dim() != 4 or semantics.shape[1] != labels or semantics.requires_grad or images.dim() != 4
            or images.shape[1] != cfg.output_nc or images.shape[2:] != semantics.shape[2:]
            or n == 0 or images.shape[0] % n
        ):
            raise ValueError(
                f"the training form expects semantics (N, {labels}, H, W) that need no gradient and images "
                f"(k*N, {cfg.output_nc}, H, W); got {tuple(semantics.shape)} and {tuple(images.shape)}"
            )
        if not self.semantic_lookups:
            x = stacked_input(semantics, images.detach())
            return self._scales(x, images if images.requires_grad else None)
        n_classes = cfg.label_nc + int(cfg.contain_dontcare_label)
        keys, pyramid = self._semantic_pyramid(semantics, n_classes)
        results = []
        for i in range(cfg.num_D):
            d = getattr(self, f"discriminator_{i}")
            # pooled semantics are fractions: a plain conv from the second scale on
            results.append(d.forward_shared(pyramid[i], images, keys if i == 0 else None, n_classes, cfg.use_instance))
            if i + 1 < cfg.num_D:
                images = _downsample(images)
        return results

    def _semantic_pyramid(self, semantics: torch.Tensor, n_classes: int) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(label keys (N, H, W) of a one-hot map, else None; the semantics at every scale), once
        per semantics tensor inside ``reusing_semantics``."""
        for cached, keys, pyramid in self._reused_semantics or ():
            if cached is semantics:
                return keys, pyramid
        keys = label_keys(semantics, n_classes, self.config.use_instance)
        keys = None if keys is None else keys[:, 0].long()
        pyramid = [semantics]
        for _ in range(self.config.num_D - 1):
            pyramid.append(_downsample(pyramid[-1]))
        if self._reused_semantics is not None:
            self._reused_semantics.append((semantics, keys, pyramid))
        return keys, pyramid

    @contextmanager
    def reusing_semantics(self) -> Iterator[None]:
        """Training-form calls inside compute a semantics tensor's label keys and pooled scales
        once: a training step's generator and discriminator steps share them. The semantics must
        not change in place meanwhile (the cache holds the tensor, so identity is safe)."""
        outer = self._reused_semantics
        self._reused_semantics = [] if outer is None else outer
        try:
            yield
        finally:
            self._reused_semantics = outer

    def _scales(self, x: torch.Tensor, images: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """Every scale's features for the full input x (``images``: its image channels as their own
        tensor, for the input gradient: ``_ImageGradConv``)."""
        results = []
        for i in range(self.config.num_D):
            results.append(getattr(self, f"discriminator_{i}")(x, images))
            if i + 1 < self.config.num_D:
                x = _downsample(x)
                if images is not None:
                    images = _downsample(images)
        return results

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MultiscaleDiscriminator":
        """The reference discriminator of a preset, with overrides."""
        from .presets import build_from_preset, discriminator_kwargs

        return build_from_preset(cls, discriminator_kwargs, name, overrides)

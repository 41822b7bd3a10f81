"""The inference-only fast generator: per-pattern SPADE (``spade_core.models.patterns``) with
folded eval-mode norms, Winograd / im2col convs and reused buffers (see ``spade_core.fast``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.blocks import SPADEResnetBlock
from ..models.generator import SPADEGenerator
from ..models.layers import has_spectral_norm
from ..models.normalization import SPADE
from ..models.patterns import (
    GATHER_CHUNK,
    LabelLayout,
    PatternPlan,
    is_channels_last,
    modulate_into,
    modulate_rows_into,
    one_hot_table,
    pattern_rows,
    per_pixel,
    tap_matrix,
    window_rows,
)
from .winograd import direct_weight, winograd_conv3x3, winograd_weight, workspace_bytes
from .workspace import Workspace

# At dense resolutions, mlp_shared runs as a conv over the one-hot map (as in the plain forward)
# when the model has at most this many semantic channels, else as a look-up per distinct window.
SHARED_CONV_MAX_CHANNELS = 32
# Main-path convs on CPU maps of at most this many pixels run as im2col + one matmul.
IM2COL_MAX_PIXELS = 256
# 3x3 convs run as Winograd F(2x2, 3x3) (spade_core.winograd) when in * out channels reach
# WINOGRAD_MIN_PRODUCT and the map has at least WINOGRAD_MIN_TILES 2x2 tiles (or a quarter of
# that for layers reaching WINOGRAD_WIDE_PRODUCT): with fewer tiles, reading the 16/9 larger
# transformed weight costs more than the saved multiplies. Above WINOGRAD_MAX_TILES (128x128
# maps) the transforms' memory traffic costs more than they save. Measured on a 2-core AVX-512 CPU.
WINOGRAD_MIN_PRODUCT = 2**16
WINOGRAD_WIDE_PRODUCT = 2**19
WINOGRAD_MIN_TILES = 64
WINOGRAD_MAX_TILES = 64 * 64
# On the CPU, blocks on maps of at least this many pixels run channels-last: SPADE's per-pixel
# scale and shift are then one contiguous row per pixel (gathered 3-5x faster than NCHW's
# per-channel gathers), the pattern tables need no transpose and Winograd no pixel shuffles
# (10-25% faster from 32x32 up; slower below, where NCHW stays). oneDNN's direct NHWC convs are
# as fast or faster (64-128 channels at 256x256: 1.3-2x) and round a little worse per conv (max
# error vs float64 ~1e-5 instead of ~2e-6; Winograd rounds the same in both layouts), which the
# output does not show: 2.3e-5 / 2.8e-5 vs 2.1e-5 / 2.9e-5 NCHW at ADE20K 256 (two sample layouts).
CHANNELS_LAST_MIN_PIXELS = 32 * 32


class _Call:
    """Per-forward state: the label layout (plans per resolution), the thread's workspace and
    one-hot maps of dense resolutions (for models whose mlp_shared runs as a conv)."""

    def __init__(self, layout: LabelLayout, workspace: Workspace) -> None:
        self.layout, self.workspace = layout, workspace
        self._one_hot: dict[tuple, torch.Tensor] = {}

    def plan(self, size: tuple[int, int], k: int) -> PatternPlan:
        return self.layout.plan(size, k)

    def buffer(self, name: str, like: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """A reused (N, C, h, w) buffer shaped like ``like`` (``channels`` C if given), in its memory format."""
        n, c, h, w = like.shape
        c = c if channels is None else channels
        if is_channels_last(like):
            return self.workspace.get(name, (n, h, w, c), like).permute(0, 3, 1, 2)
        return self.workspace.get(name, (n, c, h, w), like)

    def one_hot(self, plan: PatternPlan, dtype: torch.dtype, channels_last: bool = False) -> torch.Tensor:
        """The semantics at ``plan``'s resolution (N, semantic_nc, h, w), as the plain forward resizes them."""
        key = (plan.shape, dtype, channels_last)
        if key not in self._one_hot and channels_last:
            self._one_hot[key] = self.one_hot(plan, dtype).contiguous(memory_format=torch.channels_last)
        if key not in self._one_hot:
            n_classes, keys = self.layout.n_classes, plan.keys
            edge = keys >= n_classes
            sem = F.one_hot(torch.where(edge, keys - n_classes, keys), n_classes).permute(0, 3, 1, 2)
            if self.layout.use_edge:
                sem = torch.cat([sem, edge[:, None].long()], 1)
            self._one_hot[key] = sem.to(dtype).contiguous()
        return self._one_hot[key]


def _upsample2(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling into ``out`` (equal to ``F.interpolate(x, scale_factor=2)``), both NCHW
    or both channels-last: each column twice into the even rows, then the even rows into the odd ones."""
    n, c, h, w = x.shape
    if is_channels_last(out):
        rows = out.permute(0, 2, 3, 1).view(n, h, 2, w, 2, c)
        rows[:, :, 0].copy_(x.permute(0, 2, 3, 1)[:, :, :, None].expand(n, h, w, 2, c))
        rows[:, :, 1].copy_(rows[:, :, 0])
        return out
    rows = out.view(n, c, h, 2, w, 2)
    rows[:, :, :, 0].copy_(x[..., None].expand(n, c, h, w, 2))
    rows[:, :, :, 1].copy_(rows[:, :, :, 0])
    return out


def _effective_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight an eval-mode forward uses: W / sigma with the stored u, v for spectral norm."""
    if not has_spectral_norm(conv):
        return conv.weight.detach().clone()
    weight = conv.weight_orig.detach()
    matrix = weight.reshape(weight.shape[0], -1)
    sigma = torch.dot(conv.weight_u.detach(), torch.mv(matrix, conv.weight_v.detach()))
    return weight / sigma


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A stride-1 "same" conv; small CPU maps use im2col + one matmul per sample.

    At a few hundred pixels the matmul reads each weight once and beats oneDNN's direct conv.
    Channels-last maps (large ones: see CHANNELS_LAST_MIN_PIXELS) go to oneDNN in their format.
    """
    n, _, h, w = x.shape
    k = weight.shape[-1]
    if x.device.type != "cpu" or h * w > IM2COL_MAX_PIXELS or k == 1 or not x.is_contiguous():
        return F.conv2d(x, weight, bias, padding=k // 2)
    columns = F.unfold(x, k, padding=k // 2)  # (N, Cin*k*k, h*w)
    matrix = weight.reshape(weight.shape[0], -1)
    out = x.new_empty(n, matrix.shape[0], h * w)
    for i in range(n):
        if bias is None:
            torch.mm(matrix, columns[i], out=out[i])
        else:
            torch.addmm(bias[:, None], matrix, columns[i], out=out[i])
    return out.view(n, -1, h, w)


def _use_winograd(weight_shape: tuple[int, ...], map_size: tuple[int, int], batch: int = 1) -> bool:
    """Whether a 3x3 conv of this shape on (batch, map_size) maps is faster as Winograd (see above)."""
    out_channels, in_channels, kh, kw = weight_shape
    product = in_channels * out_channels
    tiles = batch * ((map_size[0] + 1) // 2) * ((map_size[1] + 1) // 2)
    wide_enough = tiles >= WINOGRAD_MIN_TILES or (product >= WINOGRAD_WIDE_PRODUCT and tiles >= WINOGRAD_MIN_TILES // 4)
    return (kh, kw) == (3, 3) and product >= WINOGRAD_MIN_PRODUCT and wide_enough and tiles <= WINOGRAD_MAX_TILES


def _winograd_dtype(x: torch.Tensor) -> bool:
    """Winograd's transforms add and subtract activations: only in float32/float64 do they round
    no worse than a direct conv (low precision takes the direct conv)."""
    return x.dtype in (torch.float32, torch.float64)


class _Conv(nn.Module):
    """A stride-1 "same" conv with fixed (folded) weights, stored for Winograd when ``winograd``
    (the direct weight is then rebuilt, once, for dtypes Winograd skips)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, winograd: bool = False) -> None:
        super().__init__()
        self.register_buffer("weight", None if winograd else weight.contiguous(), persistent=False)
        self.register_buffer("winograd", winograd_weight(weight) if winograd else None, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)
        self._direct: tuple[tuple, torch.Tensor] | None = None

    def _direct_weight(self) -> torch.Tensor:
        u = self.winograd
        key = (u.data_ptr(), u.dtype, u.device)  # a snapshot: rebuilt only when .to() moves it
        if self._direct is None or self._direct[0] != key:
            self._direct = (key, direct_weight(u.float()).to(u.dtype))
        return self._direct[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.winograd is None:
            return _conv2d(x, self.weight, self.bias)
        if _winograd_dtype(x):
            return winograd_conv3x3(x, self.winograd, self.bias)
        return F.conv2d(x, self._direct_weight(), self.bias, padding=1)


class _FastSPADE(nn.Module):
    """SPADE with its one-hot conv as a look-up and gamma/beta (and an eval batch norm) merged."""

    def __init__(self, spade: SPADE, n_classes: int, use_edge: bool) -> None:
        super().__init__()
        shared = spade.mlp_shared[0]
        self.kernel_size = shared.kernel_size[0]
        self.channels = spade.mlp_gamma.out_channels
        table = one_hot_table(shared.weight.detach(), n_classes, use_edge).contiguous()
        self.register_buffer("shared_table", table, persistent=False)
        self.register_buffer("shared_bias", shared.bias.detach().clone(), persistent=False)
        self.n_classes, self.use_edge = n_classes, use_edge
        small = shared.in_channels <= SHARED_CONV_MAX_CHANNELS
        self.register_buffer("shared_weight", shared.weight.detach().clone() if small else None, persistent=False)
        self._conv_weight: tuple[tuple, torch.Tensor] | None = None

        dtype = shared.weight.dtype
        w_gamma = spade.mlp_gamma.weight.detach().double()
        w_beta = spade.mlp_beta.weight.detach().double()
        b_scale = 1 + spade.mlp_gamma.bias.detach().double()  # the "1 +" of x_norm * (1 + gamma)
        b_beta = spade.mlp_beta.bias.detach().double()
        norm = spade.param_free_norm
        self.eps = norm.eps
        if getattr(norm, "running_mean", None) is not None and norm.track_running_stats:
            # eval-mode batch norm (x - mean) * inv, folded into scale and shift
            inv = (norm.running_var.detach().double() + norm.eps).rsqrt()
            mean_inv = norm.running_mean.detach().double() * inv
            w_gamma, w_beta = w_gamma * inv[:, None, None, None], w_beta - mean_inv[:, None, None, None] * w_gamma
            b_scale, b_beta = b_scale * inv, b_beta - mean_inv * b_scale
            self.norm = "folded"
        else:
            self.norm = "instance" if isinstance(norm, nn.InstanceNorm2d) else "batch"
        # (hidden, k*k * 2C): one matmul gives every hidden row's contribution at every tap
        taps = tap_matrix(w_gamma, w_beta)
        self.register_buffer("mod_taps", taps.to(dtype).contiguous(), persistent=False)
        self.register_buffer("mod_bias", torch.cat([b_scale, b_beta]).to(dtype), persistent=False)

    def _hidden_rows(self, plan: PatternPlan) -> torch.Tensor:
        """mlp_shared output per distinct window (n_hidden, hidden)."""
        return F.relu(window_rows(plan, self.shared_table, self.shared_bias))

    def _mod_conv_weight(self) -> torch.Tensor:
        """Merged gamma/beta weight in conv layout (2C, hidden, k, k), built on first dense use."""
        w, k = self.mod_taps, self.kernel_size
        key = (w.data_ptr(), w.dtype, w.device)
        if self._conv_weight is None or self._conv_weight[0] != key:
            weight = w.view(w.shape[0], k * k, -1).permute(2, 0, 1).reshape(-1, w.shape[0], k, k).contiguous()
            self._conv_weight = (key, weight)
        return self._conv_weight[1]

    def pattern_table(self, plan: PatternPlan) -> torch.Tensor:
        """(n_patterns, 2C): each distinct pattern's scale then shift (pattern plans)."""
        return pattern_rows(plan, self._hidden_rows(plan), self.mod_taps, self.mod_bias)

    def dense_scale_shift(self, plan: PatternPlan, call: _Call, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel (scale, shift), each (N, C, h, w), for dense plans."""
        c = self.channels
        # the hidden map, then one merged conv (no per-pixel im2col gathers)
        if self.shared_weight is not None:
            sem = call.one_hot(plan, self.shared_weight.dtype, channels_last)
            hidden_map = F.relu(F.conv2d(sem, self.shared_weight, self.shared_bias, padding=self.kernel_size // 2))
        else:
            hidden_map = per_pixel(self._hidden_rows(plan), plan.hidden_ids, channels_last)
        out = F.conv2d(hidden_map, self._mod_conv_weight(), self.mod_bias, padding=self.kernel_size // 2)
        return out[:, :c], out[:, c:]

    def forward(self, x: torch.Tensor, call: _Call, out: torch.Tensor | None = None) -> torch.Tensor:
        """Modulated (N, C, h, w) ``x * scale + shift`` in x's memory format: into ``out`` (which may
        be ``x`` itself; ignored when its format differs), except for NCHW dense plans, which write
        over their freshly computed shift."""
        if self.norm == "instance":
            x = F.instance_norm(x, eps=self.eps)
        elif self.norm == "batch":
            x = F.batch_norm(x, None, None, training=True, eps=self.eps)
        channels_last = is_channels_last(x)
        if channels_last and out is not None and not is_channels_last(out):
            out = None
        plan = call.plan(x.shape[2:], self.kernel_size)
        if not plan.sparse:
            scale, shift = self.dense_scale_shift(plan, call, channels_last)
            if channels_last:
                return torch.addcmul(shift, x, scale, out=out if out is not None else torch.empty_like(x))
            return shift.addcmul_(x, scale)
        table = self.pattern_table(plan)
        if channels_last:
            scratch = call.workspace.get("modulation", (GATHER_CHUNK,), x) if x.device.type == "cpu" else None
            return modulate_rows_into(x, table, plan.pattern_ids, out if out is not None else torch.empty_like(x), buffer=scratch)
        if out is None or not out.is_contiguous():
            out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        block = max(GATHER_CHUNK, x[0, 0].numel()) if x.device.type == "cpu" else x[0].numel()
        scratch = call.workspace.get("modulation", (2 * block,), x)
        return modulate_into(x, table.t().contiguous(), plan.pattern_ids, out, buffer=scratch)


class _FastBlock(nn.Module):
    """SPADEResnetBlock with folded conv weights and fast SPADE layers; ``map_size`` (the block's
    map at the model's native size) picks the convs that run as Winograd."""

    def __init__(self, block: SPADEResnetBlock, n_classes: int, use_edge: bool, map_size: tuple[int, int]) -> None:
        super().__init__()
        self.learned_shortcut = block.learned_shortcut
        for name in ("conv_0", "conv_1"):
            weight = _effective_weight(getattr(block, name))
            conv = _Conv(weight, getattr(block, name).bias, _use_winograd(tuple(weight.shape), map_size))
            setattr(self, name, conv)
        self.norm_0 = _FastSPADE(block.norm_0, n_classes, use_edge)
        self.norm_1 = _FastSPADE(block.norm_1, n_classes, use_edge)
        if self.learned_shortcut:
            self.register_buffer("shortcut_weight", _effective_weight(block.conv_s).flatten(1), persistent=False)
            self.norm_s = _FastSPADE(block.norm_s, n_classes, use_edge)

    def _shortcut(self, x: torch.Tensor, call: _Call) -> torch.Tensor:
        """conv_s (1x1, no bias) of norm_s(x), as matmuls into the workspace: one per sample
        (NCHW), or one for the whole batch (channels-last: pixels are the rows)."""
        n, c, h, w = x.shape
        modulated = self.norm_s(x, call, call.buffer("modulated", x))
        out = call.buffer("shortcut", x, self.shortcut_weight.shape[0])
        if is_channels_last(modulated) and is_channels_last(out):
            pixels = modulated.permute(0, 2, 3, 1).reshape(-1, c)
            torch.mm(pixels, self.shortcut_weight.t(), out=out.permute(0, 2, 3, 1).view(pixels.shape[0], -1))
            return out
        out = out.contiguous()
        for i in range(n):
            torch.mm(self.shortcut_weight, modulated[i].reshape(c, h * w), out=out[i].view(-1, h * w))
        return out

    def forward(self, x: torch.Tensor, call: _Call) -> torch.Tensor:
        x_s = self._shortcut(x, call) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu_(self.norm_0(x, call, call.buffer("modulated", x)), 0.2))
        dx = self.conv_1(F.leaky_relu_(self.norm_1(dx, call, dx), 0.2))
        return dx.add_(x_s)


class FastSPADEGenerator(nn.Module):
    """Inference-only twin of a ``SPADEGenerator``: same ``forward(semantics, z=None)``, same outputs.

    A snapshot of the generator's eval-mode weights: run ``optimize_generator`` again after
    changing them. ``self.generator`` is the plain path (also used for non-one-hot inputs).
    Blocks follow the generator's public ``schedule()``.
    """

    def __init__(self, generator: SPADEGenerator) -> None:
        super().__init__()
        cfg = generator.config
        self.generator = generator
        self.n_classes = cfg.label_nc + int(cfg.contain_dontcare_label)
        self.use_edge = bool(cfg.use_instance)
        # Dense resolutions need the look-up ids only when mlp_shared is too wide to run as a conv.
        self.needs_lookups = generator.semantic_nc > SHARED_CONV_MAX_CHANNELS
        if not cfg.use_vae:
            fc = generator.fc
            table = one_hot_table(fc.weight.detach(), self.n_classes, self.use_edge).contiguous()
            self.register_buffer("fc_table", table, persistent=False)
            self.register_buffer("fc_bias", fc.bias.detach().clone(), persistent=False)
        self.blocks = nn.ModuleDict()
        self.upsample_before: dict[str, bool] = {}
        map_size = (generator.sh, generator.sw)
        for step in generator.schedule():
            if step.upsample:
                map_size = (2 * map_size[0], 2 * map_size[1])
            self.blocks[step.name] = _FastBlock(step.block, self.n_classes, self.use_edge, map_size)
            self.upsample_before[step.name] = step.upsample
        self.conv_img = _Conv(generator.conv_img.weight.detach().clone(), generator.conv_img.bias)
        self._workspace = Workspace()

    @property
    def config(self):
        """The wrapped generator's config."""
        return self.generator.config

    def held_bytes(self) -> int:
        """Bytes kept between calls: folded weights (buffers not shared with the generator) and reused buffers."""
        plain = {t.data_ptr() for t in self.generator.state_dict().values()}
        weights = sum(b.numel() * b.element_size() for b in self.buffers() if b.data_ptr() not in plain)
        return weights + self._workspace.nbytes() + workspace_bytes()

    @staticmethod
    def _runs_channels_last(x: torch.Tensor, size: tuple[int, int]) -> bool:
        """Whether a block on maps of ``size`` runs channels-last (see CHANNELS_LAST_MIN_PIXELS)."""
        return x.device.type == "cpu" and size[0] * size[1] >= CHANNELS_LAST_MIN_PIXELS

    def layout(self, semantics: torch.Tensor) -> LabelLayout:
        """The label layout of ``semantics`` (keys None when it is not an exact one-hot map)."""
        return LabelLayout(semantics, self.n_classes, self.use_edge, lookups=self.needs_lookups)

    @torch.no_grad()
    def forward(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """semantics (N, semantic_nc, H, W) float one-hot; z (N, z_dim) or None -> (N, 3, H, W) in [-1, 1]."""
        g = self.generator
        g.check_inputs(semantics, z)
        layout = self.layout(semantics)
        if layout.keys is None:
            return g(semantics, z)
        call = _Call(layout, self._workspace)
        up = g.size_multiple
        if g.config.use_vae:
            if z is None:
                z = torch.randn(semantics.shape[0], g.config.z_dim, device=semantics.device, dtype=semantics.dtype)
            x = g.style_map(z, (semantics.shape[2] // up, semantics.shape[3] // up))
        else:
            start = call.plan((semantics.shape[2] // up, semantics.shape[3] // up), 3)
            if start.key_index is None:
                x = g.fc(call.one_hot(start, self.fc_bias.dtype))
            else:
                x = per_pixel(window_rows(start, self.fc_table, self.fc_bias), start.hidden_ids)
        x = x.contiguous()

        for name, block in self.blocks.items():
            size = (x.shape[2] * 2, x.shape[3] * 2) if self.upsample_before[name] else tuple(x.shape[2:])
            if self._runs_channels_last(x, size) and not is_channels_last(x):
                x = x.contiguous(memory_format=torch.channels_last)  # before upsampling: a quarter of the copy
            if self.upsample_before[name]:
                n, c = x.shape[:2]
                if is_channels_last(x):
                    upsampled = self._workspace.get("upsampled", (n, *size, c), x).permute(0, 3, 1, 2)
                else:
                    upsampled = self._workspace.get("upsampled", (n, c, *size), x)
                x = _upsample2(x, upsampled)
            x = block(x, call)
        out = torch.tanh_(self.conv_img(F.leaky_relu_(x, 0.2)))
        self._workspace.trim()
        return out.contiguous()


def optimize_generator(generator: SPADEGenerator) -> FastSPADEGenerator:
    """An inference-only module with ``generator``'s ``forward(semantics, z=None)`` and outputs.

    Uses eval-mode semantics (running batch-norm statistics, no spectral-norm power iteration)
    whatever mode ``generator`` is in; keeps ``generator`` as ``.generator``, the plain path.
    """
    if not isinstance(generator, SPADEGenerator):
        raise ValueError(f"optimize_generator expects a SPADEGenerator, got {type(generator).__name__}")
    return FastSPADEGenerator(generator).to(generator.device)

"""Exact fast inference for ``SPADEGenerator``: ``optimize_generator(generator) -> nn.Module``.

Three identities make the generator cheaper without changing what it computes (only the float
rounding differs, well within 1e-4 in float32):

* A convolution over a one-hot map is a table look-up. SPADE's ``mlp_shared`` at a pixel is its
  bias plus one kernel column per tap, picked by the label under that tap.
* SPADE's scale and shift at a pixel depend only on the labels in the (2k-1) x (2k-1) window
  around it (k = SPADE kernel size, image border included). They are computed once per distinct
  window (a "pattern") and gathered per pixel. Inside a region every pixel has the same pattern,
  and real layouts have few distinct patterns along their borders, so the ``mlp_gamma`` /
  ``mlp_beta`` work shrinks to a few rows. A pattern's value is linear in the hidden vectors of
  its window: one small matmul gives each distinct hidden vector's contribution per tap, and a
  summed gather (``embedding_bag``) adds the taps up.
* Eval-mode spectral norm and batch norm are fixed linear maps: they are folded into plain
  weights, and gamma/beta become one merged layer.

A resolution whose layout has too many distinct windows (noise-like maps) goes dense: the hidden
map (looked up, or a conv over the one-hot map for models with few channels) and one merged
gamma/beta conv, which is never slower than the plain layer. Inputs that are not exact one-hot
maps go through the plain generator.

The main image path runs the plain one's convolutions, except that wide 3x3 convs on small maps
(SPADE's 256-1024-channel convs at 8x8-64x64) run as Winograd F(2x2, 3x3)
(``spade_core.winograd``: 2.25x fewer multiplies, float32 error of the same order), maps of a few
hundred pixels use im2col + one matmul, and 1x1 shortcuts are plain matmuls. Activations stay
NCHW (oneDNN's channels-last kernels round noticeably worse in float32). Large per-call buffers
(modulated maps, upsampled maps, shortcuts) are reused between calls (``spade_core.workspace``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .models.blocks import SPADEResnetBlock
from .models.generator import SPADEGenerator
from .models.layers import has_spectral_norm
from .models.normalization import SPADE
from .winograd import direct_weight, winograd_conv3x3, winograd_weight
from .workspace import Workspace

# A resolution uses the pattern path when its estimated cost, in units of one dense pixel's
# gamma/beta matmul, is below the dense path's (one unit per pixel): each distinct mlp_shared
# window costs one unit (its per-tap products) and each distinct pattern about a third (the
# summed gather of its taps); the margin leaves the dense path where the two are close.
PATTERN_COST = 0.3
SPARSE_MARGIN = 0.9
# It also requires that the per-tap products, rows * k * k, stay within this many times the pixel
# count (plus a fixed allowance), so that memory never grows beyond the dense path's order.
SPARSE_MAX_MEMORY = 2.0
SPARSE_MEMORY_ALLOWANCE = 4096
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
# Per-pixel modulation gathers scale and shift rows in chunks of about this many elements, so
# that they stay in cache between the gather and the multiply-add.
MODULATE_CHUNK = 2**18
_MAX_CODE = 2**62


def _dense_ids(codes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Ids 0..n-1 of the distinct values of ``codes`` (same shape) and their count n."""
    values, inverse = torch.unique(codes.reshape(-1), return_inverse=True)
    return inverse.view(codes.shape), values.numel()


def _tuple_ids(columns: list[torch.Tensor], bound: int) -> tuple[torch.Tensor, int]:
    """Ids of the distinct tuples formed elementwise by ``columns`` (values in [0, bound))."""
    ids, n = columns[0], bound
    for column in columns[1:]:
        if n * bound > _MAX_CODE:
            ids, n = _dense_ids(ids)
        ids, n = ids * bound + column, n * bound
    return _dense_ids(ids)


def _window_ids(grid: torch.Tensor, bound: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the distinct k x k windows of ``grid`` (N, H+k-1, W+k-1), values in [0, bound).

    Returns ids (N, H, W) and the windows themselves (count, k*k), taps in row-major order.
    Uniform windows (one value throughout: region interiors) take the first ids without sorting;
    only the mixed ones are sorted.
    """
    n, height, width = grid.shape[0], grid.shape[1] - k + 1, grid.shape[2] - k + 1
    r = k // 2
    as_float = grid[:, None].float()  # exact: bound < 2**24
    uniform = (F.max_pool2d(as_float, k, 1) == -F.max_pool2d(-as_float, k, 1))[:, 0]
    center = grid[:, r : r + height, r : r + width]
    present = torch.bincount(center[uniform], minlength=bound) > 0
    uniform_values = present.nonzero()[:, 0]
    n_uniform = uniform_values.numel()
    uniform_id = torch.cumsum(present, 0) - 1
    ids = uniform_id[center]

    mixed = (~uniform).nonzero()  # (M, 3): batch, y, x
    taps = torch.arange(k, device=grid.device)
    dy, dx = taps.repeat_interleave(k), taps.repeat(k)
    windows = grid[mixed[:, :1], mixed[:, 1:2] + dy, mixed[:, 2:3] + dx]  # (M, k*k)
    rows = [uniform_values[:, None].expand(n_uniform, k * k)]
    if len(mixed):
        in_use = torch.bincount(windows.reshape(-1), minlength=bound) > 0
        compact = torch.cumsum(in_use, 0) - 1
        mixed_ids, n_mixed = _tuple_ids(list(compact[windows].unbind(1)), int(in_use.sum()))
        first = torch.empty(n_mixed, dtype=torch.long, device=grid.device)
        first.scatter_(0, mixed_ids, torch.arange(len(mixed), device=grid.device))
        ids[mixed[:, 0], mixed[:, 1], mixed[:, 2]] = n_uniform + mixed_ids
        rows.append(windows[first])
    return ids.view(n, height, width), torch.cat(rows)


@dataclass
class _Plan:
    """Per-resolution look-up structure, shared by every SPADE layer at that resolution.

    Ids index rows of per-layer tables; "hidden" rows are mlp_shared outputs of distinct k x k
    label windows, with one extra zero row (id ``n_hidden``) for positions outside the image.
    """

    shape: tuple[int, int, int]  # (N, h, w)
    hidden_ids: torch.Tensor | None  # (N, h, w) id of each pixel's k x k label window (None: skipped)
    key_index: torch.Tensor | None  # (n_hidden, k*k) bag indices into a one-hot conv table
    pattern_ids: torch.Tensor | None  # (N*h*w,) id of each pixel's window of hidden ids (sparse)
    pattern_index: torch.Tensor | None  # (n_patterns, k*k) bag indices into per-tap products (sparse)
    keys: torch.Tensor  # (N, h, w) label keys at this resolution
    workspace: Workspace
    one_hot_cache: dict = field(default_factory=dict)

    def one_hot(self, n_classes: int, use_edge: bool, dtype: torch.dtype) -> torch.Tensor:
        """The semantics at this resolution (N, semantic_nc, h, w), as the plain forward resizes them."""
        if dtype not in self.one_hot_cache:
            edge = self.keys >= n_classes
            sem = F.one_hot(torch.where(edge, self.keys - n_classes, self.keys), n_classes).permute(0, 3, 1, 2)
            if use_edge:
                sem = torch.cat([sem, edge[:, None].long()], 1)
            self.one_hot_cache[dtype] = sem.to(dtype).contiguous()
        return self.one_hot_cache[dtype]


def _make_plan(
    keys: torch.Tensor, size: tuple[int, int], k: int, n_keys: int, workspace: Workspace, lookups: bool = True
) -> _Plan:
    """Plan for feature maps of ``size``; ``keys`` (N,1,H,W) float label keys at full resolution.

    Without ``lookups`` (mlp_shared can run as a conv), a resolution whose windows are nearly all
    mixed goes dense at once, skipping the sorting.
    """
    keys = F.interpolate(keys, size=size, mode="nearest")[:, 0].long()  # (N, h, w), legacy nearest
    r = k // 2
    taps = torch.arange(k * k, device=keys.device)
    grid = F.pad(keys, (r, r, r, r), value=n_keys - 1)  # the last key stands for "outside"
    if not lookups:
        as_float = grid[:, None].float()
        mixed = int((F.max_pool2d(as_float, k, 1) != -F.max_pool2d(-as_float, k, 1)).sum())
        if mixed > SPARSE_MARGIN * keys.numel():
            return _Plan(tuple(keys.shape), None, None, None, None, keys, workspace)
    hidden_ids, key_windows = _window_ids(grid, n_keys, k)
    n_hidden = key_windows.shape[0]
    key_index = key_windows * (k * k) + taps
    pixels = hidden_ids.numel()
    rows = n_hidden + 1
    hidden_grid = F.pad(hidden_ids, (r, r, r, r), value=n_hidden)
    sparse = rows <= SPARSE_MARGIN * pixels and pixels + rows < 2**24
    sparse = sparse and rows * k * k <= SPARSE_MAX_MEMORY * pixels + SPARSE_MEMORY_ALLOWANCE
    if sparse:
        pattern_ids, hidden_windows = _window_ids(hidden_grid, rows, k)
        sparse = rows + PATTERN_COST * hidden_windows.shape[0] <= SPARSE_MARGIN * pixels
    if not sparse:
        return _Plan(tuple(keys.shape), hidden_ids, key_index, None, None, keys, workspace)
    pattern_index = hidden_windows * (k * k) + taps  # per-tap products: row id * k*k + tap
    return _Plan(tuple(keys.shape), hidden_ids, key_index, pattern_ids.reshape(-1), pattern_index, keys, workspace)


def _upsample2(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling into ``out`` (equal to ``F.interpolate(x, scale_factor=2)``): each
    column twice into the even rows, then the even rows into the odd ones."""
    n, c, h, w = x.shape
    rows = out.view(n, c, h, 2, w, 2)
    rows[:, :, :, 0].copy_(x[..., None].expand(n, c, h, w, 2))
    rows[:, :, :, 1].copy_(rows[:, :, :, 0])
    return out


def _per_pixel(columns: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(C, N*h*w) -> (N, C, h, w) view (contiguous when N == 1)."""
    n, h, w = shape
    return columns.view(-1, n, h, w).transpose(0, 1)


def _one_hot_table(weight: torch.Tensor, n_classes: int, use_edge: bool) -> torch.Tensor:
    """Conv weight (out, semantic_nc, k, k) -> (n_keys * k*k, out) rows, key * k*k + tap.

    Key = class + n_classes * edge; the last key is outside the image (zero rows).
    """
    taps = weight.flatten(2).permute(1, 2, 0)  # (semantic_nc, k*k, out)
    table = taps[:n_classes]
    if use_edge:
        table = torch.cat([table, table + taps[n_classes]])
    table = torch.cat([table, torch.zeros_like(taps[:1])])
    return table.reshape(-1, weight.shape[0]).contiguous()


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
    NCHW throughout: oneDNN's channels-last kernels round noticeably worse in float32.
    """
    n, _, h, w = x.shape
    k = weight.shape[-1]
    if x.device.type != "cpu" or h * w > IM2COL_MAX_PIXELS or k == 1:
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
        key = (u.data_ptr(), 0 if u.is_inference() else u._version, u.dtype, u.device)
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
        self.register_buffer("shared_table", _one_hot_table(shared.weight.detach(), n_classes, use_edge), persistent=False)
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
        weight = torch.cat([w_gamma, w_beta]).flatten(2).permute(1, 2, 0)
        self.register_buffer("mod_taps", weight.reshape(weight.shape[0], -1).to(dtype).contiguous(), persistent=False)
        self.register_buffer("mod_bias", torch.cat([b_scale, b_beta]).to(dtype), persistent=False)

    def _hidden_rows(self, plan: _Plan) -> torch.Tensor:
        """mlp_shared output per distinct window, plus a zero row for outside the image."""
        hidden = F.relu(F.embedding_bag(plan.key_index, self.shared_table, mode="sum") + self.shared_bias)
        return torch.cat([hidden, hidden.new_zeros(1, hidden.shape[1])])  # (n_hidden + 1, hidden)

    def _mod_conv_weight(self) -> torch.Tensor:
        """Merged gamma/beta weight in conv layout (2C, hidden, k, k), built on first dense use."""
        w, k = self.mod_taps, self.kernel_size
        key = (w.data_ptr(), 0 if w.is_inference() else w._version, w.dtype, w.device)
        if self._conv_weight is None or self._conv_weight[0] != key:
            weight = w.view(w.shape[0], k * k, -1).permute(2, 0, 1).reshape(-1, w.shape[0], k, k).contiguous()
            self._conv_weight = (key, weight)
        return self._conv_weight[1]

    def pattern_table(self, plan: _Plan) -> torch.Tensor:
        """(2C, n_patterns): scale rows then shift rows of each distinct pattern (pattern plans)."""
        hidden = self._hidden_rows(plan)
        per_tap = torch.mm(hidden, self.mod_taps).view(-1, 2 * self.channels)  # row id * k*k + tap
        table = F.embedding_bag(plan.pattern_index, per_tap, mode="sum") + self.mod_bias
        return table.t().contiguous()

    def dense_scale_shift(self, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel (scale, shift), each (N, C, h, w), for dense plans."""
        c = self.channels
        # the hidden map, then one merged conv (no per-pixel im2col gathers)
        if self.shared_weight is not None:
            sem = plan.one_hot(self.n_classes, self.use_edge, self.shared_weight.dtype)
            hidden_map = F.relu(F.conv2d(sem, self.shared_weight, self.shared_bias, padding=self.kernel_size // 2))
        else:
            hidden_t = self._hidden_rows(plan).t().contiguous()
            hidden_map = _per_pixel(hidden_t.index_select(1, plan.hidden_ids.reshape(-1)), plan.shape).contiguous()
        out = F.conv2d(hidden_map, self._mod_conv_weight(), self.mod_bias, padding=self.kernel_size // 2)
        return out[:, :c], out[:, c:]

    def forward(self, x: torch.Tensor, plan: _Plan, out: torch.Tensor | None = None) -> torch.Tensor:
        """Modulated (N, C, h, w) ``x * scale + shift``: into ``out`` (which may be ``x`` itself)
        for pattern plans, over the freshly computed shift for dense ones."""
        if self.norm == "instance":
            x = F.instance_norm(x, eps=self.eps)
        elif self.norm == "batch":
            x = F.batch_norm(x, None, None, training=True, eps=self.eps)
        if plan.pattern_ids is None:
            scale, shift = self.dense_scale_shift(plan)
            return shift.addcmul_(x, scale)
        if out is None or not out.is_contiguous():
            out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _modulate(x, self.pattern_table(plan), plan.pattern_ids.view(x.shape[0], -1), out, plan.workspace)
        return out


def _modulate(x: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, out: torch.Tensor, workspace: Workspace) -> None:
    """out = x * scale + shift with per-pixel (scale, shift) = columns ``ids`` of ``table`` (2C, patterns).

    Gathered a few channels at a time, so that the gathered rows are still in cache when used.
    """
    n, c = x.shape[:2]
    x, out = x.reshape(n, c, -1), out.view(n, c, -1)
    pixels = x.shape[2]
    rows = max(1, min(c, MODULATE_CHUNK // pixels))
    gathered = workspace.get("modulation", (2, rows, pixels), x)
    for i in range(n):
        for start in range(0, c, rows):
            stop = min(c, start + rows)
            scale, shift = gathered[0, : stop - start], gathered[1, : stop - start]
            torch.index_select(table[start:stop], 1, ids[i], out=scale)
            torch.index_select(table[c + start : c + stop], 1, ids[i], out=shift)
            torch.addcmul(shift, x[i, start:stop], scale, out=out[i, start:stop])


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

    def _shortcut(self, x: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """conv_s (1x1, no bias) of norm_s(x), as one matmul per sample into the workspace."""
        n, c, h, w = x.shape
        modulated = self.norm_s(x, plan, plan.workspace.get("modulated", x.shape, x))
        out = plan.workspace.get("shortcut", (n, self.shortcut_weight.shape[0], h, w), x)
        for i in range(n):
            torch.mm(self.shortcut_weight, modulated[i].reshape(c, h * w), out=out[i].view(-1, h * w))
        return out

    def forward(self, x: torch.Tensor, plan: _Plan) -> torch.Tensor:
        x_s = self._shortcut(x, plan) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu_(self.norm_0(x, plan, plan.workspace.get("modulated", x.shape, x)), 0.2))
        dx = self.conv_1(F.leaky_relu_(self.norm_1(dx, plan, dx), 0.2))
        return dx.add_(x_s)


class FastSPADEGenerator(nn.Module):
    """Inference-only twin of a ``SPADEGenerator``: same ``forward(semantics, z=None)``, same outputs.

    A snapshot of the generator's eval-mode weights: run ``optimize_generator`` again after
    changing them. ``self.generator`` is the plain path (also used for non-one-hot inputs).
    """

    def __init__(self, generator: SPADEGenerator) -> None:
        super().__init__()
        cfg = generator.config
        self.generator = generator
        self.n_classes = cfg.label_nc + int(cfg.contain_dontcare_label)
        self.use_edge = bool(cfg.use_instance)
        self.n_keys = self.n_classes * (2 if self.use_edge else 1) + 1
        self.kernel_size = cfg.spade_kernel_size
        # Dense resolutions need the look-up ids only when mlp_shared is too wide to run as a conv.
        self.needs_lookups = generator.semantic_nc > SHARED_CONV_MAX_CHANNELS
        if not cfg.use_vae:
            fc = generator.fc
            self.register_buffer("fc_table", _one_hot_table(fc.weight.detach(), self.n_classes, self.use_edge), persistent=False)
            self.register_buffer("fc_bias", fc.bias.detach().clone(), persistent=False)
        names = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"]
        if cfg.num_upsampling_layers == "most":
            names.append("up_4")
        self.blocks = nn.ModuleDict()
        map_size = (generator.sh, generator.sw)
        for name in names:
            if self._upsamples_before(name):
                map_size = (2 * map_size[0], 2 * map_size[1])
            self.blocks[name] = _FastBlock(getattr(generator, name), self.n_classes, self.use_edge, map_size)
        self.conv_img = _Conv(generator.conv_img.weight.detach().clone(), generator.conv_img.bias)
        self._workspace = Workspace()

    @property
    def config(self):
        return self.generator.config

    def _upsamples_before(self, name: str) -> bool:
        """Whether the generator doubles the map right before block ``name``."""
        more = self.config.num_upsampling_layers in ("more", "most")
        return name.startswith("up_") or name == "G_middle_0" or (name == "G_middle_1" and more)

    def _keys(self, semantics: torch.Tensor) -> torch.Tensor | None:
        """(N, 1, H, W) float32 keys (class + n_classes * edge), or None if not an exact one-hot map.

        One-hot: every value >= 0 and, per pixel, the class channels sum to 1 with a 1 at the
        label. Sum and label come from one matmul (channel reductions are slow on NCHW).
        """
        n, _, height, width = semantics.shape
        classes = semantics[:, : self.n_classes].reshape(n, self.n_classes, -1)
        weights = torch.stack([torch.ones(self.n_classes), torch.arange(self.n_classes, dtype=torch.float32)])
        sums = torch.matmul(weights.to(semantics.device), classes.float())  # (N, 2, H*W)
        labels = sums[:, 1:].round().clamp_(0, self.n_classes - 1).long()
        exact = bool(classes.amin() >= 0) and bool((sums[:, 0] == 1).all())
        if not (exact and bool((classes.gather(1, labels) == 1).all())):
            return None
        keys = labels.view(n, height, width)
        if self.use_edge:
            edge = semantics[:, self.n_classes]
            if not bool(((edge == 0) | (edge == 1)).all()):
                return None
            keys = keys + self.n_classes * edge.long()
        return keys[:, None].float()

    @torch.no_grad()
    def forward(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """semantics (N, semantic_nc, H, W) float one-hot; z (N, z_dim) or None -> (N, 3, H, W) in [-1, 1]."""
        g = self.generator
        g._check_inputs(semantics, z)
        keys = self._keys(semantics)
        if keys is None:
            return g(semantics, z)
        plans: dict[tuple[int, int, int], _Plan] = {}

        def plan(size: tuple[int, int], k: int = self.kernel_size) -> _Plan:
            key = (int(size[0]), int(size[1]), k)
            if key not in plans:
                plans[key] = _make_plan(keys, key[:2], k, self.n_keys, self._workspace, self.needs_lookups)
            return plans[key]

        up = g.size_multiple
        if g.config.use_vae:
            if z is None:
                z = torch.randn(semantics.shape[0], g.config.z_dim, device=semantics.device, dtype=semantics.dtype)
            x = g.fc(z).view(-1, 16 * g.config.ngf, g.sh, g.sw)
        else:
            start = plan((semantics.shape[2] // up, semantics.shape[3] // up), 3)
            if start.key_index is None:
                x = g.fc(start.one_hot(self.n_classes, self.use_edge, self.fc_bias.dtype))
            else:
                rows = F.embedding_bag(start.key_index, self.fc_table, mode="sum") + self.fc_bias
                x = _per_pixel(rows.t().contiguous().index_select(1, start.hidden_ids.reshape(-1)), start.shape)
        x = x.contiguous()

        for name, block in self.blocks.items():
            if self._upsamples_before(name):
                x = _upsample2(x, self._workspace.get("upsampled", (*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3]), x))
            x = block(x, plan(x.shape[2:]))
        out = torch.tanh_(self.conv_img(F.leaky_relu_(x, 0.2)))
        self._workspace.trim()
        return out


def optimize_generator(generator: SPADEGenerator) -> FastSPADEGenerator:
    """An inference-only module with ``generator``'s ``forward(semantics, z=None)`` and outputs.

    Uses eval-mode semantics (running batch-norm statistics, no spectral-norm power iteration)
    whatever mode ``generator`` is in; keeps ``generator`` as ``.generator``, the plain path.
    """
    if not isinstance(generator, SPADEGenerator):
        raise ValueError(f"optimize_generator expects a SPADEGenerator, got {type(generator).__name__}")
    return FastSPADEGenerator(generator).to(generator.device)

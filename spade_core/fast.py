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
gamma/beta conv, which is never slower than the plain layer. Activations stay NCHW (oneDNN's
channels-last kernels round noticeably worse in float32); maps of a few hundred pixels use im2col +
one matmul. Inputs that are not exact one-hot maps go through the plain generator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .models.blocks import SPADEResnetBlock
from .models.generator import SPADEGenerator
from .models.layers import has_spectral_norm
from .models.normalization import SPADE

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
# The scratch buffer for per-pixel scale/shift maps is kept between calls up to this size.
SCRATCH_KEEP_BYTES = 256 * 2**20
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


class _Scratch:
    """One flat buffer reused for every per-pixel scale/shift map of a forward (and kept between
    calls up to ``SCRATCH_KEEP_BYTES``): fresh large tensors cost a page fault per 4 KiB on CPU."""

    def __init__(self) -> None:
        self._buffers: dict[int, torch.Tensor] = {}  # per thread, so concurrent calls don't share

    def get(self, rows: int, columns: int, like: torch.Tensor) -> torch.Tensor:
        key = threading.get_ident()
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < rows * columns or buffer.device != like.device or buffer.dtype != like.dtype:
            buffer = like.new_empty(rows * columns)
            self._buffers[key] = buffer
        return buffer[: rows * columns].view(rows, columns)

    def trim(self) -> None:
        key = threading.get_ident()
        buffer = self._buffers.get(key)
        if buffer is not None and buffer.numel() * buffer.element_size() > SCRATCH_KEEP_BYTES:
            del self._buffers[key]


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
    scratch: _Scratch
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
    keys: torch.Tensor, size: tuple[int, int], k: int, n_keys: int, scratch: _Scratch, lookups: bool = True
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
            return _Plan(tuple(keys.shape), None, None, None, None, keys, scratch)
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
        return _Plan(tuple(keys.shape), hidden_ids, key_index, None, None, keys, scratch)
    pattern_index = taps * rows + hidden_windows  # per-tap products are stored tap-major
    return _Plan(tuple(keys.shape), hidden_ids, key_index, pattern_ids.reshape(-1), pattern_index, keys, scratch)


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling (equal to ``F.interpolate(x, scale_factor=2)``, several times faster on CPU)."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


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


class _Conv(nn.Module):
    """A stride-1 "same" conv with fixed (folded) weights."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.contiguous(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv2d(x, self.weight, self.bias)


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
        # (2C, k*k, hidden): output, tap, input, so that each tap's (2C, hidden) block is a matrix
        weight = torch.cat([w_gamma, w_beta]).flatten(2).transpose(1, 2).contiguous()
        self.register_buffer("mod_weight", weight.to(dtype), persistent=False)
        self.register_buffer("mod_bias", torch.cat([b_scale, b_beta]).to(dtype), persistent=False)

    def _hidden_rows(self, plan: _Plan) -> torch.Tensor:
        """mlp_shared output per distinct window, plus a zero row for outside the image."""
        hidden = F.relu(F.embedding_bag(plan.key_index, self.shared_table, mode="sum") + self.shared_bias)
        return torch.cat([hidden, hidden.new_zeros(1, hidden.shape[1])])  # (n_hidden + 1, hidden)

    def _mod_conv_weight(self) -> torch.Tensor:
        """Merged gamma/beta weight in conv layout (2C, hidden, k, k), built on first dense use."""
        w = self.mod_weight
        key = (w.data_ptr(), 0 if w.is_inference() else w._version, w.dtype, w.device)
        if self._conv_weight is None or self._conv_weight[0] != key:
            k = self.kernel_size
            weight = w.transpose(1, 2).reshape(w.shape[0], w.shape[2], k, k).contiguous()
            self._conv_weight = (key, weight)
        return self._conv_weight[1]

    def scale_shift(self, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel (scale, shift), each (N, C, h, w), as SPADE computes them (eval norm folded)."""
        c = self.channels
        out_channels, taps, _ = self.mod_weight.shape
        if plan.pattern_ids is not None:
            hidden = self._hidden_rows(plan)
            per_tap = hidden.new_empty(taps, hidden.shape[0], out_channels)  # row tap * rows + id
            for t in range(taps):
                torch.mm(hidden, self.mod_weight[:, t].t(), out=per_tap[t])
            table = F.embedding_bag(plan.pattern_index, per_tap.view(-1, out_channels), mode="sum") + self.mod_bias
            out = plan.scratch.get(out_channels, plan.pattern_ids.numel(), hidden)
            torch.index_select(table.t().contiguous(), 1, plan.pattern_ids, out=out)
            return _per_pixel(out[:c], plan.shape), _per_pixel(out[c:], plan.shape)
        # dense: the hidden map, then one merged conv (no per-pixel im2col gathers)
        if self.shared_weight is not None:
            sem = plan.one_hot(self.n_classes, self.use_edge, self.shared_weight.dtype)
            hidden_map = F.relu(F.conv2d(sem, self.shared_weight, self.shared_bias, padding=self.kernel_size // 2))
        else:
            hidden_t = self._hidden_rows(plan).t().contiguous()
            hidden_map = _per_pixel(hidden_t.index_select(1, plan.hidden_ids.reshape(-1)), plan.shape).contiguous()
        out = F.conv2d(hidden_map, self._mod_conv_weight(), self.mod_bias, padding=self.kernel_size // 2)
        return out[:, :c], out[:, c:]

    def forward(self, x: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """Modulated (N, C, h, w); written over the freshly computed shift."""
        scale, shift = self.scale_shift(plan)
        if self.norm == "instance":
            x = F.instance_norm(x, eps=self.eps)
        elif self.norm == "batch":
            x = F.batch_norm(x, None, None, training=True, eps=self.eps)
        return shift.addcmul_(x, scale)


class _FastBlock(nn.Module):
    """SPADEResnetBlock with folded conv weights and fast SPADE layers."""

    def __init__(self, block: SPADEResnetBlock, n_classes: int, use_edge: bool) -> None:
        super().__init__()
        self.learned_shortcut = block.learned_shortcut
        self.conv_0 = _Conv(_effective_weight(block.conv_0), block.conv_0.bias)
        self.conv_1 = _Conv(_effective_weight(block.conv_1), block.conv_1.bias)
        self.norm_0 = _FastSPADE(block.norm_0, n_classes, use_edge)
        self.norm_1 = _FastSPADE(block.norm_1, n_classes, use_edge)
        if self.learned_shortcut:
            self.conv_s = _Conv(_effective_weight(block.conv_s), None)
            self.norm_s = _FastSPADE(block.norm_s, n_classes, use_edge)

    def forward(self, x: torch.Tensor, plan: _Plan) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, plan)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu_(self.norm_0(x, plan), 0.2))
        dx = self.conv_1(F.leaky_relu_(self.norm_1(dx, plan), 0.2))
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
        self.blocks = nn.ModuleDict(
            {name: _FastBlock(getattr(generator, name), self.n_classes, self.use_edge) for name in names}
        )
        self.conv_img = _Conv(generator.conv_img.weight.detach().clone(), generator.conv_img.bias)
        self._scratch = _Scratch()

    @property
    def config(self):
        return self.generator.config

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
                plans[key] = _make_plan(keys, key[:2], k, self.n_keys, self._scratch, self.needs_lookups)
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

        more = g.config.num_upsampling_layers in ("more", "most")
        for name, block in self.blocks.items():
            if name.startswith("up_") or name == "G_middle_0" or (name == "G_middle_1" and more):
                x = _upsample2(x)
            x = block(x, plan(x.shape[2:]))
        self._scratch.trim()
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


def optimize_generator(generator: SPADEGenerator) -> FastSPADEGenerator:
    """An inference-only module with ``generator``'s ``forward(semantics, z=None)`` and outputs.

    Uses eval-mode semantics (running batch-norm statistics, no spectral-norm power iteration)
    whatever mode ``generator`` is in; keeps ``generator`` as ``.generator``, the plain path.
    """
    if not isinstance(generator, SPADEGenerator):
        raise ValueError(f"optimize_generator expects a SPADEGenerator, got {type(generator).__name__}")
    return FastSPADEGenerator(generator).to(generator.device)

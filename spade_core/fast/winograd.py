"""3x3 "same" convolution by Winograd's minimal filtering F(2x2, 3x3), for the fast generator.

Each 2x2 output tile comes from a 4x4 input tile: the input and the weight are mapped to 16
"frequency" positions, where the convolution is 16 independent channel matmuls, and mapped back.
That is 16 multiplies per 4 outputs instead of 36 (2.25x fewer), exact in real arithmetic; in
float32 its rounding matches a direct convolution's order (about 1e-6 relative). The transforms
cost memory traffic in proportion to the channels, the matmuls in proportion to their product,
so it pays off for wide layers on small maps (SPADE's 256-1024-channel convs at 8x8-64x64).
Intermediates live in a ``Workspace`` (per-thread buffers reused between calls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.patterns import is_channels_last
from .workspace import Workspace

# G maps a 3-tap filter to the 4 positions; L is a left inverse (L @ G = I), exact in float.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_L = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, -1.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight (out, in, 3, 3) -> transformed weight (16, out, in): ``G w G^T`` per kernel, as
    one matmul with the Kronecker product of G with itself (coefficients 0, ±1/4, ±1/2, 1: exact
    products, so float32 rounds only the sums of at most 9 terms)."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_weight expects a 3x3 kernel, got {tuple(weight.shape[-2:])}")
    dtype = weight.dtype if weight.dtype == torch.float64 else torch.float32
    g = torch.tensor(_G, dtype=dtype, device=weight.device)
    u = torch.kron(g, g) @ weight.detach().to(dtype).reshape(-1, 9).t()  # (16, out * in)
    return u.reshape(16, weight.shape[0], weight.shape[1]).to(weight.dtype)


def direct_weight(u: torch.Tensor) -> torch.Tensor:
    """Transformed weight (16, out, in) -> conv weight (out, in, 3, 3) (the inverse of ``winograd_weight``)."""
    inverse = torch.tensor(_L, dtype=u.dtype, device=u.device)
    w = torch.kron(inverse, inverse) @ u.reshape(16, -1)  # (9, out * in)
    return w.t().reshape(u.shape[1], u.shape[2], 3, 3).contiguous()


_WORKSPACE = Workspace()


def workspace_bytes() -> int:
    """Bytes of intermediates this thread keeps between Winograd calls."""
    return _WORKSPACE.nbytes()
# Intermediates above this size are not kept between calls (Winograd is meant for small maps).
KEEP_BYTES = 64 * 2**20


def winograd_conv3x3(
    x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None, workspace: Workspace = _WORKSPACE
) -> torch.Tensor:
    """``F.conv2d(x, w, bias, padding=1)`` for x (N, in, H, W) and ``u = winograd_weight(w)``; the
    output has x's memory format (NCHW, or channels-last)."""
    if is_channels_last(x):
        return _winograd_channels_last(x, u, bias, workspace)
    n, c, height, width = x.shape
    out_c = u.shape[1]
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    # zero padding of one (plus one more where a size is odd), split into the four 2x2 phases:
    # phases[n, c, py, px, I, J] = padded[n, c, 2I + py, 2J + px]
    padded = F.pad(x, (1, 1 + width % 2, 1, 1 + height % 2))
    phases = F.pixel_unshuffle(padded, 2).view(n, c, 2, 2, h2 + 1, w2 + 1)
    top, bottom = phases[:, :, :, :, :h2], phases[:, :, :, :, 1:]  # tile rows 0-1 and 2-3

    # rows of B^T d: (d0 - d2, d1 + d2, d2 - d1, d1 - d3) with d = tile rows 0..3
    rows = workspace.get("rows", (4, n, c, 2, h2, w2 + 1), x)
    torch.sub(top[:, :, 0], bottom[:, :, 0], out=rows[0])
    torch.add(top[:, :, 1], bottom[:, :, 0], out=rows[1])
    torch.sub(bottom[:, :, 0], top[:, :, 1], out=rows[2])
    torch.sub(top[:, :, 1], bottom[:, :, 1], out=rows[3])
    # the same along the columns, into V (4, 4, in, N, h2, w2): one (in, tiles) matrix per position
    v = workspace.get("v", (4, 4, c, n, h2, w2), x)
    left, right = rows[..., :w2], rows[..., 1:]  # tile columns 0-1 and 2-3 (phase px in dim 3)
    torch.sub(left[:, :, :, 0], right[:, :, :, 0], out=v[:, 0].transpose(1, 2))
    torch.add(left[:, :, :, 1], right[:, :, :, 0], out=v[:, 1].transpose(1, 2))
    torch.sub(right[:, :, :, 0], left[:, :, :, 1], out=v[:, 2].transpose(1, 2))
    torch.sub(left[:, :, :, 1], right[:, :, :, 1], out=v[:, 3].transpose(1, 2))
    tiles = n * h2 * w2
    m = workspace.get("m", (16, out_c, tiles), x)
    torch.bmm(u, v.view(16, c, tiles), out=m)
    m = m.view(4, 4, out_c, n, h2, w2)
    if bias is not None:
        m[1, 1] += bias[:, None, None, None]  # position (1, 1) reaches all four outputs with weight 1

    # A^T M A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], into (N, out, 2, 2, h2, w2), then interleave
    half = workspace.get("half", (2, 4, out_c, n, h2, w2), x)
    torch.add(m[0], m[1], out=half[0]).add_(m[2])
    torch.sub(m[1], m[2], out=half[1]).sub_(m[3])
    y = workspace.get("y", (n, out_c, 2, 2, h2, w2), x)
    for r in range(2):
        p = half[r]
        torch.add(p[0], p[1], out=y[:, :, r, 0].transpose(0, 1))
        y[:, :, r, 0].transpose(0, 1).add_(p[2])
        torch.sub(p[1], p[2], out=y[:, :, r, 1].transpose(0, 1))
        y[:, :, r, 1].transpose(0, 1).sub_(p[3])
    out = F.pixel_shuffle(y.view(n, out_c * 4, h2, w2), 2)
    workspace.trim(KEEP_BYTES)
    if out.shape[-2:] != (height, width):
        out = out[:, :, :height, :width].contiguous()
    return out


def _winograd_channels_last(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, workspace: Workspace) -> torch.Tensor:
    """``winograd_conv3x3`` for a channels-last x: the same transforms with channels innermost, so
    tiles need no shuffling: the input phases are a view of the padded map, and the output's
    2x2 interleave is the channels-last layout itself."""
    n, c, height, width = x.shape
    out_c = u.shape[1]
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    # phases[n, I, py, J, px, c] = padded[n, 2I + py, 2J + px, c]
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + width % 2, 1, 1 + height % 2))
    phases = padded.view(n, h2 + 1, 2, w2 + 1, 2, c)
    top, bottom = phases[:, :h2], phases[:, 1:]  # tile rows 0-1 and 2-3

    rows = workspace.get("rows_nhwc", (4, n, h2, w2 + 1, 2, c), x)
    torch.sub(top[:, :, 0], bottom[:, :, 0], out=rows[0])
    torch.add(top[:, :, 1], bottom[:, :, 0], out=rows[1])
    torch.sub(bottom[:, :, 0], top[:, :, 1], out=rows[2])
    torch.sub(top[:, :, 1], bottom[:, :, 1], out=rows[3])
    # along the columns, into V (4, 4, N, h2, w2, in): one (tiles, in) matrix per position
    v = workspace.get("v_nhwc", (4, 4, n, h2, w2, c), x)
    left, right = rows[:, :, :, :w2], rows[:, :, :, 1:]  # tile columns 0-1 and 2-3
    torch.sub(left[..., 0, :], right[..., 0, :], out=v[:, 0])
    torch.add(left[..., 1, :], right[..., 0, :], out=v[:, 1])
    torch.sub(right[..., 0, :], left[..., 1, :], out=v[:, 2])
    torch.sub(left[..., 1, :], right[..., 1, :], out=v[:, 3])
    tiles = n * h2 * w2
    m = workspace.get("m_nhwc", (16, tiles, out_c), x)
    torch.bmm(v.view(16, tiles, c), u.transpose(1, 2), out=m)
    m = m.view(4, 4, n, h2, w2, out_c)
    if bias is not None:
        m[1, 1] += bias  # position (1, 1) reaches all four outputs with weight 1

    half = workspace.get("half_nhwc", (2, 4, n, h2, w2, out_c), x)
    torch.add(m[0], m[1], out=half[0]).add_(m[2])
    torch.sub(m[1], m[2], out=half[1]).sub_(m[3])
    y = torch.empty((n, h2, 2, w2, 2, out_c), dtype=x.dtype, device=x.device)  # (N, 2 h2, 2 w2, out)
    for r in range(2):
        p = half[r]
        torch.add(p[0], p[1], out=y[:, :, r, :, 0]).add_(p[2])
        torch.sub(p[1], p[2], out=y[:, :, r, :, 1]).sub_(p[3])
    workspace.trim(KEEP_BYTES)
    out = y.view(n, 2 * h2, 2 * w2, out_c)
    if (2 * h2, 2 * w2) != (height, width):
        out = out[:, :height, :width].contiguous()
    return out.permute(0, 3, 1, 2)

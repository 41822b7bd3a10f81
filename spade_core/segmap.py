"""Segmentation maps in, one-hot semantics out: coercion, resizing, instance edges, one-hot.

Everything a user may hand in (a path, a PIL image, numpy / torch arrays, a list of them) becomes
an int64 class-index tensor (N,H,W) with don't-care = label_nc, and from that the float one-hot
map (N, semantic_nc, H, W) the generator and discriminator consume, built exactly as the
reference builds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spade_core.images import check_image_size, open_image
from spade_core.labels import LabelSet, _fmt_values

__all__ = [
    "coerce_instance_map",
    "coerce_segmap",
    "instance_edge_map",
    "load_segmap_file",
    "one_hot_semantics",
    "resize_labels",
    "semantics_from_segmap",
]

_MODES = ("auto", "index", "raw", "color")
_RAW_PIL_MODES = ("L", "I", "I;16", "I;16L", "I;16B", "I;16N")
_COLOR_PIL_MODES = ("RGB", "RGBA")
_ACCEPTED = (
    "accepted segmaps: a file path, a PIL image in mode P (class indices), L/I/I;16 (raw dataset "
    "ids) or RGB/RGBA (palette colours), an integer numpy array or torch tensor (H,W), (N,H,W) "
    "or (N,1,H,W) of class indices, an RGB array (H,W,3)/(N,H,W,3), or a list of these"
)


def load_segmap_file(path: str | Path, what: str = "segmap") -> Image.Image:
    """Open a segmap image file, keeping its PIL mode (P, L, I, RGB, ...) so ids stay ids.

    The pixel limit (spade_core.images) is checked from the header before decoding, so a
    decompression bomb or a huge canvas is refused before any pixel array exists.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path} (check the path; cwd is {Path.cwd()})")
    return open_image(path, what)


def _check_pixels(height: int, width: int, what: str) -> None:
    """The pixel limit for an image handed in decoded (PIL or array), before any per-pixel work."""
    check_image_size(int(width), int(height), what=what)


def _is_integer_dtype(x: np.ndarray | torch.Tensor) -> bool:
    if isinstance(x, torch.Tensor):
        return not (x.dtype == torch.bool or x.is_floating_point() or x.is_complex())
    return x.dtype != np.bool_ and np.issubdtype(x.dtype, np.integer)


def _as_int64_tensor(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """Integer numpy/torch array -> int64 tensor (same device for tensors); rejects bool/float."""
    if not _is_integer_dtype(x):
        raise ValueError(
            f"{what} must hold integers, got dtype {x.dtype}: convert class indices with "
            f".long() / .astype(np.int64); {_ACCEPTED}"
        )
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.int64)
    return torch.from_numpy(x.astype(np.int64))


def _to_batched(labels: torch.Tensor, what: str) -> torch.Tensor:
    """(H,W) | (N,H,W) | (N,1,H,W) -> (N,H,W); anything else -> ValueError."""
    if labels.ndim == 2:
        labels = labels.unsqueeze(0)
    elif labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim != 3:
        raise ValueError(f"{what} has shape {tuple(labels.shape)}; {_ACCEPTED}")
    if labels.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(labels.shape)}); {_ACCEPTED}")
    return labels


def _coerce_pil(img: Image.Image, label_set: LabelSet, mode: str, nearest_color: bool,
                unknown: str) -> torch.Tensor:
    """One PIL image -> (1,H,W) int64 class indices, interpreted by its PIL mode or `mode`."""
    _check_pixels(img.height, img.width, "segmap image")
    pil_mode = img.mode
    if pil_mode == "P":
        how = {"auto": "index"}.get(mode, mode)
    elif pil_mode in _RAW_PIL_MODES:
        how = {"auto": "raw"}.get(mode, mode)
    elif pil_mode in _COLOR_PIL_MODES:
        how = {"auto": "color"}.get(mode, mode)
    else:
        raise ValueError(
            f"PIL segmap mode {pil_mode!r} is not supported: convert it to 'P', 'L', 'I' or 'RGB'; "
            f"{_ACCEPTED}"
        )
    if how == "color":
        rgb = np.asarray(img.convert("RGB"))
        return label_set.colors_to_labels(rgb, nearest=nearest_color).unsqueeze(0)
    if pil_mode in _COLOR_PIL_MODES:
        raise ValueError(
            f"mode={mode!r} needs a single-channel image but the segmap is {pil_mode}: pass "
            "mode='color' (or 'auto') for colour segmaps"
        )
    ids = torch.from_numpy(np.asarray(img).astype(np.int64))
    if how == "raw":
        return label_set.raw_to_labels(ids, unknown=unknown).unsqueeze(0)
    return label_set.validate_labels(ids, unknown=unknown).unsqueeze(0)


def _looks_like_color(x: np.ndarray | torch.Tensor) -> bool:
    """In "auto" mode: is this channel-last RGB(A), (N,H,W,3|4) or a uint8 (H,W,3|4) image?"""
    if x.ndim == 4:
        return x.shape[-1] in (3, 4) and x.shape[1] not in (1, 3, 4)
    uint8 = x.dtype == torch.uint8 if isinstance(x, torch.Tensor) else x.dtype == np.uint8
    return x.ndim == 3 and uint8 and x.shape[-1] in (3, 4)


def _coerce_array(x: np.ndarray | torch.Tensor, label_set: LabelSet, mode: str,
                  nearest_color: bool, unknown: str) -> torch.Tensor:
    """One numpy/torch array -> (N,H,W) int64 class indices."""
    kind = "torch tensor" if isinstance(x, torch.Tensor) else "numpy array"
    if x.ndim == 0 or x.ndim > 4 or 0 in tuple(x.shape):
        raise ValueError(f"segmap {kind} has shape {tuple(x.shape)}; {_ACCEPTED}")
    if not _is_integer_dtype(x):
        raise ValueError(
            f"segmap {kind} has dtype {x.dtype} but labels must be integers: convert with "
            f".long() / .astype(np.int64) (round float maps first); {_ACCEPTED}"
        )
    if mode == "color" or (mode == "auto" and _looks_like_color(x)):
        if x.ndim not in (3, 4) or x.shape[-1] not in (3, 4):
            raise ValueError(
                f"mode='color' needs channel-last RGB (H,W,3) or (N,H,W,3), got shape "
                f"{tuple(x.shape)}: permute channels last (e.g. x.permute(0, 2, 3, 1))"
            )
        _check_pixels(x.shape[-3], x.shape[-2], f"segmap {kind}")
        return label_set.colors_to_labels(x[..., :3], nearest=nearest_color).reshape(
            (-1,) + tuple(x.shape[-3:-1])
        )
    if x.ndim == 4 and x.shape[1] != 1:
        raise ValueError(
            f"segmap {kind} has shape {tuple(x.shape)} ({x.shape[1]} channels): a 4-D label map "
            f"must be (N,1,H,W); for colours pass channel-last (N,H,W,3) with mode='color'"
        )
    if x.ndim >= 2:
        _check_pixels(x.shape[-2], x.shape[-1], f"segmap {kind}")
    labels = _to_batched(_as_int64_tensor(x, "segmap"), f"segmap {kind}")
    if mode == "raw":
        return label_set.raw_to_labels(labels, unknown=unknown)
    return label_set.validate_labels(labels, unknown=unknown)


def _cat_same_size(maps: list[torch.Tensor], what: str) -> torch.Tensor:
    sizes = sorted({tuple(m.shape[-2:]) for m in maps})
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise ValueError(
            f"{what} in one list must share a size (HxW) but got {listed}: resize them to one "
            "size or pass them one at a time"
        )
    return torch.cat([m.to(maps[0].device) for m in maps], 0)


def coerce_segmap(segmap: Any, label_set: LabelSet, mode: str = "auto", nearest_color: bool = False,
                  unknown: str = "error") -> torch.Tensor:
    """Any accepted segmap -> int64 class-index tensor (N,H,W), don't-care = label_nc.

    mode: "auto" (by type: P = indices, L/I = raw ids, RGB = colours, arrays = indices),
    "index", "raw" (dataset ids through `label_set.raw_to_labels`) or "color".
    """
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not supported: pass one of {', '.join(_MODES)}")
    label_set.check_unknown_policy(unknown)
    if isinstance(segmap, (list, tuple)):
        if not segmap:
            raise ValueError(f"segmap list is empty; {_ACCEPTED}")
        maps = [coerce_segmap(s, label_set, mode, nearest_color, unknown) for s in segmap]
        return _cat_same_size(maps, "segmaps")
    if isinstance(segmap, (str, Path)):
        segmap = load_segmap_file(segmap)
    if isinstance(segmap, Image.Image):
        return _coerce_pil(segmap, label_set, mode, nearest_color, unknown)
    if isinstance(segmap, (np.ndarray, torch.Tensor)):
        return _coerce_array(segmap, label_set, mode, nearest_color, unknown)
    raise ValueError(f"segmap of type {type(segmap).__name__} is not supported; {_ACCEPTED}")


def coerce_instance_map(instance: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Instance ids (path, PIL, numpy/torch (H,W)/(N,H,W)/(N,1,H,W), list) -> int64 (N,H,W).

    Only id equality matters (edges), so RGB instance maps are read as packed 24-bit ids and
    float tensors are accepted when integral. `size` (H,W) is the label map's size to match.
    """
    if isinstance(instance, (list, tuple)):
        if not instance:
            raise ValueError("instance map list is empty: pass one instance map per segmap")
        maps = [coerce_instance_map(i, size) for i in instance]
        return _cat_same_size(maps, "instance maps")
    if isinstance(instance, (str, Path)):
        path = Path(instance)
        if not path.is_file():
            raise FileNotFoundError(f"instance map file not found: {path} (check the path)")
        instance = load_segmap_file(path, "instance map")
    if isinstance(instance, Image.Image):
        _check_pixels(instance.height, instance.width, "instance map")
        if instance.mode in ("RGB", "RGBA"):
            rgb = np.asarray(instance.convert("RGB")).astype(np.int64)
            ids = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        elif instance.mode in _RAW_PIL_MODES + ("P",):
            ids = np.asarray(instance).astype(np.int64)
        else:
            raise ValueError(
                f"PIL instance map mode {instance.mode!r} is not supported: convert it to 'L', 'I' or 'RGB'"
            )
        instance = torch.from_numpy(ids)
    if isinstance(instance, np.ndarray):
        if instance.dtype == np.bool_ or not np.issubdtype(instance.dtype, np.number):
            raise ValueError(f"instance map dtype {instance.dtype} is not supported: pass integer ids")
        instance = torch.from_numpy(np.ascontiguousarray(instance))
    if not isinstance(instance, torch.Tensor):
        raise ValueError(
            f"instance map of type {type(instance).__name__} is not supported: pass a path, PIL "
            "image, or integer numpy array / torch tensor (H,W), (N,H,W) or (N,1,H,W)"
        )
    if instance.dtype == torch.bool or instance.is_complex():
        raise ValueError(f"instance map dtype {instance.dtype} is not supported: pass integer ids")
    if instance.is_floating_point() and not bool((instance == instance.round()).all()):
        raise ValueError("instance map holds non-integer floats: pass integer instance ids")
    if instance.ndim == 4 and instance.shape[1] != 1:
        raise ValueError(
            f"instance map has shape {tuple(instance.shape)}: pass (H,W), (N,H,W) or (N,1,H,W) ids"
        )
    if instance.ndim not in (2, 3, 4) or instance.numel() == 0:
        raise ValueError(
            f"instance map has shape {tuple(instance.shape)}: pass (H,W), (N,H,W) or (N,1,H,W) ids"
        )
    ids = _to_batched(instance.detach().to(torch.int64), "instance map")
    if size is not None and tuple(ids.shape[-2:]) != tuple(size):
        h, w = ids.shape[-2:]
        raise ValueError(
            f"instance map is {h}x{w} (HxW) but the label map is {size[0]}x{size[1]}: pass an "
            "instance map of the same size as the segmap"
        )
    return ids


def _check_size(size: Any) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)):
        raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _nearest_index(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """Source index per output index, taken from PyTorch's own legacy 'nearest' kernel."""
    grid = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size)
    return F.interpolate(grid, size=out_size, mode="nearest").view(-1).to(torch.int64).to(device)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of int64 label / instance maps (N,H,W) -> (N,*size).

    Uses PyTorch's legacy 'nearest' (src = floor(dst * in / out)), not 'nearest-exact', exactly
    as the reference and the generator's internal resizing do; ids stay exact integers.
    """
    size = _check_size(size)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or not _is_integer_dtype(labels):
        shape = tuple(labels.shape) if hasattr(labels, "shape") else type(labels).__name__
        raise ValueError(f"resize_labels needs an integer tensor (N,H,W), got {shape}: coerce it first")
    labels = labels.to(torch.int64)
    h, w = labels.shape[-2:]
    if (h, w) == size:
        return labels
    rows = _nearest_index(h, size[0], labels.device)
    cols = _nearest_index(w, size[1], labels.device)
    return labels.index_select(1, rows).index_select(2, cols)


def instance_edge_map(instance: torch.Tensor) -> torch.Tensor:
    """Instance ids (N,H,W) or (N,1,H,W) -> float32 edges (N,1,H,W).

    A pixel is 1 where its id differs from its left, right, upper or lower neighbour (both
    pixels of a differing pair are marked; no diagonals; the border itself is not an edge).
    """
    if not isinstance(instance, torch.Tensor):
        raise ValueError(f"instance_edge_map needs a torch tensor, got {type(instance).__name__}")
    if instance.ndim == 4 and instance.shape[1] == 1:
        instance = instance[:, 0]
    if instance.ndim != 3:
        raise ValueError(
            f"instance map has shape {tuple(instance.shape)}: pass (N,H,W) or (N,1,H,W) ids"
        )
    edge = torch.zeros(instance.shape, dtype=torch.bool, device=instance.device)
    horiz = instance[:, :, 1:] != instance[:, :, :-1]  # (N, H, W-1): pair (x-1, x) differs
    edge[:, :, 1:] |= horiz
    edge[:, :, :-1] |= horiz
    vert = instance[:, 1:, :] != instance[:, :-1, :]  # (N, H-1, W): pair (y-1, y) differs
    edge[:, 1:, :] |= vert
    edge[:, :-1, :] |= vert
    return edge.unsqueeze(1).to(torch.float32)


def one_hot_semantics(labels: torch.Tensor, label_nc: int, contain_dontcare_label: bool,
                      use_instance: bool = False, instance: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices (N,H,W) -> one-hot (N, semantic_nc, H, W) as the reference builds it.

    Channels: label_nc classes, then don't-care (if any), then the instance edge channel last
    (if use_instance; edges of `instance`, or of the label map itself when instance is None).
    """
    if not isinstance(labels, torch.Tensor) or not _is_integer_dtype(labels):
        kind = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor (N,H,W), got {kind}: use coerce_segmap first")
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)}: pass (N,H,W) or (N,1,H,W) class indices"
        )
    if instance is not None and not use_instance:
        raise ValueError(
            "an instance map was given but use_instance=False: drop the instance map or pass "
            "use_instance=True for a model with an instance edge channel"
        )
    labels = labels.to(torch.int64)
    nc = label_nc + int(contain_dontcare_label)
    bad = (labels < 0) | (labels >= nc)
    if bool(bad.any()):
        values = np.unique(labels[bad].cpu().numpy())
        valid = f"0..{nc - 1}" + (f" ({label_nc} = don't-care)" if contain_dontcare_label else "")
        raise ValueError(
            f"found label(s) {_fmt_values(values)} but label_nc={label_nc} with "
            f"contain_dontcare_label={contain_dontcare_label} allows {valid}: check label_nc or "
            "remap the labels (coerce_segmap(..., unknown='dontcare') maps them to don't-care)"
        )
    n, h, w = labels.shape
    semantics = torch.zeros(n, nc, h, w, dtype=dtype, device=labels.device)
    semantics.scatter_(1, labels.unsqueeze(1), 1.0)
    if not use_instance:
        return semantics
    if instance is None:
        source = labels
    else:
        source = coerce_instance_map(instance, size=(h, w)).to(labels.device)
        if source.shape[0] not in (1, n):
            raise ValueError(
                f"got {source.shape[0]} instance maps for {n} label maps: pass one per label map "
                "(or a single one for all)"
            )
        source = source.expand(n, h, w)
    return torch.cat([semantics, instance_edge_map(source).to(dtype)], 1)


def semantics_from_segmap(segmap: Any, label_set: LabelSet, instance_map: Any = None,
                          size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32,
                          **coerce_kwargs: Any) -> torch.Tensor:
    """Segmap (+ optional instance map) -> one-hot (N, semantic_nc, H, W) for `label_set`.

    Coerces, resizes labels and instance ids with legacy nearest to `size` (H,W) when given,
    then builds the one-hot map; edges are computed after resizing, as in the reference.
    """
    labels = coerce_segmap(segmap, label_set, **coerce_kwargs)
    instance = None
    if instance_map is not None:
        if not label_set.use_instance:
            raise ValueError(
                f"the label set '{label_set.name}' does not use instance maps: drop instance_map"
            )
        instance = coerce_instance_map(instance_map, size=tuple(labels.shape[-2:])).to(labels.device)
    if size is not None:
        size = _check_size(size)
        labels = resize_labels(labels, size)
        if instance is not None:
            instance = resize_labels(instance, size)
    return one_hot_semantics(labels, label_set.label_nc, label_set.contain_dontcare_label,
                             label_set.use_instance, instance, dtype=dtype)

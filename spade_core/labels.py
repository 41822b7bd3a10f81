"""Label sets: class names, palettes and the raw-id -> class-index mapping of each dataset.

A `LabelSet` is the one place that knows how a dataset encodes its classes: which raw ids
exist, which one is "don't care", which colour each class gets, and whether the model also
consumes an instance-edge channel. It travels with the weights (a pipeline folder's
`model_index.json`), so a loaded model knows its classes and colours.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from functools import cached_property
from importlib import resources
from typing import Any

import numpy as np
import torch

from .registry import DATASETS, entry_for_class_count

__all__ = [
    "LabelSet",
    "available_label_sets",
    "check_label_set",
    "fit_label_set",
    "generic_label_set",
    "get_label_set",
    "matching_label_set",
    "numbered_color",
    "numbered_label_set",
    "register_label_set",
]

_UNKNOWN_POLICIES = ("error", "dontcare")
_BLACK = (0, 0, 0)
# Colour-palette pairs compared at once when snapping colours (keeps temporaries near 50 MB).
_NEAREST_CHUNK = 2_000_000


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*color)


def _fmt_values(values: np.ndarray, limit: int = 5) -> str:
    """Comma-separated sorted values, the first `limit` of them, then how many more."""
    vals = [str(int(v)) for v in values[:limit]]
    more = len(values) - limit
    return ", ".join(vals) + (f" (and {more} more)" if more > 0 else "")


def _whole(value: Any) -> int:
    """An integer from a label-set field; bools, fractions and text raise ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _is_integer_tensor(t: torch.Tensor) -> bool:
    return not (t.dtype == torch.bool or t.is_floating_point() or t.is_complex())


def _to_numpy_int(array: Any, what: str) -> np.ndarray:
    """numpy/torch integer array -> numpy int64 array; rejects bool, float and other types."""
    if isinstance(array, torch.Tensor):
        if not _is_integer_tensor(array):
            raise ValueError(
                f"{what} must hold integers, got a torch {array.dtype} tensor: "
                "convert it with .long() (rounding first if the values are floats)"
            )
        return array.detach().cpu().to(torch.int64).numpy()
    if isinstance(array, np.ndarray):
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{what} must hold integers, got a numpy {array.dtype} array: "
                "convert it with .astype(np.int64) (rounding first if the values are floats)"
            )
        return array.astype(np.int64, copy=False)
    raise ValueError(
        f"{what} must be a numpy array or torch tensor of integers, got {type(array).__name__}"
    )


@dataclass(frozen=True)
class LabelSet:
    """Classes of a dataset: names, RGB palette, don't-care handling and instance use.

    Class indices run 0..label_nc-1; with `contain_dontcare_label` index `label_nc` is the
    don't-care class (the reference's extra one-hot channel). Raw dataset ids map to class
    indices as `raw - raw_id_offset`, except the ids in `dontcare_raw_ids`, which map to
    don't-care. Where several classes share a colour (Cityscapes' void ids, ADE20K's road and
    skyscraper), colour lookup gives the lowest index.
    """

    name: str  # registry key, e.g. "ade20k"
    class_names: tuple[str, ...]  # one per class index 0..label_nc-1
    palette: tuple[tuple[int, int, int], ...]  # one RGB colour per class index
    contain_dontcare_label: bool  # an extra don't-care channel at index label_nc
    use_instance: bool  # the model consumes an instance-edge channel (last)
    dontcare_raw_ids: tuple[int, ...] = ()  # raw dataset ids that mean don't-care
    raw_id_offset: int = 0  # class index = raw id - offset (ADE20K: 1)
    description: str = ""  # provenance, shown in model cards

    def __post_init__(self) -> None:
        """Validate, and store lists (e.g. from JSON) as tuples so the set stays hashable."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a LabelSet needs a non-empty string name: pass name='my_labels'")
        for flag in ("contain_dontcare_label", "use_instance"):
            value = getattr(self, flag)
            if not isinstance(value, (bool, np.bool_)):
                shown = f"the string {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
                raise ValueError(
                    f"label set '{self.name}': {flag} must be a boolean, got {shown}: use true or false "
                    "(without quotes in JSON)"
                )
        names = tuple(str(n) for n in self.class_names)
        try:
            palette = tuple(tuple(_whole(c) for c in color) for color in self.palette)
            dontcare_ids = tuple(_whole(i) for i in self.dontcare_raw_ids)
            offset = _whole(self.raw_id_offset)
        except (TypeError, ValueError):
            raise ValueError(
                f"label set '{self.name}': palette, dontcare_raw_ids and raw_id_offset must hold whole numbers: "
                "fix the label set (palette entries are [r, g, b] of 0..255)"
            ) from None
        if not names:
            raise ValueError(f"label set '{self.name}' has no classes: pass at least one class name")
        if len(palette) != len(names):
            raise ValueError(
                f"label set '{self.name}' has {len(names)} class names but {len(palette)} palette "
                "colours: give exactly one RGB colour per class"
            )
        for i, color in enumerate(palette):
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ValueError(
                    f"label set '{self.name}': palette entry {i} ({names[i]!r}) is {color}, "
                    "not an (r, g, b) triple of 0..255 integers: fix the palette"
                )
        if dontcare_ids and not self.contain_dontcare_label:
            raise ValueError(
                f"label set '{self.name}' lists don't-care raw ids {dontcare_ids} but "
                "contain_dontcare_label is False: set contain_dontcare_label=True or drop them"
            )
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "palette", palette)
        object.__setattr__(self, "dontcare_raw_ids", dontcare_ids)
        object.__setattr__(self, "raw_id_offset", offset)
        object.__setattr__(self, "contain_dontcare_label", bool(self.contain_dontcare_label))
        object.__setattr__(self, "use_instance", bool(self.use_instance))

    @property
    def label_nc(self) -> int:
        """Number of real classes (the reference's `label_nc`)."""
        return len(self.class_names)

    @property
    def semantic_nc(self) -> int:
        """Channels of the one-hot input: classes, then don't-care, then the instance edge."""
        return self.label_nc + int(self.contain_dontcare_label) + int(self.use_instance)

    @property
    def dontcare_index(self) -> int | None:
        """Class index of don't-care (`label_nc`), or None when the set has none."""
        return self.label_nc if self.contain_dontcare_label else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; `LabelSet.from_dict` turns it back into an equal set."""
        return {
            "name": self.name,
            "description": self.description,
            "contain_dontcare_label": self.contain_dontcare_label,
            "use_instance": self.use_instance,
            "dontcare_raw_ids": list(self.dontcare_raw_ids),
            "raw_id_offset": self.raw_id_offset,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSet:
        """Build a LabelSet from `to_dict` output (e.g. read back from JSON)."""
        if not isinstance(d, dict):
            raise ValueError(f"a label set dict is needed, got {type(d).__name__}: pass LabelSet.to_dict() output")
        allowed = {f.name for f in fields(cls) if f.init}
        required = {"name", "class_names", "palette", "contain_dontcare_label", "use_instance"}
        missing = sorted(required - d.keys())
        unknown = sorted(d.keys() - allowed)
        if missing or unknown:
            problem = f"missing keys {missing}" if missing else f"unknown keys {unknown}"
            raise ValueError(
                f"not a label set dict ({problem}): expected the keys of LabelSet.to_dict(), "
                f"i.e. {sorted(allowed)}"
            )
        return cls(**d)

    @cached_property
    def _tables(self) -> dict[str, np.ndarray]:
        """Lookup tables, built once per set: sorted colour keys for exact lookup, and the LUT."""
        colors = list(self.palette)
        targets = list(range(self.label_nc))
        if self.contain_dontcare_label and _BLACK not in self.palette:
            colors.append(_BLACK)  # colorize shows don't-care black, so black reads back as it
            targets.append(self.label_nc)
        cand = np.asarray(colors, dtype=np.int64)  # (K, 3)
        keys = (cand[:, 0] << 16) | (cand[:, 1] << 8) | cand[:, 2]
        uniq, first = np.unique(keys, return_index=True)  # first occurrence = lowest index
        lut = np.zeros((self.label_nc + 1, 3), dtype=np.uint8)  # last row: don't-care, black
        lut[: self.label_nc] = np.asarray(self.palette, dtype=np.uint8)
        return {
            "keys": uniq,
            "key_targets": np.asarray(targets, dtype=np.int64)[first],
            "cand": cand,
            "cand_targets": np.asarray(targets, dtype=np.int64),
            "colorize": lut,
        }

    def range_text(self) -> str:
        """Human-readable class range for messages, e.g. '150 classes (0..149, 150 = don't-care)'."""
        text = f"{self.label_nc} classes (0..{self.label_nc - 1}"
        if self.contain_dontcare_label:
            text += f", {self.label_nc} = don't-care"
        return text + ")"

    def raw_to_labels(self, raw: np.ndarray | torch.Tensor, unknown: str = "error") -> torch.Tensor:
        """Raw dataset ids (any shape) -> int64 class indices, don't-care ids -> `label_nc`.

        Ids outside the set raise ValueError, or become don't-care with `unknown="dontcare"`.
        """
        self.check_unknown_policy(unknown)
        device = raw.device if isinstance(raw, torch.Tensor) else torch.device("cpu")
        ids = torch.from_numpy(_to_numpy_int(raw, "raw label ids"))
        labels = ids - self.raw_id_offset
        dontcare = torch.zeros_like(ids, dtype=torch.bool)
        for raw_id in self.dontcare_raw_ids:
            dontcare |= ids == raw_id
        bad = ~dontcare & ((labels < 0) | (labels >= self.label_nc))
        if bool(bad.any()):
            if unknown == "error":
                first = self.raw_id_offset
                accepted = f"raw ids {first}..{first + self.label_nc - 1}"
                if self.dontcare_raw_ids:
                    accepted += f" and {', '.join(map(str, self.dontcare_raw_ids))} (don't-care)"
                fix = "pass unknown='dontcare' or remap labels" if self.contain_dontcare_label else (
                    f"remap labels to {accepted} (this set has no don't-care class)"
                )
                raise ValueError(
                    f"found raw label(s) {_fmt_values(np.unique(ids[bad].numpy()))} but the label set "
                    f"'{self.name}' accepts {accepted}, i.e. {self.range_text()}: {fix}"
                )
            dontcare |= bad
        labels[dontcare] = self.label_nc
        return labels.to(device)

    def check_unknown_policy(self, unknown: str) -> None:
        """Reject an `unknown=` policy this set cannot honour ('dontcare' needs a don't-care class)."""
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown={unknown!r} is not supported: pass 'error' or 'dontcare'")
        if unknown == "dontcare" and not self.contain_dontcare_label:
            raise ValueError(
                f"unknown='dontcare' needs a don't-care class but the label set '{self.name}' has "
                f"none: pass unknown='error' and remap labels to 0..{self.label_nc - 1}"
            )

    def validate_labels(self, labels: torch.Tensor, unknown: str = "error") -> torch.Tensor:
        """Check int64 class indices against 0..label_nc-1 (+ don't-care); returns the labels.

        Out-of-range values raise ValueError, or become don't-care with `unknown="dontcare"`.
        """
        self.check_unknown_policy(unknown)
        if not isinstance(labels, torch.Tensor) or not _is_integer_tensor(labels):
            labels = torch.from_numpy(_to_numpy_int(labels, "labels"))
        top = self.label_nc + int(self.contain_dontcare_label)
        bad = (labels < 0) | (labels >= top)
        if not bool(bad.any()):
            return labels
        if unknown == "dontcare":
            return labels.masked_fill(bad, self.label_nc)
        values = np.unique(labels[bad].cpu().numpy())
        word = "label" if len(values) == 1 else "labels"
        fix = "pass unknown='dontcare' or remap labels" if self.contain_dontcare_label else (
            f"remap labels to 0..{self.label_nc - 1}"
        )
        raw_ok = set(self.dontcare_raw_ids) | set(
            range(self.raw_id_offset, self.raw_id_offset + self.label_nc)
        )
        if set(values.tolist()) <= raw_ok:
            fix += " (if these are raw dataset ids, pass mode='raw')"
        raise ValueError(
            f"found {word} {_fmt_values(values)} but the label set '{self.name}' has "
            f"{self.range_text()}: {fix}"
        )

    def colorize(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices (H,W) or (N,H,W) -> uint8 RGB (..., 3) with the set's palette.

        Don't-care (index `label_nc`) is shown black.
        """
        idx = _to_numpy_int(labels, "labels to colorize")
        if idx.ndim not in (2, 3):
            raise ValueError(
                f"labels to colorize must be (H, W) or (N, H, W), got shape {tuple(idx.shape)}: "
                "squeeze the channel dimension first"
            )
        top = self.label_nc + (1 if self.contain_dontcare_label else 0)
        bad = (idx < 0) | (idx >= top)
        if bad.any():
            raise ValueError(
                f"found label(s) {_fmt_values(np.unique(idx[bad]))} but the label set '{self.name}' "
                f"has {self.range_text()}: remap labels before colorizing"
            )
        return self._tables["colorize"][idx]

    def colors_to_labels(self, rgb: np.ndarray | torch.Tensor, nearest: bool = False) -> torch.Tensor:
        """uint8 RGB (H,W,3) or (N,H,W,3) -> int64 class indices (H,W) or (N,H,W).

        Exact palette matches first; an unknown colour raises ValueError naming it, unless
        `nearest=True`, which snaps every pixel to the nearest palette colour (anti-aliased
        strokes). Black maps to don't-care when the set has one and no class is black.
        """
        device = rgb.device if isinstance(rgb, torch.Tensor) else torch.device("cpu")
        arr = _to_numpy_int(rgb, "colour segmap")
        if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise ValueError(
                f"colour segmap must be (H, W, 3) or (N, H, W, 3) RGB, got shape {tuple(arr.shape)}: "
                "drop the alpha channel or pass class indices instead"
            )
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"colour segmap values must be 0..255, found {int(arr.min())}..{int(arr.max())}: "
                "pass uint8 RGB colours"
            )
        tables = self._tables
        keys = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
        uniq, inverse = np.unique(keys.reshape(-1), return_inverse=True)
        pos = np.clip(np.searchsorted(tables["keys"], uniq), 0, len(tables["keys"]) - 1)
        found = tables["keys"][pos] == uniq
        mapped = np.where(found, tables["key_targets"][pos], -1)
        if not found.all():
            missing = uniq[~found]
            missing_rgb = np.stack([(missing >> 16) & 255, (missing >> 8) & 255, missing & 255], 1)
            near = self._nearest(missing_rgb)
            if not nearest:
                counts = np.bincount(inverse.reshape(-1), minlength=len(uniq))[~found]
                worst = int(np.argmax(counts))
                color = tuple(int(c) for c in missing_rgb[worst])
                target = int(near[worst])
                near_name = "don't-care" if target == self.label_nc else repr(self.class_names[target])
                near_color = _BLACK if target == self.label_nc else self.palette[target]
                others = len(missing) - 1
                raise ValueError(
                    f"colour {_hex(color)} {color} in {int(counts[worst])} pixel(s)"
                    + (f" (and {others} other unknown colour(s))" if others else "")
                    + f" is not in the palette of label set '{self.name}'; nearest class is "
                    f"{near_name} {_hex(near_color)}: pass nearest=True (nearest_color=True when "
                    "coercing a segmap) to snap colours, or paint with exact palette colours"
                )
            mapped[~found] = near
        out = mapped[inverse].reshape(keys.shape)
        return torch.from_numpy(out).to(device)

    def _nearest(self, colors: np.ndarray) -> np.ndarray:
        """Class index of the nearest palette colour (squared RGB distance) for each (M,3) colour."""
        tables = self._tables
        cand = tables["cand"][None, :, :]
        out = np.empty(len(colors), dtype=np.int64)
        step = max(1, _NEAREST_CHUNK // max(1, cand.shape[1]))  # bounded (M, K, 3) temporaries
        for start in range(0, len(colors), step):
            dist = ((colors[start:start + step, None, :] - cand) ** 2).sum(-1)  # (m, K)
            out[start:start + step] = tables["cand_targets"][np.argmin(dist, axis=1)]
        return out

    def legend(self) -> list[tuple[int, str, tuple[int, int, int]]]:
        """(index, name, colour) for every class, e.g. for a UI palette or a model card."""
        return [(i, n, c) for i, (n, c) in enumerate(zip(self.class_names, self.palette))]


_REGISTRY: dict[str, LabelSet] = {}


def _builtin_names() -> set[str]:
    """The label sets of the registered datasets that ship as assets/labels/<name>.json."""
    folder = resources.files("spade_core") / "assets" / "labels"
    return {e.label_set for e in DATASETS.values() if (folder / f"{e.label_set}.json").is_file()}


def _load_builtin(name: str) -> LabelSet:
    path = resources.files("spade_core") / "assets" / "labels" / f"{name}.json"
    return LabelSet.from_dict(json.loads(path.read_text(encoding="utf-8")))


def available_label_sets() -> list[str]:
    """Names accepted by `get_label_set`: the built-ins and every registered set."""
    return sorted(_builtin_names() | set(_REGISTRY))


def get_label_set(name: str | LabelSet) -> LabelSet:
    """The label set called `name` (case-insensitive); a LabelSet passes through unchanged."""
    if isinstance(name, LabelSet):
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        if key not in _builtin_names():
            raise ValueError(
                f"unknown label set {name!r}: pass one of {', '.join(available_label_sets())} "
                "or register your own with register_label_set()"
            )
        _REGISTRY[key] = _load_builtin(key)
    return _REGISTRY[key]


def register_label_set(label_set: LabelSet, overwrite: bool = False) -> None:
    """Make `label_set` available by its name; re-registering an equal set is a no-op."""
    if not isinstance(label_set, LabelSet):
        raise ValueError(f"register_label_set needs a LabelSet, got {type(label_set).__name__}")
    key = label_set.name.lower()
    if not overwrite and key in _builtin_names() | set(_REGISTRY):
        if get_label_set(key) == label_set:
            return
        raise ValueError(
            f"a different label set named {label_set.name!r} is already registered: "
            "choose another name or pass overwrite=True"
        )
    _REGISTRY[key] = label_set


# ----------------------------------------------------------------------------- numbered classes and models


def numbered_color(index: int) -> tuple[int, int, int]:
    """A well-separated colour per index: the bits of index+1 spread over R, G, B from the top bit down.

    (index+1 so that class 0 is not black; saved model_index.json files hold these colours.)
    """
    r = g = b = 0
    code = index + 1
    for bit in range(7, -1, -1):
        r |= (code & 1) << bit
        g |= ((code >> 1) & 1) << bit
        b |= ((code >> 2) & 1) << bit
        code >>= 3
    return r, g, b


def numbered_label_set(
    label_nc: int,
    *,
    contain_dontcare_label: bool = False,
    dontcare_raw_ids: tuple[int, ...] = (),
    use_instance: bool = False,
    name: str | None = None,
) -> LabelSet:
    """Classes ``class_0..`` (raw id k is class k) with ``numbered_color`` colours: for models and data without names."""
    if isinstance(label_nc, bool) or not isinstance(label_nc, (int, np.integer)) or label_nc < 1:
        raise ValueError(f"label_nc must be at least 1, got {label_nc!r}: pass the number of classes")
    ids = tuple(int(i) for i in dontcare_raw_ids)
    dontcare = f"; raw {', '.join(map(str, ids))} is don't-care" if ids else ""
    return LabelSet(
        name=name or f"numbered-{label_nc}",
        class_names=tuple(f"class_{i}" for i in range(label_nc)),
        palette=tuple(numbered_color(i) for i in range(label_nc)),
        contain_dontcare_label=contain_dontcare_label,
        use_instance=use_instance,
        dontcare_raw_ids=ids,
        description=f"{label_nc} numbered classes (no names known); raw id k is class k{dontcare}",
    )


def generic_label_set(
    label_nc: int, contain_dontcare_label: bool, use_instance: bool, name: str | None = None
) -> LabelSet:
    """Numbered classes for a model; raw 255 is don't-care when it has that channel (as the reference's loader)."""
    ids = (255,) if contain_dontcare_label and label_nc < 255 else ()
    return numbered_label_set(
        label_nc, contain_dontcare_label=contain_dontcare_label, dontcare_raw_ids=ids, use_instance=use_instance, name=name
    )


def fit_label_set(label_set: LabelSet, contain_dontcare_label: bool, use_instance: bool) -> LabelSet:
    """``label_set`` with a model's don't-care / instance flags (the classes stay)."""
    if (label_set.contain_dontcare_label, label_set.use_instance) == (contain_dontcare_label, use_instance):
        return label_set
    return dataclasses.replace(
        label_set,
        contain_dontcare_label=contain_dontcare_label,
        use_instance=use_instance,
        dontcare_raw_ids=label_set.dontcare_raw_ids if contain_dontcare_label else (),
    )


def matching_label_set(generator: Any, name: str | None = None) -> LabelSet:
    """The label set for ``generator`` (a SPADEGenerator or anything with its ``config``): ``name`` if given,
    else the built-in set of the paper dataset with its class count, else numbered classes.

    The don't-care and instance flags are taken from the generator, so the one-hot layout fits.
    """
    cfg = generator.config
    if name is not None:
        label_set = get_label_set(name)
        if label_set.label_nc != cfg.label_nc:
            raise ValueError(
                f"label set '{label_set.name}' has {label_set.label_nc} classes but the model has label_nc "
                f"{cfg.label_nc}: pick a label set with {cfg.label_nc} classes (built in: "
                f"{', '.join(available_label_sets())}) or omit it for numbered classes"
            )
    else:
        entry = entry_for_class_count(cfg.label_nc)
        if entry is None:
            return generic_label_set(cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance)
        label_set = get_label_set(entry.label_set)
    return fit_label_set(label_set, cfg.contain_dontcare_label, cfg.use_instance)


def check_label_set(label_set: LabelSet, generator: Any) -> None:
    """Raise a ValueError when ``label_set``'s classes or flags do not fit ``generator``'s one-hot input."""
    cfg = generator.config
    ours = (label_set.label_nc, label_set.contain_dontcare_label, label_set.use_instance)
    theirs = (cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance)
    if ours != theirs:
        raise ValueError(
            f"label set '{label_set.name}' (classes {ours[0]}, don't-care {ours[1]}, instance {ours[2]}) does not fit "
            f"the generator (label_nc {theirs[0]}, don't-care {theirs[1]}, instance {theirs[2]}): pass the label set "
            "the model was trained with, or spade_core.pipeline.matching_label_set(generator)"
        )

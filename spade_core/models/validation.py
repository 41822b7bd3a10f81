"""Network configurations checked before anything is built: types, signs, ranges and a size bound.

One owner for what a valid ``SPADEGenerator`` / ``SPADEEncoder`` / ``MultiscaleDiscriminator``
configuration is, called by their constructors (keyword names in the messages), by the pipeline
folder check (``generator/config.json: ...``) and by the NVlabs ``opt.txt`` reader (``opt.txt:
ngf ...``). A wrong type (``"use_vae": "false"``), a negative or absurd size, or a network too big
to allocate (``ngf 2000``) becomes a one-line ``ValueError`` naming the file, the key and the fix,
instead of a silent misreading or a multi-GB allocation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from .layers import PARAM_FREE_NORMS, UPSAMPLING_LAYERS

__all__ = [
    "MAX_PARAMETERS",
    "estimate_parameters",
    "validate_network_config",
    "validate_reference_options",
]

# ~2 G parameters is 8 GB of float32 weights (16 GB with the Adam state): the paper's largest
# generator has 97 M; anything beyond this is a typo, not a model.
MAX_PARAMETERS = 2_000_000_000

# key -> (low, high, what the paper uses), inclusive integer ranges
_INTS: dict[str, tuple[int, int, str]] = {
    "label_nc": (1, 4096, "150 for ADE20K, 182 for COCO-Stuff, 35 for Cityscapes"),
    "ngf": (1, 1024, "the paper uses 64"),
    "ndf": (1, 1024, "the paper uses 64"),
    "z_dim": (1, 8192, "the paper uses 256"),
    "crop_size": (1, 4096, "the paper uses 256, or 512 for Cityscapes"),
    "output_nc": (1, 64, "3 for RGB"),
    "n_layers_D": (1, 8, "the paper uses 4"),
    "num_D": (1, 8, "the paper uses 2"),
    "spade_kernel_size": (1, 15, "the paper uses 3"),
    "spade_hidden_nc": (1, 4096, "the paper uses 128"),
}
_FLOATS: dict[str, tuple[float, float, str]] = {
    "aspect_ratio": (1 / 32, 32.0, "width / height: 1.0, or 2.0 for Cityscapes"),
    "init_gain": (0.0, 100.0, "the paper uses 0.02"),
    "init_variance": (0.0, 100.0, "the paper uses 0.02"),
}
_BOOLS = ("contain_dontcare_label", "use_instance", "no_instance", "use_vae", "spectral_norm")
_CHOICES: dict[str, tuple[str, ...]] = {
    "num_upsampling_layers": tuple(UPSAMPLING_LAYERS),
    "param_free_norm": PARAM_FREE_NORMS,
    "norm": ("instance", "batch", "syncbatch", "none"),
    "init_type": ("normal", "xavier", "xavier_uniform", "kaiming", "orthogonal", "none"),
}
_REFERENCE_STRINGS = ("norm_G", "norm_D", "norm_E")
_KINDS = {
    "generator": "SPADEGenerator",
    "encoder": "SPADEEncoder",
    "discriminator": "MultiscaleDiscriminator",
}
# Fallbacks for the size estimate when a config file leaves a key out (the constructors' defaults).
_DEFAULTS: dict[str, Any] = {
    "label_nc": 182, "contain_dontcare_label": True, "use_instance": True, "ngf": 64, "ndf": 64, "z_dim": 256,
    "use_vae": False, "crop_size": 256, "aspect_ratio": 1.0, "num_upsampling_layers": "normal",
    "spade_kernel_size": 3, "spade_hidden_nc": 128, "output_nc": 3, "n_layers_D": 4, "num_D": 2,
}


def _prefix(kind: str, source: str | None) -> str:
    return f"{source}: " if source else f"{_KINDS.get(kind, kind)}: "


def _check_value(key: str, value: Any, prefix: str, source: str | None) -> None:
    """Raise for one known key whose value has the wrong type or lies out of range."""
    shown = f"the string {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
    if key in _BOOLS:
        if not isinstance(value, bool) and type(value).__name__ != "bool_":
            if source is None:
                fix = f"pass {key}=True or {key}=False"
            elif source.endswith(".json"):
                fix = "write true or false, without quotes"
            else:
                fix = "write True or False"
            raise ValueError(f"{prefix}{key} must be a boolean, got {shown}: {fix}")
    elif key in _INTS:
        low, high, usual = _INTS[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{prefix}{key} must be a whole number, got {shown}: {usual}")
        if not low <= int(value) <= high:
            raise ValueError(f"{prefix}{key} must be from {low} to {high}, got {int(value)}: {usual}")
        if key == "spade_kernel_size" and int(value) % 2 == 0:
            raise ValueError(f"{prefix}{key} must be odd (the map keeps its size), got {int(value)}: {usual}")
    elif key in _FLOATS:
        low, high, usual = _FLOATS[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{prefix}{key} must be a number, got {shown}: {usual}")
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high or (key == "aspect_ratio" and number <= 0):
            raise ValueError(f"{prefix}{key} must be a finite number from {low:g} to {high:g}, got {value!r}: {usual}")
    elif key in _CHOICES:
        if not isinstance(value, str) or value not in _CHOICES[key]:
            raise ValueError(f"{prefix}{key} must be one of {', '.join(_CHOICES[key])}, got {shown}")
    elif key in _REFERENCE_STRINGS and not isinstance(value, str):
        raise ValueError(f"{prefix}{key} must be a norm name such as spectralinstance, got {shown}")


def _spade_block(fin: int, fout: int, sem: int, k: int, hidden: int) -> int:
    """Parameters of one SPADE residual block (convs, learned shortcut, the SPADE modulation convs)."""
    mid = min(fin, fout)

    def spade(channels: int) -> int:
        return sem * hidden * k * k + hidden + 2 * (hidden * channels * k * k + channels)

    total = fin * mid * 9 + mid + mid * fout * 9 + fout + spade(fin) + spade(mid)
    if fin != fout:
        total += fin * fout + spade(fin)
    return total


def _norm_extra(channels: int, norm: str) -> int:
    """A normalized conv's per-channel parameters: its bias without a norm, the affine scale and shift of a batch norm."""
    return {"none": channels, "batch": 2 * channels, "syncbatch": 2 * channels}.get(norm, 0)


def estimate_parameters(kind: str, config: Mapping[str, Any]) -> int:
    """The parameter count a network of ``kind`` ('generator', 'encoder', 'discriminator') would have."""
    c = {**_DEFAULTS, **config}
    kind = {v: k for k, v in _KINDS.items()}.get(kind, kind)
    if kind == "generator":
        nf, k, hidden = int(c["ngf"]), int(c["spade_kernel_size"]), int(c["spade_hidden_nc"])
        sem = int(c["label_nc"]) + int(bool(c["contain_dontcare_label"])) + int(bool(c["use_instance"]))
        n_up = UPSAMPLING_LAYERS.get(c["num_upsampling_layers"], 5)
        sw = int(c["crop_size"]) // 2**n_up
        sh = max(1, round(sw / float(c["aspect_ratio"])))
        if c["use_vae"]:
            total = (int(c["z_dim"]) + 1) * 16 * nf * sh * max(sw, 1)
        else:
            total = sem * 16 * nf * 9 + 16 * nf
        widths = [16 * nf, 16 * nf, 16 * nf, 16 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
        if c["num_upsampling_layers"] == "most":
            widths.append(nf // 2)
        total += sum(_spade_block(a, b, sem, k, hidden) for a, b in pairwise(widths))
        return total + widths[-1] * 3 * 9 + 3
    if kind == "encoder":
        nf = int(c["ngf"])
        widths = [3, nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf] + ([8 * nf] if int(c["crop_size"]) >= 256 else [])
        convs = sum(a * b * 9 + _norm_extra(b, c.get("norm", "instance")) for a, b in pairwise(widths))
        return convs + 2 * (8 * nf * 16 + 1) * int(c["z_dim"])
    if kind == "discriminator":
        nc = int(c["label_nc"]) + int(bool(c["contain_dontcare_label"])) + int(bool(c["use_instance"]))
        nf = int(c["ndf"])
        one = (nc + int(c["output_nc"])) * nf * 16 + nf
        for _ in range(1, int(c["n_layers_D"])):
            prev, nf = nf, min(nf * 2, 512)
            one += prev * nf * 16 + _norm_extra(nf, c.get("norm", "instance"))
        one += nf * 16 + 1
        return one * int(c["num_D"])
    raise ValueError(f"unknown network kind {kind!r}: use generator, encoder or discriminator")


def _size_hint(kind: str, c: Mapping[str, Any]) -> tuple[str, str]:
    if kind == "discriminator":
        return f"ndf {c['ndf']}, num_D {c['num_D']}, label_nc {c['label_nc']}", "lower ndf or num_D (the paper uses 64 and 2)"
    if kind == "encoder":
        return f"ngf {c['ngf']}, z_dim {c['z_dim']}", "lower ngf or z_dim (the paper uses 64 and 256)"
    what = f"ngf {c['ngf']}, label_nc {c['label_nc']}"
    if c.get("use_vae"):
        what += f", z_dim {c['z_dim']}, crop_size {c['crop_size']}"
    return what, "lower ngf (the paper uses 64)" + (" or z_dim / crop_size" if c.get("use_vae") else "")


def validate_network_config(kind: str, config: Mapping[str, Any], source: str | None = None) -> None:
    """Raise a one-line ValueError when a network config has a wrong type, an out-of-range size or is too big.

    ``kind`` is 'generator', 'encoder' or 'discriminator' (or the class name); ``config`` maps
    constructor keywords to values (unknown keys are ignored, so a constructor may pass
    ``locals()``); ``source`` names the file the values came from, else the class is named.
    """
    kind = {v: k for k, v in _KINDS.items()}.get(kind, kind)
    if kind not in _KINDS:
        raise ValueError(f"unknown network kind {kind!r}: use generator, encoder or discriminator")
    prefix = _prefix(kind, source)
    values = {k: v for k, v in config.items() if k != "self" and not k.startswith("__")}
    for key, value in values.items():
        _check_value(key, value, prefix, source)
    merged = {**_DEFAULTS, **values}
    count = estimate_parameters(kind, merged)
    if count > MAX_PARAMETERS:
        what, fix = _size_hint(kind, merged)
        raise ValueError(
            f"{prefix}{what} make a {_KINDS[kind]} of about {count / 1e9:.1f} G parameters "
            f"({count * 4 / 1e9:.0f} GB in float32), over the limit of {MAX_PARAMETERS / 1e9:.0f} G: {fix}"
        )


def validate_reference_options(opts: Mapping[str, Any], source: str) -> None:
    """Check NVlabs-style options (``opt.txt`` names: norm_G, no_instance, ...) and the networks they build."""
    from .presets import discriminator_kwargs, encoder_kwargs, generator_kwargs

    prefix = f"{source}: "
    for key, value in opts.items():
        _check_value(key, value, prefix, source)
    networks = [("generator", generator_kwargs), ("discriminator", discriminator_kwargs)]
    if opts.get("use_vae"):
        networks.append(("encoder", encoder_kwargs))
    for kind, to_kwargs in networks:
        try:
            kwargs = to_kwargs(dict(opts))
        except (KeyError, TypeError, ValueError) as err:
            message = f"lacks {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"{prefix}{message}: fix the option, or pass a preset (--preset NAME)") from None
        validate_network_config(kind, kwargs, source)

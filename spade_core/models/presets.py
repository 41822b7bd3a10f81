"""Reference configurations by name, and the translation of reference options to typed arguments.

The presets' network options live in ``spade_core.registry`` (one entry per dataset); they are
written in the reference's option names (``norm_G``, ``no_instance``, ...) because
that is how the paper's runs are specified; this module is the boundary where those strings
become typed constructor arguments. Nothing else in the models parses option strings.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from ..registry import DATASETS
from .layers import parse_plain_norm, parse_spade_norm

# Options shared by all the paper's runs (the reference's defaults for SPADE training).
_REFERENCE_DEFAULTS: dict[str, Any] = {
    "ngf": 64,
    "ndf": 64,
    "z_dim": 256,
    "crop_size": 256,
    "aspect_ratio": 1.0,
    "num_upsampling_layers": "normal",
    "norm_G": "spectralspadesyncbatch3x3",
    "norm_D": "spectralinstance",
    "norm_E": "spectralinstance",
    "n_layers_D": 4,
    "num_D": 2,
    "use_vae": False,
    "output_nc": 3,
    "init_type": "xavier",
    "init_variance": 0.02,
}


class _Presets(Mapping[str, dict[str, Any]]):
    """Preset name -> reference options: every ``spade_core.registry`` entry's ``network``, then
    the presets added with ``register_preset`` (which may also override a registry entry)."""

    def __init__(self) -> None:
        self._added: dict[str, dict[str, Any]] = {}

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name in self._added:
            return dict(self._added[name])
        if name in DATASETS:
            return dict(DATASETS[name].network)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(DATASETS) | set(self._added)))

    def __len__(self) -> int:
        return len(set(DATASETS) | set(self._added))

    def add(self, name: str, options: dict[str, Any]) -> None:
        """Register ``options`` under ``name``."""
        self._added[name] = dict(options)


PRESETS = _Presets()

_TYPED_ALIASES = {"use_instance": lambda v: {"no_instance": not v}}


def register_preset(name: str, options: dict[str, Any]) -> None:
    """Add a named configuration (reference option names; unspecified ones take the defaults)."""
    PRESETS.add(name, options)


def available_presets() -> list[str]:
    """Names of every preset: the registry's datasets and those added with ``register_preset``."""
    return sorted(PRESETS)


def preset_options(name: str, **overrides: Any) -> dict[str, Any]:
    """Full reference option dict of preset ``name`` with reference-named ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(available_presets())}")
    opts = {**_REFERENCE_DEFAULTS, **PRESETS[name]}
    opts.update(overrides)
    return opts


def generator_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Reference options -> SPADEGenerator keyword arguments."""
    norm = parse_spade_norm(opts["norm_G"])
    return {
        "label_nc": int(opts["label_nc"]),
        "contain_dontcare_label": bool(opts["contain_dontcare_label"]),
        "use_instance": not bool(opts["no_instance"]),
        "ngf": int(opts["ngf"]),
        "z_dim": int(opts["z_dim"]),
        "use_vae": bool(opts["use_vae"]),
        "crop_size": int(opts["crop_size"]),
        "aspect_ratio": float(opts["aspect_ratio"]),
        "num_upsampling_layers": str(opts["num_upsampling_layers"]),
        "init_type": str(opts.get("init_type", "xavier")),
        "init_gain": float(opts.get("init_variance", 0.02)),
        **norm,
    }


def discriminator_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Reference options -> MultiscaleDiscriminator keyword arguments."""
    spectral, norm = parse_plain_norm(opts["norm_D"])
    return {
        "label_nc": int(opts["label_nc"]),
        "contain_dontcare_label": bool(opts["contain_dontcare_label"]),
        "use_instance": not bool(opts["no_instance"]),
        "output_nc": int(opts.get("output_nc", 3)),
        "ndf": int(opts["ndf"]),
        "n_layers_D": int(opts["n_layers_D"]),
        "num_D": int(opts["num_D"]),
        "spectral_norm": spectral,
        "norm": norm,
        "init_type": str(opts.get("init_type", "xavier")),
        "init_gain": float(opts.get("init_variance", 0.02)),
    }


def encoder_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Reference options -> SPADEEncoder keyword arguments (its width is the reference's ngf)."""
    spectral, norm = parse_plain_norm(opts["norm_E"])
    return {
        "ngf": int(opts["ngf"]),
        "z_dim": int(opts["z_dim"]),
        "crop_size": int(opts["crop_size"]),
        "spectral_norm": spectral,
        "norm": norm,
        "init_type": str(opts.get("init_type", "xavier")),
        "init_gain": float(opts.get("init_variance", 0.02)),
    }


def build_from_preset(cls: type, to_kwargs, name: str, overrides: dict[str, Any]):
    """Instantiate ``cls`` from preset ``name``; overrides may use reference or typed names."""
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    reference_keys = set(_REFERENCE_DEFAULTS) | {"label_nc", "contain_dontcare_label", "no_instance"}
    ref_over: dict[str, Any] = {}
    typed_over: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _TYPED_ALIASES and key not in reference_keys:
            ref_over.update(_TYPED_ALIASES[key](value))
        elif key in reference_keys:
            ref_over[key] = value
        elif key in params:
            typed_over[key] = value
        else:
            raise ValueError(
                f"unknown option {key!r} for {cls.__name__}.from_preset: use one of {', '.join(sorted(params))}"
            )
    kwargs = to_kwargs(preset_options(name, **ref_over))
    kwargs.update(typed_over)
    return cls(**{k: v for k, v in kwargs.items() if k in params})

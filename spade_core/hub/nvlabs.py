"""Lossless conversion of NVlabs SPADE checkpoints (``latest_net_{G,E,D}.pth`` + ``opt.txt``).

Our modules keep the reference's state-dict names (weight compat requires it), so conversion is
reading the options, building the typed networks, checking every key and shape, and saving
them as diffusers-style folders of config.json + safetensors. Reference checkpoints are
read only through spade_core.weights.load_state_dict_file (``torch.load(..., weights_only=True)``,
flat name -> tensor dicts, finite values).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import MultiscaleDiscriminator, SPADEEncoder, SPADEGenerator
from ..models.presets import (
    build_from_preset,
    discriminator_kwargs,
    encoder_kwargs,
    generator_kwargs,
    preset_options,
)
from ..models.validation import validate_reference_options
from ..weights import load_state_dict_file, state_dict_mismatches
from .names import DISCRIMINATOR, ENCODER, GENERATOR

_CHECKPOINTS = {"generator": "latest_net_G.pth", "encoder": "latest_net_E.pth", "discriminator": "latest_net_D.pth"}


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_opt_file(path: str | Path) -> dict[str, Any]:
    """Parse the reference's ``opt.txt`` (``{name:>25}: {value}`` lines, optional ``[default: ...]``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"option file {path} not found: pass the opt.txt written beside the checkpoints, or --preset NAME")
    opts: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        if ":" not in line or line.lstrip().startswith("-"):
            continue
        name, _, value = line.partition(":")
        value = value.split("\t[default:")[0].split("[default:")[0]
        opts[name.strip()] = _parse_value(value)
    missing = [k for k in ("label_nc", "norm_G", "ngf", "crop_size") if k not in opts]
    if missing:
        raise ValueError(f"{path} is not a SPADE opt.txt: it lacks {', '.join(missing)}; pass --preset NAME instead")
    return opts


def options_for(preset: str | None = None, opt_file: str | Path | None = None, **overrides: Any) -> dict[str, Any]:
    """Reference options from a preset name or an opt.txt (exactly one of the two)."""
    if (preset is None) == (opt_file is None):
        raise ValueError("give exactly one of a preset name (--preset) or the run's opt.txt (--opt)")
    if preset is not None:
        return preset_options(preset, **overrides)
    opts = preset_options("ade20k")
    opts.update(read_opt_file(opt_file))
    opts.update(overrides)
    validate_reference_options(opts, str(opt_file))
    return opts


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a reference ``state_dict`` file safely through spade_core.weights (weights_only, flat, finite)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: point at the folder holding latest_net_G.pth")
    return load_state_dict_file(path)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, limit: int = 5) -> None:
    """Raise one ValueError naming the first missing, unexpected or mis-shaped keys, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = state_dict_mismatches(expected, found, "checkpoint", limit)
    if problems:
        raise ValueError(
            f"{source} does not match the {type(model).__name__} configuration: {'; '.join(problems)}; "
            "check the preset / opt.txt options (label_nc, ngf, norm_G, use_vae, ...)"
        )


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``model`` after a full key and shape check."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


@dataclass
class ConvertedNetworks:
    """The networks of one NVlabs run, converted; encoder / discriminator when present."""

    generator: SPADEGenerator
    encoder: SPADEEncoder | None
    discriminator: MultiscaleDiscriminator | None
    options: dict[str, Any]


def convert_nvlabs_checkpoint(
    checkpoint_dir: str | Path, preset: str | None = None, opt_file: str | Path | None = None, **overrides: Any
) -> ConvertedNetworks:
    """Read ``latest_net_G.pth`` (+ E, D when present) of a reference run into our modules (eval mode)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint_dir} not found")
    g_path = checkpoint_dir / _CHECKPOINTS["generator"]
    if not g_path.is_file():
        found = sorted(p.name for p in checkpoint_dir.glob("*.pth"))
        raise FileNotFoundError(
            f"{g_path} not found (found: {', '.join(found) or 'no .pth files'}): point at the folder holding latest_net_G.pth"
        )
    e_path = checkpoint_dir / _CHECKPOINTS["encoder"]
    if opt_file is None and preset is None and (checkpoint_dir / "opt.txt").is_file():
        opt_file = checkpoint_dir / "opt.txt"
    if e_path.is_file() and "use_vae" not in overrides:
        overrides["use_vae"] = True
    opts = options_for(preset, opt_file, **overrides)
    generator = load_checked(
        SPADEGenerator(**generator_kwargs(opts)), read_reference_checkpoint(g_path), str(g_path)
    )
    encoder = None
    if e_path.is_file():
        encoder = load_checked(SPADEEncoder(**encoder_kwargs(opts)), read_reference_checkpoint(e_path), str(e_path))
    discriminator = None
    d_path = checkpoint_dir / _CHECKPOINTS["discriminator"]
    if d_path.is_file():
        discriminator = load_checked(
            MultiscaleDiscriminator(**discriminator_kwargs(opts)), read_reference_checkpoint(d_path), str(d_path)
        )
    for net in (generator, encoder, discriminator):
        if net is not None:
            net.eval()
    return ConvertedNetworks(generator, encoder, discriminator, opts)


def save_converted(networks: ConvertedNetworks, out_dir: str | Path) -> Path:
    """Write ``out_dir/{generator,encoder,discriminator}/`` (config.json + safetensors)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    networks.generator.save_pretrained(out_dir / GENERATOR)
    if networks.encoder is not None:
        networks.encoder.save_pretrained(out_dir / ENCODER)
    if networks.discriminator is not None:
        networks.discriminator.save_pretrained(out_dir / DISCRIMINATOR)
    return out_dir


__all__ = [
    "ConvertedNetworks",
    "build_from_preset",
    "check_state_dict",
    "convert_nvlabs_checkpoint",
    "load_checked",
    "options_for",
    "read_opt_file",
    "read_reference_checkpoint",
    "save_converted",
]

"""Segmenters for segmentation consistency: the shipped landscape segmenter, and loading your own.

`LandscapeSegmenter` is the small fully convolutional network that `benchmarks/quality_synthetic.py`
trains on real rendered landscapes; its weights ship in `spade_core/assets/segmenter/`
(`model.safetensors` + `config.json`), so the embedded model's mIoU is measurable offline.
`load_segmenter` builds a user segmenter from `MODULE:FACTORY` [+ a weights file] or from a whole
saved network (torch.export `.pt2` or TorchScript).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..files import read_json

LANDSCAPE_SEGMENTER_DIR = Path(__file__).resolve().parents[1] / "assets" / "segmenter"
SEGMENTER_WEIGHTS_NAME = "model.safetensors"
SEGMENTER_CONFIG_NAME = "config.json"
_ARCHITECTURE = "LandscapeSegmenter"
_EXPORT_HINT = "write it with: python benchmarks/quality_synthetic.py --export-segmenter DIR"


class LandscapeSegmenter(nn.Module):
    """A compact encoder-decoder FCN (0.57 M parameters at width 32): images in [0, 1] -> class logits."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ValueError(f"num_classes and width must be positive, got {num_classes} and {width}")
        self.num_classes = num_classes

        def block(i: int, o: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.ReLU(True))

        w = width
        self.down1 = nn.Sequential(block(3, w), block(w, w))
        self.down2 = nn.Sequential(block(w, 2 * w, 2), block(2 * w, 2 * w))
        self.down3 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w), block(4 * w, 4 * w))
        self.up2 = block(4 * w + 2 * w, 2 * w)
        self.up1 = block(2 * w + w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1], H and W multiples of 4 -> logits (N, num_classes, H, W)."""
        d1 = self.down1(x * 2 - 1)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        u2 = self.up2(torch.cat([F.interpolate(d3, size=d2.shape[-2:]), d2], 1))
        u1 = self.up1(torch.cat([F.interpolate(u2, size=d1.shape[-2:]), d1], 1))
        return self.head(u1)


def save_landscape_segmenter(net: LandscapeSegmenter, folder: str | Path, info: dict[str, Any]) -> Path:
    """Write `net` as `model.safetensors` + `config.json` (architecture, classes, `info`) into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    width = net.head.in_channels
    config = {"architecture": _ARCHITECTURE, "num_classes": net.num_classes, "width": width, **info}
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()}
    save_file(state, str(folder / SEGMENTER_WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / SEGMENTER_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def read_segmenter_config(folder: str | Path | None = None) -> dict[str, Any]:
    """The `config.json` of a landscape segmenter folder (default: the shipped one)."""
    folder = LANDSCAPE_SEGMENTER_DIR if folder is None else Path(folder).expanduser()
    path = folder / SEGMENTER_CONFIG_NAME
    config = read_json(path, _EXPORT_HINT)
    if config.get("architecture") != _ARCHITECTURE:
        raise ValueError(f"{path} does not describe a {_ARCHITECTURE} (architecture key): {_EXPORT_HINT}")
    for key in ("num_classes", "width"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise ValueError(f"{path}: '{key}' must be a positive integer, got {config.get(key)!r}: {_EXPORT_HINT}")
    return config


def load_landscape_segmenter(
    folder: str | Path | None = None, device: torch.device | str = "cpu"
) -> LandscapeSegmenter:
    """The landscape segmenter of `folder` (default: the shipped package data) in eval mode on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = LANDSCAPE_SEGMENTER_DIR if folder is None else Path(folder).expanduser()
    config = read_segmenter_config(folder)
    weights = folder / SEGMENTER_WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no segmenter weights at {weights}: {_EXPORT_HINT}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}): {_EXPORT_HINT}") from None
    net = LandscapeSegmenter(config["num_classes"], config["width"])
    try:
        net.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or differently shaped tensors
        first = str(err).strip().splitlines()[1:2] or [str(err)]
        raise ValueError(f"{weights} does not match its config.json ({first[0].strip()}): {_EXPORT_HINT}") from None
    return net.to(device).eval()


def default_segmenter(label_set_name: str, device: torch.device | str = "cpu") -> LandscapeSegmenter | None:
    """The shipped segmenter for a label set (only `landscape` has one), or None."""
    if label_set_name != "landscape" or not (LANDSCAPE_SEGMENTER_DIR / SEGMENTER_CONFIG_NAME).is_file():
        return None
    config = read_segmenter_config()
    if config.get("label_set", "landscape") != label_set_name:
        return None
    return load_landscape_segmenter(device=device)


def load_segmenter(
    spec: str | None,
    weights: str | Path | None,
    device: torch.device | str = "cpu",
    *,
    spec_name: str = "spec",
    weights_name: str = "weights",
) -> Any:
    """A segmenter from `spec` "MODULE:FACTORY" (called as FACTORY() or FACTORY(weights)) or a saved one alone.

    Without either, None. `spec_name` / `weights_name` name the two inputs in error messages (the
    command line passes its flags). A module is moved to `device` and put in eval mode.
    """
    if spec is None and weights is None:
        return None
    device = torch.device(device)
    weights_path = None
    if weights is not None:
        weights_path = Path(weights).expanduser()
        if not weights_path.is_file():
            raise FileNotFoundError(f"{weights_name} {weights_path} not found: check the path")
    if spec is None:
        return _load_saved_segmenter(weights_path, device, weights_name, spec_name)
    factory = _import_factory(spec, spec_name)
    try:
        segmenter = factory(str(weights_path)) if weights_path is not None else factory()
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - a plug-in may raise anything; report it in one line
        raise ValueError(f"{spec_name} {spec}: the factory failed ({type(err).__name__}: {err}): fix it or its arguments") from None
    if not callable(segmenter):  # ValueError, like every user mistake (DESIGN.md)
        raise ValueError(  # noqa: TRY004
            f"{spec_name} {spec} returned a {type(segmenter).__name__}: return a torch module or a callable "
            "mapping images [0,1] (N,3,H,W) to logits or labels"
        )
    if isinstance(segmenter, nn.Module):
        segmenter = segmenter.to(device).eval()
    return segmenter


def _import_factory(spec: str, spec_name: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec_name} {spec!r} is not MODULE:FACTORY: pass e.g. my_segmenters:deeplab_cocostuff")
    path = Path(module_name).expanduser()
    try:
        if module_name.endswith(".py"):
            if not path.is_file():
                raise FileNotFoundError(f"{spec_name} file {path} not found: check the path")
            name = "_spade_segmenter_" + hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -m` would: modules in the current folder import
            module = importlib.import_module(module_name)
    except FileNotFoundError:
        raise
    except ImportError as err:
        raise ValueError(
            f"{spec_name}: cannot import {module_name!r} ({err}): put it in the current folder or on PYTHONPATH, "
            "or pass a .py path"
        ) from None
    except Exception as err:  # noqa: BLE001 - the plug-in module's own import-time failure
        raise ValueError(f"{spec_name}: importing {module_name!r} failed ({type(err).__name__}: {err})") from None
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"{spec_name}: {module_name!r} has no attribute {attr!r}: check the factory name")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(  # noqa: TRY004
            f"{spec_name}: {module_name}:{attr} is a {type(factory).__name__}, not a function or class"
        )
    return factory


def _load_saved_segmenter(path: Path, device: torch.device, weights_name: str, spec_name: str) -> Any:
    """A whole segmenter on `device` from a torch.export program (.pt2) or a TorchScript file (eval mode as saved)."""
    try:
        if path.suffix.lower() == ".pt2":
            program = torch.export.load(str(path))
            if device.type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, device)
            return program.module()  # exported programs keep the mode they were traced in (no .eval())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated but still common
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as err:  # noqa: BLE001 - loaders raise many types for a wrong or corrupt file
        raise ValueError(
            f"{weights_name} {path} is not a torch.export (.pt2) or TorchScript segmenter ({type(err).__name__}): "
            f"save one with torch.export.save, or pass {spec_name} MODULE:FACTORY to build it and load these weights"
        ) from None

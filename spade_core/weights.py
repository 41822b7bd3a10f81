"""Reading weight files and fetching auxiliary weights (VGG19, ...) into a local cache."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from spade_core.devices import offline
from spade_core.images import check_finite

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat name -> tensor dict on CPU from `.safetensors` or a torch `.pth/.pt/.bin` file.

    Torch files are read with `weights_only=True` (never arbitrary pickles); a top-level
    `{"state_dict": ...}` wrapper is unwrapped. Non-tensor entries and NaN/Inf values raise
    ValueError naming the file and the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}: check the path (or download it again)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"could not read weights from {path} (truncated or not a safetensors file): re-download it"
            ) from err
    elif suffix in _TORCH_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "weights only" in str(err).lower():
                raise ValueError(
                    f"{path} holds Python objects besides tensors and is not loaded for safety: "
                    "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors"
                ) from err
            raise ValueError(
                f"could not read weights from {path} (truncated or not a PyTorch file): re-download it"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"could not read weights from {path} (truncated or not a PyTorch file): re-download it"
            ) from err
    else:
        raise ValueError(
            f"unsupported weights file type '{path.suffix}' for {path}: use .safetensors, .pth, .pt or .bin"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__}): save model.state_dict()")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path} is not a flat state dict (entry '{name}' is a {type(value).__name__}, not a tensor): "
                "save model.state_dict() of a single network"
            )
        check_finite(value, f"{path} entry '{name}'", "the weights are broken; re-download or re-export them")
    return dict(state)


def state_dict_mismatches(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], found_name: str = "file", limit: int = 5
) -> list[str]:
    """Human-readable problems between two key -> shape maps: missing, unexpected, mis-shaped keys.

    Empty when they match; each entry names the first ``limit`` offenders.
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k])} vs {tuple(v)}" for k, v in expected.items() if k in found and tuple(found[k]) != tuple(v)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({', '.join(missing[:limit])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:limit])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches, {found_name} vs model ({'; '.join(shapes[:limit])})")
    return problems


def cache_dir() -> Path:
    """The folder for downloaded auxiliary weights: `$SPADE_CACHE`, else `~/.cache/spade`."""
    return Path(os.environ.get("SPADE_CACHE") or Path.home() / ".cache" / "spade").expanduser()


def download_weights(
    url: str, filename: str, env_var: str, *, hash_prefix: str | None = None, hint: str = ""
) -> Path:
    """Return the cached `filename` (our cache, then torch.hub's), downloading it from `url` if absent.

    Offline (`HF_HUB_OFFLINE` / `SPADE_OFFLINE`) or on a network failure, raise one-line
    `FileNotFoundError` saying which file is needed, where to put it and `env_var`; `hint` is appended.
    """
    target = cache_dir() / filename
    if target.is_file():
        return target
    torch_hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if torch_hub_copy.is_file():
        return torch_hub_copy
    suffix = f"; {hint}" if hint else ""
    missing = (
        f"{filename} is needed but not cached: download {url} to {target} "
        f"or set {env_var}=/path/to/{filename}{suffix}"
    )
    if offline():
        raise FileNotFoundError(f"offline mode: {missing}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=hash_prefix, progress=True)
    except OSError as err:
        raise FileNotFoundError(f"download failed ({err}): {missing}") from err
    except RuntimeError as err:
        raise ValueError(
            f"the download of {url} is corrupt ({err}): retry, or put a good copy at {target}"
        ) from err
    return target

"""Training checkpoints: one folder per step, written atomically, readable without pickle.

Layout of ``RUN_DIR/checkpoints/step_XXXXXXX/``::

    generator/ discriminator/ [encoder/] [ema_generator/]   config.json + diffusion_pytorch_model.safetensors
    training_state.safetensors   optimizer moments, RNG generator states (uint8), ... (tensors)
    training_state.json          step, epoch, optimizer param groups, schedulers, scalers, python/numpy RNG
    train_config.json            the TrainConfig of the run
    label_set.json               the dataset's LabelSet

A checkpoint is written into ``.tmp-step_XXXXXXX-<pid>/`` and renamed into place, then the
``latest`` pointer file is replaced atomically, so a process killed at any moment leaves the
previous complete checkpoint in place; resuming ignores any ``.tmp-*`` folder. A write that fails
(a full disk) removes its temporary folder and raises a one-line error; the previous checkpoint
stays the latest. :func:`verify_checkpoint` reads every file's header so that a resume can skip a
truncated or corrupt checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import TMP_PREFIX, atomic_write_text, fsync_dir
from ..files import read_json as read_json_file
from ..models import MultiscaleDiscriminator, SPADEEncoder, SPADEGenerator
from ..models.files import WEIGHTS_NAME
from .config import OptionError

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
CONFIG_NAME = "train_config.json"
LABEL_SET_NAME = "label_set.json"
TRASH_PREFIX = ".trash-"
_STEP_DIR = re.compile(r"^step_(\d+)$")

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "generator": SPADEGenerator,
    "ema_generator": SPADEGenerator,
    "encoder": SPADEEncoder,
    "discriminator": MultiscaleDiscriminator,
}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file; a missing or corrupt one raises a one-line error naming it."""
    return _read_json(path)


def _read_json(path: Path) -> Any:
    return read_json_file(path, "the checkpoint is incomplete or corrupt; resume from another one")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint is incomplete, resume from another one")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"could not read {path} (truncated or corrupt: {err}): resume from another checkpoint") from None


# ----------------------------------------------------------------------------- networks


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return module.module if hasattr(module, "module") and isinstance(module.module, nn.Module) else module


def save_network(module: nn.Module, folder: str | Path) -> None:
    """``folder/config.json`` + ``folder/diffusion_pytorch_model.safetensors`` (the diffusers layout)."""
    module = unwrap(module)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(module.to_json_string())
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))


def load_network_state(module: nn.Module, folder: str | Path) -> nn.Module:
    """Load ``folder``'s weights into an existing network after a key and shape check."""
    module = unwrap(module)
    folder = Path(folder)
    state = _load_safetensors(folder / WEIGHTS_NAME)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        problems = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
        parts = [f"{name}: {', '.join(keys[:5])}" for name, keys in problems if keys]
        raise ValueError(
            f"{folder} does not match the {type(module).__name__} of this config ({'; '.join(parts)}): "
            "resume with the run's own config (drop conflicting --ngf/--crop-size/... flags)"
        )
    module.load_state_dict(state, strict=True)
    return module


def load_network(name: str, folder: str | Path) -> nn.Module:
    """Build the network stored in ``folder`` from its config.json and load its weights."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    module = NETWORK_CLASSES[name].from_config(config)
    return load_network_state(module, folder)


# ----------------------------------------------------------------------------- optimizer / RNG state


def flatten_optimizer(prefix: str, state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state dict -> (tensors named ``prefix.<param>.<key>``, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, pstate in state_dict["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        index, key = name[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch CPU/CUDA generator states (uint8 tensors) and Python/NumPy states (JSON)."""
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where the devices exist)."""
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ----------------------------------------------------------------------------- checkpoint folders


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def checkpoint_step(folder: str | Path) -> int:
    """The step of a ``step_XXXXXXX`` folder (-1 for another name)."""
    match = _STEP_DIR.match(Path(folder).name)
    return int(match.group(1)) if match else -1


def verify_checkpoint(folder: str | Path) -> str | None:
    """What makes checkpoint ``folder`` unusable (a missing, truncated or corrupt file), or None.

    Reads the JSON files and every safetensors header (which also checks the file's length)
    without loading any tensor.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    files = [folder / STATE_JSON, folder / CONFIG_NAME, folder / LABEL_SET_NAME, folder / STATE_TENSORS]
    for name in ("generator", "discriminator", "encoder", "ema_generator"):
        if name in ("generator", "discriminator") or (folder / name).is_dir():
            files += [folder / name / "config.json", folder / name / WEIGHTS_NAME]
    for path in files:
        where = path.relative_to(folder).as_posix()
        if not path.is_file():
            return f"{where} is missing"
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                if not isinstance(data, dict):
                    return f"{where} holds {type(data).__name__}, not a mapping"
            else:
                with safe_open(str(path), framework="pt"):
                    pass
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return f"{where} is not valid JSON: {err}"
        except (SafetensorError, OSError, ValueError) as err:
            return f"{where} is truncated or corrupt: {' '.join(str(err).split())}"
    if not isinstance(json.loads((folder / STATE_JSON).read_text()).get("step"), int):
        return f"{STATE_JSON} has no step"
    return None


def write_error(err: OSError, what: str, run_dir: str | Path) -> OptionError:
    """A one-line error for a failed write into a run folder (a full disk first of all)."""
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return OptionError(f"no space left on device while writing {what} to {run_dir}: "
                           "free space or pass another {out_dir}")
    reason = err.strerror or " ".join(str(err).split())
    return OptionError(f"could not write {what} to {run_dir} ({reason}): check that the folder is writable, "
                       "or pass another {out_dir}")


def checkpoints_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (temporary folders are not listed)."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint the ``latest`` pointer names, else the newest complete folder, else None."""
    root = checkpoints_root(run_dir)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if _STEP_DIR.match(target.name) and target.is_dir():
            return target
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_partial(run_dir: str | Path) -> list[Path]:
    """Delete leftovers of interrupted writes (``.tmp-*`` and ``.trash-*``); return what was removed."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    removed = [p for p in root.iterdir() if p.name.startswith((TMP_PREFIX, TRASH_PREFIX))]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def _discard(path: Path) -> None:
    """Remove a checkpoint folder so that no half-deleted folder ever looks complete."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    networks: dict[str, nn.Module | None],
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    config: dict[str, Any],
    label_set: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it and keep the newest ``keep`` up to it.

    A failed write (a full disk) deletes the partial folder and raises a one-line OptionError;
    the previous checkpoint stays complete and ``latest``. Checkpoints past ``step`` (left by a
    run that was resumed from an older one) are kept until training passes them.
    """
    root = checkpoints_root(run_dir)
    name = checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{name}-{os.getpid()}"
    final = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for key, module in networks.items():
            if module is not None:
                save_network(module, tmp / key)
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
        _write_json(tmp / STATE_JSON, {**meta, "step": step})
        _write_json(tmp / CONFIG_NAME, config)
        _write_json(tmp / LABEL_SET_NAME, label_set)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        fsync_dir(root)
        atomic_write_text(root / LATEST_FILE, name + "\n")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(err, f"checkpoint step {step}", run_dir) from None
    older = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) <= step]
    for old in older[:-keep]:
        if old != final:
            _discard(old)
    return final


def read_training_state(checkpoint: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON state) of a checkpoint folder."""
    checkpoint = Path(checkpoint)
    return _load_safetensors(checkpoint / STATE_TENSORS), _read_json(checkpoint / STATE_JSON)


def resolve_checkpoint(run_dir_or_checkpoint: str | Path) -> Path:
    """A checkpoint folder given either itself or its run folder (then the latest one)."""
    path = Path(run_dir_or_checkpoint)
    if (path / STATE_JSON).is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} not found: pass the --out folder of a `spade train` run")
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(
            f"{path} holds no complete checkpoint (expected {CHECKPOINTS_DIR}/step_*/): train longer or check the path"
        )
    return found


def load_run_networks(run_dir: str | Path) -> dict[str, Any]:
    """The networks of a run's latest checkpoint (or of a checkpoint folder), in eval mode.

    Keys: ``generator``, ``encoder`` (or None), ``ema_generator`` (or None), ``discriminator``,
    ``label_set`` (dict), ``config`` (TrainConfig dict), ``step`` and ``checkpoint`` (its path).
    """
    checkpoint = resolve_checkpoint(run_dir)
    out: dict[str, Any] = {}
    for name in ("generator", "encoder", "ema_generator", "discriminator"):
        folder = checkpoint / name
        out[name] = load_network(name, folder).eval() if folder.is_dir() else None
    if out["generator"] is None:
        raise FileNotFoundError(f"{checkpoint} has no generator/ folder: the checkpoint is incomplete")
    out["label_set"] = _read_json(checkpoint / LABEL_SET_NAME)
    out["config"] = _read_json(checkpoint / CONFIG_NAME)
    out["step"] = int(_read_json(checkpoint / STATE_JSON)["step"])
    out["checkpoint"] = checkpoint
    return out

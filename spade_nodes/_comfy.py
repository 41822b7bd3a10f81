"""ComfyUI's node API and runtime services, with plain fallbacks when ComfyUI is not importable.

Inside ComfyUI, `io` / `ComfyExtension` are `comfy_api.latest`'s and devices, progress,
interruption, the input folder and the `models/spade` folder come from ComfyUI. Outside it
(unit tests, scripts) `io` is `_stub` and the helpers fall back to CPU, no progress, no
interruption and no model folders, so the nodes' `execute` logic runs unchanged.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from typing import Any

import torch

try:
    from comfy_api.latest import ComfyExtension, io
except ImportError:
    from . import _stub as io
    from ._stub import ComfyExtension

try:
    import comfy.utils as comfy_utils
    import folder_paths
    from comfy import model_management
except ImportError:
    model_management = comfy_utils = folder_paths = None

__all__ = ["IN_COMFYUI", "MODEL_FOLDER", "ComfyExtension", "io"]

IN_COMFYUI = folder_paths is not None
MODEL_FOLDER = "spade"  # folder_paths key: models/spade, and `spade:` in extra_model_paths.yaml
_MODEL_EXTENSIONS = {".safetensors", ".json"}  # weights files, and model_index.json of pipeline folders


def register_model_folder() -> None:
    """Register `models/spade` with folder_paths, keeping paths extra_model_paths.yaml added."""
    if folder_paths is None:
        return
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    paths = list(folder_paths.folder_names_and_paths.get(MODEL_FOLDER, ([], set()))[0])
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, set(_MODEL_EXTENSIONS))


def model_entries() -> list[str]:
    """Pipeline folders ("name/") and single .safetensors files found in the model folders."""
    if folder_paths is None or MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        return []
    files = [f.replace(os.sep, "/") for f in folder_paths.get_filename_list(MODEL_FOLDER)]
    pipelines = sorted({posixpath.dirname(f) for f in files if posixpath.basename(f) == "model_index.json"})
    pipelines = [p for p in pipelines if p]

    def inside_pipeline(f: str) -> bool:
        return any(f.startswith(p + "/") for p in pipelines)

    singles = sorted(f for f in files if f.endswith(".safetensors") and not inside_pipeline(f))
    return [p + "/" for p in pipelines] + singles


def resolve_model_entry(entry: str) -> str:
    """Full path of a `model_entries()` item; FileNotFoundError naming the fix otherwise."""
    if folder_paths is not None and MODEL_FOLDER in folder_paths.folder_names_and_paths:
        for base in folder_paths.get_folder_paths(MODEL_FOLDER):
            path = os.path.join(base, *entry.rstrip("/").split("/"))
            if entry.endswith("/") and os.path.isfile(os.path.join(path, "model_index.json")):
                return path
            if not entry.endswith("/") and os.path.isfile(path):
                return path
    raise FileNotFoundError(
        f"SPADE model '{entry}' is not in models/{MODEL_FOLDER}: put the pipeline folder or "
        "safetensors file there and refresh the node definitions (press R)"
    )


def compute_device(choice: str) -> torch.device:
    """The device to run on: ComfyUI's torch device for "default", or the CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where a loaded model rests between runs (ComfyUI's unet offload device, else CPU)."""
    if model_management is not None:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where IMAGE outputs go (ComfyUI's intermediate device, else CPU)."""
    if model_management is not None:
        return model_management.intermediate_device()
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where ComfyUI says the device runs it well, else float32 (always outside ComfyUI).

    Never float16 by default: a full-size generator overflowed to NaN in float16 on an H200.
    """
    if model_management is not None and model_management.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


def free_memory(bytes_needed: int, device: torch.device) -> None:
    """Ask ComfyUI to unload its models until `bytes_needed` fit on `device` (no-op on CPU)."""
    if model_management is not None and device.type != "cpu":
        model_management.free_memory(bytes_needed, device)


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


class _NoProgress:
    """Progress bar that reports nowhere (outside ComfyUI)."""

    def __init__(self, total: int) -> None:
        self.total = total

    def update(self, value: int) -> None:
        """Ignore the step."""


def progress_bar(total: int) -> Any:
    """ComfyUI's ProgressBar (which also stops on interruption), or a silent stand-in."""
    return comfy_utils.ProgressBar(total) if comfy_utils is not None else _NoProgress(total)


def input_images() -> list[str]:
    """Image files in ComfyUI's input folder, for the upload combo (empty outside ComfyUI)."""
    if folder_paths is None:
        return []
    root = folder_paths.get_input_directory()
    files = [f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["image"]))


def input_path(name: str) -> str:
    """Full path of an input-folder name (ComfyUI annotations like "x.png [output]" allowed)."""
    if folder_paths is None:
        return name
    return folder_paths.get_annotated_filepath(name)


def input_exists(name: str) -> bool:
    """Whether an input-folder name points at an existing file."""
    return os.path.isfile(input_path(name))


def file_digest(path: str) -> str:
    """sha256 of a file, so edits to an uploaded segmap re-run the node."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""ComfyUI's node API and runtime services, with plain fallbacks when ComfyUI is not importable.

Inside ComfyUI, `io` / `ComfyExtension` are `comfy_api.latest`'s and devices, progress,
interruption, the input folder and the `models/spade` folder come from ComfyUI. Outside it
(unit tests, scripts) `io` is `_stub` and the helpers fall back to CPU, no progress, no
interruption, no model folders and the current directory as the input folder, so the nodes'
`execute` logic runs unchanged.

Files and models resolve only inside their folders, as a shared server needs: names are
relative (no absolute paths, no `..`), and the real path (symlinks followed) must stay inside
the input folder (or the output/temp folder a "name [output]" annotation picks) and inside a
registered `models/spade` folder.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from typing import Any

import torch

from spade_core.hub.names import MODEL_INDEX

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
_MODEL_EXTENSIONS = {".json"}  # a pipeline folder is listed by its model_index.json
_ANNOTATIONS = {"[input]": "get_input_directory", "[output]": "get_output_directory", "[temp]": "get_temp_directory"}
_DRIVE = re.compile(r"^[A-Za-z]:")


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
    """Pipeline folders ("name/", a folder holding model_index.json) found in the model folders."""
    if folder_paths is None or MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        return []
    files = [f.replace(os.sep, "/") for f in folder_paths.get_filename_list(MODEL_FOLDER)]
    pipelines = sorted({posixpath.dirname(f) for f in files if posixpath.basename(f) == MODEL_INDEX})
    return [p + "/" for p in pipelines if p]


def _parts(name: str) -> list[str]:
    """The components of a relative name, split on both separators."""
    return [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]


def check_relative_name(name: Any, what: str, fix: str) -> str:
    """`name` if it is a plain relative name; ValueError naming `what` and the `fix` for absolute paths and `..`."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} is empty: {fix}")
    if "\x00" in name:
        raise ValueError(f"{what} {name!r} holds a NUL character: {fix}")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise ValueError(f"{what} {name!r} is an absolute path, which the SPADE nodes refuse: {fix}")
    if ".." in re.split(r"[\\/]", name):
        raise ValueError(f"{what} {name!r} contains '..', which the SPADE nodes refuse: {fix}")
    return name


def _inside(path: str, root: str) -> bool:
    """Whether `path`'s real location (symlinks followed) lies inside `root`'s real location."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # different drives on Windows
        return False


def _escaping_file(folder: str, root: str) -> str | None:
    """The first file or folder under `folder` whose real path leaves `root` (relative to `folder`), else None."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for entry in (*dirnames, *filenames):
            path = os.path.join(dirpath, entry)
            if not _inside(path, root):
                return os.path.relpath(path, folder).replace(os.sep, "/")
    return None


def resolve_model_entry(entry: str) -> str:
    """Full path of a `model_entries()` item, inside a registered models/spade folder.

    ValueError for absolute paths, `..`, lone files and folders that are (or hold) links leading
    out of the model folder; FileNotFoundError naming the fix when no model folder has the entry.
    """
    where = f"models/{MODEL_FOLDER}"
    fix = f"pick a pipeline folder from the model list (folders under {where})"
    check_relative_name(entry, "model", fix)
    if not entry.endswith("/"):
        raise ValueError(
            f"model {entry!r} is not a pipeline folder entry, and a SPADE model needs its config and label set: "
            f"put the whole pipeline folder (model_index.json, generator/, encoder/) under {where} and pick "
            "that folder"
        )
    if folder_paths is not None and MODEL_FOLDER in folder_paths.folder_names_and_paths:
        for base in folder_paths.get_folder_paths(MODEL_FOLDER):
            path = os.path.join(base, *_parts(entry))
            if not os.path.isfile(os.path.join(path, MODEL_INDEX)):
                continue
            if not _inside(path, base):
                raise ValueError(
                    f"model {entry!r} is a link that leads out of {where}, which the SPADE nodes refuse: move or copy "
                    f"the folder itself into {where}, or add its location under `{MODEL_FOLDER}:` in "
                    "extra_model_paths.yaml"
                )
            escaping = _escaping_file(path, base)
            if escaping is not None:
                raise ValueError(
                    f"model {entry!r} holds {escaping!r}, a link that leads out of {where}, which the SPADE nodes "
                    "refuse: replace the link with the file itself"
                )
            return path
    raise FileNotFoundError(
        f"SPADE model {entry!r} is not in {where}: put the pipeline folder there and refresh the node "
        "definitions (press R)"
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
    """Image files in ComfyUI's input folder (links leading out left off), for the upload combo (empty outside ComfyUI)."""
    if folder_paths is None:
        return []
    root = folder_paths.get_input_directory()
    files = [f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f)) and _inside(os.path.join(root, f), root)]
    return sorted(folder_paths.filter_files_content_types(files, ["image"]))


def _input_root(name: str) -> tuple[str, str, str]:
    """(bare name, folder it must stay in, words for that folder) for a possibly annotated input name."""
    for suffix, getter in _ANNOTATIONS.items():
        if name.endswith(suffix) and hasattr(folder_paths, getter):
            bare = name[: -len(suffix)].rstrip()
            return bare, getattr(folder_paths, getter)(), f"ComfyUI's {suffix[1:-1]} folder"
    return name, folder_paths.get_input_directory(), "ComfyUI's input folder"


def input_path(name: str, what: str = "image") -> str:
    """Full path of an input-folder file name, refused (ValueError naming `what`) unless it stays inside the folder.

    ComfyUI's annotations ("x.png [output]", "[temp]", "[input]") pick the folder, as in LoadImage.
    Outside ComfyUI the current directory is the input folder.
    """
    fix = "pick a file in ComfyUI's input folder (upload it with the node's button)"
    check_relative_name(name, what, fix)
    if folder_paths is None:
        bare, root, words = name, os.getcwd(), "the current folder"
        path = os.path.join(root, name)
    else:
        bare, root, words = _input_root(name)
        check_relative_name(bare, what, fix)
        path = folder_paths.get_annotated_filepath(name)
    if not _inside(path, root):
        raise ValueError(
            f"{what} {name!r} is a link that leads out of {words}, which the SPADE nodes refuse: copy the file "
            "itself into the folder (or upload it with the node's button)"
        )
    return path


def input_file(name: str, what: str = "image") -> str:
    """Full path of an existing input-folder file: ValueError when refused (see input_path), FileNotFoundError when missing."""
    path = input_path(name, what)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {name!r} is not in the input folder: upload it with the node's button")
    return path


def input_error(name: str, what: str = "image") -> str | None:
    """Why `name` cannot be read from the input folder (one line naming the fix), or None when it can."""
    try:
        input_file(name, what)
    except (ValueError, FileNotFoundError) as err:
        return str(err)
    return None


def file_digest(path: str) -> str:
    """sha256 of a file, so edits to an uploaded segmap re-run the node."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

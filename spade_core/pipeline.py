"""SPADEPipeline: segmentation map (+ optional style image) -> images, used like a diffusers pipeline.

A pipeline folder (or Hub repo) holds ``model_index.json`` (components and the label set),
``generator/`` and, for VAE models, ``encoder/`` (config.json + safetensors), and a README.md
model card. Loading resolves local folders, Hub repo ids through the HF cache (offline when
cached) and the embedded default model shipped in ``spade_core/assets/embedded/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .hub.model_card import read_model_card_metadata, write_model_card
from .hub.publish import PushPlan, hub_offline, push_folder
from .images import MAX_SIDE, check_finite, check_image_size, open_image
from .labels import LabelSet, available_label_sets, get_label_set
from .models import SPADEEncoder, SPADEGenerator
from .models.encoder import reparameterize
from .models.validation import validate_network_config
from .segmap import coerce_instance_map, coerce_segmap, one_hot_semantics, resize_labels
from .weights import state_dict_mismatches

__all__ = [
    "SPADEPipeline",
    "SPADEPipelineOutput",
    "check_pipeline_folder",
    "embedded_model_dir",
    "estimate_inference_bytes",
    "generic_label_set",
    "matching_label_set",
    "resolve_device",
    "resolve_dtype",
    "resolve_pipeline_folder",
]

OUTPUT_TYPES = ("pil", "np", "pt")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# Label set a checkpoint most likely uses, by its class count (the paper's datasets).
LABEL_SETS_BY_COUNT = {150: "ade20k", 182: "coco", 35: "cityscapes"}
_HUB_FILES = ["model_index.json", "README.md", "generator/*", "encoder/*"]
_NOT_LOADED = ["*.bin", "*.pth", "*.pt", "*.ckpt", "*.pkl"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_COMPONENTS = {"generator": SPADEGenerator, "encoder": SPADEEncoder}
# One synthesis call may use this much memory for the generator's activations (estimated before
# anything is allocated); $SPADE_MAX_INFERENCE_BYTES overrides it.
MAX_INFERENCE_BYTES = 16 * 1024**3
_ENV_INFERENCE_BYTES = "SPADE_MAX_INFERENCE_BYTES"


@dataclass
class SPADEPipelineOutput(BaseOutput):
    """``images``: a list of PIL images, a float numpy array (N,H,W,3) in [0,1], or a tensor (N,3,H,W) in [0,1]."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------- label sets


def _distinct_color(index: int) -> tuple[int, int, int]:
    """A well-separated colour per index: the bits of index+1 spread over R, G, B from the top bit down."""
    r = g = b = 0
    code = index + 1
    for bit in range(7, -1, -1):
        r |= (code & 1) << bit
        g |= ((code >> 1) & 1) << bit
        b |= ((code >> 2) & 1) << bit
        code >>= 3
    return r, g, b


def generic_label_set(
    label_nc: int, contain_dontcare_label: bool, use_instance: bool, name: str | None = None
) -> LabelSet:
    """Numbered classes ``class_0..`` with distinct colours; raw 255 is don't-care (as the reference's loader)."""
    return LabelSet(
        name=name or f"numbered-{label_nc}",
        class_names=tuple(f"class_{i}" for i in range(label_nc)),
        palette=tuple(_distinct_color(i) for i in range(label_nc)),
        contain_dontcare_label=contain_dontcare_label,
        use_instance=use_instance,
        dontcare_raw_ids=(255,) if contain_dontcare_label and label_nc < 255 else (),
        description=f"{label_nc} numbered classes (no names known); raw id k is class k"
        + ("; raw 255 is don't-care" if contain_dontcare_label and label_nc < 255 else ""),
    )


def _fit_label_set(label_set: LabelSet, contain_dontcare_label: bool, use_instance: bool) -> LabelSet:
    """``label_set`` with the generator's don't-care / instance flags (the classes stay)."""
    if (label_set.contain_dontcare_label, label_set.use_instance) == (contain_dontcare_label, use_instance):
        return label_set
    return dataclasses.replace(
        label_set,
        contain_dontcare_label=contain_dontcare_label,
        use_instance=use_instance,
        dontcare_raw_ids=label_set.dontcare_raw_ids if contain_dontcare_label else (),
    )


def matching_label_set(generator: SPADEGenerator, name: str | None = None) -> LabelSet:
    """The label set for ``generator``: ``name`` if given, else the built-in set with its class count, else numbered.

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
    elif cfg.label_nc in LABEL_SETS_BY_COUNT:
        label_set = get_label_set(LABEL_SETS_BY_COUNT[cfg.label_nc])
    else:
        return generic_label_set(cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance)
    return _fit_label_set(label_set, cfg.contain_dontcare_label, cfg.use_instance)


def _check_label_set(label_set: LabelSet, generator: SPADEGenerator) -> None:
    cfg = generator.config
    ours = (label_set.label_nc, label_set.contain_dontcare_label, label_set.use_instance)
    theirs = (cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance)
    if ours != theirs:
        raise ValueError(
            f"label set '{label_set.name}' (classes {ours[0]}, don't-care {ours[1]}, instance {ours[2]}) does not fit "
            f"the generator (label_nc {theirs[0]}, don't-care {theirs[1]}, instance {theirs[2]}): pass the label set "
            "the model was trained with, or spade_core.pipeline.matching_label_set(generator)"
        )


# ----------------------------------------------------------------------------- devices and dtypes


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'float32' | 'float16' | 'bfloat16' (or fp16, bf16, ...) or a torch.dtype -> torch.dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported: use torch.float32, torch.float16 or torch.bfloat16")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported: use float32, float16 or bfloat16")
    return _DTYPES[key]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda[:i]', 'mps' -> a device that exists here."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not understood: use auto, cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here: use cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s)): use cuda:0")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but MPS is not available here: use cpu (or auto)")
    return dev


# ----------------------------------------------------------------------------- folders and the Hub


def embedded_model_dir() -> Path:
    """The embedded default model's pipeline folder (``spade_core/assets/embedded/``)."""
    folder = Path(str(resources.files("spade_core").joinpath("assets", "embedded")))
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the embedded default model is not installed ({folder} has no model_index.json): pass a pipeline "
            "folder or a Hub repo id (--model REPO|DIR)"
        )
    return folder


def resolve_pipeline_folder(
    repo_id_or_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local pipeline folder for a folder path, a Hub repo id (through the HF cache) or None / 'embedded'."""
    if repo_id_or_dir is None or str(repo_id_or_dir) == "embedded":
        return embedded_model_dir()
    path = Path(repo_id_or_dir).expanduser()
    if path.is_dir():
        return path
    text = str(repo_id_or_dir)
    if path.exists():
        raise ValueError(f"{path} is a file, not a pipeline folder: pass the folder that holds model_index.json")
    if not _REPO_ID.match(text) or text.startswith(".") or text.count("/") > 1:
        raise FileNotFoundError(f"pipeline folder {text} not found: check the path, or pass a Hub repo id like owner/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = bool(local_files_only) or hub_offline()
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            token=token,
            allow_patterns=_HUB_FILES,
            ignore_patterns=_NOT_LOADED,
            library_name="spade",
        )
    except LocalEntryNotFoundError:
        where = f" ({cache})" if cache else ""
        why = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only)" if offline else "the Hub could not be reached"
        raise FileNotFoundError(
            f"{text} is neither a local folder nor in the Hugging Face cache{where}, and {why}: download it once "
            f"while online (`hf download {text}`), or pass a local pipeline folder"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{text} is neither a local folder nor a Hub repo you can access: check the id, or log in (`hf auth login`) "
            "for a private repo"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"revision {revision!r} does not exist in {text}: pass an existing branch, tag or commit") from None
    except HFValidationError as err:
        raise ValueError(f"{text!r} is not a valid Hub repo id ({str(err).splitlines()[0]}): use owner/name") from None
    except HfHubHTTPError as err:
        raise ValueError(f"could not download {text} ({str(err).splitlines()[0]}): retry, or pass a local folder") from None
    return Path(folder)


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}): {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object: {fix}")
    return data


def _check_component(folder: Path, cls: type) -> None:
    """Config readable, weights a complete safetensors file whose keys and shapes fit the config."""
    fix = "re-save the pipeline (save_pretrained) or download it again"
    config_path, weights = folder / "config.json", folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: {fix}")
    if not weights.is_file():
        others = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pth"))
        hint = f" (found {', '.join(others)}, but only safetensors weights are loaded)" if others else ""
        raise FileNotFoundError(f"{weights} is missing{hint}: {fix}")
    config = _read_json(config_path, fix)
    validate_network_config(cls.__name__, config, source=str(config_path))
    try:
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                model = cls.from_config(config)
        except (RuntimeError, NotImplementedError):
            model = cls.from_config(config)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{config_path} is not a valid {cls.__name__} config ({err}): {fix}") from None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is truncated or not a safetensors file ({err}): {fix}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = state_dict_mismatches(expected, stored, "file")
    if problems:
        raise ValueError(
            f"{weights} does not match {config_path.name} ({cls.__name__}): {'; '.join(problems)}; "
            "save the weights and config of the same model together (save_pretrained)"
        )


def check_pipeline_folder(folder: str | Path) -> dict[str, Any]:
    """Validate a pipeline folder before loading; returns its model_index.json."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        hint = "pass the folder written by save_pretrained, spade convert-nvlabs or spade export"
        if (folder / "latest_net_G.pth").is_file():
            hint = f"this is an NVlabs checkpoint folder: convert it with `spade convert-nvlabs {folder} --opt {folder}/opt.txt --out DIR`"
        elif (folder / "config.json").is_file():
            hint = "this looks like one component's folder: pass its parent folder"
        raise FileNotFoundError(f"{folder} is not a pipeline folder (no model_index.json): {hint}")
    index = _read_json(index_path, "re-save the pipeline with save_pretrained")
    if index.get("_class_name") != "SPADEPipeline":
        raise ValueError(
            f"{folder} holds a {index.get('_class_name')!r} pipeline, not a SPADEPipeline: pass a spade pipeline folder"
        )
    for name, cls in _COMPONENTS.items():
        entry = index.get(name)
        if name == "generator" and (not isinstance(entry, list) or entry[0] is None):
            raise ValueError(f"{index_path} lists no generator: re-save the pipeline with save_pretrained")
        if isinstance(entry, list) and entry and entry[0] is not None:
            _check_component(folder / name, cls)
    if not isinstance(index.get("label_set"), dict):
        raise ValueError(f"{index_path} holds no label set: re-save the pipeline with SPADEPipeline.save_pretrained")
    return index


# ----------------------------------------------------------------------------- inputs


def _library_entry(module: torch.nn.Module) -> tuple[str, str]:
    """("spade_core", class name) for our components, so model_index.json names the public package."""
    import spade_core

    cls = type(module)
    if getattr(spade_core, cls.__name__, None) is cls:
        return "spade_core", cls.__name__
    from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple

    return _fetch_class_library_tuple(module)


def _style_tensor(image: Any) -> torch.Tensor:
    """A style image (path, PIL, numpy (H,W,3)/(N,H,W,3), tensor (3,H,W)/(N,3,H,W)) -> float (N,3,H,W) in [0,1]."""
    accepted = (
        "pass a path, a PIL image, a numpy array (H,W,3) / (N,H,W,3) or a tensor (3,H,W) / (N,3,H,W), "
        "uint8 0..255 or float in [0, 1]"
    )
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"style image not found: {path} (check the path)")
        image = open_image(path, "style image")
    if isinstance(image, PIL.Image.Image):
        check_image_size(image.width, image.height, "style image")
        array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
    if isinstance(image, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(image))
        if x.ndim in (3, 4) and x.shape[-1] in (3, 4):
            x = x[..., :3].movedim(-1, -3)
        else:
            raise ValueError(f"style image array has shape {tuple(image.shape)}: {accepted}")
    elif isinstance(image, torch.Tensor):
        x = image.detach()
    else:
        raise ValueError(f"style image of type {type(image).__name__} is not supported: {accepted}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3 or x.numel() == 0:
        raise ValueError(f"style image has shape {tuple(x.shape)} (channels first for tensors): {accepted}")
    check_image_size(x.shape[-1], x.shape[-2], "style image")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise ValueError(f"style image has dtype {x.dtype}: {accepted}")
    check_finite(x, "style image", "replace the NaN/Inf pixels (e.g. numpy.nan_to_num) or pass a uint8 image")
    x = x.float()
    low, high = float(x.min()), float(x.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"style image values span {low:.3g}..{high:.3g} but must lie in [0, 1]: pass (x + 1) / 2 for images in [-1, 1]"
        )
    return x.clamp(0, 1)


def max_inference_bytes() -> int:
    """The activation-memory limit of one call: ``$SPADE_MAX_INFERENCE_BYTES`` when set, else MAX_INFERENCE_BYTES."""
    text = os.environ.get(_ENV_INFERENCE_BYTES, "").strip()
    if not text:
        return MAX_INFERENCE_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{_ENV_INFERENCE_BYTES}={text!r} is not a positive integer: set it to a byte count, e.g. 34359738368")
    return int(text)


def estimate_inference_bytes(generator: SPADEGenerator, batch: int, height: int, width: int) -> int:
    """Bytes the generator's activations need for ``batch`` images of ``height`` x ``width`` (an upper estimate).

    At full resolution the last SPADE block holds the one-hot map, the SPADE hidden layer and
    about a dozen feature maps of its width at once; earlier blocks are smaller.
    """
    cfg = generator.config
    per_pixel = generator.semantic_nc + int(getattr(cfg, "spade_hidden_nc", 128)) + 12 * int(cfg.ngf)
    element = torch.finfo(generator.dtype).bits // 8
    return int(batch) * int(height) * int(width) * per_pixel * element


def _check_request_size(generator: SPADEGenerator, batch: int, height: int, width: int) -> None:
    """Refuse a synthesis whose activations would pass the memory limit, before allocating anything."""
    need, limit = estimate_inference_bytes(generator, batch, height, width), max_inference_bytes()
    if need > limit:
        raise ValueError(
            f"{batch} image(s) of {height}x{width} (HxW) need about {need / 1e9:.1f} GB for the generator, over the "
            f"limit of {limit / 1e9:.1f} GB: pass a smaller height/width, a lower num_images_per_segmap or fewer "
            f"segmaps at once (or raise {_ENV_INFERENCE_BYTES})"
        )


def _check_weights_finite(module: torch.nn.Module, where: str) -> None:
    """Raise when a loaded network holds NaN/Inf, naming the file and the first broken tensor."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        check_finite(tensor.detach(), f"{where} entry '{name}'", "the weights are broken; re-export or download them again")


def _rows_for(t: torch.Tensor, n: int, k: int, what: str) -> torch.Tensor:
    """Broadcast per-segmap rows to the n*k outputs: 1 row -> all, n rows -> k each, n*k rows -> as they are."""
    rows = t.shape[0]
    if rows == n * k:
        return t
    if rows == 1:
        return t.expand(n * k, *t.shape[1:])
    if rows == n:
        return t.repeat_interleave(k, 0)
    raise ValueError(f"got {rows} {what} for {n} segmap(s) x {k} image(s) each: pass 1, {n} or {n * k}")


def _own_memory(module: torch.nn.Module) -> None:
    """Copy weights read through safetensors' memory map into freshly allocated tensors.

    Mapped tensors are not 64-byte aligned, which changes oneDNN's summation order on CPU
    (outputs ~1e-6 off the saved model's) and keeps the file open; copies are exact.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.data = tensor.data.clone()


def _load_optimizer() -> Callable[[SPADEGenerator], torch.nn.Module] | None:
    try:
        from .fast import optimize_generator
    except ImportError:
        return None
    return optimize_generator


class _QuietDiffusers:
    """Silence diffusers' spurious 'kept in float32' warning while casting our models."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("diffusers.models.modeling_utils")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


# ----------------------------------------------------------------------------- the pipeline


class SPADEPipeline(DiffusionPipeline):
    """Semantic image synthesis with SPADE: ``pipe(segmap, style_image=None, seed=0).images``.

    Components: ``generator`` (SPADEGenerator) and, for models trained with the VAE encoder,
    ``encoder`` (SPADEEncoder). ``label_set`` (a LabelSet dict in model_index.json) says how
    segmaps are read and how classes are coloured.
    """

    model_cpu_offload_seq = "encoder->generator"
    _optional_components: ClassVar[list[str]] = ["encoder"]

    def __init__(
        self,
        generator: SPADEGenerator,
        encoder: SPADEEncoder | None = None,
        label_set: dict | LabelSet | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(generator, SPADEGenerator):
            raise ValueError(f"generator must be a SPADEGenerator, got {type(generator).__name__}")
        if encoder is not None:
            if not isinstance(encoder, SPADEEncoder):
                raise ValueError(f"encoder must be a SPADEEncoder or None, got {type(encoder).__name__}")
            if not generator.config.use_vae:
                raise ValueError("an encoder was given but the generator was built without use_vae: drop the encoder")
            if encoder.config.z_dim != generator.config.z_dim:
                raise ValueError(
                    f"encoder z_dim {encoder.config.z_dim} differs from generator z_dim {generator.config.z_dim}: "
                    "pass the encoder trained with this generator"
                )
        if label_set is None:
            label_set = matching_label_set(generator)
        elif not isinstance(label_set, LabelSet):
            label_set = LabelSet.from_dict(dict(label_set))
        _check_label_set(label_set, generator)
        self._fast: torch.nn.Module | None = None
        self._fast_key: tuple | None = None
        self._card: dict[str, Any] = {}
        self.use_fast = True
        self.register_modules(generator=generator, encoder=encoder)
        self._label_set = label_set
        self.register_to_config(label_set=label_set.to_dict())

    def register_modules(self, **kwargs: Any) -> None:
        """As diffusers', but our classes are recorded as library ``spade_core``."""
        super().register_modules(**kwargs)
        for name, module in kwargs.items():
            if isinstance(module, torch.nn.Module):
                self.register_to_config(**{name: _library_entry(module)})

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "generator" and isinstance(value, SPADEGenerator) and "_label_set" in self.__dict__:
            _check_label_set(self._label_set, value)
        super().__setattr__(name, value)
        if name in _COMPONENTS and "_internal_dict" in self.__dict__:
            if isinstance(value, torch.nn.Module):
                self.register_to_config(**{name: _library_entry(value)})
            self.__dict__["_fast"] = None

    # -- label set

    @property
    def label_set(self) -> LabelSet:
        """The classes, colours and raw-id mapping this model was trained with."""
        return self._label_set

    @label_set.setter
    def label_set(self, value: LabelSet | dict) -> None:
        value = value if isinstance(value, LabelSet) else LabelSet.from_dict(dict(value))
        _check_label_set(value, self.generator)
        self.__dict__["_label_set"] = value
        self.register_to_config(label_set=value.to_dict())

    def colorize(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices (H,W) or (N,H,W) -> uint8 RGB with this model's palette."""
        return self.label_set.colorize(labels)

    def example_segmap(self, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """A simple layout (1,H,W) int64: horizontal bands of a few classes, for smoke tests and demos."""
        native_h, native_w = self.generator.native_size
        h, w = height or native_h, width or native_w
        n = self.label_set.label_nc
        classes = torch.tensor(sorted({0, n // 3, 2 * n // 3, n - 1}))
        rows = torch.arange(h) * len(classes) // h
        return classes[rows][:, None].expand(h, w).unsqueeze(0).clone()

    # -- loading, saving, moving

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_dir: str | os.PathLike | None = None,
        torch_dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        use_fast: bool = True,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> SPADEPipeline:
        """Load from a folder, a Hub repo id (HF cache; offline when cached) or the embedded model (None)."""
        dtype = resolve_dtype(torch_dtype if torch_dtype is not None else kwargs.pop("dtype", None))
        target = resolve_device(device) if device is not None else None
        folder = resolve_pipeline_folder(repo_id_or_dir, revision, cache_dir, local_files_only, token)
        check_pipeline_folder(folder)
        if importlib.util.find_spec("accelerate") is None:
            # diffusers would otherwise print a multi-line "install accelerate" notice on every load
            kwargs.setdefault("low_cpu_mem_usage", False)
        with _QuietDiffusers():
            pipe = super().from_pretrained(str(folder), dtype=dtype, **kwargs)
        for name in _COMPONENTS:
            if getattr(pipe, name, None) is not None:
                _own_memory(getattr(pipe, name))
                _check_weights_finite(getattr(pipe, name), str(folder / name / WEIGHTS_NAME))
        pipe.register_to_config(_name_or_path=str(repo_id_or_dir or "embedded"))
        pipe.use_fast = use_fast
        pipe._card = read_model_card_metadata(folder)
        if target is not None:
            pipe.to(target)
        return pipe

    def to(self, *args: Any, **kwargs: Any) -> SPADEPipeline:
        """Move / cast the networks (``.to(device)``, ``.to(dtype)``, ``.to(device, dtype)``)."""
        kwargs.setdefault("silence_dtype_warnings", True)
        with _QuietDiffusers():
            super().to(*args, **kwargs)
        self._fast = None
        return self

    def _card_arguments(self, license: str | None) -> dict[str, Any]:
        card = self._card
        return {
            "license": license or card.get("license"),
            "source": card.get("source"),
            "datasets": card.get("datasets"),
            "metrics": card.get("metrics"),
            "tags": card.get("tags"),
        }

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        model_card: bool = True,
        license: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Write model_index.json, generator/ (+ encoder/) as safetensors and, unless disabled, README.md."""
        if not safe_serialization:
            raise ValueError("spade pipelines are saved as safetensors only: drop safe_serialization=False")
        if kwargs.pop("push_to_hub", False):
            raise ValueError("save_pretrained(push_to_hub=True) is not supported: call pipe.push_to_hub(repo_id)")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        if model_card:
            write_model_card(save_directory, **self._card_arguments(license))

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: str | None = None,
        commit_message: str = "Upload SPADE pipeline",
        license: str | None = None,
        dry_run: bool = False,
    ) -> PushPlan:
        """Save to a temporary folder (with a model card naming ``repo_id``) and upload it."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, model_card=False)
            write_model_card(tmp, repo_id=repo_id, **self._card_arguments(license))
            return push_folder(tmp, repo_id, private=private, dry_run=dry_run, token=token, commit_message=commit_message)

    # -- inference

    def _network(self) -> torch.nn.Module:
        """The generator, or its exact fast inference version, rebuilt when the weights, device or dtype change."""
        gen = self.generator
        # The fast path pays off on CPU; on CUDA it measured slower than the plain forward
        # (dense convolutions are cheap there), so GPUs run the plain generator.
        if not self.use_fast or gen.device.type != "cpu":
            return gen
        # In-place updates (optimizer steps, load_state_dict) bump a tensor's version counter;
        # tensors created under torch.inference_mode (as ComfyUI loads models) have none and never change.
        version = sum(0 if t.is_inference() else t._version for t in [*gen.parameters(), *gen.buffers()])
        key = (id(gen), gen.device, gen.dtype, version)
        if self._fast is None or self._fast_key != key:
            optimize = _load_optimizer()
            with torch.no_grad():
                self._fast = optimize(gen) if optimize is not None else gen
            self._fast_key = key
        return self._fast

    def prepare_semantics(
        self,
        segmap: Any,
        instance_map: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_segmap: int = 1,
        nearest_color: bool = False,
        unknown: str = "error",
    ) -> torch.Tensor:
        """Segmap(s) -> the generator's one-hot input (N*k, semantic_nc, H, W) on its device, in its dtype.

        Labels (and instance ids) are resized with legacy nearest to ``height`` x ``width``
        (default: native size); each segmap's map is repeated ``num_images_per_segmap`` times.
        """
        if isinstance(num_images_per_segmap, bool) or not isinstance(num_images_per_segmap, int) or num_images_per_segmap < 1:
            raise ValueError(f"num_images_per_segmap must be a positive integer, got {num_images_per_segmap!r}")
        gen = self.generator
        native_h, native_w = gen.native_size
        size = (height or native_h, width or native_w)
        for side, name in zip(size, ("height", "width")):
            if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
                raise ValueError(f"{name} must be a positive integer, got {side!r}")
            if side > MAX_SIDE:
                raise ValueError(f"{name} {side} is over the limit of {MAX_SIDE} pixels per side: pass a smaller height/width")
        size = (int(size[0]), int(size[1]))
        gen.check_size(*size)
        _check_request_size(gen, num_images_per_segmap, *size)
        cfg = gen.config
        k = num_images_per_segmap
        labels = coerce_segmap(segmap, self.label_set, nearest_color=nearest_color, unknown=unknown)
        _check_request_size(gen, labels.shape[0] * k, *size)
        instance = None
        if instance_map is not None:
            if not cfg.use_instance:
                raise ValueError("this model has no instance edge channel: drop instance_map")
            instance = coerce_instance_map(instance_map, size=tuple(labels.shape[-2:]))
            instance = _rows_for(instance, labels.shape[0], 1, "instance maps")
            instance = resize_labels(instance, size).repeat_interleave(k, 0).to(gen.device)
        labels = resize_labels(labels, size).repeat_interleave(k, 0)
        return one_hot_semantics(
            labels.to(gen.device), cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance, instance, dtype=gen.dtype
        )

    def encode_style(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Style image(s) -> (mu, logvar), each float32 (N, z_dim), for reuse as ``pipe(..., style=(mu, logvar))``.

        Images are resized (bicubic, antialiased) to the model's native size, as the reference's
        data loader does before its encoder.
        """
        if self.encoder is None:
            if not self.generator.config.use_vae:
                raise ValueError(
                    "this model was trained without the VAE style encoder, so it takes no style image: drop "
                    "style_image"
                )
            raise ValueError(
                "this pipeline has a VAE generator but no encoder/ folder, so it only makes random styles: drop "
                "style_image, or load a folder that includes the encoder"
            )
        x = _style_tensor(image)
        size = self.generator.native_size
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        encoder = self.encoder
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.inference_mode():
                mu, logvar = encoder((x * 2 - 1).to(encoder.device, encoder.dtype))
        finally:
            encoder.train(was_training)
        check_finite(logvar, "the style encoder's output", "the encoder's weights are broken, or the image overflowed reduced precision: load the model with torch_dtype=torch.float32")
        return mu.float(), logvar.float()

    def _style_codes(
        self,
        n: int,
        k: int,
        style_image: Any,
        style: tuple[torch.Tensor, torch.Tensor] | None,
        latents: torch.Tensor | None,
        rng: torch.Generator | None,
    ) -> torch.Tensor | None:
        """z (n*k, z_dim) on the model's device and dtype, or None for models without a style code."""
        cfg = self.generator.config
        device, dtype = self.generator.device, self.generator.dtype
        if not cfg.use_vae:
            if style_image is not None or style is not None or latents is not None:
                raise ValueError(
                    "this model was trained without the VAE style encoder, so it takes no style: drop "
                    "style_image / style / latents"
                )
            return None
        if sum(x is not None for x in (style_image, style, latents)) > 1:
            raise ValueError("pass only one of style_image, style=(mu, logvar) and latents")
        if latents is not None:
            z = torch.as_tensor(latents)
            if z.ndim == 1:
                z = z[None]
            if z.ndim != 2 or z.shape[1] != cfg.z_dim:
                raise ValueError(f"latents must have shape (N, {cfg.z_dim}), got {tuple(z.shape)}")
            check_finite(z, "latents", f"pass finite numbers, e.g. torch.randn(N, {cfg.z_dim})")
            return _rows_for(z, n, k, "latents").to(device, dtype)
        mu = logvar = None
        if style_image is not None:
            mu, logvar = self.encode_style(style_image)
        elif style is not None:
            if not isinstance(style, (tuple, list)) or len(style) != 2:
                raise ValueError("style must be the pair (mu, logvar) returned by pipe.encode_style(image)")
            mu, logvar = (torch.as_tensor(t).float() for t in style)
            mu, logvar = (t[None] if t.ndim == 1 else t for t in (mu, logvar))
            if mu.shape != logvar.shape or mu.ndim != 2 or mu.shape[1] != cfg.z_dim:
                raise ValueError(
                    f"style (mu, logvar) must be two tensors of shape (N, {cfg.z_dim}), got {tuple(mu.shape)} and "
                    f"{tuple(logvar.shape)}: pass what pipe.encode_style(image) returns"
                )
            check_finite(mu, "style mu", "pass the (mu, logvar) that pipe.encode_style(image) returns")
            check_finite(logvar, "style logvar", "pass the (mu, logvar) that pipe.encode_style(image) returns")
        eps_device = rng.device if rng is not None else torch.device("cpu")
        eps = torch.randn((n * k, cfg.z_dim), generator=rng, device=eps_device, dtype=torch.float32)
        if mu is None:
            return eps.to(device, dtype)
        mu = _rows_for(mu, n, k, "style codes").to(device)
        logvar = _rows_for(logvar, n, k, "style codes").to(device)
        z = reparameterize(mu, logvar, eps=eps.to(device)).to(dtype)
        check_finite(z, "the style code drawn from style (mu, logvar)", "logvar is too large; pass the pair pipe.encode_style(image) returns")
        return z

    def __call__(
        self,
        segmap: Any,
        style_image: Any = None,
        style: tuple[torch.Tensor, torch.Tensor] | None = None,
        instance_map: Any = None,
        num_images_per_segmap: int = 1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        nearest_color: bool = False,
        unknown: str = "error",
        latents: torch.Tensor | None = None,
    ) -> SPADEPipelineOutput | tuple:
        """Synthesize images for one segmap or a batch (any form spade_core.segmap accepts).

        The segmap is resized (nearest) to ``height`` x ``width``, by default the native size.
        VAE models draw their style code from ``generator`` / ``seed`` (on CPU, so a seed gives
        the same images on every run of one device), around the style of ``style_image`` or
        ``style=(mu, logvar)`` when given; ``latents`` (N, z_dim) sets the codes directly.
        Output: ``output_type`` "pil" (list), "np" float (N,H,W,3) in [0,1], or "pt" float (N,3,H,W) in [0,1].
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r} is not supported: use one of {', '.join(OUTPUT_TYPES)}")
        if seed is not None and generator is not None:
            raise ValueError("pass seed or generator, not both")
        if seed is not None:
            generator = torch.Generator("cpu").manual_seed(int(seed))
        semantics = self.prepare_semantics(
            segmap, instance_map, height, width, num_images_per_segmap, nearest_color=nearest_color, unknown=unknown
        )
        k = num_images_per_segmap
        z = self._style_codes(semantics.shape[0] // k, k, style_image, style, latents, generator)
        gen = self.generator
        was_training = gen.training
        gen.eval()
        try:
            network = self._network()  # built outside inference mode: its buffers must stay normal tensors
            with torch.inference_mode():
                images = network(semantics, z)
        finally:
            gen.train(was_training)
        fix = "the model's weights or inputs are broken" + (
            "; in reduced precision it may have overflowed: load it with torch_dtype=torch.float32"
            if gen.dtype != torch.float32 else ""
        )
        check_finite(images, "the generator's output", fix)
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            result: Any = images
        else:
            array = images.permute(0, 2, 3, 1).cpu().numpy()
            result = array if output_type == "np" else [
                PIL.Image.fromarray(im) for im in (array * 255).round().astype(np.uint8)
            ]
        if not return_dict:
            return (result,)
        return SPADEPipelineOutput(images=result)

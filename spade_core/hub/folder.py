"""The pipeline folder: where one lives (local, Hub cache, embedded), what it must hold, how to read and write it.

A pipeline folder (or Hub repo) holds ``model_index.json`` (the components and the label set),
``generator/`` and, for VAE models, ``encoder/`` (config.json + safetensors each), optionally
``discriminator/`` (kept for fine-tuning) and a README.md model card. This module is the one owner
of that layout: the pipeline, the command line, model cards, publishing and the ComfyUI nodes use
it. It needs only the model classes (not ``diffusers.DiffusionPipeline``), so the command line
can load and write models without the pipeline's start-up cost.
"""

from __future__ import annotations

import json
import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..devices import offline, resolve_device, resolve_dtype
from ..files import read_json
from ..images import check_finite
from ..labels import LabelSet, check_label_set
from ..models import MultiscaleDiscriminator, SPADEEncoder, SPADEGenerator
from ..models.files import CONFIG_NAME, WEIGHTS_NAME
from ..models.validation import validate_network_config
from ..weights import state_dict_mismatches
from .names import (
    DISCRIMINATOR,
    ENCODER,
    GENERATOR,
    MODEL_CARD,
    MODEL_INDEX,
    PIPELINE_CLASS,
)

__all__ = [
    "COMPONENTS",
    "CONFIG_NAME",
    "DISCRIMINATOR",
    "ENCODER",
    "GENERATOR",
    "MODEL_CARD",
    "MODEL_INDEX",
    "PIPELINE_CLASS",
    "WEIGHTS_NAME",
    "QuietDiffusers",
    "build_model_index",
    "check_encoder_fits",
    "check_out_folder",
    "check_pipeline_folder",
    "check_weights_finite",
    "embedded_model_dir",
    "finish_loaded",
    "lists_component",
    "load_components",
    "own_memory",
    "read_json",
    "read_label_set",
    "read_model_index",
    "resolve_pipeline_folder",
    "write_pipeline_folder",
]

# The networks a pipeline loads, by their folder name (the discriminator is only kept for fine-tuning).
COMPONENTS: dict[str, type] = {GENERATOR: SPADEGenerator, ENCODER: SPADEEncoder}
# What a download fetches of a Hub repo, and what it never fetches (pickles are not loaded).
HUB_FILES = [MODEL_INDEX, MODEL_CARD, f"{GENERATOR}/*", f"{ENCODER}/*"]
NOT_LOADED = ["*.bin", "*.pth", "*.pt", "*.ckpt", "*.pkl"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_LIBRARY = "spade_core"  # model_index.json names our classes by the public package
_RESAVE = "re-save the pipeline (save_pretrained) or download it again"


# ----------------------------------------------------------------------------- where a folder lives


def embedded_model_dir() -> Path:
    """The embedded default model's pipeline folder (``spade_core/assets/embedded/``)."""
    folder = Path(str(resources.files("spade_core").joinpath("assets", "embedded")))
    if not (folder / MODEL_INDEX).is_file():
        raise FileNotFoundError(
            f"the embedded default model is not installed ({folder} has no {MODEL_INDEX}): pass a pipeline "
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
        raise ValueError(f"{path} is a file, not a pipeline folder: pass the folder that holds {MODEL_INDEX}")
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

    is_offline = bool(local_files_only) or offline()
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            cache_dir=cache,
            local_files_only=is_offline,
            token=token,
            allow_patterns=HUB_FILES,
            ignore_patterns=NOT_LOADED,
            library_name="spade",
        )
    except LocalEntryNotFoundError:
        where = f" ({cache})" if cache else ""
        why = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only)" if is_offline else "the Hub could not be reached"
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


# ----------------------------------------------------------------------------- reading and validating


def read_model_index(folder: str | Path) -> dict[str, Any]:
    """``folder/model_index.json`` as a dict; a missing file says what the folder looks like instead."""
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    if not index_path.is_file():
        hint = "pass the folder written by save_pretrained, spade convert-nvlabs or spade export"
        if (folder / "latest_net_G.pth").is_file():
            hint = f"this is an NVlabs checkpoint folder: convert it with `spade convert-nvlabs {folder} --opt {folder}/opt.txt --out DIR`"
        elif (folder / CONFIG_NAME).is_file():
            hint = "this looks like one component's folder: pass its parent folder"
        raise FileNotFoundError(f"{folder} is not a pipeline folder (no {MODEL_INDEX}): {hint}")
    return read_json(index_path, "re-save the pipeline with save_pretrained")


def read_label_set(folder: str | Path) -> LabelSet:
    """The label set stored in a pipeline folder's model_index.json."""
    folder = Path(folder)
    data = read_model_index(folder).get("label_set")
    if not isinstance(data, dict):
        raise ValueError(f"{folder / MODEL_INDEX} holds no label set: re-save the pipeline with SPADEPipeline.save_pretrained")
    return LabelSet.from_dict(data)


def lists_component(index: dict[str, Any], name: str) -> bool:
    """Whether model_index.json lists component ``name`` (diffusers writes [null, null] for an absent one)."""
    entry = index.get(name)
    return isinstance(entry, list) and bool(entry) and entry[0] is not None


def _check_component(folder: Path, cls: type) -> None:
    """Config readable, weights a complete safetensors file whose keys and shapes fit the config."""
    config_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: {_RESAVE}")
    if not weights.is_file():
        others = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pth"))
        hint = f" (found {', '.join(others)}, but only safetensors weights are loaded)" if others else ""
        raise FileNotFoundError(f"{weights} is missing{hint}: {_RESAVE}")
    config = read_json(config_path, _RESAVE)
    validate_network_config(cls.__name__, config, source=str(config_path))
    try:
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                model = cls.from_config(config)
        except (RuntimeError, NotImplementedError):
            model = cls.from_config(config)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{config_path} is not a valid {cls.__name__} config ({err}): {_RESAVE}") from None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is truncated or not a safetensors file ({err}): {_RESAVE}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = state_dict_mismatches(expected, stored, "file")
    if problems:
        raise ValueError(
            f"{weights} does not match {config_path.name} ({cls.__name__}): {'; '.join(problems)}; "
            "save the weights and config of the same model together (save_pretrained)"
        )


def check_pipeline_folder(folder: str | Path) -> dict[str, Any]:
    """Validate a pipeline folder before loading (index, label set, each network's config and weights); returns model_index.json."""
    folder = Path(folder)
    index = read_model_index(folder)
    index_path = folder / MODEL_INDEX
    if index.get("_class_name") != PIPELINE_CLASS:
        raise ValueError(
            f"{folder} holds a {index.get('_class_name')!r} pipeline, not a {PIPELINE_CLASS}: pass a spade pipeline folder"
        )
    if not lists_component(index, GENERATOR):
        raise ValueError(f"{index_path} lists no generator: re-save the pipeline with save_pretrained")
    for name, cls in COMPONENTS.items():
        if lists_component(index, name):
            _check_component(folder / name, cls)
    if not isinstance(index.get("label_set"), dict):
        raise ValueError(f"{index_path} holds no label set: re-save the pipeline with SPADEPipeline.save_pretrained")
    return index


def check_encoder_fits(generator: SPADEGenerator, encoder: SPADEEncoder | None) -> None:
    """Raise unless ``encoder`` is None or the VAE encoder that goes with ``generator``."""
    if encoder is None:
        return
    if not isinstance(encoder, SPADEEncoder):
        raise ValueError(f"encoder must be a SPADEEncoder or None, got {type(encoder).__name__}")
    if not generator.config.use_vae:
        raise ValueError("an encoder was given but the generator was built without use_vae: drop the encoder")
    if encoder.config.z_dim != generator.config.z_dim:
        raise ValueError(
            f"encoder z_dim {encoder.config.z_dim} differs from generator z_dim {generator.config.z_dim}: "
            "pass the encoder trained with this generator"
        )


# ----------------------------------------------------------------------------- loading


class QuietDiffusers:
    """Silence diffusers' spurious 'kept in float32' warning while loading / casting our models."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("diffusers.models.modeling_utils")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def own_memory(module: torch.nn.Module) -> None:
    """Copy weights read through safetensors' memory map into freshly allocated tensors.

    Mapped tensors are not 64-byte aligned, which changes oneDNN's summation order on CPU
    (outputs ~1e-6 off the saved model's) and keeps the file open; copies are exact.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.data = tensor.data.clone()


def check_weights_finite(module: torch.nn.Module, where: str) -> None:
    """Raise when a loaded network holds NaN/Inf, naming the file and the first broken tensor."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        check_finite(tensor.detach(), f"{where} entry '{name}'", "the weights are broken; re-export or download them again")


def finish_loaded(module: torch.nn.Module, folder: str | Path) -> None:
    """What every load does after reading one component from ``folder``: own memory, then refuse NaN/Inf."""
    own_memory(module)
    check_weights_finite(module, str(Path(folder) / WEIGHTS_NAME))


def load_components(
    folder: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[SPADEGenerator, SPADEEncoder | None, LabelSet]:
    """(generator, encoder or None, label set) of a local pipeline folder, validated, in eval mode.

    The networks load as SPADEPipeline.from_pretrained loads them (``<Class>.from_pretrained`` of
    each subfolder, weights copied out of the memory map, NaN/Inf refused), without the pipeline class.
    """
    folder = Path(folder)
    torch_dtype = resolve_dtype(dtype)
    target = resolve_device(device) if device is not None else None
    index = check_pipeline_folder(folder)
    label_set = LabelSet.from_dict(index["label_set"])
    loaded: dict[str, torch.nn.Module | None] = {}
    for name, cls in COMPONENTS.items():
        if not lists_component(index, name):
            loaded[name] = None
            continue
        with QuietDiffusers():
            # low_cpu_mem_usage=False: as the pipeline loads without accelerate (no meta-device init)
            module = cls.from_pretrained(str(folder / name), torch_dtype=torch_dtype, low_cpu_mem_usage=False)
        finish_loaded(module, folder / name)
        if target is not None:
            module.to(target)
        loaded[name] = module.eval()
    generator, encoder = loaded[GENERATOR], loaded[ENCODER]
    check_label_set(label_set, generator)
    check_encoder_fits(generator, encoder)
    return generator, encoder, label_set


# ----------------------------------------------------------------------------- writing


def build_model_index(
    generator: SPADEGenerator, encoder: SPADEEncoder | None, label_set: LabelSet
) -> dict[str, Any]:
    """The model_index.json content SPADEPipeline.save_pretrained writes for these components."""
    from diffusers import __version__ as diffusers_version

    return {
        "_class_name": PIPELINE_CLASS,
        "_diffusers_version": diffusers_version,
        GENERATOR: [_LIBRARY, type(generator).__name__],
        ENCODER: [_LIBRARY, type(encoder).__name__] if encoder is not None else [None, None],
        "label_set": label_set.to_dict(),
    }


def check_out_folder(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a Path, refused (before anything is written) when it is a file or a non-empty folder without ``overwrite``."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out {out} already exists and is not empty: pick a new folder or pass overwrite=True")
    return out


def write_pipeline_folder(
    out: str | Path,
    generator: SPADEGenerator,
    encoder: SPADEEncoder | None,
    label_set: LabelSet | dict[str, Any],
    *,
    discriminator: MultiscaleDiscriminator | None = None,
) -> Path:
    """Write ``out/model_index.json`` and each network's folder (config.json + safetensors), as save_pretrained does.

    The files equal what SPADEPipeline.save_pretrained writes for the same networks, so
    SPADEPipeline.from_pretrained and ``<Class>.from_pretrained(out, subfolder=...)`` load them; a discriminator (kept for fine-tuning)
    goes to ``out/discriminator/``. No model card: see write_model_card.
    """
    if not isinstance(generator, SPADEGenerator):
        raise ValueError(f"generator must be a SPADEGenerator, got {type(generator).__name__}")
    check_encoder_fits(generator, encoder)
    if discriminator is not None and not isinstance(discriminator, MultiscaleDiscriminator):
        raise ValueError(f"discriminator must be a MultiscaleDiscriminator or None, got {type(discriminator).__name__}")
    if not isinstance(label_set, LabelSet):
        label_set = LabelSet.from_dict(dict(label_set))
    check_label_set(label_set, generator)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for name, module in ((GENERATOR, generator), (ENCODER, encoder), (DISCRIMINATOR, discriminator)):
        if module is not None:
            module.save_pretrained(out / name, safe_serialization=True)
    text = json.dumps(build_model_index(generator, encoder, label_set), indent=2, sort_keys=True) + "\n"
    (out / MODEL_INDEX).write_text(text, encoding="utf-8")
    return out

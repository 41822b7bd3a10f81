"""SPADEPipeline: segmentation map (+ optional style image) -> images, used like a diffusers pipeline.

A pipeline folder (or Hub repo) holds ``model_index.json`` (components and the label set),
``generator/`` and, for VAE models, ``encoder/`` (config.json + safetensors), and a README.md
model card. Loading resolves local folders, Hub repo ids through the HF cache (offline when
cached) and the embedded default model shipped in ``spade_core/assets/embedded/``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .devices import resolve_device, resolve_dtype
from .hub.folder import COMPONENTS as _COMPONENTS
from .hub.folder import QuietDiffusers as _QuietDiffusers
from .hub.folder import (
    check_encoder_fits,
    check_pipeline_folder,
    embedded_model_dir,
    finish_loaded,
    resolve_pipeline_folder,
)
from .hub.model_card import read_model_card_metadata, write_model_card
from .hub.publish import PushPlan, push_folder
from .labels import LabelSet, check_label_set, generic_label_set, matching_label_set
from .models import SPADEEncoder, SPADEGenerator
from .synthesis import (
    FastNetworkCache,
    draw_style_codes,
    estimate_inference_bytes,
    synthesize,
    to_output,
)
from .synthesis import encode_style as _encode_style
from .synthesis import prepare_semantics as _prepare_semantics

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


@dataclass
class SPADEPipelineOutput(BaseOutput):
    """``images``: a list of PIL images, a float numpy array (N,H,W,3) in [0,1], or a tensor (N,3,H,W) in [0,1]."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------- inputs


def _library_entry(module: torch.nn.Module) -> tuple[str, str]:
    """("spade_core", class name) for our components, so model_index.json names the public package."""
    import spade_core

    cls = type(module)
    if getattr(spade_core, cls.__name__, None) is cls:
        return "spade_core", cls.__name__
    from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple

    return _fetch_class_library_tuple(module)


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
        check_encoder_fits(generator, encoder)
        if label_set is None:
            label_set = matching_label_set(generator)
        elif not isinstance(label_set, LabelSet):
            label_set = LabelSet.from_dict(dict(label_set))
        check_label_set(label_set, generator)
        self._fast: FastNetworkCache | None = None
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
            check_label_set(self._label_set, value)
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
        check_label_set(value, self.generator)
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
                finish_loaded(getattr(pipe, name), folder / name)
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

    def _fast_cache(self) -> FastNetworkCache:
        """This pipeline's fast-network cache (dropped by ``.to()`` and by replacing a component)."""
        if self._fast is None:
            self._fast = FastNetworkCache()
        return self._fast

    def _network(self) -> torch.nn.Module:
        """The generator, or its exact fast inference version, rebuilt when the weights, device or dtype change."""
        return self._fast_cache().network(self.generator, self.use_fast)

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
        """Segmap(s) -> the generator's one-hot input (N*k, semantic_nc, H, W) (spade_core.synthesis.prepare_semantics)."""
        return _prepare_semantics(
            self.generator, self.label_set, segmap, instance_map, height, width, num_images_per_segmap,
            nearest_color=nearest_color, unknown=unknown,
        )

    def encode_style(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Style image(s) -> (mu, logvar), each float32 (N, z_dim), for reuse as ``pipe(..., style=(mu, logvar))``.

        Images are resized (bicubic, antialiased) to the model's native size, as the reference's
        data loader does before its encoder.
        """
        return _encode_style(self.encoder, self.generator, image)

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
        return draw_style_codes(self.generator, self.encoder, n, k, style_image, style, latents, rng)

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
        images = synthesize(
            self.generator,
            self.label_set,
            segmap,
            encoder=self.encoder,
            style_image=style_image,
            style=style,
            instance_map=instance_map,
            num_images_per_segmap=num_images_per_segmap,
            generator_rng=generator,
            seed=seed,
            height=height,
            width=width,
            nearest_color=nearest_color,
            unknown=unknown,
            latents=latents,
            use_fast=self.use_fast,
            cache=self._fast_cache(),
        )
        result = to_output(images, output_type)
        if not return_dict:
            return (result,)
        return SPADEPipelineOutput(images=result)

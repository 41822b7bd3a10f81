"""The SPADE nodes: load a model, make a segmap (from a label file or an IMAGE), encode a style,
synthesize.

Nodes only translate between ComfyUI's data (IMAGE = float32 (B,H,W,3) in [0,1], input-folder
files, widget values) and `spade_core`, and hold no state. Widgets are named after the library's
keyword arguments (`mode`, `nearest_color`, `unknown`), so the library's one-line errors name
the widget to change.

Security model (a ComfyUI server may be shared): files are read only from the input folder and
models only from `models/spade` (no absolute paths, no `..`, no links leading out, refused
already when the graph is queued); `hub_repo_id` takes Hub repo ids, never a local path; images
are size-checked (header before decoding for files) and NaN/Inf refused before any model runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import ImageOps

from spade_core.images import MAX_SIDE, check_finite, check_image_size, open_image
from spade_core.labels import LabelSet
from spade_core.segmap import coerce_segmap

from . import _comfy
from ._comfy import ComfyExtension, io

__all__ = [
    "NODES",
    "SPADEEncodeStyle",
    "SPADEExtension",
    "SPADEImageToSegmap",
    "SPADELoadSegmap",
    "SPADEModel",
    "SPADEModelLoader",
    "SPADESynthesize",
    "Segmap",
    "comfy_entrypoint",
]

CATEGORY = "SPADE"
EMBEDDED = "embedded"
HUB = "hub repo id"  # the loader entry that reads the `hub_repo_id` text field
DEVICES = ("default", "cpu")
DTYPES = {"default": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SEGMAP_MODES = ("auto", "index", "raw", "color")
UNKNOWN = ("error", "dontcare")
MAX_SIZE = MAX_SIDE  # the largest width / height Synthesize accepts
MAX_SEED = 0xFFFFFFFFFFFFFFFF
# The IMAGE batch one Synthesize run returns (float32 RGB): 4 GiB is 64 images of 2048x2048.
MAX_OUTPUT_BYTES = 4 * 2**30

SPADE_MODEL = io.Custom("SPADE_MODEL")
SPADE_SEGMAP = io.Custom("SPADE_SEGMAP")
SPADE_STYLE = io.Custom("SPADE_STYLE")  # (mu, logvar), float32 (S, z_dim) each, on the CPU
# The Hub's repo id grammar, as owner/name: word characters, '-' and '.', starting and ending with a word character.
_HUB_PART = r"\w(?:[\w.-]*\w)?"
_HUB_REPO_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}", re.ASCII)
_MODELS_FIX = f"put the pipeline folder under models/{_comfy.MODEL_FOLDER}/ and pick it from the model list"


@dataclass(frozen=True)
class SPADEModel:
    """A loaded pipeline, the device it computes on and the device it rests on between runs."""

    pipeline: Any  # spade_core.pipeline.SPADEPipeline
    device: torch.device
    offload_device: torch.device

    @property
    def label_set(self) -> LabelSet:
        return self.pipeline.label_set


@dataclass(frozen=True)
class Segmap:
    """Class indices (N,H,W) int64 on the CPU (don't-care = label_nc), in `label_set`'s classes."""

    labels: torch.Tensor
    label_set: LabelSet


def _pipeline_class() -> Any:
    """SPADEPipeline, imported on first use so registering the pack stays cheap."""
    from spade_core.pipeline import SPADEPipeline

    return SPADEPipeline


def check_hub_repo_id(hub_repo_id: str) -> str:
    """The Hub repo id typed in `hub_repo_id` (owner/name), refusing local paths and anything else."""
    repo_id = (hub_repo_id or "").strip()
    if not repo_id:
        raise ValueError(
            f"model is '{HUB}' but hub_repo_id is empty: type a Hub repo id like owner/name, "
            "or pick a local model"
        )
    looks_local = repo_id.startswith((".", "~", "/", "\\")) or "\\" in repo_id or os.path.isabs(repo_id)
    if looks_local or os.path.lexists(repo_id) or os.path.lexists(os.path.expanduser(repo_id)):
        raise ValueError(
            f"hub_repo_id {repo_id!r} is a local path, but hub_repo_id takes Hugging Face Hub repo ids "
            f"(owner/name) only: {_MODELS_FIX}"
        )
    valid = (_HUB_REPO_ID.fullmatch(repo_id) and len(repo_id) <= 96 and "--" not in repo_id
             and ".." not in repo_id and not repo_id.endswith(".git"))
    if not valid:
        raise ValueError(
            f"hub_repo_id {repo_id!r} is not a Hub repo id: type owner/name (letters, digits, '-', '_', '.'), "
            "or pick a model from the list"
        )
    return repo_id


def _model_source(model: str, hub_repo_id: str) -> str:
    """The loader's choice -> what SPADEPipeline.from_pretrained takes (checked, with node-level fixes)."""
    if model == EMBEDDED:
        from spade_core.pipeline import embedded_model_dir

        try:
            embedded_model_dir()
        except FileNotFoundError:
            raise FileNotFoundError(
                "the embedded default SPADE model is not installed with this copy of spade: pick a "
                f"pipeline folder from models/{_comfy.MODEL_FOLDER} or '{HUB}' instead"
            ) from None
        return EMBEDDED
    if model == HUB:
        return check_hub_repo_id(hub_repo_id)
    return _comfy.resolve_model_entry(model)


def _weights_bytes(pipe: Any) -> int:
    """Bytes of the generator's and encoder's parameters, for ComfyUI's memory planning."""
    modules = [m for m in (pipe.generator, getattr(pipe, "encoder", None)) if m is not None]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@contextmanager
def _on_device(model: SPADEModel, work_bytes: int) -> Iterator[Any]:
    """Move the pipeline to its compute device for a run (making room first), then back."""
    pipe = model.pipeline
    if model.device == model.offload_device:
        yield pipe
        return
    _comfy.free_memory(_weights_bytes(pipe) + work_bytes, model.device)
    with torch.inference_mode(False):  # moved weights stay ordinary tensors, as loaded
        pipe.to(model.device)
    try:
        yield pipe
    finally:
        with torch.inference_mode(False):
            pipe.to(model.offload_device)


def _check_image(image: torch.Tensor, what: str) -> torch.Tensor:
    """A ComfyUI IMAGE (B,H,W,3|4) float -> its RGB channels (B,H,W,3) as float32 on the CPU, size and values checked."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{what} must be an IMAGE (B,H,W,3) in [0,1], got {shape}: connect an image output")
    check_image_size(int(image.shape[2]), int(image.shape[1]), what=what)
    rgb = image[..., :3]
    check_finite(rgb, what, "fix or replace the node that made the image (its values must be numbers in [0,1])")
    return rgb.detach().to("cpu", torch.float32)


def _output_size(pipe: Any, width: int, height: int) -> tuple[int, int]:
    """(height, width) Synthesize makes: the requested sides (0 = the model's native size), each at most MAX_SIZE."""
    native_h, native_w = pipe.generator.native_size
    h, w = height or native_h, width or native_w
    for side, name in ((w, "width"), (h, "height")):
        if isinstance(side, bool) or not isinstance(side, int) or side < 0:
            raise ValueError(f"{name} must be a whole number of pixels (0 = native size), got {side!r}")
        if side > MAX_SIZE:
            raise ValueError(f"{name} {side} is over the largest output side, {MAX_SIZE}: lower {name}")
    return h, w


def _preview(labels: torch.Tensor, label_set: LabelSet) -> torch.Tensor:
    """Class indices (N,H,W) -> the palette colours as an IMAGE (N,H,W,3) in [0,1]."""
    rgb = torch.from_numpy(label_set.colorize(labels.cpu()))
    return (rgb.to(torch.float32) / 255.0).to(_comfy.intermediate_device())


class SPADEModelLoader(io.ComfyNode):
    """Load a SPADE pipeline: embedded default, models/spade entry, or Hugging Face Hub repo."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SPADEModelLoader",
            display_name="Load SPADE Model",
            category=CATEGORY,
            description="Loads a SPADE model: the embedded default, a pipeline folder under models/spade, "
            "or a Hugging Face Hub repo.",
            inputs=[
                io.Combo.Input(
                    "model", options=[EMBEDDED, *_comfy.model_entries(), HUB], default=EMBEDDED,
                    tooltip="'embedded' is the model shipped with spade; pipeline folders come from "
                    f"models/{_comfy.MODEL_FOLDER}; '{HUB}' uses the text field below.",
                ),
                io.String.Input(
                    "hub_repo_id", default="",
                    tooltip=f"owner/name of a Hub repo, used when model is '{HUB}' (never a local path: put "
                    f"local folders under models/{_comfy.MODEL_FOLDER}); offline it must already be in the "
                    "Hugging Face cache.",
                ),
                io.Combo.Input(
                    "device", options=list(DEVICES), default="default",
                    tooltip="default: ComfyUI's compute device (the model rests on the offload device "
                    "between runs); cpu: always the CPU.",
                ),
                io.Combo.Input(
                    "dtype", options=list(DTYPES), default="default",
                    tooltip="default: bf16 where ComfyUI says the device supports it well, else fp32. "
                    "fp16 is faster on some GPUs but can overflow to black/NaN images.",
                ),
            ],
            outputs=[SPADE_MODEL.Output("model")],
        )

    @classmethod
    def execute(cls, model: str, hub_repo_id: str = "", device: str = "default",
                dtype: str = "default") -> io.NodeOutput:
        if device not in DEVICES:
            raise ValueError(f"device {device!r} is not supported: pick one of {', '.join(DEVICES)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported: pick one of {', '.join(DTYPES)}")
        source = _model_source(model, hub_repo_id)
        run_on = _comfy.compute_device(device)
        rest_on = run_on if device == "cpu" else _comfy.offload_device()
        torch_dtype = DTYPES[dtype] or _comfy.default_dtype(run_on)
        with torch.inference_mode(False):  # ComfyUI runs nodes in inference mode: keep weights ordinary tensors
            pipe = _pipeline_class().from_pretrained(source, torch_dtype=torch_dtype, device=rest_on)
        return io.NodeOutput(SPADEModel(pipe, run_on, rest_on))

    @classmethod
    def validate_inputs(cls, model: str | None, hub_repo_id: str | None = "") -> bool | str:
        """Refuse, when the graph is queued, models outside the list and hub_repo_id values that are not repo ids."""
        if model is None or model == EMBEDDED:  # None: linked from another node, checked when it runs
            return True
        try:
            if model == HUB:
                if hub_repo_id is not None:  # None: linked from another node, checked when it runs
                    check_hub_repo_id(hub_repo_id)
            else:
                _comfy.resolve_model_entry(model)
        except (ValueError, FileNotFoundError) as err:
            return str(err)
        return True


class SPADELoadSegmap(io.ComfyNode):
    """Read a label image from the input folder, keeping palette indices and raw ids intact."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SPADELoadSegmap",
            display_name="Load Segmap (SPADE)",
            category=CATEGORY,
            description="Loads a label map (palette PNG, grayscale ids or colour map) for the model's "
            "label set, with a colourised preview.",
            inputs=[
                SPADE_MODEL.Input("model", tooltip="The model whose label set interprets the file."),
                io.Combo.Input(
                    "image", options=_comfy.input_images(), upload=io.UploadType.image,
                    tooltip="A label image in ComfyUI's input folder (upload one with the button).",
                ),
                io.Combo.Input(
                    "mode", options=list(SEGMAP_MODES), default="auto",
                    tooltip="auto: palette (P) images are class indices, grayscale (L/I) raw dataset "
                    "ids, RGB palette colours; index / raw / color force one reading.",
                ),
                io.Boolean.Input(
                    "nearest_color", default=False,
                    tooltip="Colour maps: snap colours missing from the palette to the nearest class "
                    "instead of failing.",
                ),
                io.Combo.Input(
                    "unknown", options=list(UNKNOWN), default="error",
                    tooltip="Labels outside the label set: fail, or map them to don't-care.",
                ),
            ],
            outputs=[SPADE_SEGMAP.Output("segmap"), io.Image.Output("preview")],
        )

    @classmethod
    def execute(cls, model: SPADEModel, image: str, mode: str = "auto", nearest_color: bool = False,
                unknown: str = "error") -> io.NodeOutput:
        pil = ImageOps.exif_transpose(_open_segmap(image))
        labels = coerce_segmap(pil, model.label_set, mode=mode, nearest_color=nearest_color,
                               unknown=unknown)
        return io.NodeOutput(Segmap(labels.cpu(), model.label_set), _preview(labels, model.label_set))

    @classmethod
    def fingerprint_inputs(cls, image: str, **kwargs: Any) -> str | float:
        """The file's sha256, so edits re-run the node; NaN (always re-run, and fail there) for refused names."""
        if _comfy.input_error(image) is not None:
            return float("nan")
        return _comfy.file_digest(_comfy.input_file(image))

    @classmethod
    def validate_inputs(cls, image: str | None) -> bool | str:
        """Refuse, when the graph is queued, names outside the input folder and missing files."""
        if image is None:  # linked from another node: checked when it runs
            return True
        return _comfy.input_error(image) or True


def _open_segmap(image: str) -> Any:
    """The input-folder label image `image`, opened with its mode kept (pixel limit checked before decoding)."""
    with open(_comfy.input_file(image), "rb") as f:  # a stream: messages name the input, not the server path
        return open_image(f, what=f"segmap image {image!r}")


class SPADEImageToSegmap(io.ComfyNode):
    """Turn a colour IMAGE (painted canvas, ADE20K-palette map) into a segmap by palette colour."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SPADEImageToSegmap",
            display_name="Image to Segmap (SPADE)",
            category=CATEGORY,
            description="Maps each pixel's colour to the model's class with that palette colour "
            "(exact, or nearest for anti-aliased paintings).",
            inputs=[
                SPADE_MODEL.Input("model", tooltip="The model whose palette defines the classes."),
                io.Image.Input("image", tooltip="A colour segmentation in the model's palette."),
                io.Boolean.Input(
                    "nearest_color", default=False,
                    tooltip="Snap colours missing from the palette to the nearest class instead of "
                    "failing (for soft brush edges or resized maps).",
                ),
            ],
            outputs=[SPADE_SEGMAP.Output("segmap"), io.Image.Output("preview")],
        )

    @classmethod
    def execute(cls, model: SPADEModel, image: torch.Tensor, nearest_color: bool = False) -> io.NodeOutput:
        rgb = (_check_image(image, "image").clamp(0, 1) * 255).round().to(torch.uint8)  # (B,H,W,3)
        labels = coerce_segmap(rgb, model.label_set, mode="color", nearest_color=nearest_color)
        return io.NodeOutput(Segmap(labels.cpu(), model.label_set), _preview(labels, model.label_set))


class SPADEEncodeStyle(io.ComfyNode):
    """Encode a style image into the (mu, logvar) code that SPADE Synthesize samples from."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SPADEEncodeStyle",
            display_name="Encode Style (SPADE)",
            category=CATEGORY,
            description="Encodes a style image with the model's VAE encoder (models trained with use_vae).",
            inputs=[
                SPADE_MODEL.Input("model"),
                io.Image.Input("image", tooltip="Style image(s): one style, or one per segmap."),
            ],
            outputs=[SPADE_STYLE.Output("style")],
        )

    @classmethod
    def execute(cls, model: SPADEModel, image: torch.Tensor) -> io.NodeOutput:
        if model.pipeline.encoder is None:
            raise ValueError(
                "this SPADE model has no style encoder (it was trained without use_vae): remove the "
                "Encode Style node or load a model with an encoder"
            )
        rgb = _check_image(image, "style image").clamp(0, 1)
        with _on_device(model, rgb.numel() * 4 * 64) as pipe:
            mu, logvar = pipe.encode_style(rgb.movedim(-1, 1))  # (B,3,H,W) in [0,1]
        for value in (mu, logvar):
            check_finite(value, "the style code", "the encoder overflowed in its dtype: load the model with dtype "
                         "fp32 or bf16 in Load SPADE Model (or its weights are broken)")
        return io.NodeOutput((mu.detach().to("cpu", torch.float32), logvar.detach().to("cpu", torch.float32)))


class SPADESynthesize(io.ComfyNode):
    """Generate images from a segmap (and optionally a style) with a SPADE model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SPADESynthesize",
            display_name="SPADE Synthesize",
            category=CATEGORY,
            description="Generates batch_size images per segmap; image k of each segmap uses seed + k.",
            inputs=[
                SPADE_MODEL.Input("model"),
                SPADE_SEGMAP.Input("segmap"),
                SPADE_STYLE.Input("style", optional=True, tooltip="From Encode Style; without it a "
                                  "model with an encoder samples a random style from the seed."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Style noise seed (no effect for models without a style encoder)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images per segmap."),
                io.Int.Input("width", default=0, min=0, max=MAX_SIZE, step=32,
                             tooltip="Output width; 0 = the model's native size."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIZE, step=32,
                             tooltip="Output height; 0 = the model's native size."),
            ],
            outputs=[io.Image.Output("image")],
        )

    @classmethod
    def execute(cls, model: SPADEModel, segmap: Segmap, style: tuple[torch.Tensor, torch.Tensor] | None = None,
                seed: int = 0, batch_size: int = 1, width: int = 0, height: int = 0) -> io.NodeOutput:
        ours, theirs = segmap.label_set, model.label_set
        if ours.class_names != theirs.class_names:
            raise ValueError(
                f"the segmap was made for label set '{ours.name}' ({ours.label_nc} classes) but the "
                f"model uses '{theirs.name}' ({theirs.label_nc} classes): connect this model to the "
                "node that made the segmap"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        labels = segmap.labels
        styles = _pair_styles(style, labels.shape[0])
        h, w = _output_size(model.pipeline, width, height)
        count = labels.shape[0] * batch_size
        if count * h * w * 3 * 4 > MAX_OUTPUT_BYTES:
            raise ValueError(
                f"{count} image(s) of {w}x{h} make a {count * h * w * 12 / 2**30:.1f} GiB IMAGE batch, over the "
                f"{MAX_OUTPUT_BYTES / 2**30:.0f} GiB one Synthesize run returns: lower batch_size, width or height"
            )
        work = h * w * (model.label_set.semantic_nc + 1024) * 4  # rough activation peak of one image
        bar = _comfy.progress_bar(labels.shape[0] * batch_size)
        images = []
        with _on_device(model, work) as pipe:
            for i in range(labels.shape[0]):
                for k in range(batch_size):
                    _comfy.check_interrupted()
                    out = pipe(labels[i : i + 1], style=styles[i], seed=(seed + k) % (MAX_SEED + 1),
                               height=height or None, width=width or None, output_type="pt").images
                    images.append(out.detach().to("cpu", torch.float32).movedim(1, -1))  # (1,H,W,3)
                    bar.update(1)
        result = torch.cat(images)
        check_finite(result, "the synthesized image", "the model overflowed in its dtype: load it with dtype "
                     "fp32 or bf16 in Load SPADE Model (or its weights are broken)")
        result = result.clamp(0, 1).to(_comfy.intermediate_device())
        return io.NodeOutput(result)


def _pair_styles(style: tuple[torch.Tensor, torch.Tensor] | None, n: int) -> list[Any]:
    """One (mu, logvar) per segmap: a single style for all, or one per segmap."""
    if style is None:
        return [None] * n
    mu, logvar = style
    check_finite(mu, "style", "re-encode the style image with Encode Style")
    check_finite(logvar, "style", "re-encode the style image with Encode Style")
    if mu.shape[0] == 1:
        return [(mu, logvar)] * n
    if mu.shape[0] == n:
        return [(mu[i : i + 1], logvar[i : i + 1]) for i in range(n)]
    raise ValueError(
        f"got {mu.shape[0]} styles for {n} segmaps: encode one style image, or one per segmap"
    )


NODES: list[type[io.ComfyNode]] = [
    SPADEModelLoader,
    SPADELoadSegmap,
    SPADEImageToSegmap,
    SPADEEncodeStyle,
    SPADESynthesize,
]


class SPADEExtension(ComfyExtension):
    """The SPADE node pack."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SPADEExtension:
    """ComfyUI's V3 entry point: registers models/spade and returns the pack."""
    _comfy.register_model_folder()
    return SPADEExtension()

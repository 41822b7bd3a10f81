"""The Gradio app: paint a layout with the model's classes and get a SPADE image (GauGAN).

`build_demo(pipe)` returns a `gr.Blocks`; `launch_demo(model)` builds and serves it. Gradio and
the model load only when these are called. Every inference event shares one queue slot group
("spade", `concurrency_limit` at a time) so a CPU Space is not overloaded.

Security model (the app is meant to be public): it serves only the models its operator named at
build time (an allow-list of public names -> loaders; a request can only pick a name, never a path
or repo id, and any other name gets one generic error); every image a request brings is opened
from a file with its pixel count checked from the header before decoding and is sampled down to
the size the handler needs; outputs per request are bounded by the same pixel budget; uploads are
bounded by `max_file_size`, and while the app is served PIL's own decompression-bomb limit is
lowered to the demo's, so images Gradio decodes itself (the editor's layers) are bounded too.
"""

import functools
import logging
import os
import random
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from spade_core.demo.layouts import blank_layout, canvas_to_labels, example_layouts, find_class, legend_html
from spade_core.images import max_image_pixels, open_image
from spade_core.segmap import coerce_segmap, resize_labels

if TYPE_CHECKING:
    import gradio as gr

    from spade_core.pipeline import SPADEPipeline

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "DEMO_MAX_PIXELS",
    "ModelRegistry",
    "allowed_models",
    "build_demo",
    "launch_demo",
    "models_from_text",
]

logger = logging.getLogger(__name__)

CANVAS_SIDE = 512  # the painting canvas' long side in pixels; segmaps are resized to the model's size
MAX_SEED = 2**31 - 1
UPSCALES = ("1x", "2x", "4x")
EMBEDDED = "embedded"
# A public demo's image budget: 16.8 Mpx per input image (a 4096x4096 segmap or a 12 Mpx phone photo)
# and per request's outputs; below the library's general limit (spade_core.images).
DEMO_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_FILE_SIZE = "10mb"
# Sizes beyond the native one are offered only when one image's generator activations fit in this.
DEMO_SYNTHESIS_BYTES = 384 * 2**20
INTRO = """# SPADE · GauGAN-style painting
Paint with the model's classes (each brush colour is one class, see the legend), then **Generate**.
Start from the blank canvas or an example below, or upload a segmentation map (label PNG or colour map).
"""


# Names the brush swatches after the legend (hover shows the class) and makes a click on a legend
# entry pick that class' colour; if Gradio's editor markup changes, this quietly does nothing.
_LEGEND_JS = r"""
() => {
  const hex = (rgb) => {
    const m = (rgb || '').match(/\d+/g);
    return m ? '#' + m.slice(0, 3).map((v) => (+v).toString(16).padStart(2, '0')).join('') : '';
  };
  const swatches = () => [...document.querySelectorAll('#spade-canvas button.color')];
  const names = () => Object.fromEntries(
    [...document.querySelectorAll('#spade-legend [data-color]')].map((e) => [e.dataset.color, e.dataset.name]));
  const label = () => {
    const known = names();
    for (const b of swatches()) {
      const name = known[hex(getComputedStyle(b).backgroundColor)];
      if (name && b.title !== name) { b.title = name; b.setAttribute('aria-label', name); }
    }
  };
  new MutationObserver(label).observe(document.body, { childList: true, subtree: true });
  document.addEventListener('click', (ev) => {
    const item = ev.target.closest('#spade-legend [data-color]');
    if (!item) return;
    const find = () => swatches().find((b) => hex(getComputedStyle(b).backgroundColor) === item.dataset.color);
    if (!find()) document.querySelector('#spade-canvas button[aria-label="Color"]')?.click();
    const pick = (tries) => {
      const swatch = find();
      if (swatch) swatch.click(); else if (tries > 0) setTimeout(() => pick(tries - 1), 50);
    };
    pick(40);
  });
}
"""


# Small results (a 256 px model) fill their boxes instead of sitting in the middle; label maps stay crisp.
_STYLE = (
    "<style>#spade-output img, #spade-layout img { width: 100%; height: 100%; object-fit: contain; }"
    " #spade-layout img { image-rendering: pixelated; }</style>"
)


def _import_gradio():
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the demo needs Gradio: pip install 'spade[demo]' (or pip install gradio)") from None
    return gr


# ----------------------------------------------------------------------------- the allow-list of models


def _load_pipeline(source: "str | os.PathLike | None") -> "SPADEPipeline":
    """Load an operator-configured model ('embedded' or None, a pipeline folder, a Hub repo id)."""
    from spade_core.pipeline import SPADEPipeline

    return SPADEPipeline.from_pretrained(None if source in (None, "", EMBEDDED) else source)


def _pipe_name(pipe: "SPADEPipeline") -> str:
    return str(getattr(pipe, "name_or_path", None) or "custom")


def allowed_models(
    pipe: "SPADEPipeline | None" = None,
    model: "str | os.PathLike | None" = None,
    models: "Sequence[str | os.PathLike] | Mapping[str, Any] | None" = None,
) -> tuple[dict[str, Any], str]:
    """The operator's allow-list, public name -> source (folder, repo id, None = embedded, or a pipeline), and its default.

    The default comes first: `pipe` (named after where it was loaded from), else `model` (a name in
    `models`, or a source that becomes its own name), else the embedded model. `models` adds a list of
    sources, each named by itself, or a mapping public name -> source, which keeps server paths off the page.
    """
    from spade_core.pipeline import SPADEPipeline

    if pipe is not None and model is not None:
        raise ValueError("pass pipe or model, not both")
    if models is None:
        entries: list[tuple[Any, Any]] = []
    elif isinstance(models, Mapping):
        entries = list(models.items())
    elif isinstance(models, (str, os.PathLike)):
        entries = [(models, models)]
    elif isinstance(models, Sequence):
        entries = [(entry, entry) for entry in models]
    else:
        raise ValueError(f"models must be a list of folders / repo ids or a dict name -> source, got {type(models).__name__}")
    table: dict[str, Any] = {}
    for name, source in entries:
        if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
            raise ValueError(f"models: every name must be a non-empty string, got {name!r}")
        if not isinstance(source, (str, os.PathLike, SPADEPipeline)) and source is not None:
            raise ValueError(f"models[{str(name)!r}] must be a folder, a Hub repo id, 'embedded' or a SPADEPipeline")
        name = str(name).strip()
        source = None if isinstance(source, str) and source.strip() in ("", EMBEDDED) else source
        if name in table and table[name] is not source and str(table[name]) != str(source):
            raise ValueError(f"models: the name {name!r} is given twice with different sources: name each once")
        table[name] = source
    if pipe is not None:
        default = _pipe_name(pipe)
        table.pop(default, None)
        table = {default: pipe, **table}
    else:
        default = str(model).strip() if model is not None and str(model).strip() else EMBEDDED
        if default not in table:
            table = {default: None if default == EMBEDDED else model, **table}
    return table, default


def models_from_text(text: str | None) -> dict[str, str]:
    """'SOURCE, NAME=SOURCE, ...' (e.g. $SPADE_MODELS) -> {public name: source}; a bare SOURCE is its own name."""
    table: dict[str, str] = {}
    for entry in (text or "").split(","):
        name, _, source = entry.partition("=") if "=" in entry else (entry, "", entry)
        name, source = name.strip(), source.strip()
        if not name and not source:
            continue
        if not name or not source:
            raise ValueError(f"model entry {entry.strip()!r} is incomplete: write SOURCE or NAME=SOURCE, comma-separated")
        table[name] = source
    return table


class ModelRegistry:
    """Pipelines by public name, only from the operator's allow-list (name -> loader).

    A request can only choose a name: it is looked up in the list and never reaches a loader, a path or
    the Hub; names off the list, and models that fail to load, get one generic message that shows no
    server path. The default model stays loaded; the others load on first use and are kept LRU.
    """

    def __init__(
        self,
        loaders: "Mapping[str, Callable[[], SPADEPipeline]]",
        default_name: str,
        default_pipe: "SPADEPipeline | None" = None,
        capacity: int = 2,
    ) -> None:
        if default_name not in loaders:
            raise ValueError(f"default_name {default_name!r} is not among the loaders: add it to them")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self._loaders = dict(loaders)
        self.names = tuple(self._loaders)
        self.default_name = default_name
        self._pinned = {default_name: default_pipe if default_pipe is not None else self._loaders[default_name]()}
        self._cache: OrderedDict[str, SPADEPipeline] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, name: Any) -> "SPADEPipeline":
        """The pipeline called `name` (None or '': the default), loading it on first use."""
        name = self.normalize(name)
        with self._lock:
            if name in self._pinned:
                return self._pinned[name]
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
            try:
                pipe = self._loaders[name]()
            except Exception:
                logger.exception("allow-listed model %r failed to load", name)
                raise ValueError(
                    f"model {name!r} could not be loaded on this server: choose another one (the server log has the "
                    "details)"
                ) from None
            if self._capacity:
                self._cache[name] = pipe
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
            return pipe

    def normalize(self, name: Any) -> str:
        """'' or None -> the default name; a listed name (spaces dropped) -> itself; anything else -> ValueError."""
        text = name.strip() if isinstance(name, str) else name
        if text is None or text == "":
            return self.default_name
        if isinstance(text, str) and text in self._loaders:
            return text
        raise ValueError(f"unknown model: choose one of {', '.join(self.names)}")


def _loader(source: Any) -> "Callable[[], SPADEPipeline]":
    """The loader of one allow-listed source; the source is the operator's, fixed here at build time."""
    from spade_core.pipeline import SPADEPipeline

    if isinstance(source, SPADEPipeline):
        return lambda: source
    return lambda: _load_pipeline(source)


# ----------------------------------------------------------------------------- bounded inputs and outputs


def _file_size_bytes(value: int | str | None) -> int | None:
    """max_file_size as bytes: an int, or '<n><unit>' with b, kb, mb, gb (powers of 1024); None = no limit."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+)\s*(b|kb|mb|gb)\s*", str(value).lower()) if isinstance(value, str) else None
    if not match or int(match[1]) < 1:
        raise ValueError(f"max_file_size={value!r} is not a size: pass bytes (a positive int) or a string like '10mb'")
    return int(match[1]) * 1024 ** ("b", "kb", "mb", "gb").index(match[2])


def _demo_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        return min(DEMO_MAX_PIXELS, max_image_pixels())
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return max_pixels


class _PilLimit:
    """Lowers PIL's process-wide decompression-bomb limit while demos are served, restoring it after the last closes.

    Gradio opens some inputs itself (the image editor's layers, data: URLs) before any handler runs; PIL
    refuses to open an image over twice its MAX_IMAGE_PIXELS, so that decoding is bounded too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[int] = []
        self._saved: int | None = None

    def hold(self, max_pixels: int) -> None:
        with self._lock:
            if not self._held:
                self._saved = Image.MAX_IMAGE_PIXELS
            self._held.append(max_pixels)
            self._apply()

    def release(self, max_pixels: int) -> None:
        with self._lock:
            if max_pixels in self._held:
                self._held.remove(max_pixels)
            if self._held:
                self._apply()
            else:
                Image.MAX_IMAGE_PIXELS = self._saved

    def _apply(self) -> None:
        lowest = min(self._held)
        Image.MAX_IMAGE_PIXELS = lowest if self._saved is None else min(self._saved, lowest)


_PIL_LIMIT = _PilLimit()


def _bound_serving(demo: "gr.Blocks", max_file_size: int | None, max_pixels: int) -> None:
    """Make `demo.launch()` apply the upload limit (unless given) and PIL's lowered bomb limit until `demo.close()`."""
    launch, close = demo.launch, demo.close
    held = threading.Event()

    @functools.wraps(launch)
    def bounded_launch(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("max_file_size", max_file_size)
        if not held.is_set():
            held.set()
            _PIL_LIMIT.hold(max_pixels)
        try:
            return launch(*args, **kwargs)
        except BaseException:
            bounded_close()
            raise

    @functools.wraps(close)
    def bounded_close(*args: Any, **kwargs: Any) -> Any:
        try:
            return close(*args, **kwargs)
        finally:
            if held.is_set():
                held.clear()
                _PIL_LIMIT.release(max_pixels)

    demo.launch = bounded_launch
    demo.close = bounded_close


def _too_large(stream: Any, max_pixels: int) -> bool:
    """True when the image in `stream` has more than `max_pixels` pixels, read from its header only (no decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as probe:
                return probe.width * probe.height > max_pixels
    except Image.DecompressionBombError:
        return True
    except Exception:  # noqa: BLE001 - not an image: open_image says so in its own words
        return False
    finally:
        stream.seek(0)


def _read_upload(value: Any, what: str, max_pixels: int, upload_root: str) -> Image.Image:
    """An uploaded image (the file Gradio stored it in) -> a decoded PIL image, its pixel count checked first.

    Only files inside Gradio's upload folder `upload_root` are read (checked on the text of the path, before
    any file access), so a handler called with any other path refuses it with the same message as a bad upload.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{what} is not an uploaded image file: upload a PNG, JPEG or WebP image")  # noqa: TRY004
    unreadable = f"{what} could not be read on the server: upload it again"
    path = os.path.abspath(os.fspath(value))
    try:
        inside = path != upload_root and os.path.commonpath([path, upload_root]) == upload_root
    except ValueError:  # another drive (Windows)
        inside = False
    if not inside:
        raise ValueError(unreadable)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        raise ValueError(unreadable) from None
    with stream:
        if _too_large(stream, max_pixels):
            side = int(max_pixels**0.5)
            raise ValueError(
                f"{what} is too large: this demo takes images up to {max_pixels:,d} pixels (e.g. {side}x{side}); "
                "downscale it and upload it again"
            )
        return open_image(stream, what, max_pixels)


def _nearest_rows(n_in: int, n_out: int) -> np.ndarray:
    """Source index per output index of the library's nearest label resize (spade_core.segmap.resize_labels)."""
    return resize_labels(torch.arange(n_in).view(1, n_in, 1), (n_out, 1))[0, :, 0].numpy()


def _sample(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W[,C]) -> size (h,w) by the library's nearest label resize: exact ids, and only h*w pixels go on."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    return np.ascontiguousarray(array[np.ix_(_nearest_rows(array.shape[0], h), _nearest_rows(array.shape[1], w))])


def _sampled_segmap(image: Image.Image, size: tuple[int, int], what: str) -> Image.Image:
    """A segmap image sampled (nearest, as the pipeline would) to size (h,w), keeping its mode so ids stay ids."""
    if image.size == (size[1], size[0]):
        return image
    small = Image.fromarray(_sample(np.asarray(image), size))
    if image.mode == "P":
        small.putpalette(image.getpalette())
    if small.mode != image.mode:
        raise ValueError(
            f"{what} has PIL mode {image.mode}, which the demo does not read: save it as a palette (P), grayscale (L) "
            "or RGB PNG"
        )
    return small


def _output_size(pipe: "SPADEPipeline", size: Any) -> tuple[int | None, int | None]:
    """The chosen "HxW" output size, only one of those the app offers for this model (None: native)."""
    if size is None or size == "":
        return None, None
    choices = [value for _, value in _size_choices(pipe)]
    if size not in choices:
        raise ValueError(f"unknown output size: choose one of {', '.join(choices)}")
    return _parse_size(size)


def _upscale_factor(upscale: Any) -> int:
    if upscale is None or upscale == "":
        return 1
    if upscale not in UPSCALES:
        raise ValueError(f"unknown upscale: choose one of {', '.join(UPSCALES)}")
    return int(upscale.rstrip("x"))


def _count(value: Any, most: int) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError, OverflowError):
        count = 0
    if not 1 <= count <= most:
        raise ValueError(f"the number of variations must be 1..{most}: move the slider")
    return count


# ----------------------------------------------------------------------------- model geometry


def _canvas_size(pipe: "SPADEPipeline") -> tuple[int, int]:
    """(height, width) of the painting canvas: the model's aspect ratio, long side CANVAS_SIDE."""
    h, w = pipe.generator.native_size
    scale = CANVAS_SIDE / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _size_choices(pipe: "SPADEPipeline") -> list[tuple[str, str]]:
    """(label, "HxW") output sizes: the native one, and a few more whose synthesis fits the demo's memory budget."""
    from ..synthesis import estimate_inference_bytes

    gen = pipe.generator
    h, w = gen.native_size
    choices = [(f"{w}×{h} (native)", f"{h}x{w}")]
    m = gen.size_multiple
    for scale in (0.5, 1.5, 2.0):
        sh, sw = max(m, round(h * scale / m) * m), max(m, round(w * scale / m) * m)
        value = f"{sh}x{sw}"
        fits = estimate_inference_bytes(gen, 1, sh, sw) <= DEMO_SYNTHESIS_BYTES
        if fits and value not in [v for _, v in choices]:
            choices.append((f"{sw}×{sh}", value))
    return choices


def _parse_size(value: str | None) -> tuple[int | None, int | None]:
    match = re.fullmatch(r"(\d+)x(\d+)", value or "")
    return (int(match[1]), int(match[2])) if match else (None, None)


def _model_status(name: str, pipe: "SPADEPipeline") -> str:
    ls = pipe.label_set
    h, w = pipe.generator.native_size
    if pipe.encoder is not None:
        style = "style images or random styles"
    elif pipe.generator.config.use_vae:
        style = "random styles (no style encoder)"
    else:
        style = "one image per layout (no style code)"
    return f"**{name}** · {ls.label_nc} classes (`{ls.name}`) · {w}×{h} · {style} · {pipe.generator.device}"


# ----------------------------------------------------------------------------- conversions




def _editor_value(pipe: "SPADEPipeline", labels: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """Class indices (H,W) -> an ImageEditor value with the coloured layout as background."""
    image = Image.fromarray(pipe.colorize(labels))
    ch, cw = _canvas_size(pipe)
    if image.size != (cw, ch):
        image = image.resize((cw, ch), Image.NEAREST)
    return {"background": image, "layers": [], "composite": None}


def _upscale(image: Image.Image, factor: int) -> Image.Image:
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.LANCZOS)


def _seed(value: Any) -> int:
    if value is None:
        return 0
    try:
        seed = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"the seed must be a whole number 0..{MAX_SEED}") from None
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: use 0..{MAX_SEED}")
    return seed


def _user_errors(fn: Callable) -> Callable:
    """Show a user's mistake (ValueError) as a Gradio error; anything else is logged and shown as one generic line.

    Only ValueError messages reach the page: the demo builds them from the request and its allow-list, never
    from server paths; other failures (including FileNotFoundError) may name server files, so they stay in the log.
    """
    gr = _import_gradio()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception:
            logger.exception("demo handler %s failed", fn.__name__)
            raise gr.Error("the server could not do that (the error is in its log): try again, or another input",
                           print_exception=False) from None

    return wrapper


# ----------------------------------------------------------------------------- the app


def build_demo(
    pipe: "SPADEPipeline | None" = None,
    model: "str | os.PathLike | None" = None,
    concurrency_limit: int = 1,
    max_queue: int = 32,
    allow_model_choice: bool = True,
    max_variations: int = 8,
    models: "Sequence[str | os.PathLike] | Mapping[str, Any] | None" = None,
    max_file_size: int | str | None = DEFAULT_MAX_FILE_SIZE,
    max_pixels: int | None = None,
    model_cache: int = 2,
) -> "gr.Blocks":
    """The demo as a `gr.Blocks` (queued) serving `pipe` or `model` (default: embedded) and the allow-listed `models`.

    Requests choose among these names only (see `allowed_models`). `max_file_size` bounds uploads (bytes or
    '10mb'; applied by `demo.launch()` unless it is given one; None: no limit); `max_pixels` bounds every input
    image and each request's outputs (default DEMO_MAX_PIXELS, or $SPADE_MAX_IMAGE_PIXELS when lower);
    `model_cache` is how many non-default models stay loaded.
    """
    gr = _import_gradio()
    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be at least 1, got {concurrency_limit}")
    if max_variations < 2:
        raise ValueError(f"max_variations must be at least 2, got {max_variations}")
    upload_limit = _file_size_bytes(max_file_size)
    pixel_limit = _demo_max_pixels(max_pixels)
    table, name = allowed_models(pipe, model, models)
    models_by_name = ModelRegistry({n: _loader(source) for n, source in table.items()}, name, capacity=model_cache)
    pipe = models_by_name.get(name)
    slots = {"concurrency_limit": concurrency_limit, "concurrency_id": "spade"}
    upload_root = os.path.abspath(gr.utils.get_upload_folder())  # where Gradio stores uploads and its own images

    def examples_for(p: "SPADEPipeline") -> list[tuple[str, np.ndarray]]:
        return example_layouts(p.label_set, *_canvas_size(p))

    def thumbnails(p: "SPADEPipeline") -> list[tuple[Image.Image, str]]:
        return [(Image.fromarray(p.colorize(labels)), title) for title, labels in examples_for(p)]

    def blank_value(p: "SPADEPipeline") -> dict[str, Any]:
        return _editor_value(p, blank_layout(p.label_set, *_canvas_size(p)))

    def brush(p: "SPADEPipeline") -> gr.Brush:
        colors = ["#{:02x}{:02x}{:02x}".format(*c) for c in p.label_set.palette]
        found = [find_class(p.label_set, role) for role in ("tree", "mountain", "water")]
        first = next((i for i in found if i is not None), len(colors) - 1)
        return gr.Brush(colors=colors, default_color=colors[first], color_mode="fixed", default_size=24)

    def editor_labels(p: "SPADEPipeline", value: Any) -> torch.Tensor:
        """The editor's flattened canvas (a file) -> class indices (1,H,W) at the canvas size."""
        value = value if isinstance(value, dict) else {}
        composite = value.get("composite")
        if composite is None:
            composite = value.get("background")  # not yet flattened by the browser: nothing painted on it
        if composite is None:
            raise ValueError("the canvas is empty: start from the blank canvas or an example layout, then paint")
        canvas = _read_upload(composite, "the canvas", pixel_limit, upload_root).convert("RGBA")
        return canvas_to_labels(_sample(np.asarray(canvas), _canvas_size(p)), p.label_set)[None]

    def segmap_labels(p: "SPADEPipeline", value: Any, size: tuple[int, int]) -> torch.Tensor:
        """An uploaded segmap -> class indices (1,h,w), sampled to `size` before any per-pixel work."""
        image = _sampled_segmap(_read_upload(value, "the segmap", pixel_limit, upload_root), size, "the segmap")
        return coerce_segmap(image, p.label_set, nearest_color=True)

    def style_input(p: "SPADEPipeline", value: Any) -> Image.Image | None:
        """An uploaded style photo -> RGB, box-reduced to at most ~4x the model's size (the encoder reads its size)."""
        if value is None:
            return None
        if p.encoder is None:
            raise ValueError("this model has no style encoder: clear the style image")
        image = _read_upload(value, "the style image", pixel_limit, upload_root)
        h, w = p.generator.native_size
        factor = min(image.width // (2 * w), image.height // (2 * h))
        if factor >= 2:
            image = image.reduce(factor)
        return image.convert("RGB")

    def plan(p: "SPADEPipeline", count: int, size: Any, upscale: Any) -> tuple[int | None, int | None, int]:
        """(height, width, upscale factor) of a request's outputs, checked against the offer and the pixel budget."""
        height, width = _output_size(p, size)
        factor = _upscale_factor(upscale)
        native_h, native_w = p.generator.native_size
        pixels = count * (height or native_h) * (width or native_w) * factor**2
        if pixels > pixel_limit:
            raise ValueError(
                f"{count} image(s) of that size and upscale make {pixels:,d} pixels, over this demo's "
                f"{pixel_limit:,d} per request: pick a smaller size, upscale or fewer variations"
            )
        return height, width, factor

    def synthesize_images(p: "SPADEPipeline", labels: torch.Tensor, style_file: Any, seeds: list[int],
                          out: tuple[int | None, int | None, int]) -> list[Image.Image]:
        height, width, factor = out
        style_image = style_input(p, style_file)
        style = None if style_image is None else p.encode_style(style_image)
        return [_upscale(p(labels, style=style, seed=seed, height=height, width=width).images[0], factor)
                for seed in seeds]

    def render(p: "SPADEPipeline", labels: torch.Tensor, style_file: Any, seed: Any, randomize: bool,
               out: tuple[int | None, int | None, int]) -> tuple[Image.Image, int, Image.Image]:
        """One image for labels (1,H,W), the seed used, and the layout at the size the model reads it."""
        seed = random.randint(0, MAX_SEED) if randomize is True else _seed(seed)
        image = synthesize_images(p, labels, style_file, [seed], out)[0]
        native_h, native_w = p.generator.native_size
        seen = resize_labels(labels, (out[0] or native_h, out[1] or native_w))[0]
        return image, seed, Image.fromarray(p.colorize(seen))

    def event_index(evt: Any, count: int) -> int | None:
        index = getattr(evt, "index", None)
        return index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count else None

    @_user_errors
    def generate(editor: Any, style_file: Any, seed: Any, randomize: bool, size: Any, upscale: Any,
                 model_name: Any) -> tuple[Image.Image, int, Image.Image]:
        p = models_by_name.get(model_name)
        out = plan(p, 1, size, upscale)
        return render(p, editor_labels(p, editor), style_file, seed, randomize, out)

    @_user_errors
    def variations(editor: Any, style_file: Any, seed: Any, count: Any, size: Any, upscale: Any,
                   model_name: Any) -> tuple[list[tuple[Image.Image, str]], list[tuple[int, Image.Image]]]:
        p = models_by_name.get(model_name)
        if not p.generator.config.use_vae:
            raise ValueError("this model has no style code, so every seed gives the same image: use Generate")
        start = _seed(seed)
        seeds = [(start + i) % (MAX_SEED + 1) for i in range(_count(count, max_variations))]
        out = plan(p, len(seeds), size, upscale)
        images = synthesize_images(p, editor_labels(p, editor), style_file, seeds, out)
        return [(im, f"seed {s}") for im, s in zip(images, seeds)], list(zip(seeds, images))

    def pick_variation(variants: Any, evt: gr.SelectData) -> tuple[Any, Any]:
        """A click on a variation: its seed and image, both from this session's server-side state."""
        variants = variants if isinstance(variants, list) else []
        index = event_index(evt, len(variants))
        if index is None:
            return gr.skip(), gr.skip()
        return variants[index]

    @_user_errors
    def blank(model_name: Any) -> dict[str, Any]:
        return blank_value(models_by_name.get(model_name))

    @_user_errors
    def pick_example(style_file: Any, seed: Any, randomize: bool, size: Any, upscale: Any, model_name: Any,
                     evt: gr.SelectData) -> tuple[dict[str, Any], Image.Image, int, Image.Image]:
        p = models_by_name.get(model_name)
        out = plan(p, 1, size, upscale)
        layouts = examples_for(p)
        index = event_index(evt, len(layouts))
        if index is None:
            raise ValueError("that example does not exist for this model: pick another one")
        labels = torch.from_numpy(layouts[index][1])[None]
        return _editor_value(p, labels[0]), *render(p, labels, style_file, seed, randomize, out)

    @_user_errors
    def upload_segmap(file: Any, model_name: Any) -> dict[str, Any]:
        p = models_by_name.get(model_name)
        return _editor_value(p, segmap_labels(p, file, _canvas_size(p))[0])

    @_user_errors
    def check_model(choice: Any) -> None:
        models_by_name.get(choice)

    @_user_errors
    def apply_model(choice: Any, current: Any) -> tuple:
        target = models_by_name.normalize(choice)
        p = models_by_name.get(target)
        same_classes = p.label_set == models_by_name.get(current).label_set
        has_style = p.encoder is not None
        sizes = _size_choices(p)
        gr.Info(f"loaded {target}")
        return (
            target,
            _model_status(target, p),
            legend_html(p.label_set),
            gr.ImageEditor(brush=brush(p)) if same_classes else gr.ImageEditor(value=blank_value(p), brush=brush(p)),
            thumbnails(p),
            gr.Dropdown(choices=sizes, value=sizes[0][1]),
            gr.Image(interactive=has_style, value=None, label=_style_label(has_style)),
            gr.Button(interactive=p.generator.config.use_vae),
        )

    @_user_errors
    def synthesize(segmap: str | None, style_image: str | None = None, seed: float | None = 0) -> Image.Image:
        """Segmap (label PNG or colour map) + optional style image + seed -> the generated image (native size)."""
        if segmap is None:
            raise ValueError("no segmap given: pass a label PNG or a colour segmap image")
        p = models_by_name.get(None)
        out = plan(p, 1, None, "1x")
        labels = segmap_labels(p, segmap, p.generator.native_size)
        return synthesize_images(p, labels, style_image, [_seed(seed)], out)[0]

    names = list(models_by_name.names)
    has_style = pipe.encoder is not None
    sizes = _size_choices(pipe)
    ch, cw = _canvas_size(pipe)
    with gr.Blocks(title="SPADE · GauGAN demo", analytics_enabled=False) as demo:
        model_state = gr.State(name)
        variants_state = gr.State([], time_to_live=3600)
        gr.HTML(_STYLE, padding=False)
        gr.Markdown(INTRO)
        with gr.Row(visible=allow_model_choice and len(names) > 1):
            model_box = gr.Dropdown(
                choices=names, value=name, allow_custom_value=False, scale=3, label="Model",
                info="the models this server offers", elem_id="spade-model",
            )
            load_btn = gr.Button("Load model", scale=1, size="md", elem_id="spade-load")
        status = gr.Markdown(_model_status(name, pipe), elem_id="spade-status")
        with gr.Row():
            with gr.Column(scale=3):
                editor = gr.ImageEditor(
                    value=blank_value(pipe), type="filepath", format="png", image_mode="RGBA",
                    label="Layout (paint here)", brush=brush(pipe), layers=False, transforms=(), sources=(),
                    canvas_size=(cw, ch), height=ch + 120, elem_id="spade-canvas",
                )
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="spade-generate")
                    variations_btn = gr.Button("Variations", interactive=pipe.generator.config.use_vae,
                                               elem_id="spade-variations")
                    blank_btn = gr.Button("Blank canvas")
                    upload_btn = gr.UploadButton("Upload segmap", file_types=["image"], file_count="single",
                                                 elem_id="spade-upload")
                gr.Markdown("Classes (click one to paint with it):")
                legend = gr.HTML(legend_html(pipe.label_set), elem_id="spade-legend")
                examples = gr.Gallery(
                    value=thumbnails(pipe), label="Examples: click one to paint it and generate", columns=4,
                    height=200, fit_columns=False, allow_preview=False, object_fit="contain", format="png",
                    elem_id="spade-examples",
                )
            with gr.Column(scale=2):
                output = gr.Image(label="Result", type="pil", format="png", interactive=False,
                                  height=int(ch / 1.4) + 60, buttons=["download", "fullscreen"],
                                  elem_id="spade-output")
                with gr.Row(equal_height=True):
                    seed_box = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", scale=2,
                                         elem_id="spade-seed")
                    dice_btn = gr.Button("New seed", scale=1, size="md")
                    randomize = gr.Checkbox(value=False, label="New seed every time", scale=1)
                style_image = gr.Image(label=_style_label(has_style), type="filepath", image_mode=None,
                                       sources=["upload", "clipboard"], interactive=has_style, height=200)
                gallery = gr.Gallery(label="Variations (click one to keep its seed)", columns=4, height=220,
                                     format="png", allow_preview=False, elem_id="spade-variations-gallery")
        with gr.Accordion("Advanced settings", open=False):
            size_box = gr.Dropdown(choices=sizes, value=sizes[0][1], label="Output size (WxH)",
                                   info="sizes whose synthesis fits this demo's memory budget")
            upscale_box = gr.Radio(list(UPSCALES), value="1x", label="Upscale the result (Lanczos)")
            count_box = gr.Slider(2, max_variations, value=min(4, max_variations), step=1, label="Variations")
            layout_view = gr.Image(label="Layout as the model reads it", type="pil", interactive=False, height=200,
                                   format="png", elem_id="spade-layout")
        with gr.Row(visible=False):
            api_segmap = gr.File(type="filepath", file_types=["image"], label="segmap")
            api_style = gr.File(type="filepath", file_types=["image"], label="style_image")
            api_seed = gr.Number(value=0, precision=0, label="seed")
            api_out = gr.Image(type="pil", format="png", label="image")
            api_btn = gr.Button("synthesize")

        gen_inputs = [editor, style_image, seed_box, randomize, size_box, upscale_box, model_state]
        gen_outputs = [output, seed_box, layout_view]
        generate_btn.click(generate, gen_inputs, gen_outputs, api_visibility="private", **slots)
        variations_btn.click(
            variations, [editor, style_image, seed_box, count_box, size_box, upscale_box, model_state],
            [gallery, variants_state], api_visibility="private", **slots,
        )
        gallery.select(pick_variation, [variants_state], [seed_box, output], api_visibility="private", queue=False)
        dice_btn.click(lambda: random.randint(0, MAX_SEED), None, seed_box, api_visibility="private", queue=False)
        blank_btn.click(blank, [model_state], editor, api_visibility="private", queue=False)
        upload_btn.upload(upload_segmap, [upload_btn, model_state], editor, api_visibility="private", **slots)
        examples.select(pick_example, gen_inputs[1:], [editor, *gen_outputs], api_visibility="private", **slots)
        load_btn.click(check_model, [model_box], None, api_visibility="private", **slots).success(
            apply_model, [model_box, model_state],
            [model_state, status, legend, editor, examples, size_box, style_image, variations_btn],
            api_visibility="private",
        )
        api_btn.click(synthesize, [api_segmap, api_style, api_seed], api_out, api_name="synthesize", **slots)
        demo.load(None, None, None, js=_LEGEND_JS)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)
    _bound_serving(demo, upload_limit, pixel_limit)
    return demo


def _style_label(has_style: bool) -> str:
    if has_style:
        return "Style image (optional; empty = random style)"
    return "Style image (this model has no style encoder)"


def launch_demo(
    model: "str | os.PathLike | None" = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    concurrency_limit: int = 1,
    models: "Sequence[str | os.PathLike] | Mapping[str, Any] | None" = None,
    max_file_size: int | str | None = DEFAULT_MAX_FILE_SIZE,
    max_pixels: int | None = None,
    **launch_kwargs: Any,
) -> None:
    """Build the demo for `model` ('embedded' when None) plus the allow-listed `models` and serve it (blocks)."""
    demo = build_demo(model=model, models=models, concurrency_limit=concurrency_limit, max_file_size=max_file_size,
                      max_pixels=max_pixels)
    demo.launch(server_name=host, server_port=port, share=share, **launch_kwargs)

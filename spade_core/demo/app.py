"""The Gradio app: paint a layout with the model's classes and get a SPADE image (GauGAN).

`build_demo(pipe)` returns a `gr.Blocks`; `launch_demo(model)` builds and serves it. Gradio and
the model load only when these are called. Every inference event shares one queue slot group
("spade", `concurrency_limit` at a time) so a CPU Space is not overloaded.
"""

import functools
import logging
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from spade_core.demo.layouts import blank_layout, canvas_to_labels, example_layouts, find_class, legend_html
from spade_core.segmap import coerce_segmap, resize_labels

if TYPE_CHECKING:
    import gradio as gr

    from spade_core.pipeline import SPADEPipeline

__all__ = ["ModelRegistry", "build_demo", "launch_demo"]

logger = logging.getLogger(__name__)

CANVAS_SIDE = 512  # the painting canvas' long side in pixels; segmaps are resized to the model's size
MAX_SEED = 2**31 - 1
UPSCALES = ("1x", "2x", "4x")
EMBEDDED = "embedded"
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


class ModelRegistry:
    """Loaded pipelines by name ('embedded', a folder, a Hub repo id); the first one stays, others are LRU."""

    def __init__(self, default_name: str, default_pipe: "SPADEPipeline", capacity: int = 2) -> None:
        self.default_name = default_name
        self._pinned = {default_name: default_pipe}
        self._cache: OrderedDict[str, SPADEPipeline] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, name: str | None) -> "SPADEPipeline":
        """The pipeline called `name` (None: the default), loading it on first use."""
        name = self.normalize(name)
        with self._lock:
            if name in self._pinned:
                return self._pinned[name]
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
            pipe = _load_pipeline(name)
            self._cache[name] = pipe
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
            return pipe

    def normalize(self, name: str | None) -> str:
        """'' or None -> the default name; surrounding spaces dropped."""
        name = (name or "").strip()
        return name or self.default_name


def _load_pipeline(model: str | None) -> "SPADEPipeline":
    from spade_core.pipeline import SPADEPipeline

    return SPADEPipeline.from_pretrained(None if model in (None, "", EMBEDDED) else model)


def _pipe_name(pipe: "SPADEPipeline") -> str:
    return str(getattr(pipe, "name_or_path", None) or "custom")


# ----------------------------------------------------------------------------- model geometry


def _canvas_size(pipe: "SPADEPipeline") -> tuple[int, int]:
    """(height, width) of the painting canvas: the model's aspect ratio, long side CANVAS_SIDE."""
    h, w = pipe.generator.native_size
    scale = CANVAS_SIDE / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _size_choices(pipe: "SPADEPipeline") -> list[tuple[str, str]]:
    """(label, "HxW") output sizes: the native one, and for models without a fixed style map a few more."""
    gen = pipe.generator
    h, w = gen.native_size
    choices = [(f"{w}×{h} (native)", f"{h}x{w}")]
    if gen.config.use_vae:
        return choices
    m = gen.size_multiple
    for scale in (0.5, 1.5, 2.0):
        sh, sw = max(m, round(h * scale / m) * m), max(m, round(w * scale / m) * m)
        value = f"{sh}x{sw}"
        if max(sh, sw) <= 2048 and value not in [v for _, v in choices]:
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


def _editor_labels(pipe: "SPADEPipeline", value: dict[str, Any] | None) -> torch.Tensor:
    """The editor's flattened canvas -> class indices (1,H,W); painted edges snap to the nearest class."""
    value = value or {}
    composite = value.get("composite")
    if composite is None:
        composite = value.get("background")  # not yet flattened by the browser: nothing painted on it
    if composite is None:
        raise ValueError("the canvas is empty: start from the blank canvas or an example layout, then paint")
    return canvas_to_labels(np.asarray(composite), pipe.label_set)[None]


def _upscale(image: Image.Image, factor: str) -> Image.Image:
    k = int(str(factor).rstrip("x") or 1)
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.LANCZOS)


def _seed(value: float | None) -> int:
    if value is None:
        return 0
    seed = int(value)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: use 0..{MAX_SEED}")
    return seed


def _user_errors(fn: Callable) -> Callable:
    """Show a user's mistake (ValueError, FileNotFoundError) and unexpected failures as a Gradio error."""
    gr = _import_gradio()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, FileNotFoundError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:
            logger.exception("demo handler %s failed", fn.__name__)
            raise gr.Error(f"{type(err).__name__}: {err}", print_exception=False) from None

    return wrapper


# ----------------------------------------------------------------------------- the app


def build_demo(
    pipe: "SPADEPipeline | None" = None,
    model: str | None = None,
    concurrency_limit: int = 1,
    max_queue: int = 32,
    allow_model_choice: bool = True,
    max_variations: int = 8,
) -> "gr.Blocks":
    """The demo as a `gr.Blocks` (queued) for `pipe`, or for `model` ('embedded', folder or repo id) loaded here."""
    gr = _import_gradio()
    if pipe is not None and model is not None:
        raise ValueError("pass pipe or model, not both")
    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be at least 1, got {concurrency_limit}")
    if pipe is None:
        name = model or EMBEDDED
        pipe = _load_pipeline(name)
    else:
        name = _pipe_name(pipe)
    models = ModelRegistry(name, pipe)
    slots = {"concurrency_limit": concurrency_limit, "concurrency_id": "spade"}

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

    def synthesize_images(p: "SPADEPipeline", labels: torch.Tensor, style_image: Any, seeds: list[int],
                          size: str | None, upscale: str) -> list[Image.Image]:
        height, width = _parse_size(size)
        style = None if style_image is None else p.encode_style(style_image)
        out = []
        for seed in seeds:
            image = p(labels, style=style, seed=seed, height=height, width=width).images[0]
            out.append(_upscale(image, upscale))
        return out

    def render(p: "SPADEPipeline", labels: torch.Tensor, style_image: Any, seed: float, randomize: bool, size: str,
               upscale: str) -> tuple[Image.Image, int, Image.Image]:
        """One image for labels (1,H,W), the seed used, and the layout at the size the model reads it."""
        seed = random.randint(0, MAX_SEED) if randomize else _seed(seed)
        image = synthesize_images(p, labels, style_image, [seed], size, upscale)[0]
        height, width = _parse_size(size)
        native_h, native_w = p.generator.native_size
        seen = resize_labels(labels, (height or native_h, width or native_w))[0]
        return image, seed, Image.fromarray(p.colorize(seen))

    @_user_errors
    def generate(editor: dict | None, style_image: Image.Image | None, seed: float, randomize: bool,
                 size: str, upscale: str, model_name: str) -> tuple[Image.Image, int, Image.Image]:
        p = models.get(model_name)
        return render(p, _editor_labels(p, editor), style_image, seed, randomize, size, upscale)

    @_user_errors
    def variations(editor: dict | None, style_image: Image.Image | None, seed: float, count: float, size: str,
                   upscale: str, model_name: str) -> tuple[list[tuple[Image.Image, str]], list[int]]:
        p = models.get(model_name)
        if not p.generator.config.use_vae:
            raise gr.Error("this model has no style code, so every seed gives the same image: use Generate")
        labels = _editor_labels(p, editor)
        start = _seed(seed)
        seeds = [(start + i) % (MAX_SEED + 1) for i in range(int(count))]
        images = synthesize_images(p, labels, style_image, seeds, size, upscale)
        return [(im, f"seed {s}") for im, s in zip(images, seeds)], seeds

    def pick_variation(seeds: list[int], evt: gr.SelectData) -> tuple[int, Any]:
        if not seeds or evt.index is None or evt.index >= len(seeds):
            return gr.skip(), gr.skip()
        image = evt.value.get("image", {}).get("path") if isinstance(evt.value, dict) else None
        return seeds[evt.index], image if image else gr.skip()

    @_user_errors
    def blank(model_name: str) -> dict[str, Any]:
        return blank_value(models.get(model_name))

    @_user_errors
    def pick_example(style_image: Image.Image | None, seed: float, randomize: bool, size: str, upscale: str,
                     model_name: str, evt: gr.SelectData) -> tuple[dict[str, Any], Image.Image, int, Image.Image]:
        p = models.get(model_name)
        layouts = examples_for(p)
        if evt.index is None or evt.index >= len(layouts):
            raise gr.Error("that example does not exist for this model: pick another one")
        labels = torch.from_numpy(layouts[evt.index][1])[None]
        return _editor_value(p, labels[0]), *render(p, labels, style_image, seed, randomize, size, upscale)

    @_user_errors
    def upload_segmap(file: Any, model_name: str) -> dict[str, Any]:
        p = models.get(model_name)
        labels = coerce_segmap(getattr(file, "name", file), p.label_set, nearest_color=True)
        return _editor_value(p, labels[0])

    def check_model(choice: str) -> None:
        target = models.normalize(choice)
        try:
            models.get(target)
        except Exception as err:  # noqa: BLE001 - any failure to load becomes the user's message
            logger.info("could not load model %r: %s", target, err)
            raise gr.Error(f"could not load model {target!r}: {err}", print_exception=False) from None

    def apply_model(choice: str, current: str) -> tuple:
        target = models.normalize(choice)
        p = models.get(target)
        same_classes = p.label_set == models.get(current).label_set
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
    def synthesize(segmap: str | None, style_image: Image.Image | None = None, seed: float | None = 0) -> Image.Image:
        """Segmap (label PNG or colour map) + optional style image + seed -> the generated image (native size)."""
        if segmap is None:
            raise ValueError("no segmap given: pass a label PNG or a colour segmap image")
        p = models.get(None)
        labels = coerce_segmap(segmap, p.label_set, nearest_color=True)
        return synthesize_images(p, labels, style_image, [_seed(seed)], None, "1x")[0]

    has_style = pipe.encoder is not None
    sizes = _size_choices(pipe)
    ch, cw = _canvas_size(pipe)
    with gr.Blocks(title="SPADE · GauGAN demo", analytics_enabled=False) as demo:
        model_state = gr.State(name)
        seeds_state = gr.State([])
        gr.HTML(_STYLE, padding=False)
        gr.Markdown(INTRO)
        with gr.Row(visible=allow_model_choice):
            model_box = gr.Dropdown(
                choices=list(dict.fromkeys([name, EMBEDDED])), value=name, allow_custom_value=True, scale=3,
                label="Model", info="'embedded', a local pipeline folder, or a Hub repo id (owner/name)",
                elem_id="spade-model",
            )
            load_btn = gr.Button("Load model", scale=1, size="md", elem_id="spade-load")
        status = gr.Markdown(_model_status(name, pipe))
        with gr.Row():
            with gr.Column(scale=3):
                editor = gr.ImageEditor(
                    value=blank_value(pipe), type="numpy", image_mode="RGBA", label="Layout (paint here)",
                    brush=brush(pipe), layers=False, transforms=(), sources=(),
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
                style_image = gr.Image(label=_style_label(has_style), type="pil", sources=["upload", "clipboard"],
                                       interactive=has_style, height=200)
                gallery = gr.Gallery(label="Variations (click one to keep its seed)", columns=4, height=220,
                                     format="png", allow_preview=False, elem_id="spade-variations-gallery")
        with gr.Accordion("Advanced settings", open=False):
            size_box = gr.Dropdown(choices=sizes, value=sizes[0][1], label="Output size (WxH)",
                                   info="models with a style encoder make their native size only")
            upscale_box = gr.Radio(list(UPSCALES), value="1x", label="Upscale the result (Lanczos)")
            count_box = gr.Slider(2, max_variations, value=min(4, max_variations), step=1, label="Variations")
            layout_view = gr.Image(label="Layout as the model reads it", type="pil", interactive=False, height=200,
                                   format="png", elem_id="spade-layout")
        with gr.Row(visible=False):
            api_segmap = gr.Image(type="filepath", image_mode=None, format="png", label="segmap")
            api_style = gr.Image(type="pil", label="style_image")
            api_seed = gr.Number(value=0, precision=0, label="seed")
            api_out = gr.Image(type="pil", format="png", label="image")
            api_btn = gr.Button("synthesize")

        gen_inputs = [editor, style_image, seed_box, randomize, size_box, upscale_box, model_state]
        gen_outputs = [output, seed_box, layout_view]
        generate_btn.click(generate, gen_inputs, gen_outputs, api_visibility="private", **slots)
        variations_btn.click(
            variations, [editor, style_image, seed_box, count_box, size_box, upscale_box, model_state],
            [gallery, seeds_state], api_visibility="private", **slots,
        )
        gallery.select(pick_variation, [seeds_state], [seed_box, output], api_visibility="private", queue=False)
        dice_btn.click(lambda: random.randint(0, MAX_SEED), None, seed_box, api_visibility="private", queue=False)
        blank_btn.click(blank, [model_state], editor, api_visibility="private", queue=False)
        upload_btn.upload(upload_segmap, [upload_btn, model_state], editor, api_visibility="private")
        examples.select(pick_example, gen_inputs[1:], [editor, *gen_outputs], api_visibility="private", **slots)
        load_btn.click(check_model, [model_box], None, api_visibility="private", **slots).success(
            apply_model, [model_box, model_state],
            [model_state, status, legend, editor, examples, size_box, style_image, variations_btn],
            api_visibility="private",
        )
        api_btn.click(synthesize, [api_segmap, api_style, api_seed], api_out, api_name="synthesize", **slots)
        demo.load(None, None, None, js=_LEGEND_JS)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)
    return demo


def _style_label(has_style: bool) -> str:
    if has_style:
        return "Style image (optional; empty = random style)"
    return "Style image (this model has no style encoder)"


def launch_demo(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    concurrency_limit: int = 1,
    **launch_kwargs: Any,
) -> None:
    """Build the demo for `model` ('embedded' when None, a folder or a Hub repo id) and serve it (blocks)."""
    demo = build_demo(model=model, concurrency_limit=concurrency_limit)
    demo.launch(server_name=host, server_port=port, share=share, **launch_kwargs)

"""The Gradio demo: layouts and canvas reading, an offline build, and the `synthesize` API over HTTP."""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spade_core.demo.layouts import blank_layout, canvas_to_labels, example_layouts, find_class, legend_html
from spade_core.labels import LabelSet, get_label_set

needs_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None or importlib.util.find_spec("gradio_client") is None,
    reason="the app tests need gradio and gradio_client (pip install 'spade[demo]')",
)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue statistics use pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated)")
SPACE = Path(__file__).resolve().parents[1] / "examples" / "space"

LANDSCAPE = LabelSet(
    name="demo_test",
    class_names=("sky", "cloud", "mountain", "grass", "tree", "water"),
    palette=((110, 185, 245), (200, 190, 235), (150, 110, 80), (120, 205, 70), (25, 110, 45), (30, 80, 200)),
    contain_dontcare_label=False,
    use_instance=False,
)


def tiny_pipeline(label_set: LabelSet = LANDSCAPE):
    """A 64x64 VAE pipeline with a style encoder and random weights (ngf=2): fast on CPU."""
    from spade_core.models import SPADEEncoder, SPADEGenerator
    from spade_core.pipeline import SPADEPipeline

    generator = SPADEGenerator(
        label_nc=label_set.label_nc, contain_dontcare_label=label_set.contain_dontcare_label,
        use_instance=label_set.use_instance, ngf=2, crop_size=64, use_vae=True,
    )
    return SPADEPipeline(generator=generator, encoder=SPADEEncoder(ngf=2, crop_size=64), label_set=label_set)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- layouts


def test_blank_layout_is_sky_over_ground():
    labels = blank_layout(LANDSCAPE, 8, 6)
    assert labels.shape == (8, 6) and labels.dtype == np.int64
    assert (labels[:4] == 0).all() and (labels[4:] == 3).all()


@pytest.mark.parametrize("name", ["coco", "ade20k", "cityscapes"])
def test_layouts_use_the_label_sets_own_classes(name):
    label_set = get_label_set(name)
    sky = find_class(label_set, "sky")
    assert sky is not None and "sky" in label_set.class_names[sky]
    layouts = example_layouts(label_set, 48, 64)
    assert layouts, "every built-in set can paint at least one example"
    for title, labels in layouts:
        assert labels.shape == (48, 64)
        assert labels.min() >= 0 and labels.max() < label_set.label_nc, title
        assert (labels[0] == sky).all(), "examples start with sky at the top"


def test_examples_paint_several_classes():
    layouts = dict(example_layouts(LANDSCAPE, 64, 64))
    assert "Mountain lake" in layouts
    assert set(np.unique(layouts["Mountain lake"])) >= {0, 1, 2, 3, 5}


def test_canvas_antialiased_edges_snap_to_neighbours():
    sky, grass = np.array(LANDSCAPE.palette[0]), np.array(LANDSCAPE.palette[3])
    canvas = np.zeros((10, 10, 4), np.uint8)
    canvas[..., 3] = 255
    canvas[:5, :, :3] = sky
    canvas[5:, :, :3] = grass
    canvas[5, :, :3] = (sky + grass) // 2  # a blended edge row, nearest to a third class (cloud? mountain?)
    labels = canvas_to_labels(canvas, LANDSCAPE)
    assert labels.shape == (10, 10)
    assert set(labels.unique().tolist()) <= {0, 3}
    assert (labels[:5] == 0).all() and (labels[6:] == 3).all()


def test_canvas_transparent_parts_show_the_blank_layout_and_empty_raises():
    canvas = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(ValueError, match="canvas is empty"):
        canvas_to_labels(canvas, LANDSCAPE)
    canvas[2:4, 2:4] = (*LANDSCAPE.palette[4], 255)
    labels = canvas_to_labels(canvas, LANDSCAPE)
    assert (labels[2:4, 2:4] == 4).all()
    assert labels[0, 0] == 0 and labels[7, 7] == 3


def test_legend_names_every_class():
    html = legend_html(LANDSCAPE)
    for name, color in zip(LANDSCAPE.class_names, LANDSCAPE.palette):
        assert f'data-name="{name}"' in html
        assert 'data-color="#{:02x}{:02x}{:02x}"'.format(*color) in html


# ----------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@needs_gradio
def test_build_demo_offline(pipe):
    import gradio as gr

    from spade_core.demo import build_demo

    demo = build_demo(pipe)
    assert isinstance(demo, gr.Blocks)
    api = demo.get_api_info()
    assert list(api["named_endpoints"]) == ["/synthesize"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/synthesize"]["parameters"]]
    assert params == ["segmap", "style_image", "seed"]


@needs_gradio
def test_build_demo_for_a_large_label_set_without_style():
    from spade_core.demo import build_demo
    from spade_core.demo.app import _size_choices
    from spade_core.models import SPADEGenerator
    from spade_core.pipeline import SPADEPipeline

    coco = get_label_set("coco")
    generator = SPADEGenerator(label_nc=coco.label_nc, ngf=2, crop_size=64)  # don't-care + instance edges, no VAE
    pipe = SPADEPipeline(generator=generator, label_set=coco)
    build_demo(pipe)
    sizes = [value for _, value in _size_choices(pipe)]
    assert sizes[0] == "64x64" and len(sizes) > 1
    for value in sizes:
        generator.check_size(*map(int, value.split("x")))


def test_canvas_black_is_dontcare_where_the_set_has_one():
    coco = get_label_set("coco")
    canvas = np.zeros((4, 4, 3), np.uint8)
    canvas[:2] = coco.palette[156]
    labels = canvas_to_labels(canvas, coco)
    assert (labels[:2] == 156).all() and (labels[2:] == coco.label_nc).all()


@needs_gradio
def test_build_demo_rejects_pipe_and_model(pipe):
    from spade_core.demo import build_demo

    with pytest.raises(ValueError, match="pipe or model"):
        build_demo(pipe, model="embedded")


def test_registry_refuses_names_off_its_list_with_one_message(pipe):
    from spade_core.demo.app import ModelRegistry

    registry = ModelRegistry({"custom": lambda: pipe, "other": lambda: pipe}, "custom")
    assert registry.get("") is pipe and registry.get(None) is pipe and registry.get(" other ") is pipe
    messages = set()
    for hostile in ("nobody-spade-test/missing-model", "/etc", "../..", 3, ["custom"], {"name": "custom"}):
        with pytest.raises(ValueError, match="unknown model: choose one of custom, other") as err:
            registry.get(hostile)
        messages.add(str(err.value))
    assert messages == {"unknown model: choose one of custom, other"}


def test_allow_listed_model_that_fails_to_load_is_one_generic_line(pipe, monkeypatch, caplog):
    from spade_core.demo.app import ModelRegistry, _loader

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = ModelRegistry({"custom": lambda: pipe, "remote": _loader("nobody-spade-test/missing-model")}, "custom")
    with pytest.raises(ValueError, match="could not be loaded on this server") as err:
        registry.get("remote")
    assert "nobody-spade-test" not in str(err.value) and "cache" not in str(err.value)
    assert "nobody-spade-test" in caplog.text, "the operator's log names the source"


def test_allowed_models_names_and_defaults(pipe, tmp_path):
    from spade_core.demo.app import allowed_models, models_from_text

    table, default = allowed_models(models=["owner/name", tmp_path])
    assert default == "embedded" and list(table) == ["embedded", "owner/name", str(tmp_path)]
    assert table["embedded"] is None and table[str(tmp_path)] == tmp_path
    table, default = allowed_models(model="landscape", models={"landscape": tmp_path, "hub": "owner/name"})
    assert default == "landscape" and list(table) == ["landscape", "hub"], "names hide the sources"
    table, default = allowed_models(pipe, models=["embedded"])
    assert table[default] is pipe and list(table) == [default, "embedded"]
    assert models_from_text(" a/b , land=/srv/x,, embedded") == {"a/b": "a/b", "land": "/srv/x", "embedded": "embedded"}
    with pytest.raises(ValueError, match="NAME=SOURCE"):
        models_from_text("land=")
    with pytest.raises(ValueError, match="pipe or model"):
        allowed_models(pipe, model="embedded")
    with pytest.raises(ValueError, match="given twice"):
        allowed_models(models={"a": "x/y", " a": "z/w"})


@pytest.fixture(scope="module")
def pipe_folder(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_pipeline")
    pipe.save_pretrained(folder)
    return folder


def test_model_registry_loads_an_allow_listed_folder(pipe, pipe_folder):
    from spade_core.demo.app import ModelRegistry, _loader

    registry = ModelRegistry({"custom": lambda: pipe, "folder": _loader(str(pipe_folder))}, "custom", capacity=1)
    loaded = registry.get(" folder ")
    assert loaded is not pipe and loaded.label_set == pipe.label_set
    assert registry.get("folder") is loaded, "loaded pipelines are kept"
    assert registry.get(None) is pipe
    with pytest.raises(ValueError, match="unknown model"):
        registry.get(str(pipe_folder))


@needs_gradio
def test_space_app_builds_unchanged(pipe_folder, monkeypatch):
    import gradio as gr

    monkeypatch.setenv("SPADE_MODEL", "tiny")
    monkeypatch.setenv("SPADE_MODELS", f"tiny={pipe_folder}, embedded")
    monkeypatch.setenv("SPADE_MAX_FILE_SIZE", "2mb")
    namespace = runpy.run_path(str(SPACE / "app.py"))
    demo = namespace["demo"]
    assert isinstance(demo, gr.Blocks)
    dropdowns = [c for c in demo.blocks.values() if isinstance(c, gr.Dropdown) and c.label == "Model"]
    assert [value for _, value in dropdowns[0].choices] == ["tiny", "embedded"]
    assert str(pipe_folder) not in str(demo.config), "the page shows the public name, not the server folder"
    front_matter = (SPACE / "README.md").read_text(encoding="utf-8").split("---")[1]
    for line in ("sdk: gradio", "app_file: app.py", f"sdk_version: {gr.__version__}"):
        assert line in front_matter


@pytest.fixture(scope="module")
def server(pipe):
    from spade_core.demo import build_demo

    demo = build_demo(pipe, concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def segmaps(tmp_path_factory):
    """The same layout as a mode-P label PNG, a mode-L id PNG and a colour map."""
    folder = tmp_path_factory.mktemp("segmaps")
    labels = example_layouts(LANDSCAPE, 96, 128)[0][1].astype(np.uint8)
    paths = {}
    indexed = Image.fromarray(labels, mode="P")
    indexed.putpalette([c for color in LANDSCAPE.palette for c in color])
    paths["P"] = folder / "labels_p.png"
    indexed.save(paths["P"])
    paths["L"] = folder / "labels_l.png"
    Image.fromarray(labels, mode="L").save(paths["L"])
    paths["RGB"] = folder / "colours.png"
    Image.fromarray(LANDSCAPE.colorize(labels)).save(paths["RGB"])
    paths["bad"] = folder / "bad.png"
    Image.fromarray(np.full((16, 16), 200, np.uint8), mode="L").save(paths["bad"])
    return paths


@needs_gradio
def test_synthesize_endpoint_returns_a_native_size_image(server, segmaps, pipe):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    results = {}
    for kind in ("P", "L", "RGB"):
        path = client.predict(handle_file(str(segmaps[kind])), None, 7, api_name="/synthesize")
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
            results[kind] = np.asarray(image)
    assert np.array_equal(results["P"], results["L"]) and np.array_equal(results["P"], results["RGB"])
    expected = np.asarray(pipe(Image.open(segmaps["P"]), seed=7).images[0])
    assert np.abs(results["P"].astype(int) - expected.astype(int)).max() <= 1
    styled = client.predict(
        segmap=handle_file(str(segmaps["P"])), style_image=handle_file(str(segmaps["RGB"])), seed=7,
        api_name="/synthesize",
    )
    assert Image.open(styled).size == (64, 64)


@needs_gradio
def test_synthesize_endpoint_reports_bad_labels(server, segmaps):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    with pytest.raises(AppError, match="found raw label"):
        client.predict(handle_file(str(segmaps["bad"])), None, 0, api_name="/synthesize")


@needs_gradio
def test_four_concurrent_calls_all_succeed(server, segmaps):
    from gradio_client import Client, handle_file

    def call(seed: int) -> tuple[int, int]:
        client = Client(server, verbose=False)
        with Image.open(client.predict(handle_file(str(segmaps["RGB"])), None, seed, api_name="/synthesize")) as im:
            return im.size

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(call, range(4)))
    assert sizes == [(64, 64)] * 4


@needs_gradio
def test_readme_api_example_runs(server, segmaps, capsys):
    readme = (SPACE / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL)[1]
    assert 'api_name="/synthesize"' in code
    code = code.replace("http://127.0.0.1:7860/", server).replace('"layout.png"', repr(str(segmaps["P"])))
    exec(compile(code, "examples/space/README.md", "exec"), {})  # noqa: S102 - the README's own example
    with Image.open(capsys.readouterr().out.strip().splitlines()[-1]) as image:
        assert image.size == (64, 64)


def test_offered_sizes_fit_the_memory_budget_for_every_model(pipe):
    """Style-encoder models get other sizes too; a large model is offered only what fits one request's budget."""
    import torch

    from spade_core.demo.app import DEMO_SYNTHESIS_BYTES, _size_choices
    from spade_core.models import SPADEGenerator
    from spade_core.pipeline import SPADEPipeline
    from spade_core.synthesis import estimate_inference_bytes

    assert len(_size_choices(pipe)) > 1  # the tiny VAE pipeline
    with torch.device("meta"):
        ade = SPADEGenerator.from_preset("ade20k")
    big = SPADEPipeline(generator=ade, label_set=get_label_set("ade20k"))
    sizes = [tuple(map(int, value.split("x"))) for _, value in _size_choices(big)]
    assert sizes[0] == (256, 256) and (512, 512) not in sizes
    for h, w in sizes[1:]:
        assert estimate_inference_bytes(ade, 1, h, w) <= DEMO_SYNTHESIS_BYTES

"""The demo in a real browser: Debian's Chromium, driven by Playwright, paints, generates and varies.

Skips (with the reason) when gradio, playwright or /usr/bin/chromium is missing. Screenshots land
in the test's tmp folder (printed; keep them with `pytest --basetemp DIR`).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spade_core.labels import LabelSet

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
LANDSCAPE = LabelSet(
    name="demo_browser_test",
    class_names=("sky", "cloud", "mountain", "grass", "tree", "water"),
    palette=((110, 185, 245), (200, 190, 235), (150, 110, 80), (120, 205, 70), (25, 110, 45), (30, 80, 200)),
    contain_dontcare_label=False,
    use_instance=False,
)
WATER = 5
TIMEOUT_MS = 90_000

missing = [name for name in ("gradio", "gradio_client", "playwright") if importlib.util.find_spec(name) is None]
if missing:
    pytest.skip(f"browser test needs {', '.join(missing)} (pip install gradio playwright)", allow_module_level=True)
if not CHROMIUM.exists():
    pytest.skip(f"browser test needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue statistics use pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated)"),
]


def tiny_pipeline():
    """A 64x64 VAE pipeline with a style encoder and random weights (ngf=2): fast on CPU."""
    from spade_core.models import SPADEEncoder, SPADEGenerator
    from spade_core.pipeline import SPADEPipeline

    generator = SPADEGenerator(
        label_nc=LANDSCAPE.label_nc, contain_dontcare_label=False, use_instance=False, ngf=2, crop_size=64,
        use_vae=True,
    )
    return SPADEPipeline(generator=generator, encoder=SPADEEncoder(ngf=2, crop_size=64), label_set=LANDSCAPE)


@pytest.fixture(scope="module")
def server():
    from spade_core.demo import build_demo

    demo = build_demo(tiny_pipeline(), models={"tiny-2": tiny_pipeline()})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    yield f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium (fresh profile) for the module's tests."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
                args=FLAGS, viewport={"width": 1400, "height": 1300},
            )
        except PlaywrightError as err:  # a Chromium that cannot start here (missing libraries, ...)
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(err).splitlines()[0]}")
        yield context
        context.close()


@pytest.fixture
def page(server, browser):
    """A fresh tab on the demo, loaded; `page.outside_requests` lists any request that left the server."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.outside_requests = []
    page.on("request", lambda req: page.outside_requests.append(req.url)
            if not req.url.startswith((server, "data:", "blob:")) else None)
    page.goto(server + "/", wait_until="load")
    page.wait_for_selector("#spade-generate")
    page.wait_for_selector("#spade-canvas canvas")
    page.wait_for_timeout(1500)  # the editor draws its background after mounting
    yield page
    page.close()


def _image_src(page, selector: str) -> str | None:
    return page.evaluate(
        "(sel) => { const img = document.querySelector(sel); "
        "return img && img.complete && img.naturalWidth > 0 ? img.src : null; }",
        selector,
    )


def _wait_for_image(page, selector: str) -> None:
    """Wait until the <img> at `selector` has loaded a picture."""
    page.wait_for_function(
        "(sel) => { const img = document.querySelector(sel); return img && img.complete && img.naturalWidth > 0; }",
        arg=selector,
    )


def _fetch_image(page, src: str) -> np.ndarray:
    """The image behind an <img> src, fetched by the page itself (same origin), as an RGB array."""
    data = page.evaluate(
        "async (src) => { const r = await fetch(src); const b = new Uint8Array(await r.arrayBuffer()); "
        "let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }",
        src,
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def _layout_image(page) -> np.ndarray:
    """The "layout as the model reads it" image, from the advanced settings (opened if closed)."""
    if _image_src(page, "#spade-layout img") is None:
        page.get_by_text("Advanced settings").click()
        _wait_for_image(page, "#spade-layout img")
    return _fetch_image(page, _image_src(page, "#spade-layout img"))


def _stroke(page, box: dict, points: list[tuple[float, float]]) -> None:
    """Drag the mouse through `points` (fractions of the canvas box); few moves, as software WebGL is slow."""
    x0, y0 = points[0]
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=3)
    page.mouse.up()


def test_paint_generate_and_vary(page, tmp_path):
    legend = "() => [...document.querySelectorAll('#spade-legend [data-name]')].map(e => e.dataset.name)"
    assert page.evaluate(legend) == list(LANDSCAPE.class_names)

    page.locator('#spade-legend [data-name="water"]').click()
    selected = "() => [...document.querySelectorAll('#spade-canvas button.color.selected')].map(b => b.title)"
    page.wait_for_function(f"() => ({selected})().includes('water')", timeout=10_000)
    assert page.evaluate(selected) == ["water"], "a click on the legend picks that class' brush colour"
    canvas = page.locator("#spade-canvas canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    _stroke(page, box, [(0.15, 0.7), (0.5, 0.8), (0.85, 0.7)])
    _stroke(page, box, [(0.2, 0.9), (0.8, 0.9)])
    page.wait_for_timeout(500)
    page.locator("#spade-canvas").screenshot(path=tmp_path / "painted_canvas.png")

    page.locator("#spade-generate").click()
    _wait_for_image(page, "#spade-output img")
    page.wait_for_timeout(500)
    page.screenshot(path=tmp_path / "generated.png", full_page=True)
    output = _fetch_image(page, _image_src(page, "#spade-output img"))
    assert output.shape == (64, 64, 3) and output.std() > 0, "the result is a real, non-blank image"
    layout = _layout_image(page)
    water = np.all(layout == LANDSCAPE.palette[WATER], axis=-1)
    assert water.mean() > 0.02, "the painted water strokes reach the model"
    assert set(map(tuple, layout.reshape(-1, 3))) <= set(LANDSCAPE.palette), "every pixel reads as a class"

    page.locator("#spade-variations").click()
    page.wait_for_function("() => document.querySelectorAll('#spade-variations-gallery img').length >= 4")
    captions = page.locator("#spade-variations-gallery").inner_text()
    assert "seed 0" in captions and "seed 3" in captions
    page.locator("#spade-variations-gallery img").nth(2).click()
    page.wait_for_function("() => document.querySelector('#spade-seed input')?.value === '2'", timeout=10_000)
    page.screenshot(path=tmp_path / "variations.png", full_page=True)
    print(f"screenshots in {tmp_path}")


def test_example_runs_in_one_click(page, tmp_path):
    assert _image_src(page, "#spade-output img") is None
    page.locator("#spade-examples img").first.click()
    _wait_for_image(page, "#spade-output img")
    layout = _layout_image(page)
    assert len({tuple(c) for c in layout.reshape(-1, 3)}) >= 4, "the example layout paints several classes"
    page.screenshot(path=tmp_path / "example.png", full_page=True)


def test_uploaded_segmap_is_what_the_model_reads(page, tmp_path):
    stripes = np.repeat(np.arange(LANDSCAPE.label_nc, dtype=np.uint8), 16)[None].repeat(64, 0)  # (64, 96)
    indexed = Image.fromarray(stripes, mode="P")
    indexed.putpalette([c for color in LANDSCAPE.palette for c in color])
    indexed.save(tmp_path / "stripes.png")
    with page.expect_file_chooser() as chooser:
        page.locator("#spade-upload").click()
    chooser.value.set_files(tmp_path / "stripes.png")
    page.wait_for_timeout(2500)  # the editor redraws its background
    page.locator("#spade-generate").click()
    _wait_for_image(page, "#spade-output img")
    layout = _layout_image(page)
    row = layout[layout.shape[0] // 2]
    centres = [row[int((i + 0.5) * layout.shape[1] / LANDSCAPE.label_nc)] for i in range(LANDSCAPE.label_nc)]
    assert [tuple(c) for c in centres] == list(LANDSCAPE.palette), "one stripe per class, in order"
    page.screenshot(path=tmp_path / "uploaded.png", full_page=True)


def test_model_picker_offers_only_the_allow_list(page, tmp_path):
    box = page.locator("#spade-model input")
    box.click()
    options = page.get_by_role("option")
    options.first.wait_for()
    names = sorted(text.split("\n")[-1].strip() for text in options.all_inner_texts())  # the chosen one has a tick
    assert names == ["custom", "tiny-2"], "the operator's models, nothing else"
    page.get_by_role("option", name="tiny-2").click()
    page.locator("#spade-load").click()
    page.wait_for_function("() => document.querySelector('#spade-status')?.innerText.includes('tiny-2')")
    box.fill("/etc")
    box.press("Enter")
    page.locator("#spade-load").click()
    page.wait_for_timeout(1500)
    assert "/etc" not in page.locator("#spade-status").inner_text()
    assert page.locator("#spade-model input").input_value() in ("custom", "tiny-2", "")
    page.screenshot(path=tmp_path / "model_picker.png")
    assert not page.outside_requests, f"the page fetched from outside the server: {page.outside_requests[:3]}"

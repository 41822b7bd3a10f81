"""The demo as a public app: only allow-listed models load, errors hide server paths, uploads and images are bounded.

Every event handler is called twice over: as a hostile client would, with raw `POST /gradio_api/queue/join`
requests by fn_index (listed or not), and directly, bypassing Gradio's own input checks. Hostile files
(a 9000x9000 PNG of about 240 KB) are made here, streamed so the test itself never holds their pixels.
"""

from __future__ import annotations

import builtins
import importlib.util
import inspect
import json
import os
import resource
import socket
import struct
import uuid
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFile

from spade_core.labels import LabelSet

if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("gradio_client") is None:
    pytest.skip("the demo security tests need gradio and gradio_client (pip install 'spade[demo]')",
                allow_module_level=True)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue statistics use pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated)")

LANDSCAPE = LabelSet(
    name="demo_security_test",
    class_names=("sky", "cloud", "mountain", "grass", "tree", "water"),
    palette=((110, 185, 245), (200, 190, 235), (150, 110, 80), (120, 205, 70), (25, 110, 45), (30, 80, 200)),
    contain_dontcare_label=False,
    use_instance=False,
)
BOMB_SIDE = 9000
MAX_PIXELS = 1024 * 1024  # the test server's limit; the bomb is 77x over it
MAX_FILE_SIZE = "1mb"


def tiny_pipeline():
    """A 64x64 VAE pipeline with a style encoder and random weights (ngf=2): fast on CPU."""
    from spade_core.models import SPADEEncoder, SPADEGenerator
    from spade_core.pipeline import SPADEPipeline

    generator = SPADEGenerator(label_nc=LANDSCAPE.label_nc, contain_dontcare_label=False, use_instance=False, ngf=2,
                               crop_size=64, use_vae=True)
    return SPADEPipeline(generator=generator, encoder=SPADEEncoder(ngf=2, crop_size=64), label_set=LANDSCAPE)


def png_bomb(path: Path, side: int) -> Path:
    """An all-black RGB PNG of side x side pixels, written row by row (a few hundred KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)  # filter byte + RGB
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def pipe_folder(pipe, tmp_path_factory):
    """An existing, loadable pipeline folder on the server: the most tempting hostile model string."""
    folder = tmp_path_factory.mktemp("server_side_pipeline")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hostile(pipe_folder, tmp_path_factory):
    """(existing, missing) path pairs and other strings a hostile client sends as a model name or a file."""
    missing = tmp_path_factory.mktemp("gone") / "no_such_pipeline"
    return {"existing": str(pipe_folder), "missing": str(missing), "others": ["/etc", "../..", "nobody-spade-test/x"]}


@pytest.fixture(scope="module")
def served(pipe):
    """The app on 127.0.0.1, launched as an operator would (no launch options): (demo, base URL)."""
    from spade_core.demo import build_demo

    demo = build_demo(pipe, max_file_size=MAX_FILE_SIZE, max_pixels=MAX_PIXELS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture
def spies(monkeypatch, hostile):
    """Records every model load and every file-system call whose path is one of the hostile strings."""
    from spade_core.demo import app
    from spade_core.pipeline import SPADEPipeline

    seen = {"loads": [], "fs": []}
    markers = {hostile["existing"], hostile["missing"], *hostile["others"]}

    def load_spy(*args, **kwargs):
        seen["loads"].append((args, kwargs))
        raise RuntimeError("a model load was attempted")

    monkeypatch.setattr(SPADEPipeline, "from_pretrained", load_spy)
    monkeypatch.setattr(app, "_load_pipeline", load_spy)
    for module, name in ((os, "stat"), (os, "lstat"), (os, "listdir"), (os, "scandir"), (builtins, "open")):
        original = getattr(module, name)

        def watched(path=".", *args, _original=original, _name=name, **kwargs):
            text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
            if text in markers or any(m in text for m in (hostile["existing"], hostile["missing"])):
                seen["fs"].append((_name, text))
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(module, name, watched)
    return seen


def queue_call(base: str, fn_index: int, data: list, event_data=None) -> dict:
    """One raw queue call by fn_index, as any HTTP client can make it; returns the completion message."""
    import httpx

    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data}
    joined = httpx.post(f"{base}/gradio_api/queue/join", json=body, timeout=60)
    if joined.status_code != 200:
        return {"success": False, "output": {"error": joined.text}, "http": joined.status_code}
    with httpx.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session}, timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"fn_index {fn_index} never completed")


def upload(base: str, path: Path) -> dict:
    """A file uploaded as the browser does; returns the FileData a request refers to it by."""
    import httpx

    with path.open("rb") as fh:
        resp = httpx.post(f"{base}/gradio_api/upload", files={"files": (path.name, fh, "image/png")}, timeout=60)
    resp.raise_for_status()
    return {"path": resp.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def handlers(demo) -> dict[int, object]:
    return {index: fn for index, fn in demo.fns.items() if fn.fn is not None}


def _error(message: dict) -> str:
    return str((message.get("output") or {}).get("error"))


# ----------------------------------------------------------------------------- models: the allow-list only


def test_no_fn_index_loads_a_hostile_model_over_http(served, hostile, spies):
    import gradio as gr

    demo, base = served
    fns = handlers(demo)
    assert {fn.name for fn in fns.values()} >= {"check_model", "apply_model", "generate", "synthesize", "upload_segmap"}
    errors = {}
    for shape in ("text", "file"):
        for index, fn in fns.items():
            for value in (hostile["existing"], hostile["missing"], *hostile["others"]):
                data = [
                    {"path": value, "meta": {"_type": "gradio.FileData"}} if shape == "file" else value
                    for _ in fn.inputs
                ]
                reply = queue_call(base, index, data, event_data={"index": 0, "value": value})
                server_state_only = all(isinstance(c, gr.State) for c in fn.inputs)  # Gradio ignores sent values
                assert not reply.get("success") or server_state_only, (fn.name, value, reply)
                errors[index, value, shape] = _error(reply)
        if shape == "text":
            # (File payloads are Gradio's to vet: it refuses any path it did not store, after resolving it.)
            assert not spies["fs"], f"a hostile string reached the file system: {spies['fs'][:3]}"
    assert not spies["loads"], f"a hostile request reached a model loader: {spies['loads'][:2]}"
    for index, fn in fns.items():
        for shape in ("text", "file"):
            existing = errors[index, hostile["existing"], shape].replace(hostile["existing"], "<value>")
            missing = errors[index, hostile["missing"], shape].replace(hostile["missing"], "<value>")
            assert existing == missing, f"{fn.name} tells an existing server path from a missing one"
            assert str(Path(hostile["existing"]).parent) not in existing.replace(hostile["existing"], "")


def test_every_handler_called_directly_refuses_hostile_names_and_paths(served, hostile, spies):
    """Bypassing Gradio's input checks (a future Gradio may not validate dropdowns): our own code refuses."""
    import gradio as gr

    demo, _ = served
    messages: dict[tuple, str] = {}
    for index, fn in handlers(demo).items():
        params = list(inspect.signature(fn.fn).parameters.values())
        for value in (hostile["existing"], hostile["missing"], *hostile["others"]):
            shapes = {"text": value, "editor": {"composite": value, "background": value, "layers": [value]}}
            for shape, arg in shapes.items():
                for position in [*range(len(params)), "all"]:
                    args = [arg if position in (i, "all") else None for i in range(len(params))]
                    args = [SimpleNamespace(index=a, value=a) if p.annotation in (gr.SelectData, "gr.SelectData")
                            else a for a, p in zip(args, params)]
                    try:
                        fn.fn(*args)
                        message = ""
                    except gr.Error as err:
                        message = str(err.message)
                    assert "could not do that" not in message, f"{fn.name} crashed on {shape} {position}"
                    assert value not in message, f"{fn.name} echoes {value!r}: {message}"
                    messages[index, value, shape, position] = message
    assert not spies["loads"], f"a hostile argument reached a model loader: {spies['loads'][:2]}"
    assert not spies["fs"], f"a hostile argument reached the file system: {spies['fs'][:3]}"
    assert "unknown model: choose one of custom" in messages.values()
    assert "the segmap could not be read on the server: upload it again" in messages.values()
    for (index, value, shape, position), message in messages.items():
        if value == hostile["existing"]:
            assert message == messages[index, hostile["missing"], shape, position], "existing vs missing differ"


def test_only_listed_models_are_offered_and_loaded(pipe, pipe_folder, hostile, monkeypatch):
    import gradio as gr

    from spade_core.demo import app, build_demo

    calls = []
    real = app._load_pipeline
    monkeypatch.setattr(app, "_load_pipeline", lambda source: calls.append(source) or real(source))
    demo = build_demo(pipe, models={"second": pipe_folder})
    dropdown = next(c for c in demo.blocks.values() if isinstance(c, gr.Dropdown) and c.label == "Model")
    assert [v for _, v in dropdown.choices] == ["custom", "second"] and not dropdown.allow_custom_value
    assert str(pipe_folder) not in json.dumps(demo.config, default=str), "the page names models, not folders"
    apply_model = next(fn.fn for fn in handlers(demo).values() if fn.name == "apply_model")
    assert apply_model("second", "custom")[0] == "second"
    assert calls == [pipe_folder], "the listed folder loads, through its name only"
    with pytest.raises(gr.Error, match="unknown model"):
        apply_model(hostile["existing"], "custom")
    assert calls == [pipe_folder]


# ----------------------------------------------------------------------------- images and uploads: bounded


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", BOMB_SIDE)


@pytest.fixture
def decode_spy(monkeypatch):
    """Records the size of every image decoded anywhere in the process (server threads included)."""
    decoded = []
    original = ImageFile.ImageFile.load

    def load(self, *args, **kwargs):
        decoded.append(self.size)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decoded


def test_bomb_is_refused_from_its_header_everywhere(served, bomb, tmp_path, decode_spy):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    demo, base = served
    assert 100_000 < bomb.stat().st_size < 600_000, "a few hundred KB for 243 MB of pixels"
    segmap = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(segmap)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    client = Client(base + "/", verbose=False)
    with pytest.raises(AppError, match=r"the segmap is too large: this demo takes images up to 1,048,576 pixels"):
        client.predict(handle_file(str(bomb)), None, 0, api_name="/synthesize")
    with pytest.raises(AppError, match=r"the style image is too large"):
        client.predict(handle_file(str(segmap)), handle_file(str(bomb)), 0, api_name="/synthesize")
    fns = {fn.name: index for index, fn in handlers(demo).items()}
    reply = queue_call(base, fns["upload_segmap"], [upload(base, bomb), None])
    assert not reply["success"] and "the segmap is too large" in _error(reply)
    editor = {"background": None, "layers": [], "composite": upload(base, bomb), "id": None}
    reply = queue_call(base, fns["generate"], [editor, None, 0, False, "64x64", "1x", None])
    assert not reply["success"], "the editor's own decoding (by Gradio) is refused too"

    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    assert growth < 500 * 2**20, f"peak memory grew by {growth / 2**20:.0f} MB"
    assert all(w * h <= MAX_PIXELS for w, h in decode_spy), f"decoded a huge image: {max(decode_spy)}"


def test_images_are_sampled_before_per_pixel_work(served, pipe, tmp_path):
    """A segmap at the limit goes through sampled to the model's size, with the same result as the library's."""
    from gradio_client import Client, handle_file

    _, base = served
    side = 1024  # exactly MAX_PIXELS
    labels = (np.arange(side)[None, :] * 6 // side).repeat(side, 0).astype(np.uint8)
    indexed = Image.fromarray(labels, mode="P")
    indexed.putpalette([c for color in LANDSCAPE.palette for c in color])
    indexed.save(tmp_path / "big.png")
    path = Client(base + "/", verbose=False).predict(handle_file(str(tmp_path / "big.png")), None, 3,
                                                     api_name="/synthesize")
    expected = np.asarray(pipe(indexed, seed=3).images[0]).astype(int)  # the served demo's default model
    assert np.abs(np.asarray(Image.open(path)).astype(int) - expected).max() <= 1


def test_requests_are_refused_over_the_output_budget(pipe):
    import gradio as gr

    from spade_core.demo import build_demo

    demo = build_demo(pipe, max_pixels=64 * 64 * 4)
    variations = next(fn.fn for fn in handlers(demo).values() if fn.name == "variations")
    generate = next(fn.fn for fn in handlers(demo).values() if fn.name == "generate")
    with pytest.raises(gr.Error, match="over this demo's 16,384 per request"):
        variations(None, None, 0, 8, "64x64", "1x", None)  # checked before the (empty) canvas is read
    with pytest.raises(gr.Error, match="unknown output size: choose one of 64x64"):
        generate({"composite": None}, None, 0, False, "8192x8192", "1x", None)
    with pytest.raises(gr.Error, match="unknown upscale"):
        generate({"composite": None}, None, 0, False, "64x64", "64x", None)
    with pytest.raises(gr.Error, match="variations must be 1..8"):
        variations(None, None, 0, 10_000, "64x64", "1x", None)


def test_upload_size_limit_is_set_and_enforced(served, tmp_path):
    import httpx

    demo, base = served
    assert demo.max_file_size == 2**20, "a plain demo.launch() applies build_demo's max_file_size"
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    big.write_bytes(os.urandom(2**20 + 4096))
    small.write_bytes(os.urandom(4096))
    for path, status in ((big, 413), (small, 200)):
        with path.open("rb") as fh:
            resp = httpx.post(f"{base}/gradio_api/upload", files={"files": (path.name, fh, "image/png")}, timeout=60)
        assert resp.status_code == status, resp.text


def test_pil_bomb_limit_is_lowered_while_served_and_restored(pipe):
    from spade_core.demo import build_demo

    before = Image.MAX_IMAGE_PIXELS
    demo = build_demo(pipe, max_pixels=2**20, max_file_size=None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        assert Image.MAX_IMAGE_PIXELS == 2**20 and demo.max_file_size is None
    finally:
        demo.close()
    assert Image.MAX_IMAGE_PIXELS == before


def test_bad_limits_are_clear_errors(pipe):
    from spade_core.demo import build_demo

    with pytest.raises(ValueError, match="max_file_size='lots' is not a size"):
        build_demo(pipe, max_file_size="lots")
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        build_demo(pipe, max_pixels=0)

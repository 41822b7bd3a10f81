"""The node pack inside a real ComfyUI server, driven over its HTTP API.

Skipped unless COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (the interpreter that runs it,
with ComfyUI's requirements and this repo's requirements.txt installed) are set. The harness is
`../shared/tools/comfyui/run_workflow.py` (or COMFYUI_RUNNER): it starts ComfyUI headless on
loopback with this repository as a node pack, writing nothing into the ComfyUI tree. Tiny
pipelines go under models/spade, the example inputs into input/, and the shipped API workflows
run pointed at them. Hostile inputs (paths out of input/ and models/spade, a local folder as
hub_repo_id, a decompression-bomb PNG) must be refused with one-line node errors.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "comfyui"
RUNNER = Path(os.environ.get("COMFYUI_RUNNER", ROOT.parent / "shared" / "tools" / "comfyui" / "run_workflow.py"))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON")
NODES = ["SPADEModelLoader", "SPADELoadSegmap", "SPADEImageToSegmap", "SPADEEncodeStyle", "SPADESynthesize"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (COMFYUI_DIR and COMFYUI_PYTHON),
                       reason="set COMFYUI_DIR and COMFYUI_PYTHON to run the nodes in a real ComfyUI"),
]


def _runner() -> Any:
    if not RUNNER.is_file():
        pytest.skip(f"ComfyUI harness not found at {RUNNER}: set COMFYUI_RUNNER")
    spec = importlib.util.spec_from_file_location("run_workflow", RUNNER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_workflow"] = module
    spec.loader.exec_module(module)
    return module


def _save_tiny_pipelines(folder: Path) -> dict[str, Path]:
    """Two landscape pipelines at 64x64: one with a style encoder, one without (any size)."""
    from spade_core.data.synthetic import landscape_label_set
    from spade_core.models import SPADEEncoder, SPADEGenerator
    from spade_core.pipeline import SPADEPipeline

    labels = landscape_label_set()
    out = {}
    for name, use_vae in (("tiny_vae", True), ("tiny_plain", False)):
        torch.manual_seed(0)
        gen = SPADEGenerator(label_nc=labels.label_nc, contain_dontcare_label=False, use_instance=False, ngf=2,
                             crop_size=64, use_vae=use_vae, spade_hidden_nc=8)
        enc = SPADEEncoder(ngf=2, crop_size=64) if use_vae else None
        SPADEPipeline(generator=gen, encoder=enc, label_set=labels).save_pretrained(folder / name)
        out[name] = folder / name
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _save_tiny_pipelines(tmp_path_factory.mktemp("spade_models"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Any:
    harness = _runner()
    srv = harness.ComfyServer(COMFYUI_DIR, COMFYUI_PYTHON, [str(ROOT)], no_tree_writes=True,
                              log_path=str(tmp_path_factory.mktemp("comfy_log") / "server.log"))
    for path in tiny_models.values():
        srv.add_model_file("spade", str(path))
    for path in sorted((EXAMPLES / "input").iterdir()):
        srv.add_input_file(str(path))
    hostile = tmp_path_factory.mktemp("hostile")
    Image.new("L", (9000, 9000)).save(hostile / "bomb.png")  # 81 Mpx in a file of ~80 KB
    srv.add_input_file(str(hostile / "bomb.png"))
    (srv.input_dir() / "escape.png").symlink_to(EXAMPLES / "input" / "spade_landscape_segmap.png")
    with srv:
        yield srv


def _workflow(name: str, model: str | None = None, **overrides: dict[str, Any]) -> dict[str, Any]:
    """An example API workflow, its loader pointed at `model`; overrides: class_type -> inputs."""
    workflow = copy.deepcopy(json.loads((EXAMPLES / name).read_text()))
    for node in workflow.values():
        if model and node["class_type"] == "SPADEModelLoader":
            node["inputs"]["model"] = model
        node["inputs"].update(overrides.get(node["class_type"], {}))
    return workflow


def _images(server: Any, result: dict[str, Any], workflow: dict[str, Any], class_type: str,
            out: Path) -> list[Image.Image]:
    assert result["ok"], result.get("errors") or result.get("messages") or result
    ids = {k for k, v in workflow.items() if v["class_type"] == class_type}
    paths = [server.download(item, out) for item in result["images"] if item["node_id"] in ids]
    return [Image.open(p) for p in paths]


def test_pack_loads_and_declares_its_nodes(server: Any) -> None:
    assert server.import_failures()["packs"] == [], server.import_traceback(ROOT)
    found = server.check_nodes(NODES)
    assert found["missing"] == []
    assert set(found["python_module"].values()) == {f"custom_nodes.{ROOT.name}"}
    loader = server.object_info("SPADEModelLoader")["SPADEModelLoader"]
    options = loader["input"]["required"]["model"][1]["options"]
    assert options[0] == "embedded" and {"tiny_vae/", "tiny_plain/"} <= set(options)
    segmap = server.object_info("SPADELoadSegmap")["SPADELoadSegmap"]["input"]["required"]["image"]
    assert segmap[1]["image_upload"] is True and "spade_landscape_segmap.png" in segmap[1]["options"]
    synth = server.object_info("SPADESynthesize")["SPADESynthesize"]
    assert synth["output"] == ["IMAGE"] and "style" in synth["input"]["optional"]


def test_segmap_to_image(server: Any, tmp_path: Path) -> None:
    workflow = _workflow("spade_segmap_to_image_api.json", "tiny_vae/")
    result = server.run_prompt(workflow, timeout=600)
    images = _images(server, result, workflow, "SaveImage", tmp_path)
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    previews = _images(server, result, workflow, "PreviewImage", tmp_path)
    assert [im.size for im in previews] == [(256, 256)]


def test_segmap_and_style_image_to_image(server: Any, tmp_path: Path) -> None:
    workflow = _workflow("spade_style_image_api.json", "tiny_vae/", SPADESynthesize={"batch_size": 2})
    result = server.run_prompt(workflow, timeout=600)
    assert [im.size for im in _images(server, result, workflow, "SaveImage", tmp_path)] == [(64, 64)] * 2


def test_painted_canvas_to_segmap_to_image(server: Any, tmp_path: Path) -> None:
    workflow = _workflow("spade_painted_canvas_api.json", "tiny_plain/",
                         SPADESynthesize={"width": 128, "height": 64})
    result = server.run_prompt(workflow, timeout=600)
    assert [im.size for im in _images(server, result, workflow, "SaveImage", tmp_path)] == [(128, 64)]


def test_errors_reach_the_graph_as_one_line(server: Any) -> None:
    workflow = _workflow("spade_painted_canvas_api.json", "tiny_plain/",
                         SPADEImageToSegmap={"nearest_color": False})
    result = server.run_prompt(workflow, timeout=600)
    (error,) = result["errors"]
    assert error["node_type"] == "SPADEImageToSegmap" and error["exception_type"] == "ValueError"
    assert "nearest_color=True" in error["exception_message"]
    assert "\n" not in error["exception_message"].strip()

    missing = _workflow("spade_segmap_to_image_api.json", "tiny_vae/",
                        SPADELoadSegmap={"image": "no_such_segmap.png"})
    rejected = server.run_prompt(missing, timeout=600)
    assert rejected["stage"] == "validation" and "upload" in " ".join(rejected["messages"])


def test_shipped_workflow_uses_the_embedded_default(server: Any, tmp_path: Path) -> None:
    """Unchanged example: images from the embedded model, or a one-line error while it is not installed."""
    from spade_core.pipeline import embedded_model_dir

    workflow = _workflow("spade_segmap_to_image_api.json")
    result = server.run_prompt(workflow, timeout=600)
    try:
        embedded_model_dir()
    except FileNotFoundError:
        (error,) = result["errors"]
        assert error["node_type"] == "SPADEModelLoader" and error["exception_type"] == "FileNotFoundError"
        assert "embedded" in error["exception_message"] and "\n" not in error["exception_message"].strip()
        return
    assert len(_images(server, result, workflow, "SaveImage", tmp_path)) == 2


def _refused_when_queued(server: Any, workflow: dict[str, Any], node_type: str, *words: str) -> str:
    """The prompt is rejected at /prompt (HTTP 400) by `node_type`'s validation, with messages holding `words`.

    ComfyUI repeats a node's validation message once per input that validate_inputs names.
    """
    result = server.run_prompt(workflow, timeout=600)
    assert result["stage"] == "validation", result
    messages = [m for m in result["messages"] if f"({node_type})" in m]
    assert messages and all(w in m for m in messages for w in words), result["messages"]
    return messages[0]


@pytest.mark.parametrize("name, why", [("/etc/passwd", "absolute path"), ("../../x.png", "'..'"),
                                       ("escape.png", "link that leads out")])
def test_segmap_paths_outside_the_input_folder_are_refused(server: Any, name: str, why: str) -> None:
    workflow = _workflow("spade_segmap_to_image_api.json", "tiny_vae/", SPADELoadSegmap={"image": name})
    _refused_when_queued(server, workflow, "SPADELoadSegmap", why, "input folder")


def test_models_outside_models_spade_are_refused(server: Any, tiny_models: dict[str, Path]) -> None:
    escaping = _workflow("spade_segmap_to_image_api.json", "../tiny_vae/")
    _refused_when_queued(server, escaping, "SPADEModelLoader", "'..'", "models/spade")
    local = _workflow("spade_segmap_to_image_api.json", "hub repo id",
                      SPADEModelLoader={"hub_repo_id": str(tiny_models["tiny_vae"])})
    _refused_when_queued(server, local, "SPADEModelLoader", "local path", "under models/spade/")


def test_decompression_bomb_segmap_is_one_line_error(server: Any) -> None:
    workflow = _workflow("spade_segmap_to_image_api.json", "tiny_vae/", SPADELoadSegmap={"image": "bomb.png"})
    result = server.run_prompt(workflow, timeout=600)
    (error,) = result["errors"]
    assert error["node_type"] == "SPADELoadSegmap" and error["exception_type"] == "ValueError"
    message = error["exception_message"].strip()
    assert "'bomb.png'" in message and "9000x9000" in message and "\n" not in message
    assert str(server.input_dir()) not in message


def test_harness_command_line_refuses_a_hostile_segmap(tmp_path: Path) -> None:
    """The documented command: the runner's --set points the segmap at /etc/passwd, --expect-error wants the refusal."""
    if not RUNNER.is_file():
        pytest.skip(f"ComfyUI harness not found at {RUNNER}: set COMFYUI_RUNNER")
    command = [sys.executable, str(RUNNER), "--comfy-dir", COMFYUI_DIR, "--python", COMFYUI_PYTHON,
               "--node-pack", str(ROOT), "--no-tree-writes", "--input", str(EXAMPLES / "input" / "spade_landscape_segmap.png"),
               "--workflow", str(EXAMPLES / "spade_segmap_to_image_api.json"), "--set", "2.image=/etc/passwd",
               "--expect-error", "is an absolute path, which the SPADE nodes refuse", "--output-dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "expected error seen" in run.stdout + run.stderr

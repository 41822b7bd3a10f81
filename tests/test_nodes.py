"""The ComfyUI nodes called directly, without ComfyUI: schemas, execute on ComfyUI-shaped data, errors.

Outside ComfyUI `spade_nodes` imports against its own stand-ins (`spade_nodes/_stub.py`); the
model folder and input folder come from a small fake `folder_paths` patched in per test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spade_nodes
from spade_core.images import MAX_SIDE
from spade_core.labels import LabelSet, get_label_set
from spade_core.models import SPADEEncoder, SPADEGenerator
from spade_core.pipeline import SPADEPipeline
from spade_nodes import _comfy
from spade_nodes.nodes import (
    Segmap,
    SPADEEncodeStyle,
    SPADEImageToSegmap,
    SPADELoadSegmap,
    SPADEModel,
    SPADEModelLoader,
    SPADESynthesize,
)

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY = LabelSet(
    name="tiny",
    class_names=("sky", "grass", "tree", "water"),
    palette=((70, 130, 180), (0, 200, 0), (0, 100, 0), (0, 0, 255)),
    contain_dontcare_label=True,
    use_instance=False,
    dontcare_raw_ids=(255,),
)

EXPECTED = {
    "SPADEModelLoader": (
        [("model", "COMBO"), ("hub_repo_id", "STRING"), ("device", "COMBO"), ("dtype", "COMBO")],
        ["SPADE_MODEL"],
    ),
    "SPADELoadSegmap": (
        [("model", "SPADE_MODEL"), ("image", "COMBO"), ("mode", "COMBO"), ("nearest_color", "BOOLEAN"),
         ("unknown", "COMBO")],
        ["SPADE_SEGMAP", "IMAGE"],
    ),
    "SPADEImageToSegmap": (
        [("model", "SPADE_MODEL"), ("image", "IMAGE"), ("nearest_color", "BOOLEAN")],
        ["SPADE_SEGMAP", "IMAGE"],
    ),
    "SPADEEncodeStyle": ([("model", "SPADE_MODEL"), ("image", "IMAGE")], ["SPADE_STYLE"]),
    "SPADESynthesize": (
        [("model", "SPADE_MODEL"), ("segmap", "SPADE_SEGMAP"), ("style", "SPADE_STYLE"), ("seed", "INT"),
         ("batch_size", "INT"), ("width", "INT"), ("height", "INT")],
        ["IMAGE"],
    ),
}


def _tiny_pipeline(use_vae: bool = True, encoder: bool = True) -> SPADEPipeline:
    torch.manual_seed(0)
    gen = SPADEGenerator(label_nc=4, contain_dontcare_label=True, use_instance=False, ngf=2, crop_size=64,
                         use_vae=use_vae, spade_hidden_nc=8)
    enc = SPADEEncoder(ngf=2, crop_size=64) if use_vae and encoder else None
    return SPADEPipeline(generator=gen, encoder=enc, label_set=TINY)


@pytest.fixture(scope="module")
def vae_model() -> SPADEModel:
    return SPADEModel(_tiny_pipeline(), CPU, CPU)


@pytest.fixture(scope="module")
def plain_model() -> SPADEModel:
    return SPADEModel(_tiny_pipeline(use_vae=False), CPU, CPU)


@pytest.fixture
def comfy_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A fake `folder_paths` (models/, input/, output/ and temp/ under tmp_path), as ComfyUI would provide it."""
    models, inputs, outputs, temp = (tmp_path / d for d in ("models", "input", "output", "temp"))
    for folder in (inputs, outputs, temp):
        folder.mkdir(parents=True)

    def get_annotated_filepath(name: str) -> str:
        """ComfyUI's rule: a trailing " [output]" / " [temp]" / " [input]" picks the folder, else input/."""
        for tag, base in (("[output]", outputs), ("[input]", inputs), ("[temp]", temp)):
            if name.endswith(tag):
                return os.path.join(base, name[: -len(tag) - 1])
        return os.path.join(inputs, name)

    def get_filename_list(key: str) -> list[str]:
        """Files under the key's folders, relative, links followed (as ComfyUI's os.walk(followlinks=True))."""
        paths, exts = fake.folder_names_and_paths[key]
        found = [os.path.relpath(os.path.join(d, f), base) for base in paths if os.path.isdir(base)
                 for d, _, files in os.walk(base, followlinks=True) for f in files]
        return sorted(f for f in found if not exts or Path(f).suffix.lower() in exts)

    fake = types.SimpleNamespace(
        models_dir=str(models),
        folder_names_and_paths={},
        get_filename_list=get_filename_list,
        get_folder_paths=lambda key: list(fake.folder_names_and_paths[key][0]),
        get_input_directory=lambda: str(inputs),
        get_output_directory=lambda: str(outputs),
        get_temp_directory=lambda: str(temp),
        get_annotated_filepath=get_annotated_filepath,
        filter_files_content_types=lambda files, kinds: [f for f in files if f.endswith(".png")],
    )
    monkeypatch.setattr(_comfy, "folder_paths", fake)
    _comfy.register_model_folder()
    return types.SimpleNamespace(models=models / "spade", inputs=inputs, outputs=outputs, fake=fake)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


def _image(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) -> ComfyUI IMAGE float32 (B,H,W,3) in [0,1], as LoadImage makes it."""
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)


def _bands(h: int = 64, w: int = 64) -> np.ndarray:
    """Class indices (H,W): four horizontal bands 0..3."""
    return np.repeat(np.arange(4), h // 4)[:, None].repeat(w, 1).astype(np.uint8)


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A mode-L PNG of width x height black pixels, written row by row (a few hundred KB, never decoded here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, idat = zlib.compressobj(9), b"\x00" * (width + 1), []
    for _ in range(height):
        idat.append(packer.compress(row))
    idat.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(idat))
                     + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- schemas, registration


@pytest.mark.parametrize("node", spade_nodes.NODES, ids=lambda n: n.__name__)
def test_schema_declares_ids_and_types(node: type) -> None:
    schema = node.define_schema()
    assert schema.node_id == node.__name__ and schema.node_id.startswith("SPADE")
    assert schema.display_name and schema.category == "SPADE" and schema.description
    inputs, outputs = EXPECTED[schema.node_id]
    assert [(i.id, i.io_type) for i in schema.inputs] == inputs
    assert [o.io_type for o in schema.outputs] == outputs
    assert len({o.id for o in schema.outputs}) == len(schema.outputs)


def test_extension_lists_every_node_once() -> None:
    extension = asyncio.run(spade_nodes.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    assert nodes == spade_nodes.NODES
    assert len({n.define_schema().node_id for n in nodes}) == len(nodes) == 5


def test_repository_root_loads_as_comfyui_loads_a_pack() -> None:
    """ComfyUI imports <pack>/__init__.py by file location under a path-derived module name."""
    name = str(ROOT).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    assert module.comfy_entrypoint is spade_nodes.comfy_entrypoint
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # V3 only: ComfyUI takes V1 mappings first


def test_requirements_match_runtime_dependencies() -> None:
    """requirements.txt (ComfyUI's installers) = pyproject's dependencies without torch (ComfyUI has it)."""
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    assert sorted(reqs) == sorted(d for d in deps if not d.startswith("torch"))


def test_pyproject_declares_the_comfy_registry_table() -> None:
    tomllib = pytest.importorskip("tomllib")
    comfy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].startswith("https://")
    assert comfy["requires-comfyui"].startswith(">=")


# ----------------------------------------------------------------------------- loader


def test_loader_lists_pipeline_folders_and_loads_one(comfy_dirs, tmp_path: Path) -> None:
    _tiny_pipeline().save_pretrained(comfy_dirs.models / "tiny")
    (comfy_dirs.models / "loose.safetensors").write_bytes(b"")
    (comfy_dirs.models / "notes.txt").write_text("not a model")
    options = next(i for i in SPADEModelLoader.define_schema().inputs if i.id == "model").options
    assert options == ["embedded", "tiny/", "hub repo id"]  # a lone weights file is no loadable model

    (model,) = SPADEModelLoader.execute(model="tiny/", device="cpu", dtype="default").args
    assert isinstance(model, SPADEModel) and model.label_set == TINY
    assert model.device == model.offload_device == CPU
    assert model.pipeline.generator.dtype == torch.float32

    (half,) = SPADEModelLoader.execute(model="tiny/", device="cpu", dtype="bf16").args
    assert half.pipeline.generator.dtype == torch.bfloat16


def test_loader_respects_extra_model_paths(comfy_dirs, tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere"
    _tiny_pipeline(use_vae=False).save_pretrained(extra / "nested" / "plain")
    comfy_dirs.fake.folder_names_and_paths["spade"] = ([str(extra)], set())  # as extra_model_paths.yaml does
    _comfy.register_model_folder()
    paths, exts = comfy_dirs.fake.folder_names_and_paths["spade"]
    assert paths == [str(comfy_dirs.models), str(extra)] and exts == {".json"}
    assert _comfy.model_entries() == ["nested/plain/"]
    (model,) = SPADEModelLoader.execute(model="nested/plain/", device="cpu").args
    assert model.pipeline.encoder is None


def test_loader_errors_name_the_fix(comfy_dirs) -> None:
    (comfy_dirs.models / "loose.safetensors").parent.mkdir(parents=True)
    (comfy_dirs.models / "loose.safetensors").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        SPADEModelLoader.execute(model="loose.safetensors")
    assert "pipeline folder" in _one_line(err)
    with pytest.raises(FileNotFoundError) as err:
        SPADEModelLoader.execute(model="gone/")
    assert "models/spade" in _one_line(err)
    with pytest.raises(ValueError) as err:
        SPADEModelLoader.execute(model="hub repo id", hub_repo_id="  ")
    assert "hub_repo_id" in _one_line(err)
    with pytest.raises(FileNotFoundError) as err:
        SPADEModelLoader.execute(model="hub repo id", hub_repo_id="nobody-here/no-such-spade-model")
    assert "cache" in _one_line(err)
    with pytest.raises(ValueError) as err:
        SPADEModelLoader.execute(model="embedded", dtype="fp8")
    assert "fp32" in _one_line(err)


def test_loader_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads the embedded model where it is installed, else says so in one line naming the fix."""
    from spade_core.pipeline import embedded_model_dir

    try:
        embedded_model_dir()
    except FileNotFoundError:
        with pytest.raises(FileNotFoundError) as err:
            SPADEModelLoader.execute(model="embedded", device="cpu")
        assert "embedded" in _one_line(err) and "models/spade" in str(err.value)
        return
    (model,) = SPADEModelLoader.execute(model="embedded", device="cpu").args
    assert model.label_set.label_nc == model.pipeline.generator.config.label_nc


# ----------------------------------------------------------------------------- segmaps


def test_load_segmap_keeps_palette_indices_and_raw_ids(comfy_dirs, vae_model) -> None:
    bands = _bands()
    pal = Image.fromarray(bands, mode="P")
    pal.putpalette([c for rgb in TINY.palette for c in rgb])
    pal.save(comfy_dirs.inputs / "indices.png")
    Image.fromarray(bands, mode="L").save(comfy_dirs.inputs / "raw.png")
    Image.fromarray(TINY.colorize(bands.astype(np.int64))).save(comfy_dirs.inputs / "color.png")
    options = next(i for i in SPADELoadSegmap.define_schema().inputs if i.id == "image").options
    assert options == ["color.png", "indices.png", "raw.png"]

    for name in ("indices.png", "raw.png", "color.png"):
        segmap, preview = SPADELoadSegmap.execute(model=vae_model, image=name).args
        assert isinstance(segmap, Segmap) and segmap.label_set == TINY
        assert segmap.labels.dtype == torch.int64 and segmap.labels.shape == (1, 64, 64)
        assert torch.equal(segmap.labels[0], torch.from_numpy(bands.astype(np.int64)))
        assert preview.shape == (1, 64, 64, 3) and preview.dtype == torch.float32
        assert torch.allclose(preview[0, 0, 0] * 255, torch.tensor(TINY.palette[0], dtype=torch.float32))


def test_load_segmap_unknown_ids_error_or_dontcare(comfy_dirs, vae_model) -> None:
    ids = _bands()
    ids[:8] = 200
    Image.fromarray(ids, mode="L").save(comfy_dirs.inputs / "bad.png")
    with pytest.raises(ValueError) as err:
        SPADELoadSegmap.execute(model=vae_model, image="bad.png", mode="raw")
    assert "200" in _one_line(err) and "unknown='dontcare'" in str(err.value)
    segmap, _ = SPADELoadSegmap.execute(model=vae_model, image="bad.png", mode="raw", unknown="dontcare").args
    assert int(segmap.labels[0, 0, 0]) == TINY.dontcare_index


def test_load_segmap_validation_and_fingerprint(comfy_dirs) -> None:
    assert "upload" in SPADELoadSegmap.validate_inputs(image="missing.png")
    path = comfy_dirs.inputs / "seg.png"
    Image.fromarray(_bands(), mode="L").save(path)
    assert SPADELoadSegmap.validate_inputs(image="seg.png") is True
    before = SPADELoadSegmap.fingerprint_inputs(image="seg.png", model=None, mode="auto")
    Image.fromarray(_bands()[::-1].copy(), mode="L").save(path)
    assert SPADELoadSegmap.fingerprint_inputs(image="seg.png", model=None, mode="auto") != before


def test_image_to_segmap_exact_and_nearest(vae_model) -> None:
    bands = _bands()
    rgb = np.stack([TINY.colorize(bands.astype(np.int64)), TINY.colorize(bands[::-1].astype(np.int64))])
    segmap, preview = SPADEImageToSegmap.execute(model=vae_model, image=_image(rgb)).args
    assert segmap.labels.shape == (2, 64, 64)
    assert torch.equal(segmap.labels[1], torch.from_numpy(bands[::-1].astype(np.int64)))
    assert torch.allclose(preview, _image(rgb))

    soft = rgb.copy()
    soft[:, 0, 0] = (72, 128, 181)  # an anti-aliased brush pixel next to "sky"
    with pytest.raises(ValueError) as err:
        SPADEImageToSegmap.execute(model=vae_model, image=_image(soft))
    assert "nearest_color=True" in _one_line(err)
    segmap, _ = SPADEImageToSegmap.execute(model=vae_model, image=_image(soft), nearest_color=True).args
    assert int(segmap.labels[0, 0, 0]) == 0


def test_image_to_segmap_reads_an_ade20k_colour_map() -> None:
    """A preprocessor's ADE20K-palette map becomes ADE20K class indices."""
    ade = get_label_set("ade20k")
    pipe = SPADEPipeline(generator=SPADEGenerator.from_preset("ade20k", ngf=1, crop_size=32, spade_hidden_nc=1),
                         label_set=ade)
    classes = np.array([[2, 2, 6, 6], [12, 12, 20, 20]], dtype=np.int64)
    segmap, _ = SPADEImageToSegmap.execute(model=SPADEModel(pipe, CPU, CPU),
                                           image=_image(ade.colorize(classes)[None])).args
    assert torch.equal(segmap.labels[0], torch.from_numpy(classes))


def test_image_to_segmap_rejects_a_non_image(vae_model) -> None:
    with pytest.raises(ValueError) as err:
        SPADEImageToSegmap.execute(model=vae_model, image=torch.zeros(64, 64))
    assert "IMAGE (B,H,W,3)" in _one_line(err)


# ----------------------------------------------------------------------------- security: folders, sizes, NaN


def _refused(node: type, fix: str, **inputs) -> str:
    """validate_inputs refuses `inputs` (one line naming `fix`), and execute raises the same ValueError."""
    message = node.validate_inputs(**inputs)
    assert isinstance(message, str) and fix in message and "\n" not in message, message
    return message


@pytest.mark.parametrize("name", ["/etc/passwd", "../../x.png", "../secret.png", "sub/../../secret.png",
                                  "..\\secret.png", "C:\\secret.png", "../secret.png [output]"])
def test_load_segmap_refuses_names_that_leave_the_input_folder(comfy_dirs, vae_model, name: str) -> None:
    Image.fromarray(_bands(), mode="L").save(comfy_dirs.inputs.parent / "secret.png")  # a readable segmap, outside
    (comfy_dirs.inputs / "sub").mkdir()
    message = _refused(SPADELoadSegmap, "input folder", image=name)
    assert message.startswith("image ") and ("absolute path" in message or "'..'" in message)
    with pytest.raises(ValueError) as err:
        SPADELoadSegmap.execute(model=vae_model, image=name)
    assert _one_line(err) == message
    assert math.isnan(SPADELoadSegmap.fingerprint_inputs(image=name))


def test_load_segmap_refuses_an_absolute_path_to_a_real_segmap(comfy_dirs, vae_model) -> None:
    outside = comfy_dirs.inputs.parent / "elsewhere.png"
    Image.fromarray(_bands(), mode="L").save(outside)
    for name in (str(outside), str(comfy_dirs.inputs / ".." / "elsewhere.png")):
        assert "absolute path" in _refused(SPADELoadSegmap, "upload it", image=name)
        with pytest.raises(ValueError, match="absolute path"):
            SPADELoadSegmap.execute(model=vae_model, image=name)


def test_load_segmap_refuses_a_link_leading_out_of_the_input_folder(comfy_dirs, vae_model) -> None:
    secret = comfy_dirs.inputs.parent / "secret.png"
    Image.fromarray(_bands(), mode="L").save(secret)
    (comfy_dirs.inputs / "link.png").symlink_to(secret)
    (comfy_dirs.inputs / "linkdir").symlink_to(comfy_dirs.inputs.parent, target_is_directory=True)
    assert _comfy.input_images() == []  # not offered in the list either
    for name in ("link.png", "linkdir/secret.png"):
        assert "link that leads out" in _refused(SPADELoadSegmap, "copy the file", image=name)
        with pytest.raises(ValueError) as err:
            SPADELoadSegmap.execute(model=vae_model, image=name)
        assert "link that leads out" in _one_line(err) and str(comfy_dirs.inputs) not in str(err.value)
    # links that stay inside the folder, and ComfyUI's "[output]" annotation, still work
    Image.fromarray(_bands(), mode="L").save(comfy_dirs.inputs / "real.png")
    (comfy_dirs.inputs / "alias.png").symlink_to(comfy_dirs.inputs / "real.png")
    Image.fromarray(_bands(), mode="L").save(comfy_dirs.outputs / "made.png")
    for name in ("alias.png", "made.png [output]"):
        assert SPADELoadSegmap.validate_inputs(image=name) is True
        segmap, _ = SPADELoadSegmap.execute(model=vae_model, image=name, mode="raw").args
        assert torch.equal(segmap.labels[0], torch.from_numpy(_bands().astype(np.int64)))


def test_load_segmap_outside_comfyui_reads_only_below_the_current_folder(tmp_path, vae_model, monkeypatch) -> None:
    monkeypatch.setattr(_comfy, "folder_paths", None)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_bands(), mode="L").save(tmp_path / "here.png")
    segmap, _ = SPADELoadSegmap.execute(model=vae_model, image="here.png", mode="raw").args
    assert segmap.labels.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="absolute path"):
        SPADELoadSegmap.execute(model=vae_model, image=str(tmp_path / "here.png"))


def test_load_segmap_refuses_a_decompression_bomb_before_decoding(comfy_dirs, vae_model, monkeypatch) -> None:
    bomb = comfy_dirs.inputs / "bomb.png"
    _bomb_png(bomb, 9000, 9000)
    assert bomb.stat().st_size < 1_000_000  # 81 Mpx behind a file of a few hundred KB
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda im: decoded.append(im.size) or real_load(im))
    assert SPADELoadSegmap.validate_inputs(image="bomb.png") is True  # a file of the input folder: sized when run
    with pytest.raises(ValueError) as err:
        SPADELoadSegmap.execute(model=vae_model, image="bomb.png")
    message = _one_line(err)
    assert "'bomb.png'" in message and "9000x9000" in message and "downscale" in message
    assert str(comfy_dirs.inputs) not in message  # names the input, not the server's path
    assert (9000, 9000) not in decoded
    with pytest.raises(ValueError, match="cannot read segmap image 'notes.png'"):
        (comfy_dirs.inputs / "notes.png").write_text("not an image")
        SPADELoadSegmap.execute(model=vae_model, image="notes.png")


@pytest.mark.parametrize("entry", ["../x/", "../x", "/abs/x/", "a/../../x/", "x"])
def test_loader_refuses_model_entries_outside_models_spade(comfy_dirs, entry: str) -> None:
    _tiny_pipeline().save_pretrained(comfy_dirs.models.parent / "x")  # a real pipeline, next to models/spade
    message = _refused(SPADEModelLoader, "models/spade", model=entry, hub_repo_id="")
    with pytest.raises(ValueError) as err:
        SPADEModelLoader.execute(model=entry, device="cpu")
    assert _one_line(err) == message
    assert any(why in message for why in ("absolute path", "'..'", "pipeline folder"))


def test_loader_refuses_links_leading_out_of_models_spade(comfy_dirs, tmp_path: Path) -> None:
    _tiny_pipeline().save_pretrained(tmp_path / "elsewhere")
    comfy_dirs.models.mkdir(parents=True)
    (comfy_dirs.models / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _tiny_pipeline().save_pretrained(comfy_dirs.models / "part")
    weights = next((comfy_dirs.models / "part" / "generator").glob("*.safetensors"))
    (tmp_path / weights.name).write_bytes(weights.read_bytes())
    weights.unlink()
    weights.symlink_to(tmp_path / weights.name)
    assert {"linked/", "part/"} <= set(_comfy.model_entries())
    assert "extra_model_paths.yaml" in _refused(SPADEModelLoader, "link that leads out", model="linked/")
    assert "generator/" in _refused(SPADEModelLoader, "link that leads out", model="part/")
    for entry in ("linked/", "part/"):
        with pytest.raises(ValueError, match="link that leads out"):
            SPADEModelLoader.execute(model=entry, device="cpu")
    _tiny_pipeline().save_pretrained(comfy_dirs.models / "fine")
    assert SPADEModelLoader.validate_inputs(model="fine/", hub_repo_id="") is True


def test_hub_repo_id_refuses_local_folders(comfy_dirs, tmp_path: Path, monkeypatch) -> None:
    _tiny_pipeline().save_pretrained(tmp_path / "owner" / "name")
    monkeypatch.chdir(tmp_path)
    for typed in ("owner/name", str(tmp_path / "owner" / "name"), "./owner/name", "~/x/y", "owner\\name"):
        message = _refused(SPADEModelLoader, "models/spade/", model="hub repo id", hub_repo_id=typed)
        assert "local path" in message and "owner/name" in message
        with pytest.raises(ValueError) as err:
            SPADEModelLoader.execute(model="hub repo id", hub_repo_id=typed, device="cpu")
        assert _one_line(err) == message
    for typed in ("just-a-name", "a b/c", "owner/na--me", "owner/-name", "a/b/c", "owner/name.git"):
        assert "not a Hub repo id" in _refused(SPADEModelLoader, "owner/name", model="hub repo id",
                                               hub_repo_id=typed)
    assert SPADEModelLoader.validate_inputs(model="hub repo id", hub_repo_id="nobody-here/no_such.model") is True
    assert SPADEModelLoader.validate_inputs(model="hub repo id", hub_repo_id=None) is True  # linked: checked on run
    with pytest.raises(FileNotFoundError) as err:  # a valid id, offline and not cached: the library's message
        SPADEModelLoader.execute(model="hub repo id", hub_repo_id="nobody-here/no_such.model")
    assert "cache" in _one_line(err)


def test_image_inputs_refuse_nan_and_huge_images(vae_model) -> None:
    rgb = _image(TINY.colorize(_bands().astype(np.int64))[None])
    rgb[0, 3, 5, 1] = float("nan")
    rgb[0, 4, 5, 2] = float("inf")
    with pytest.raises(ValueError) as err:
        SPADEImageToSegmap.execute(model=vae_model, image=rgb)
    assert "image holds 2 NaN/Inf values" in _one_line(err)
    with pytest.raises(ValueError) as err:
        SPADEEncodeStyle.execute(model=vae_model, image=rgb)
    assert "style image holds 2 NaN/Inf" in _one_line(err)
    huge = torch.zeros(1, 1, 1, 3).expand(1, 9000, 9000, 3)  # no memory behind it: refused from the shape
    for node in (SPADEImageToSegmap, SPADEEncodeStyle):
        with pytest.raises(ValueError) as err:
            node.execute(model=vae_model, image=huge)
        assert "9000x9000" in _one_line(err) and "downscale" in str(err.value)


def test_synthesize_bounds_its_size_and_refuses_nan(plain_model) -> None:
    height = next(i for i in SPADESynthesize.define_schema().inputs if i.id == "height")
    assert height.extra["max"] == MAX_SIDE
    for sides in ({"width": MAX_SIDE + 32}, {"height": MAX_SIDE * 4, "width": 64}):
        with pytest.raises(ValueError) as err:
            SPADESynthesize.execute(model=plain_model, segmap=_segmap(), **sides)
        assert f"{MAX_SIDE}: lower" in _one_line(err)
    with pytest.raises(ValueError) as err:  # each image fits, the batch does not: refused before any synthesis
        SPADESynthesize.execute(model=plain_model, segmap=_segmap(), batch_size=64, width=MAX_SIDE, height=MAX_SIDE)
    assert "GiB IMAGE batch" in _one_line(err) and "lower batch_size" in str(err.value)
    vae = SPADEModel(_tiny_pipeline(), CPU, CPU)
    with pytest.raises(ValueError) as err:
        SPADESynthesize.execute(model=vae, segmap=_segmap(), style=(torch.full((1, 256), float("nan")),
                                                                    torch.zeros(1, 256)))
    assert "style holds 256 NaN/Inf" in _one_line(err)
    broken = _tiny_pipeline(use_vae=False)
    with torch.no_grad():
        for param in broken.generator.conv_img.parameters():
            param.fill_(float("nan"))
    with pytest.raises(ValueError) as err:
        SPADESynthesize.execute(model=SPADEModel(broken, CPU, CPU), segmap=_segmap())
    assert "NaN/Inf" in _one_line(err)


# ----------------------------------------------------------------------------- style and synthesis


def test_encode_style(vae_model) -> None:
    style_image = torch.rand(2, 80, 48, 3)
    (style,) = SPADEEncodeStyle.execute(model=vae_model, image=style_image).args
    mu, logvar = style
    assert mu.shape == logvar.shape == (2, 256) and mu.dtype == torch.float32 and mu.device == CPU
    ref_mu, _ = vae_model.pipeline.encode_style(style_image.movedim(-1, 1))
    assert torch.allclose(mu, ref_mu)


def test_encode_style_without_encoder_says_so(plain_model) -> None:
    with pytest.raises(ValueError) as err:
        SPADEEncodeStyle.execute(model=plain_model, image=torch.rand(1, 64, 64, 3))
    assert "no style encoder" in _one_line(err)


def _segmap(rows: int = 1) -> Segmap:
    bands = torch.from_numpy(_bands().astype(np.int64))
    return Segmap(torch.stack([bands.flip(0) if i % 2 else bands for i in range(rows)]), TINY)


def test_synthesize_batch_seeds_progress_and_interruption(vae_model, monkeypatch) -> None:
    steps, checks = [], []
    monkeypatch.setattr(_comfy, "check_interrupted", lambda: checks.append(1))
    monkeypatch.setattr(_comfy, "progress_bar",
                        lambda total: types.SimpleNamespace(update=lambda n: steps.append((total, n))))
    (images,) = SPADESynthesize.execute(model=vae_model, segmap=_segmap(2), seed=7, batch_size=2).args
    assert images.shape == (4, 64, 64, 3) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert steps == [(4, 1)] * 4 and len(checks) == 4
    # image k of a segmap is what the library makes with seed + k
    ref = vae_model.pipeline(_segmap(2).labels[1:], seed=8, output_type="pt").images
    assert torch.allclose(images[3], ref[0].movedim(0, -1))
    assert not torch.allclose(images[2], images[3])


def test_synthesize_stops_when_interrupted(vae_model, monkeypatch) -> None:
    class Interrupted(Exception):
        pass

    def interrupt() -> None:
        raise Interrupted

    monkeypatch.setattr(_comfy, "check_interrupted", interrupt)
    with pytest.raises(Interrupted):
        SPADESynthesize.execute(model=vae_model, segmap=_segmap(), batch_size=3)


def test_synthesize_with_style(vae_model) -> None:
    (style,) = SPADEEncodeStyle.execute(model=vae_model, image=torch.rand(1, 64, 64, 3)).args
    (images,) = SPADESynthesize.execute(model=vae_model, segmap=_segmap(), style=style, seed=3).args
    ref = vae_model.pipeline(_segmap().labels, style=style, seed=3, output_type="pt").images
    assert torch.allclose(images, ref.movedim(1, -1))
    with pytest.raises(ValueError) as err:
        SPADESynthesize.execute(model=vae_model, segmap=_segmap(3), style=(torch.zeros(2, 256),) * 2)
    assert "2 styles for 3 segmaps" in _one_line(err)


def test_synthesize_size(plain_model, vae_model) -> None:
    (images,) = SPADESynthesize.execute(model=plain_model, segmap=_segmap(), width=96, height=32).args
    assert images.shape == (1, 32, 96, 3)
    with pytest.raises(ValueError) as err:
        SPADESynthesize.execute(model=plain_model, segmap=_segmap(), width=100)
    _one_line(err)
    (images,) = SPADESynthesize.execute(model=vae_model, segmap=_segmap(), width=128, height=96).args
    assert images.shape == (1, 96, 128, 3) and torch.isfinite(images).all()  # style-encoder models resize too


def test_synthesize_refuses_a_segmap_of_another_label_set(vae_model) -> None:
    other = Segmap(torch.zeros(1, 64, 64, dtype=torch.int64), get_label_set("cityscapes"))
    with pytest.raises(ValueError) as err:
        SPADESynthesize.execute(model=vae_model, segmap=other)
    assert "'cityscapes'" in _one_line(err) and "'tiny'" in str(err.value)


def test_nodes_run_under_inference_mode_as_in_comfyui(comfy_dirs) -> None:
    """ComfyUI runs every node inside torch.inference_mode(): load + synthesize must work there."""
    _tiny_pipeline().save_pretrained(comfy_dirs.models / "tiny")
    with torch.inference_mode():
        (model,) = SPADEModelLoader.execute(model="tiny/", device="cpu").args
        segmap, _ = SPADEImageToSegmap.execute(
            model=model, image=_image(TINY.colorize(_bands().astype(np.int64))[None])).args
        (style,) = SPADEEncodeStyle.execute(model=model, image=torch.rand(1, 64, 64, 3)).args
        (images,) = SPADESynthesize.execute(model=model, segmap=segmap, style=style, batch_size=2).args
    assert images.shape == (2, 64, 64, 3)

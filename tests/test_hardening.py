"""Hostile and broken input through the CLI and the pipeline: one `spade: error:` line and exit 2, never a
traceback, an allocation of gigabytes or a silently black image. Every hostile file is made here."""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from cli_helpers import assert_user_error, run
from conftest import NVLABS
from PIL import Image, PngImagePlugin
from safetensors.torch import load_file, save_file

from spade_core.cli import labels as palette_command
from spade_core.cli import main
from spade_core.hub import folder as hub_folder
from spade_core.labels import get_label_set
from spade_core.models import MultiscaleDiscriminator, SPADEEncoder, SPADEGenerator
from spade_core.models.validation import (
    MAX_PARAMETERS,
    estimate_parameters,
    validate_network_config,
)
from spade_core.pipeline import SPADEPipeline, estimate_inference_bytes
from spade_core.segmap import coerce_segmap

V1 = "v1_normal_syncbatch_dontcare"  # label_nc 7 + don't-care, ngf 1, 64x64, no encoder
V3 = "v3_vae_encoder_spadeinstance_64x256"  # VAE with a style encoder


def write_bomb_png(path: Path, side: int = 9000) -> Path:
    """A valid 8-bit greyscale PNG of side x side zeros, written row by row (a few hundred KB on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one row of pixels
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _never_decode(self):
    raise AssertionError("the image was decoded before its size was checked")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for case in (V1, V3):
        folder = tmp_path_factory.mktemp(case[:2]) / "pipe"
        assert main(["convert-nvlabs", str(NVLABS / case), "--opt", str(NVLABS / case / "opt.txt"), "--out", str(folder)]) == 0
        out[case] = folder
    return out


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = write_bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")
    with Image.open(path) as img:  # header only: a real 9000x9000 mode-L PNG
        assert (img.size, img.mode) == ((9000, 9000), "L")
    assert path.stat().st_size < 1_000_000
    return path


@pytest.fixture
def segmap(tmp_path) -> Path:
    path = tmp_path / "seg.png"
    Image.fromarray(np.zeros((64, 64), np.uint8), "L").save(path)
    return path


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "gray").save(path)
    return path


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ----------------------------------------------------------------------------- bounded images


def test_bomb_segmap_and_style_are_refused_from_the_header(models, bomb, segmap, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", _never_decode)
    out = ["--out", tmp_path / "o"]
    assert_user_error(run(capsys, "synthesize", bomb, "--model", models[V1], *out), r"segmap .*bomb\.png is 9000x9000 pixels, over the limit")
    assert_user_error(
        run(capsys, "synthesize", segmap, "--model", models[V3], "--style", bomb, *out),
        r"style image .*bomb\.png is 9000x9000 pixels, over the limit of 67,108,864 pixels: downscale it",
    )
    assert not (tmp_path / "o").exists()


def test_truncated_segmap_and_style_images_are_one_line_errors(models, segmap, photo, capsys, tmp_path):
    for source in (segmap, photo):
        data = source.read_bytes()
        (tmp_path / f"cut_{source.name}").write_bytes(data[: len(data) // 2])
    out = ["--out", tmp_path / "o"]
    assert_user_error(run(capsys, "synthesize", tmp_path / "cut_seg.png", "--model", models[V1], *out), "cannot read segmap")
    assert_user_error(
        run(capsys, "synthesize", segmap, "--model", models[V3], "--style", tmp_path / "cut_photo.png", *out),
        "cannot read style image",
    )


def test_huge_sizes_are_refused_before_allocation_in_cli_words(models, segmap, capsys, tmp_path, monkeypatch):
    synth = ["synthesize", segmap, "--model", models[V1], "--out", tmp_path / "o"]
    assert_user_error(run(capsys, *synth, "--size", "16384x16384"), r"--size 16384x16384 is too large: each side may be at most 4096")
    monkeypatch.setenv("SPADE_MAX_INFERENCE_BYTES", str(50_000_000))
    line = assert_user_error(run(capsys, *synth, "--size", "1024x1024", "--num", "2"), r"2 image\(s\) of 1024x1024 .* over the limit")
    assert "--size" in line and "--num" in line and "height/width" not in line and "num_images_per_segmap" not in line
    assert run(capsys, *synth, "--size", "128x64")[0] == 0  # small requests still work under the lowered limit


def test_pipeline_bounds_sizes_with_keyword_words(models, monkeypatch):
    pipe = SPADEPipeline.from_pretrained(models[V1])
    labels = np.zeros((64, 64), np.int64)
    with pytest.raises(ValueError, match="height 8192 is over the limit of 4096 pixels per side: pass a smaller height/width"):
        pipe(labels, height=8192, width=64)
    gen = pipe.generator
    one = estimate_inference_bytes(gen, 1, 256, 256)
    assert estimate_inference_bytes(gen, 3, 256, 256) == 3 * one
    assert one == 256 * 256 * (gen.semantic_nc + 128 + 12 * gen.config.ngf) * 4
    monkeypatch.setenv("SPADE_MAX_INFERENCE_BYTES", str(one * 2))
    with pytest.raises(ValueError, match=r"3 image\(s\) of 256x256 .*height/width, a lower num_images_per_segmap"):
        pipe(labels, height=256, width=256, num_images_per_segmap=3)
    with pytest.raises(ValueError, match=r"3 image\(s\)"):  # the batch of segmaps counts too
        pipe(np.zeros((3, 64, 64), np.int64), height=256, width=256)
    assert pipe(labels, height=256, width=256, output_type="np").images.shape == (1, 256, 256, 3)


def test_decoded_images_and_arrays_are_size_checked_before_pixel_work(models, monkeypatch):
    monkeypatch.setenv("SPADE_MAX_IMAGE_PIXELS", "1000")
    label_set = get_label_set("ade20k")
    with pytest.raises(ValueError, match=r"segmap numpy array is 40x40 pixels, over the limit of 1,000"):
        coerce_segmap(np.zeros((1, 40, 40), np.int64), label_set)
    with pytest.raises(ValueError, match=r"segmap torch tensor is 40x30 pixels"):
        coerce_segmap(torch.zeros(30, 40, 3, dtype=torch.uint8), label_set, nearest_color=True)
    with pytest.raises(ValueError, match=r"segmap image is 40x40 pixels"):
        coerce_segmap(Image.new("RGB", (40, 40)), label_set, nearest_color=True)
    assert coerce_segmap(np.zeros((20, 20), np.int64), label_set).shape == (1, 20, 20)
    pipe = SPADEPipeline.from_pretrained(models[V3])
    with pytest.raises(ValueError, match=r"style image is 40x40 pixels"):
        pipe.encode_style(Image.new("RGB", (40, 40)))
    with pytest.raises(ValueError, match=r"style image is 60x20 pixels"):
        pipe.encode_style(torch.zeros(1, 3, 20, 60))


def test_nearest_colour_snapping_in_chunks_matches_all_at_once(monkeypatch):
    from spade_core import labels

    label_set = get_label_set("ade20k")
    rgb = np.random.default_rng(0).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    whole = label_set.colors_to_labels(rgb, nearest=True)
    monkeypatch.setattr(labels, "_NEAREST_CHUNK", 1000)  # ~6 colours per chunk
    label_set = get_label_set("ade20k")
    assert torch.equal(label_set.colors_to_labels(rgb, nearest=True), whole)
    tables = label_set._tables  # the palette plus black for don't-care
    distances = ((rgb.reshape(-1, 1, 3).astype(np.int64) - tables["cand"][None]) ** 2).sum(-1)
    assert np.array_equal(whole.numpy().reshape(-1), tables["cand_targets"][distances.argmin(1)])
    assert len(np.unique(whole.numpy())) > 20


# ----------------------------------------------------------------------------- NaN / Inf


def test_non_finite_latents_styles_and_style_images_raise(models):
    pipe = SPADEPipeline.from_pretrained(models[V3])
    seg = pipe.example_segmap()
    z_dim = pipe.generator.config.z_dim
    z = torch.randn(1, z_dim)
    z[0, 3] = float("nan")
    with pytest.raises(ValueError, match=rf"latents holds 1 NaN/Inf values: pass finite numbers, e.g. torch.randn\(N, {z_dim}\)"):
        pipe(seg, latents=z)
    mu, logvar = torch.zeros(1, z_dim), torch.zeros(1, z_dim)
    mu[0, 0] = float("inf")
    with pytest.raises(ValueError, match="style mu holds 1 NaN/Inf"):
        pipe(seg, style=(mu, logvar))
    with pytest.raises(ValueError, match="logvar is too large"):
        pipe(seg, style=(torch.zeros(1, z_dim), torch.full((1, z_dim), 1e4)))
    image = np.full((64, 64, 3), 0.5, np.float32)
    image[5, 5, 1] = np.nan
    with pytest.raises(ValueError, match=r"style image holds 1 NaN/Inf values: replace the NaN/Inf pixels"):
        pipe(seg, style_image=image)
    assert np.isfinite(pipe(seg, style_image=np.full((64, 64, 3), 0.5, np.float32), output_type="np").images).all()


def test_a_non_finite_generated_image_raises_instead_of_painting_black(models):
    pipe = SPADEPipeline.from_pretrained(models[V1])
    with torch.no_grad():
        pipe.generator.conv_img.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="the generator's output holds 12,288 NaN/Inf values: the model's weights or inputs are broken"):
        pipe(np.zeros((64, 64), np.int64))


def test_nan_in_saved_pipeline_weights_is_refused_at_load(models, segmap, capsys, tmp_path):
    broken = copy_folder(models[V1], tmp_path / "nan")
    weights = broken / "generator" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["fc.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, weights, metadata={"format": "pt"})
    pattern = r"generator/diffusion_pytorch_model\.safetensors entry 'fc\.weight' holds 1 NaN/Inf values: the weights are broken"
    with pytest.raises(ValueError, match=pattern):
        SPADEPipeline.from_pretrained(broken)
    capsys.readouterr()  # diffusers' loading progress bar
    assert_user_error(run(capsys, "synthesize", segmap, "--model", broken, "--out", tmp_path / "o"), pattern)


# ----------------------------------------------------------------------------- checkpoints and configs


def nvlabs_copy(tmp_path: Path, name: str = "ckpt") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in ("latest_net_G.pth", "opt.txt"):
        shutil.copy(NVLABS / V1 / file, folder / file)
    return folder


def test_pth_with_nested_string_or_nan_values_is_refused_naming_file_and_key(capsys, tmp_path):
    reference = torch.load(NVLABS / V1 / "latest_net_G.pth", weights_only=True)
    cases = [
        ({**reference, "extra": {"inner": torch.zeros(1)}}, r"latest_net_G\.pth is not a flat state dict \(entry 'extra' is a dict"),
        ({**reference, "note": "hello"}, r"latest_net_G\.pth is not a flat state dict \(entry 'note' is a str"),
    ]
    poisoned = {k: v.clone() for k, v in reference.items()}
    poisoned["fc.weight"].view(-1)[0] = float("nan")
    cases.append((poisoned, r"latest_net_G\.pth entry 'fc\.weight' holds 1 NaN/Inf values: the weights are broken"))
    for k, (state, pattern) in enumerate(cases):
        folder = nvlabs_copy(tmp_path, f"c{k}")
        torch.save(state, folder / "latest_net_G.pth")
        out = tmp_path / f"out{k}"
        assert_user_error(run(capsys, "convert-nvlabs", folder, "--opt", folder / "opt.txt", "--out", out), pattern)
        assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "pattern"),
    [
        ("ngf", "-3", r"opt\.txt: ngf must be from 1 to 1024, got -3: the paper uses 64"),
        ("ngf", "2000", r"opt\.txt: ngf must be from 1 to 1024, got 2000"),
        ("ngf", "1000", r"opt\.txt: ngf 1000, label_nc 7 make a SPADEGenerator of about \d+\.\d G parameters .* lower ngf"),
        ("label_nc", "0", r"opt\.txt: label_nc must be from 1 to 4096, got 0"),
        ("crop_size", "64.5", r"opt\.txt: crop_size must be a whole number, got 64\.5 \(float\)"),
        ("use_vae", "false", r"opt\.txt: use_vae must be a boolean, got the string 'false': write True or False"),
        ("aspect_ratio", "inf", r"opt\.txt: aspect_ratio must be a number, got the string 'inf'"),
        ("num_D", "0", r"opt\.txt: num_D must be from 1 to 8, got 0"),
        ("norm_G", "spectralfancy3x3", r"opt\.txt: .*cannot parse norm_G|opt\.txt: norm_G"),
    ],
)
def test_opt_txt_with_bad_values_names_the_file_and_option(option, value, pattern, capsys, tmp_path):
    folder = nvlabs_copy(tmp_path)
    opt = folder / "opt.txt"
    text, count = re.subn(rf"^(\s*{option}:\s*)\S+", rf"\g<1>{value}", opt.read_text(), flags=re.MULTILINE)
    assert count == 1
    opt.write_text(text)
    assert_user_error(run(capsys, "convert-nvlabs", folder, "--opt", opt, "--out", tmp_path / "out"), pattern)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("use_vae", "false", r"generator/config\.json: use_vae must be a boolean, got the string 'false': write true or false, without quotes"),
        ("ngf", -3, r"generator/config\.json: ngf must be from 1 to 1024, got -3"),
        ("crop_size", "64", r"generator/config\.json: crop_size must be a whole number, got the string '64'"),
        ("ngf", 900, r"generator/config\.json: ngf 900, label_nc 7 make a SPADEGenerator of about .* G parameters"),
        ("num_upsampling_layers", "lots", r"generator/config\.json: num_upsampling_layers must be one of normal, more, most"),
    ],
)
def test_pipeline_config_json_is_validated_naming_file_and_key(models, segmap, key, value, pattern, capsys, tmp_path):
    broken = copy_folder(models[V1], tmp_path / "cfg")
    config_path = broken / "generator" / "config.json"
    config = json.loads(config_path.read_text())
    config[key] = value
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=pattern):
        SPADEPipeline.from_pretrained(broken)
    capsys.readouterr()  # diffusers' loading progress bar
    assert_user_error(run(capsys, "synthesize", segmap, "--model", broken, "--out", tmp_path / "o"), pattern)


def test_label_set_flags_must_be_real_booleans(models, segmap, capsys, tmp_path):
    broken = copy_folder(models[V1], tmp_path / "labels")
    index_path = broken / "model_index.json"
    index = json.loads(index_path.read_text())
    index["label_set"]["use_instance"] = "false"
    index_path.write_text(json.dumps(index))
    pattern = r"label set 'numbered-7': use_instance must be a boolean, got the string 'false': use true or false"
    assert_user_error(run(capsys, "palette", broken), pattern)
    assert_user_error(run(capsys, "synthesize", segmap, "--model", broken, "--out", tmp_path / "o"), pattern)
    index["label_set"]["use_instance"] = False
    index["label_set"]["palette"][2] = ["255", 0, 0]
    index_path.write_text(json.dumps(index))
    assert_user_error(run(capsys, "palette", broken), r"label set 'numbered-7': palette, .* must hold whole numbers")


def test_constructors_refuse_wrong_types_and_absurd_sizes_before_allocating():
    with pytest.raises(ValueError, match="SPADEGenerator: use_vae must be a boolean, got the string 'false': pass use_vae=True"):
        SPADEGenerator(use_vae="false")
    with pytest.raises(ValueError, match="SPADEGenerator: ngf must be a whole number, got 64.0"):
        SPADEGenerator(ngf=64.0)
    with pytest.raises(ValueError, match="SPADEEncoder: z_dim must be from 1 to 8192, got 0"):
        SPADEEncoder(z_dim=0)
    with pytest.raises(ValueError, match="MultiscaleDiscriminator: num_D must be from 1 to 8, got -1"):
        MultiscaleDiscriminator(num_D=-1)
    with pytest.raises(ValueError, match="spade_kernel_size must be odd"):
        SPADEGenerator(spade_kernel_size=4)
    with pytest.raises(ValueError, match=r"about 17\.\d G parameters \(70 GB in float32\), over the limit of 2 G"):
        SPADEGenerator(label_nc=150, ngf=1024)  # would need 70 GB; refused at once
    with pytest.raises(ValueError, match=r"SPADEEncoder of about 3\.8 G parameters .*: lower ngf or z_dim \(the paper"):
        validate_network_config("encoder", {"ngf": 1024, "z_dim": 8192})


def test_parameter_estimate_equals_the_built_networks():
    for preset in ("ade20k", "coco", "cityscapes", "landscape"):
        for cls, kind, overrides in [
            (SPADEGenerator, "generator", {}),
            (SPADEGenerator, "generator", {"use_vae": True}),
            (SPADEEncoder, "encoder", {}),
            (MultiscaleDiscriminator, "discriminator", {}),
            (MultiscaleDiscriminator, "discriminator", {"norm": "batch"}),
        ]:
            with torch.device("meta"):
                net = cls.from_preset(preset, **overrides)
            assert estimate_parameters(kind, dict(net.config)) == sum(p.numel() for p in net.parameters())
    assert estimate_parameters("generator", {"label_nc": 150, "ngf": 512}) > MAX_PARAMETERS


# ----------------------------------------------------------------------------- one error policy


@pytest.mark.parametrize("error", [requests.exceptions.ConnectionError, ConnectionError])
def test_push_without_a_network_is_one_line(models, error, capsys, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    folder = copy_folder(models[V1], tmp_path / "push")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise error("Max retries exceeded with url: /api/repos/create (Failed to establish a new connection)")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", unreachable)
    line = assert_user_error(
        run(capsys, "push", folder, "--repo-id", "someone/spade-test"),
        r"could not reach the Hugging Face Hub to upload to someone/spade-test .*retry, or pass --dry-run",
    )
    assert "dry_run" not in line


def test_demo_without_gradio_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert_user_error(run(capsys, "demo"), r"spade demo needs Gradio.*pip install 'spade\[demo\]'")


def test_missing_extras_memory_and_network_failures_are_one_line(capsys, monkeypatch, segmap, tmp_path):
    def missing(text):
        raise ModuleNotFoundError("No module named 'datasets'", name="datasets")

    monkeypatch.setattr(palette_command, "read_label_set", missing)
    assert_user_error(run(capsys, "palette", "ade20k"), r"spade palette needs the datasets library, which is not installed here: pip install 'spade\[train\]'")

    def out_of_memory(text):
        raise MemoryError()

    monkeypatch.setattr(palette_command, "read_label_set", out_of_memory)
    assert_user_error(run(capsys, "palette", "ade20k"), r"out of memory during spade palette")

    def cpu_allocator(text):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes")

    monkeypatch.setattr(palette_command, "read_label_set", cpu_allocator)
    assert_user_error(run(capsys, "palette", "ade20k"), r"out of memory during spade palette .*can't allocate memory")

    def bug(text):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(palette_command, "read_label_set", bug)
    with pytest.raises(RuntimeError, match="shapes"):  # other runtime errors are bugs: shown in full
        main(["palette", "ade20k"])

    def ours(text):
        raise ImportError("cannot import name 'x' from 'spade_core.labels'", name="spade_core.labels")

    monkeypatch.setattr(palette_command, "read_label_set", ours)
    with pytest.raises(ImportError):  # a broken installation of our own code is a bug, shown in full
        main(["palette", "ade20k"])

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(hub_folder, "resolve_pipeline_folder", offline)
    assert_user_error(
        run(capsys, "synthesize", segmap, "--out", tmp_path / "o"),
        r"could not be reached .*check the connection and retry",
    )

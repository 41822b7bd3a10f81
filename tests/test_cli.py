"""The `spade` command end to end with main([...]): conversion, synthesis, palette, push, export, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import assert_user_error, run
from conftest import COCO_SAMPLE, NVLABS
from PIL import Image
from safetensors.torch import load_file

from spade_core.cli import COMMANDS, main
from spade_core.labels import LabelSet, get_label_set
from spade_core.models import MultiscaleDiscriminator, SPADEGenerator
from spade_core.pipeline import SPADEPipeline

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "segmaps"
V1 = "v1_normal_syncbatch_dontcare"
V3 = "v3_vae_encoder_spadeinstance_64x256"


def save_labels(labels: np.ndarray, folder: Path, stem: str = "label") -> list[Path]:
    """Write (N, H, W) raw ids as 8-bit PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}{i}.png" for i in range(len(labels))]
    for path, plane in zip(paths, labels):
        Image.fromarray(plane.astype(np.uint8), "L").save(path)
    return paths


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for case in (V1, V3):
        folder = tmp_path_factory.mktemp(case[:2]) / "pipe"
        assert main(["convert-nvlabs", str(NVLABS / case), "--opt", str(NVLABS / case / "opt.txt"), "--out", str(folder)]) == 0
        out[case] = folder
    return out


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    gen = SPADEGenerator.from_preset("coco", ngf=4, crop_size=64, spade_hidden_nc=16, param_free_norm="instance")
    folder = tmp_path_factory.mktemp("coco") / "pipe"
    SPADEPipeline(generator=gen, label_set=get_label_set("coco")).save_pretrained(folder)
    return folder


def test_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command.name in out
    for command in COMMANDS:
        code, out, _ = run(capsys, command.name, "--help")
        assert code == 0 and "usage: spade " + command.name in out
    code, out, _ = run(capsys, "synthesize", "--help")
    for flag in ("--model", "--style", "--seed", "--num", "--size", "--out", "--device", "--dtype", "--nearest-color"):
        assert flag in out
    assert_user_error(run(capsys), "choose a command")
    assert_user_error(run(capsys, "bogus"), "invalid choice")


def test_convert_writes_a_complete_pipeline_folder(converted):
    v1, v3 = converted[V1], converted[V3]
    assert (v1 / "discriminator" / "config.json").is_file() and not (v1 / "encoder").exists()
    assert (v3 / "encoder" / "diffusion_pytorch_model.safetensors").is_file() and not (v3 / "discriminator").exists()
    index = json.loads((v1 / "model_index.json").read_text())
    label_set = LabelSet.from_dict(index["label_set"])
    assert label_set.label_nc == 7 and label_set.contain_dontcare_label and not label_set.use_instance
    meta = yaml.safe_load((v1 / "README.md").read_text().split("---\n")[1])
    assert meta["license"] == "cc-by-nc-sa-4.0"
    discriminator = MultiscaleDiscriminator.from_pretrained(v1 / "discriminator")
    reference = torch.load(NVLABS / V1 / "latest_net_D.pth", weights_only=True)
    assert all(torch.equal(discriminator.state_dict()[k], v) for k, v in reference.items())


def test_synthesize_reproduces_the_reference_images(converted, capsys, tmp_path):
    inputs = load_file(NVLABS / V1 / "inputs.safetensors")
    raw = inputs["label"][:, 0].numpy().copy()
    raw[raw == 7] = 255  # don't-care index -> the raw id a label file stores
    paths = save_labels(raw, tmp_path / "in")
    code, out, _ = run(capsys, "synthesize", *paths, "--model", converted[V1], "--out", tmp_path / "out")
    assert code == 0 and "wrote 2 images" in out
    expected = load_file(NVLABS / V1 / "expected.safetensors")["fake_image"]
    expected = ((expected / 2 + 0.5).clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()
    for i, path in enumerate(paths):
        got = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png")).astype(np.float32)
        assert got.shape == (64, 64, 3) and np.abs(got - expected[i]).max() <= 1


def test_synthesize_with_a_style_image_seed_and_several_images(converted, capsys, tmp_path):
    inputs = load_file(NVLABS / V3 / "inputs.safetensors")
    raw = inputs["label"][:, 0].numpy().copy()
    raw[raw == 6] = 255
    (segmap,) = save_labels(raw, tmp_path)
    photo = tmp_path / "style.png"
    Image.fromarray(((inputs["image"][0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(photo)
    args = ["synthesize", segmap, "--model", converted[V3], "--seed", 7, "--num", 2]
    assert run(capsys, *args, "--style", photo, "--out", tmp_path / "a")[0] == 0
    assert run(capsys, *args, "--style", photo, "--out", tmp_path / "b")[0] == 0
    code, out, _ = run(capsys, *args[:-2], "--out", tmp_path / "c")
    assert code == 0 and "(seed 7)" in out
    a = [np.asarray(Image.open(tmp_path / "a" / f"label0_{k}.png")) for k in range(2)]
    b = [np.asarray(Image.open(tmp_path / "b" / f"label0_{k}.png")) for k in range(2)]
    c = np.asarray(Image.open(tmp_path / "c" / "label0.png"))
    assert a[0].shape == (64, 256, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], c)


def test_synthesize_a_folder_of_coco_stuff_labels_with_instances(coco_model, capsys, tmp_path):
    stems = sorted(p.stem for p in (COCO_SAMPLE / "train_label").glob("*.png"))[:4]
    for kind in ("train_label", "train_inst"):
        (tmp_path / kind).mkdir()
        for stem in stems:
            (tmp_path / kind / f"{stem}.png").write_bytes((COCO_SAMPLE / kind / f"{stem}.png").read_bytes())
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "synthesize", tmp_path / "train_label", "--model", coco_model, "--instance", tmp_path / "train_inst",
        "--out", out_dir,
    )
    assert code == 0 and f"wrote {len(stems)} images" in out
    assert err == ""  # the progress bar shows on terminals only, so piped stderr stays clean
    assert sorted(p.stem for p in out_dir.glob("*.png")) == stems
    assert all(Image.open(p).size == (64, 64) for p in out_dir.glob("*.png"))
    single = tmp_path / "one" / "image.png"
    segmap = COCO_SAMPLE / "train_label" / f"{stems[0]}.png"
    code, out, err = run(capsys, "synthesize", segmap, "--model", coco_model, "--size", "128x64", "--out", single)
    assert code == 0 and Image.open(single).size == (128, 64) and "/" not in err


def test_palette_writes_a_legend_and_json(capsys, tmp_path):
    code, out, _ = run(capsys, "palette", "coco", "--out", tmp_path / "legend.png", "--json", tmp_path / "coco.json")
    assert code == 0
    legend = Image.open(tmp_path / "legend.png")
    assert legend.mode == "RGB" and legend.width > 200 and legend.height > 200
    assert LabelSet.from_dict(json.loads((tmp_path / "coco.json").read_text())) == get_label_set("coco")
    code, out, _ = run(capsys, "palette", "coco")
    assert code == 0 and len(out.splitlines()) == 183 and "#" in out.splitlines()[1]
    code, out, _ = run(capsys, "palette", tmp_path / "coco.json")
    assert code == 0 and "person" in out
    assert_user_error(run(capsys, "palette", "no-such-set"), "unknown label set")


def test_push_dry_run_validates_writes_the_card_and_uploads_nothing(coco_model, capsys):
    code, out, _ = run(capsys, "push", coco_model, "--repo-id", "me/spade-coco-tiny", "--dry-run")
    assert code == 0 and "dry run" in out and "nothing uploaded" in out
    assert "generator/diffusion_pytorch_model.safetensors" in out and "model_index.json" in out
    card = (coco_model / "README.md").read_text()
    assert 'from_pretrained("me/spade-coco-tiny")' in card and "datasets:\n- coco-stuff" in card
    assert_user_error(run(capsys, "push", coco_model, "--repo-id", "me/spade-coco-tiny"), "offline")
    assert_user_error(run(capsys, "push", coco_model, "--repo-id", "bad"), "OWNER/NAME")


def test_export_turns_a_training_checkpoint_into_a_pipeline(capsys, tmp_path):
    checkpoint = pytest.importorskip("spade_core.train.checkpoint")
    kwargs = {"label_nc": 5, "no_instance": True, "ngf": 4, "crop_size": 64, "spade_hidden_nc": 16, "param_free_norm": "instance"}
    torch.manual_seed(0)
    raw, ema = SPADEGenerator.from_preset("coco", **kwargs), SPADEGenerator.from_preset("coco", **kwargs)
    label_set = SPADEPipeline(generator=raw).label_set
    checkpoint.save_checkpoint(
        tmp_path / "run", 10, {"generator": raw, "ema_generator": ema}, {}, {}, {}, label_set.to_dict()
    )
    assert run(capsys, "export", tmp_path / "run", "--out", tmp_path / "ema")[0] == 0
    assert run(capsys, "export", tmp_path / "run", "--out", tmp_path / "raw", "--no-ema")[0] == 0
    for folder, source in (("ema", ema), ("raw", raw)):
        pipe = SPADEPipeline.from_pretrained(tmp_path / folder)
        assert pipe.label_set == label_set and pipe.encoder is None
        exported = pipe.generator.state_dict()
        assert all(torch.equal(exported[k], v) for k, v in source.state_dict().items())
    layout = np.arange(64)[:, None].repeat(64, 1) // 16
    assert pipe(layout, output_type="np").images.shape == (1, 64, 64, 3)
    assert_user_error(run(capsys, "export", tmp_path / "run", "--out", tmp_path / "ema"), "not empty")
    assert_user_error(run(capsys, "export", tmp_path / "missing", "--out", tmp_path / "x"), "not found")


def test_user_errors_print_one_line_and_exit_2(coco_model, converted, capsys, tmp_path):
    labels = np.zeros((1, 64, 64), dtype=np.uint8)
    labels[0, :8, :8] = 200  # not a COCO-Stuff id
    (bad_label,) = save_labels(labels, tmp_path / "bad")
    (good_label,) = save_labels(np.zeros((1, 64, 64)), tmp_path / "good")
    odd = np.zeros((64, 64, 3), dtype=np.uint8)
    odd[:] = get_label_set("coco").palette[5]
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd, "RGB").save(tmp_path / "odd.png")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "gray").save(photo)
    synth = ["synthesize", "--model", coco_model, "--out", tmp_path / "o"]

    assert_user_error(run(capsys, *synth, bad_label), r"found raw label\(s\) 200")
    assert_user_error(run(capsys, *synth, tmp_path / "odd.png"), r"#010203 .* not in the palette")
    assert run(capsys, *synth, tmp_path / "odd.png", "--nearest-color")[0] == 0
    assert_user_error(run(capsys, *synth, good_label, "--size", "100x64"), "not supported: both sides must be positive multiples of 32")
    assert_user_error(run(capsys, *synth, good_label, "--size", "big"), "WxH")
    assert_user_error(run(capsys, *synth, good_label, "--style", photo), "without the VAE style encoder")
    assert_user_error(run(capsys, *synth, tmp_path / "missing.png"), "not found")
    assert_user_error(
        run(capsys, "synthesize", good_label, "--model", "nobody/uncached-model", "--out", tmp_path / "o"),
        "hf download nobody/uncached-model",
    )
    assert_user_error(
        run(capsys, "synthesize", good_label, "--model", converted[V3], "--size", "100x64", "--out", tmp_path / "o"),
        r"--size 100x64 is not supported: both sides must be positive multiples of 32 \(e\.g\. --size 96x64\); "
        r"the native size is 256x64 \(width x height\)",
    )
    # A style-encoder model (native 64x256) makes other sizes too.
    vae_out = tmp_path / "vae.png"
    assert run(capsys, "synthesize", good_label, "--model", converted[V3], "--size", "128x64", "--out", vae_out)[0] == 0
    assert Image.open(vae_out).size == (128, 64)

    broken = tmp_path / "broken"
    for path in coco_model.rglob("*"):
        if path.is_file():
            (broken / path.relative_to(coco_model)).parent.mkdir(parents=True, exist_ok=True)
            (broken / path.relative_to(coco_model)).write_bytes(path.read_bytes())
    weights = broken / "generator" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_user_error(run(capsys, "synthesize", good_label, "--model", broken), "truncated or not a safetensors file")
    weights.write_bytes((coco_model / "generator" / "diffusion_pytorch_model.safetensors").read_bytes())
    config = json.loads((broken / "generator" / "config.json").read_text())
    config["label_nc"] = 150
    (broken / "generator" / "config.json").write_text(json.dumps(config))
    assert_user_error(run(capsys, "synthesize", good_label, "--model", broken), r"does not match .*fc\.weight")

    assert_user_error(
        run(capsys, "convert-nvlabs", NVLABS / V1, "--preset", "coco", "--opt", NVLABS / V1 / "opt.txt", "--out", tmp_path / "c"),
        "not allowed with argument",
    )
    assert_user_error(run(capsys, "convert-nvlabs", tmp_path, "--preset", "coco", "--out", tmp_path / "c"), "latest_net_G.pth")
    assert_user_error(
        run(capsys, "convert-nvlabs", NVLABS / V1, "--opt", NVLABS / V1 / "opt.txt", "--label-set", "coco", "--out", tmp_path / "c"),
        "182 classes but the model has label_nc 7",
    )


def test_demo_flags_reach_launch_demo(capsys, monkeypatch):
    import spade_core.demo

    seen = {}
    monkeypatch.setattr(spade_core.demo, "launch_demo", lambda **kw: seen.update(kw))
    code, _, _ = run(capsys, "demo", "--allow-model", "a/b", "--allow-model", "./m", "--max-file-size", "2mb",
                     "--max-pixels", "1000000")
    assert code == 0
    assert seen["models"] == ["a/b", "./m"] and seen["max_file_size"] == "2mb" and seen["max_pixels"] == 1_000_000
    assert seen["model"] is None and seen["host"] == "127.0.0.1"


def test_segmap_folder_leaves_photos_beside_label_maps_out(capsys, tmp_path):
    folder = tmp_path / "layouts"
    folder.mkdir()
    for name in ("landscape_1.png", "landscape_1_render.jpg"):
        (folder / name).write_bytes((EXAMPLES / name).read_bytes())
    code, _, err = run(capsys, "synthesize", folder, "--seed", "0", "--out", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["landscape_1.png"]

"""SPADEPipeline: save/load, seeds, output types, dtypes, segmap forms, styles, reference parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import EVAL_CASES, NVLABS
from PIL import Image
from safetensors.torch import load_file

from spade_core.hub.nvlabs import convert_nvlabs_checkpoint
from spade_core.labels import LabelSet, get_label_set
from spade_core.models import SPADEEncoder, SPADEGenerator
from spade_core.models.encoder import reparameterize
from spade_core.pipeline import (
    SPADEPipeline,
    SPADEPipelineOutput,
    generic_label_set,
    matching_label_set,
)

S = 64  # native size of the tiny test models
TINY = {"ngf": 4, "crop_size": S, "spade_hidden_nc": 16, "param_free_norm": "instance"}


def tiny_label_set(use_instance: bool = False) -> LabelSet:
    return LabelSet(
        name="tiny",
        class_names=("sky", "grass", "sea", "rock", "tree"),
        palette=((0, 0, 255), (0, 255, 0), (0, 128, 255), (128, 128, 128), (0, 100, 0)),
        contain_dontcare_label=True,
        use_instance=use_instance,
        dontcare_raw_ids=(255,),
    )


def tiny_pipeline(vae: bool = False, use_instance: bool = False, seed: int = 0) -> SPADEPipeline:
    torch.manual_seed(seed)
    gen = SPADEGenerator.from_preset("coco", label_nc=5, no_instance=not use_instance, use_vae=vae, **TINY)
    enc = SPADEEncoder.from_preset("coco", ngf=4, crop_size=S) if vae else None
    return SPADEPipeline(generator=gen, encoder=enc, label_set=tiny_label_set(use_instance))


def layout(h: int = S, w: int = S) -> np.ndarray:
    """Class indices (H, W): four bands and a don't-care patch."""
    labels = (np.arange(h)[:, None] * 4 // h).repeat(w, 1).astype(np.uint8)
    labels[h // 4 : h // 2, w // 4 : w // 2] = 5
    return labels


@pytest.fixture(scope="module")
def plain() -> SPADEPipeline:
    return tiny_pipeline()


@pytest.fixture(scope="module")
def vae() -> SPADEPipeline:
    return tiny_pipeline(vae=True)


def test_save_load_gives_identical_images_and_the_documented_layout(vae, tmp_path):
    before = vae(layout(), seed=3, output_type="pt").images
    vae.save_pretrained(tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "encoder/config.json",
        "encoder/diffusion_pytorch_model.safetensors",
        "generator/config.json",
        "generator/diffusion_pytorch_model.safetensors",
        "model_index.json",
    ]
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "SPADEPipeline"
    assert index["generator"] == ["spade_core", "SPADEGenerator"]
    assert index["encoder"] == ["spade_core", "SPADEEncoder"]
    assert LabelSet.from_dict(index["label_set"]) == tiny_label_set()

    loaded = SPADEPipeline.from_pretrained(tmp_path)
    assert torch.equal(loaded(layout(), seed=3, output_type="pt").images, before)
    assert loaded.label_set == tiny_label_set()
    assert loaded.label_set.class_names[1] == "grass"
    assert loaded.colorize(np.array([[1, 5]])).tolist() == [[[0, 255, 0], [0, 0, 0]]]
    assert not loaded.generator.training


def test_model_without_encoder_has_no_encoder_folder(plain, tmp_path):
    plain.save_pretrained(tmp_path)
    assert not (tmp_path / "encoder").exists()
    assert json.loads((tmp_path / "model_index.json").read_text())["encoder"] == [None, None]
    loaded = SPADEPipeline.from_pretrained(tmp_path)
    assert loaded.encoder is None
    assert torch.equal(loaded(layout(), output_type="pt").images, plain(layout(), output_type="pt").images)


def test_seeds_are_deterministic_and_vary_the_style(vae):
    a = vae(layout(), seed=0, output_type="pt").images
    b = vae(layout(), seed=0, output_type="pt").images
    c = vae(layout(), seed=1, output_type="pt").images
    d = vae(layout(), generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(a, b) and torch.equal(a, d)
    assert (a - c).abs().max() > 1e-3
    two = vae(layout(), seed=0, num_images_per_segmap=2, output_type="pt").images
    assert two.shape == (2, 3, S, S) and (two[0] - two[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="seed or generator"):
        vae(layout(), seed=0, generator=torch.Generator())


def test_output_types_shapes_and_ranges(plain):
    batch = np.stack([layout(), layout()[::-1].copy()])
    result = plain(batch)
    pil = result.images
    arr = plain(batch, output_type="np").images
    (pt,) = plain(batch, output_type="pt", return_dict=False)
    assert isinstance(result, SPADEPipelineOutput)
    assert len(pil) == 2 and all(isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (S, S) for im in pil)
    assert arr.dtype == np.float32 and arr.shape == (2, S, S, 3) and 0 <= arr.min() and arr.max() <= 1
    assert pt.dtype == torch.float32 and pt.shape == (2, 3, S, S) and 0 <= pt.min() and pt.max() <= 1
    np.testing.assert_array_equal(arr, pt.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(pil[1]), (arr[1] * 255).round().astype(np.uint8))
    with pytest.raises(ValueError, match="output_type"):
        plain(batch, output_type="latent")


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 0.02), (torch.bfloat16, 0.1)])
def test_half_precision_on_cpu_is_finite_and_close(vae, tmp_path, dtype, atol):
    vae.save_pretrained(tmp_path)
    reference = vae(layout(), seed=0, output_type="pt").images
    half = SPADEPipeline.from_pretrained(tmp_path, torch_dtype=dtype)
    assert half.dtype == dtype and half.generator.dtype == dtype
    images = half(layout(), seed=0, output_type="pt").images
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert (images - reference).abs().max() < atol


def test_to_moves_and_casts_every_component():
    pipe = tiny_pipeline(vae=True)
    assert pipe.to("cpu", torch.bfloat16) is pipe
    assert pipe.generator.dtype == pipe.encoder.dtype == pipe.dtype == torch.bfloat16
    photo = Image.new("RGB", (S, S), "gray")
    assert torch.isfinite(pipe(layout(), style_image=photo, seed=0, output_type="pt").images).all()
    pipe.to(torch.float32)
    assert pipe.generator.dtype == torch.float32 and pipe.device == torch.device("cpu")


def test_every_segmap_form_gives_the_same_semantics(plain, tmp_path):
    labels = layout()
    raw = labels.copy()
    raw[raw == 5] = 255  # the label set's don't-care raw id
    expected = plain.prepare_semantics(torch.from_numpy(labels).long())
    path = tmp_path / "raw.png"
    Image.fromarray(raw, "L").save(path)
    palette_img = Image.fromarray(labels, "P")
    palette_img.putpalette([c for rgb in tiny_label_set().palette for c in rgb])
    forms = {
        "path": str(path),
        "pathlib": path,
        "PIL L (raw ids)": Image.fromarray(raw, "L"),
        "PIL P (indices)": palette_img,
        "PIL RGB (colours)": Image.fromarray(plain.colorize(labels), "RGB"),
        "numpy (H,W)": labels,
        "numpy int64 (N,H,W)": labels[None].astype(np.int64),
        "torch (H,W)": torch.from_numpy(labels),
        "torch (N,1,H,W)": torch.from_numpy(labels)[None, None].int(),
        "list": [labels],
    }
    for name, segmap in forms.items():
        assert torch.equal(plain.prepare_semantics(segmap), expected), name
    both = plain.prepare_semantics([labels, Image.fromarray(raw, "L")], num_images_per_segmap=2)
    assert both.shape == (4, 6, S, S) and all(torch.equal(both[i : i + 1], expected) for i in range(4))
    images = plain([str(path), labels], output_type="np").images
    np.testing.assert_allclose(images[0], images[1], atol=0)


def test_segmaps_are_resized_to_the_native_or_requested_size(plain, vae):
    small = layout(20, 28)
    assert plain(small, output_type="pt").images.shape == (1, 3, S, S)
    assert plain(small, height=32, width=96, output_type="pt").images.shape == (1, 3, 32, 96)
    semantics = plain.prepare_semantics(small)
    assert semantics.shape == (1, 6, S, S) and semantics.sum(1).eq(1).all()
    with pytest.raises(ValueError, match="multiples of 32"):
        plain(small, height=40, width=32)
    # Style-encoder models too: the style code's first map is resized to the requested layout.
    wide = vae(small, seed=0, height=32, width=96, output_type="pt").images
    assert wide.shape == (1, 3, 32, 96) and torch.isfinite(wide).all()
    assert torch.equal(vae(small, seed=0, height=S, width=S, output_type="pt").images, vae(small, seed=0, output_type="pt").images)
    with pytest.raises(ValueError, match=r"size 40x32 \(HxW\) is not supported: both sides must be positive multiples of 32"):
        vae(small, height=40, width=32)


def test_bad_segmaps_name_the_problem(plain):
    bad = layout()
    bad[0, 0] = 9
    with pytest.raises(ValueError, match="9"):
        plain(bad)
    assert plain(bad, unknown="dontcare", output_type="np").images.shape == (1, S, S, 3)
    odd = plain.colorize(layout())
    odd[0, 0] = (1, 2, 3)
    with pytest.raises(ValueError, match="palette"):
        plain(Image.fromarray(odd, "RGB"))
    assert plain(Image.fromarray(odd, "RGB"), nearest_color=True, output_type="np").images.shape == (1, S, S, 3)
    with pytest.raises(ValueError):
        plain(np.zeros((64, 64), dtype=np.float32))


def test_style_image_and_reused_style_codes(vae):
    photo = Image.fromarray((np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8))
    mu, logvar = vae.encode_style(photo)
    assert mu.shape == logvar.shape == (1, 256) and mu.dtype == torch.float32
    styled = vae(layout(), style_image=photo, seed=0, output_type="pt").images
    reused = vae(layout(), style=(mu, logvar), seed=0, output_type="pt").images
    random_style = vae(layout(), seed=0, output_type="pt").images
    assert torch.equal(styled, reused)
    assert (styled - random_style).abs().max() > 1e-3
    as_tensor = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(vae.encode_style(as_tensor)[0], mu, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.encode_style(as_tensor * 2 - 1)
    with pytest.raises(ValueError, match="only one of"):
        vae(layout(), style_image=photo, style=(mu, logvar))


def test_style_for_a_model_without_encoder_is_refused(plain):
    photo = Image.new("RGB", (S, S), "gray")
    with pytest.raises(ValueError, match="without the VAE style encoder"):
        plain(layout(), style_image=photo)
    with pytest.raises(ValueError, match="without the VAE style encoder"):
        plain.encode_style(photo)


def test_label_set_must_fit_the_generator():
    gen = SPADEGenerator.from_preset("coco", label_nc=5, no_instance=True, **TINY)
    with pytest.raises(ValueError, match="does not fit the generator"):
        SPADEPipeline(generator=gen, label_set=tiny_label_set(use_instance=True))
    assert SPADEPipeline(generator=gen).label_set == generic_label_set(5, True, False)
    with pytest.raises(ValueError, match="182 classes"):
        matching_label_set(gen, "coco")
    ade = SPADEGenerator.from_preset("ade20k", use_instance=True, ngf=1, crop_size=64, spade_hidden_nc=4)
    chosen = matching_label_set(ade)
    assert chosen.name == "ade20k" and chosen.use_instance and chosen.class_names == get_label_set("ade20k").class_names


def test_fast_path_matches_the_plain_generator_and_follows_weight_changes():
    pytest.importorskip("spade_core.fast")
    pipe = tiny_pipeline()

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        fast = pipe(layout(), output_type="pt").images
        pipe.use_fast = False
        slow = pipe(layout(), output_type="pt").images
        pipe.use_fast = True
        return fast, slow

    fast, slow = both()
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=0)
    with torch.no_grad():
        pipe.generator.conv_img.bias.add_(0.5)  # an in-place update, as an optimizer step makes
    changed, slow = both()
    assert (changed - fast).abs().max() > 0.01
    torch.testing.assert_close(changed, slow, atol=1e-4, rtol=0)
    pipe.to("cpu")
    torch.testing.assert_close(pipe(layout(), output_type="pt").images, changed, atol=0, rtol=0)


@pytest.mark.parametrize("case", EVAL_CASES)
def test_converted_reference_checkpoints_reproduce_fake_image(case):
    folder = NVLABS / case
    inputs, expected = load_file(folder / "inputs.safetensors"), load_file(folder / "expected.safetensors")
    nets = convert_nvlabs_checkpoint(folder, opt_file=folder / "opt.txt")
    pipe = SPADEPipeline(generator=nets.generator, encoder=nets.encoder)
    semantics = pipe.prepare_semantics(inputs["label"], instance_map=inputs.get("instance"))
    assert torch.equal(semantics, expected["input_semantics"].float())
    latents = None
    if nets.encoder is not None:
        mu, logvar = pipe.encode_style((inputs["image"] + 1) / 2)
        torch.testing.assert_close(mu, expected["mu"], atol=1e-4, rtol=1e-4)
        latents = reparameterize(mu, logvar, eps=inputs["eps"])
        torch.testing.assert_close(latents, expected["z"], atol=1e-4, rtol=1e-4)
    images = pipe(inputs["label"], instance_map=inputs.get("instance"), latents=latents, output_type="pt").images
    torch.testing.assert_close(images, (expected["fake_image"] / 2 + 0.5).clamp(0, 1), atol=1e-4, rtol=1e-4)

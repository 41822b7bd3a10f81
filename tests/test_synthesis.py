"""spade_core.synthesis: the one core synthesis function behind SPADEPipeline, the CLI and the nodes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spade_core.labels import LabelSet
from spade_core.models import SPADEEncoder, SPADEGenerator
from spade_core.pipeline import SPADEPipeline
from spade_core.synthesis import (
    FastNetworkCache,
    encode_style,
    prepare_semantics,
    synthesize,
)

S = 64
TINY = {"ngf": 4, "crop_size": S, "spade_hidden_nc": 16, "param_free_norm": "instance"}
TINY_SET = LabelSet(
    name="tiny",
    class_names=("sky", "grass", "sea", "rock", "tree"),
    palette=((0, 0, 255), (0, 255, 0), (0, 128, 255), (128, 128, 128), (0, 100, 0)),
    contain_dontcare_label=True,
    use_instance=True,
    dontcare_raw_ids=(255,),
)


def _pipe(vae: bool) -> SPADEPipeline:
    torch.manual_seed(1)
    gen = SPADEGenerator.from_preset("coco", label_nc=5, use_vae=vae, **TINY)
    enc = SPADEEncoder.from_preset("coco", ngf=4, crop_size=S) if vae else None
    return SPADEPipeline(generator=gen, encoder=enc, label_set=TINY_SET)


def _labels(n: int = 2, h: int = S, w: int = S) -> torch.Tensor:
    return torch.randint(0, 5, (n, h, w), generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def plain() -> SPADEPipeline:
    return _pipe(False)


@pytest.fixture(scope="module")
def vae() -> SPADEPipeline:
    return _pipe(True)


@pytest.fixture(scope="module")
def embedded() -> SPADEPipeline:
    return SPADEPipeline.from_pretrained(None)


def _core(pipe: SPADEPipeline, segmap, **kwargs) -> torch.Tensor:
    kwargs.setdefault("use_fast", pipe.use_fast)
    return synthesize(pipe.generator, pipe.label_set, segmap, encoder=pipe.encoder, **kwargs)


@pytest.mark.parametrize("use_fast", [True, False])
def test_core_function_gives_the_pipelines_images_bit_for_bit(plain, vae, use_fast):
    plain.use_fast = vae.use_fast = use_fast
    try:
        labels, instance = _labels(), _labels(2)
        cases = [
            (plain, {}),
            (plain, {"instance_map": instance, "height": 32, "width": 96, "num_images_per_segmap": 2}),
            (vae, {"seed": 3, "num_images_per_segmap": 2}),
            (vae, {"style_image": torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0)), "seed": 5}),
            (vae, {"latents": torch.randn(2, 256, generator=torch.Generator().manual_seed(2))}),
            (vae, {"style": vae.encode_style(torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(7))), "seed": 0}),
        ]
        for pipe, kwargs in cases:
            ours = _core(pipe, labels, **kwargs)
            theirs = pipe(labels, output_type="pt", **kwargs).images
            assert ours.dtype == torch.float32 and ours.shape == theirs.shape
            assert torch.equal(ours, theirs), kwargs
            assert 0 <= float(ours.min()) and float(ours.max()) <= 1
        rng_a, rng_b = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        assert torch.equal(_core(vae, labels, generator_rng=rng_a), vae(labels, generator=rng_b, output_type="pt").images)
        assert not torch.equal(_core(vae, labels, seed=1), _core(vae, labels, seed=2))
    finally:
        plain.use_fast = vae.use_fast = True


def test_prepare_semantics_and_encode_style_are_the_pipelines(vae):
    labels = _labels(1, 20, 28)
    assert torch.equal(prepare_semantics(vae.generator, vae.label_set, labels, num_images_per_segmap=3),
                       vae.prepare_semantics(labels, num_images_per_segmap=3))
    image = torch.rand(2, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    mu, logvar = encode_style(vae.encoder, vae.generator, image)
    mu2, logvar2 = vae.encode_style(image)
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2) and mu.shape == (2, 256)


def _error(fn) -> tuple[type, str]:
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        fn()
    return info.type, str(info.value)


def test_errors_are_the_pipelines(plain, vae, tmp_path):
    bad = _labels(1).numpy()
    bad[0, 0, 0] = 9
    nan_latents = torch.full((1, 256), float("nan"))
    cases = [
        (plain, (bad,), {}),
        (plain, (_labels(1),), {"height": 40, "width": 32}),
        (plain, (_labels(1),), {"height": -32}),
        (plain, (_labels(1),), {"width": 10**6}),
        (plain, (_labels(1),), {"num_images_per_segmap": 0}),
        (plain, (_labels(1),), {"style_image": torch.rand(3, 8, 8)}),
        (plain, (_labels(1),), {"latents": torch.randn(1, 256)}),
        (vae, (_labels(1),), {"latents": nan_latents}),
        (vae, (_labels(1),), {"latents": torch.randn(1, 7)}),
        (vae, (_labels(3),), {"latents": torch.randn(2, 256)}),
        (vae, (_labels(1),), {"style": (torch.zeros(1, 256),)}),
        (vae, (_labels(1),), {"style": (torch.zeros(1, 256), torch.full((1, 256), float("inf")))}),
        (vae, (_labels(1),), {"style_image": tmp_path / "missing.png"}),
        (vae, (_labels(1),), {"style_image": torch.full((1, 3, 8, 8), 2.0)}),
        (vae, (_labels(1),), {"style_image": torch.rand(1, 3, 8, 8), "latents": torch.randn(1, 256)}),
        (vae, ("not/a/file.png",), {}),
    ]
    for pipe, args, kwargs in cases:
        ours = _error(lambda pipe=pipe, args=args, kwargs=kwargs: _core(pipe, *args, **kwargs))
        theirs = _error(lambda pipe=pipe, args=args, kwargs=kwargs: pipe(*args, **kwargs))
        assert ours == theirs, kwargs
    assert _error(lambda: _core(vae, _labels(1), seed=1, generator_rng=torch.Generator()))[1] == (
        "pass seed or generator_rng, not both"
    )
    with pytest.raises(ValueError, match="does not fit the generator"):
        synthesize(plain.generator, TINY_SET.__class__(**{**TINY_SET.to_dict(), "use_instance": False}), _labels(1))


def test_the_memory_bound_is_checked_before_synthesis(plain, monkeypatch):
    monkeypatch.setenv("SPADE_MAX_INFERENCE_BYTES", "1000")
    message = _error(lambda: _core(plain, _labels(1)))[1]
    assert "over the limit" in message and "SPADE_MAX_INFERENCE_BYTES" in message


def test_importing_the_core_function_does_not_load_diffusers_pipelines():
    code = (
        "import sys, spade_core.synthesis\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('diffusers.pipelines') or m == 'spade_core.pipeline')\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout


def test_fast_network_cache_reuses_and_rebuilds_when_the_weights_change(plain):
    cache, gen = FastNetworkCache(), plain.generator
    first = cache.network(gen)
    assert first is not gen and cache.network(gen) is first
    assert cache.network(gen, use_fast=False) is gen
    labels = _labels(1)
    before = synthesize(gen, plain.label_set, labels, cache=cache)
    with torch.no_grad():
        gen.conv_img.bias.add_(0.5)  # in place, as an optimizer step
    try:
        rebuilt = cache.network(gen)
        assert rebuilt is not first
        after = synthesize(gen, plain.label_set, labels, cache=cache)
        reference = synthesize(gen, plain.label_set, labels, use_fast=False)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, reference, atol=1e-4, rtol=0)
    finally:
        with torch.no_grad():
            gen.conv_img.bias.sub_(0.5)
    cache.clear()
    assert cache.network(gen) is not rebuilt


# The embedded model (128x128, style encoder) with seed 0 on its example segmap, recorded before
# --size worked for style-encoder models: 32x32 block means of each channel (R rows, then G, then B).
EMBEDDED_128_SEED0_BLOCK_MEANS = [
    0.40513, 0.46747, 0.46746, 0.37029, 0.51891, 0.5451, 0.54685, 0.52008,
    0.22756, 0.28049, 0.29098, 0.23293, 0.36704, 0.40169, 0.40163, 0.37822,
    0.54937, 0.62022, 0.61985, 0.522, 0.54284, 0.57084, 0.57175, 0.54409,
    0.35141, 0.393, 0.39611, 0.3577, 0.36563, 0.39815, 0.39611, 0.36856,
    0.8463, 0.89696, 0.89731, 0.84555, 0.65365, 0.6889, 0.68954, 0.65999,
    0.28948, 0.33346, 0.33659, 0.30029, 0.41822, 0.45086, 0.44704, 0.41377,
]


def test_style_encoder_model_at_other_sizes(embedded):
    gen, seg = embedded.generator, embedded.example_segmap()
    native = _core(embedded, seg, seed=0)
    assert native.shape == (1, 3, 128, 128)
    np.testing.assert_allclose(F.avg_pool2d(native, 32).flatten().numpy(), EMBEDDED_128_SEED0_BLOCK_MEANS, atol=2e-5)
    assert torch.equal(_core(embedded, seg, seed=0, height=128, width=128), native)
    for h, w in [(256, 256), (128, 256), (64, 96)]:
        fast = _core(embedded, seg, seed=0, height=h, width=w)
        plain = _core(embedded, seg, seed=0, height=h, width=w, use_fast=False)
        assert fast.shape == (1, 3, h, w) and torch.isfinite(fast).all()
        torch.testing.assert_close(fast, plain, atol=1e-4, rtol=0)
        assert float(fast.std()) > 0.05  # an image, not a flat colour
        assert torch.equal(embedded(seg, seed=0, height=h, width=w, output_type="pt").images, fast)
    # The first map is fc(z) at the native latent size, resized (bilinear) to the requested one.
    z = torch.randn(2, gen.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = gen.fc(z).view(2, -1, gen.sh, gen.sw)
        assert torch.equal(gen.style_map(z, (gen.sh, gen.sw)), base)
        torch.testing.assert_close(gen.style_map(z, (8, 8)), F.interpolate(base, size=(8, 8), mode="bilinear"))
    with pytest.raises(ValueError, match=r"size 100x128 \(HxW\) is not supported: both sides must be positive multiples of 32"):
        _core(embedded, seg, height=100, width=128)
    # 256x256 from a style image: the encoder still sees the image at the native size.
    styled = _core(embedded, seg, style_image=torch.rand(1, 3, 300, 200, generator=torch.Generator().manual_seed(1)),
                   seed=0, height=256, width=256)
    assert styled.shape == (1, 3, 256, 256) and torch.isfinite(styled).all()


@pytest.mark.parametrize("caller_flushes", [False, True])
def test_synthesis_runs_with_denormals_flushed_and_restores_the_callers_setting(plain, caller_flushes):
    from spade_core.devices import flushing_denormals

    seen = []
    hook = plain.generator.conv_img.register_forward_hook(lambda *args: seen.append(flushing_denormals()))
    torch.set_flush_denormal(caller_flushes)
    try:
        _core(plain, _labels(1), use_fast=False)
        assert seen == [True]  # the forward ran flushed
        assert flushing_denormals() == caller_flushes
    finally:
        hook.remove()
        torch.set_flush_denormal(False)

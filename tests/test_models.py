"""The SPADE networks: reference structure, gradients, save/load, configuration errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import NVLABS

from spade_core.hub.nvlabs import (
    check_state_dict,
    convert_nvlabs_checkpoint,
    options_for,
    read_opt_file,
    read_reference_checkpoint,
)
from spade_core.models import (
    MultiscaleDiscriminator,
    SPADEEncoder,
    SPADEGenerator,
    latent_size,
)
from spade_core.models.layers import (
    ReferenceSyncBatchNorm2d,
    parse_plain_norm,
    parse_spade_norm,
)

PRESETS = ["ade20k", "coco", "cityscapes"]
REFERENCE_PARAMS = {
    "ade20k": {"G": 96_492_483, "D": 5_836_930, "E": 10_463_424},
    "coco": {"G": 97_480_899, "D": 5_904_514, "E": 10_463_424},
    "cityscapes": {"G": 93_048_003, "D": 5_601_410, "E": 10_463_424},
}


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_parameter_counts_and_keys_equal_reference(preset):
    ref = json.loads((NVLABS / f"keys_{preset}.json").read_text())
    with torch.device("meta"):
        nets = {
            "G": SPADEGenerator.from_preset(preset),
            "D": MultiscaleDiscriminator.from_preset(preset),
            "E": SPADEEncoder.from_preset(preset),
            "G_use_vae": SPADEGenerator.from_preset(preset, use_vae=True),
        }
    for name, net in nets.items():
        assert _count(net) == ref["params"][name], name
        ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
        assert ours == [[k, s] for k, s, _ in ref["keys"][name]], f"{preset} {name} state-dict layout differs"
    for name in ("G", "D", "E"):
        assert _count(nets[name]) == REFERENCE_PARAMS[preset][name]


def _tiny_generator(**kw) -> SPADEGenerator:
    args = dict(label_nc=5, contain_dontcare_label=True, use_instance=True, ngf=4, crop_size=64, spade_hidden_nc=8)
    args.update(kw)
    return SPADEGenerator(**args)


def _random_semantics(n: int, nc: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, nc, (n, h, w), generator=g)
    return torch.nn.functional.one_hot(labels, nc).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("mode,n_up", [("normal", 5), ("more", 6), ("most", 7)])
@pytest.mark.parametrize("use_vae", [False, True])
def test_generator_output_size_and_every_parameter_gets_a_gradient(mode, n_up, use_vae):
    crop = 128 if mode == "most" else 64
    G = _tiny_generator(num_upsampling_layers=mode, use_vae=use_vae, crop_size=crop, aspect_ratio=1.0)
    assert G.native_size == (crop, crop)
    sem = _random_semantics(2, G.semantic_nc, crop, crop)
    out = G(sem, torch.randn(2, 256) if use_vae else None)
    assert out.shape == (2, 3, crop, crop)
    assert out.abs().max() <= 1
    out.square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for n, p in G.named_parameters() if "mlp" not in n or "shared" not in n)


def test_latent_size_rounds_like_python():
    assert latent_size(320, 2.0, "more") == (2, 5)  # round(2.5) == 2 (half to even)
    assert latent_size(512, 2.0, "more") == (4, 8)
    assert latent_size(256, 1.0, "normal") == (8, 8)


def test_discriminator_and_encoder_gradients():
    D = MultiscaleDiscriminator(label_nc=5, contain_dontcare_label=False, use_instance=True, ndf=4, n_layers_D=3, num_D=3, norm="batch")
    x = torch.randn(2, D.input_nc, 64, 64)
    feats = D(x)
    assert len(feats) == 3 and all(len(f) == 4 for f in feats)
    assert feats[0][-1].shape[1] == 1 and feats[1][0].shape[-1] < feats[0][0].shape[-1]
    sum(f[-1].mean() for f in feats).backward()
    assert all(p.grad is not None for p in D.parameters())

    E = SPADEEncoder(ngf=2, crop_size=64)
    mu, logvar = E(torch.rand(2, 3, 64, 96) * 2 - 1)
    assert mu.shape == logvar.shape == (2, 256)
    (mu.sum() + logvar.sum()).backward()
    assert all(p.grad is not None for p in E.parameters())


def test_save_load_round_trip(tmp_path):
    G = _tiny_generator(param_free_norm="batch").eval()
    sem = _random_semantics(1, G.semantic_nc, 64, 64)
    G.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "diffusion_pytorch_model.safetensors").is_file()
    G2 = SPADEGenerator.from_pretrained(tmp_path / "g").eval()
    assert G2.config.param_free_norm == "batch" and G2.config.spade_hidden_nc == 8
    with torch.no_grad():
        torch.testing.assert_close(G(sem), G2(sem), atol=0, rtol=0)
    D = MultiscaleDiscriminator(label_nc=3, ndf=4).eval()
    D.save_pretrained(tmp_path / "d")
    D2 = MultiscaleDiscriminator.from_pretrained(tmp_path / "d").eval()
    x = torch.randn(1, D.input_nc, 32, 32)
    with torch.no_grad():
        for sa, sb in zip(D(x), D2(x)):
            for a, b in zip(sa, sb):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, D2.state_dict()[k]) for k, v in D.state_dict().items())


def test_non_native_sizes_and_size_errors():
    G = _tiny_generator().eval()
    with torch.no_grad():
        assert G(_random_semantics(1, G.semantic_nc, 32, 96)).shape == (1, 3, 32, 96)
    with pytest.raises(ValueError, match="multiples of 32"):
        G(_random_semantics(1, G.semantic_nc, 40, 64))
    V = _tiny_generator(use_vae=True).eval()
    z = torch.randn(1, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert V(_random_semantics(1, V.semantic_nc, 32, 96), z).shape == (1, 3, 32, 96)
        assert torch.isfinite(V(_random_semantics(1, V.semantic_nc, 128, 64), z)).all()
    with pytest.raises(ValueError, match="multiples of 32"):
        V(_random_semantics(1, V.semantic_nc, 40, 64))


def test_wrong_semantics_and_z_give_clear_errors():
    G = _tiny_generator()
    with pytest.raises(ValueError, match=r"one-hot map \(N, 7, H, W\)"):
        G(torch.zeros(1, 6, 64, 64))
    with pytest.raises(ValueError, match=r"one-hot map"):
        G(torch.zeros(7, 64, 64))
    V = _tiny_generator(use_vae=True)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 256\)"):
        V(torch.zeros(1, 7, 64, 64), torch.zeros(1, 128))


def test_from_preset_overrides():
    G = SPADEGenerator.from_preset("coco", ngf=2, crop_size=64, norm_G="spadeinstance5x5")
    assert G.config.param_free_norm == "instance" and G.config.spade_kernel_size == 5
    assert not G.config.spectral_norm and G.semantic_nc == 184
    assert G.head_0.norm_0.mlp_gamma.kernel_size == (5, 5)
    G = SPADEGenerator.from_preset("ade20k", ngf=2, crop_size=64, use_instance=True)
    assert G.semantic_nc == 152
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        SPADEGenerator.from_preset("nope")
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        SPADEGenerator.from_preset("ade20k", bogus=1)


def test_norm_string_parsing():
    assert parse_spade_norm("spectralspadesyncbatch3x3") == {"spectral_norm": True, "param_free_norm": "syncbatch", "spade_kernel_size": 3}
    assert parse_spade_norm("spadeinstance5x5")["spade_kernel_size"] == 5
    assert parse_plain_norm("spectralinstance") == (True, "instance")
    assert parse_plain_norm("spectralsync_batch") == (True, "syncbatch")
    assert parse_plain_norm("spectral") == (True, "none")
    with pytest.raises(ValueError, match="cannot parse norm_G"):
        parse_spade_norm("spadegroup3x3")


def test_discriminator_without_norm_keeps_bias():
    D = MultiscaleDiscriminator(label_nc=2, contain_dontcare_label=False, use_instance=False, ndf=4, norm="none")
    keys = D.state_dict().keys()
    assert "discriminator_0.model1.0.bias" in keys and "discriminator_0.model1.0.weight_orig" in keys
    D = MultiscaleDiscriminator(label_nc=2, ndf=4, norm="instance", spectral_norm=False)
    assert "discriminator_0.model1.0.0.weight" in D.state_dict() and "discriminator_0.model1.0.0.bias" not in D.state_dict()


def test_reference_syncbatch_never_counts_batches_and_matches_batchnorm():
    sync, plain = ReferenceSyncBatchNorm2d(3, affine=False), torch.nn.BatchNorm2d(3, affine=False)
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync.running_var, plain.running_var)
    assert sync.num_batches_tracked.item() == 0 and plain.num_batches_tracked.item() == 1
    sync.eval(), plain.eval()
    torch.testing.assert_close(sync(x), plain(x))


def test_opt_file_parsing():
    opts = read_opt_file(NVLABS / "v2_more_instance_spadebatch_aspect2" / "opt.txt")
    assert opts["label_nc"] == 9 and opts["aspect_ratio"] == 2.0 and opts["no_instance"] is False
    assert opts["num_upsampling_layers"] == "more" and opts["norm_G"] == "spectralspadebatch3x3"
    with pytest.raises(ValueError, match="exactly one"):
        options_for("ade20k", NVLABS / "v1_normal_syncbatch_dontcare" / "opt.txt")


def test_converter_names_mismatching_keys(tmp_path):
    case = NVLABS / "v1_normal_syncbatch_dontcare"
    with pytest.raises(ValueError, match=r"shape mismatches.*fc.weight"):
        convert_nvlabs_checkpoint(case, opt_file=case / "opt.txt", label_nc=9)
    state = read_reference_checkpoint(case / "latest_net_G.pth")
    del state["head_0.conv_0.bias"]
    state["extra.weight"] = torch.zeros(1)
    G = convert_nvlabs_checkpoint(case, opt_file=case / "opt.txt").generator
    with pytest.raises(ValueError, match=r"1 missing keys \(head_0.conv_0.bias\).*1 unexpected keys \(extra.weight\)"):
        check_state_dict(G, state, "x.pth")


def test_converter_rejects_corrupt_checkpoint(tmp_path):
    src = NVLABS / "v4_most_nonspectral_syncbatch"
    (tmp_path / "latest_net_G.pth").write_bytes((src / "latest_net_G.pth").read_bytes()[:5000])
    with pytest.raises(ValueError, match="could not read .*latest_net_G.pth"):
        convert_nvlabs_checkpoint(tmp_path, opt_file=src / "opt.txt")
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        convert_nvlabs_checkpoint(src.parent, preset="ade20k")


def test_presets_are_the_registry_entries_and_register_preset_adds_one():
    import spade_core
    from spade_core.models.presets import (
        PRESETS,
        available_presets,
        preset_options,
        register_preset,
    )
    from spade_core.registry import DATASETS

    assert set(DATASETS) <= set(available_presets())
    for name, entry in DATASETS.items():
        assert {k: preset_options(name)[k] for k in entry.network} == entry.network
    # The landscape preset builds the embedded model's networks exactly (same config, same parameter count).
    folder = Path(spade_core.__file__).parent / "assets" / "embedded"
    for cls, sub in ((SPADEGenerator, "generator"), (SPADEEncoder, "encoder")):
        with torch.device("meta"):
            ours = cls.from_preset("landscape")
            stored = cls.from_config(json.loads((folder / sub / "config.json").read_text()))
        assert _count(ours) == _count(stored) > 0
        assert [k for k in ours.state_dict()] == [k for k in stored.state_dict()]
    register_preset("tiny-test-preset", {"label_nc": 7, "no_instance": True, "contain_dontcare_label": False, "ngf": 4})
    try:
        assert "tiny-test-preset" in available_presets()
        with torch.device("meta"):
            gen = SPADEGenerator.from_preset("tiny-test-preset")
        assert (gen.config.label_nc, gen.config.ngf, gen.config.use_instance) == (7, 4, False)
    finally:
        PRESETS._added.pop("tiny-test-preset")
    with pytest.raises(ValueError, match="unknown preset 'nope': choose one of .*cityscapes, coco, landscape"):
        preset_options("nope")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_generator_resampling_equals_interpolate(dtype, channels_last):
    """The generator's x2 upsampling and its semantics downsampling give F.interpolate's values
    and gradients bit for bit (and keep a channels-last map channels-last)."""
    import torch.nn.functional as F

    from spade_core.models.generator import downsample_nearest, upsample2x

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 5, 7, generator=g).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    up, expected = upsample2x(ours), F.interpolate(theirs, scale_factor=2, mode="nearest")
    assert torch.equal(up, expected) and up.is_contiguous(memory_format=torch.channels_last) == channels_last
    grad = torch.randn(expected.shape, generator=g).to(dtype)
    up.backward(grad)
    expected.backward(grad)
    assert torch.equal(ours.grad, theirs.grad)
    sem = torch.randn(2, 4, 64, 96, generator=g).to(dtype)
    assert torch.equal(downsample_nearest(sem, 32), F.interpolate(sem, size=(2, 3), mode="nearest"))
    assert torch.equal(downsample_nearest(sem, 5), F.interpolate(sem, size=(12, 19), mode="nearest"))  # not a multiple


@pytest.mark.parametrize("lookups, channels_last", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("frozen, hooked", [(True, False), (False, False), (False, True)])
def test_discriminator_training_form_equals_the_full_input(frozen, hooked, one_hot, lookups, channels_last):
    """D(images=cat([fake, real]), semantics=sem) gives D(cat([sem; sem], images))'s outputs, and the
    gradients the full input's image channels get (and the weights' when they train), without
    computing or saving the semantic channels' gradient. With ``semantic_lookups`` the first convs'
    semantic term is computed once for both halves (a look-up on a one-hot map): equal up to float
    summation order; without, the stacked input runs as one tensor: equal to the bit."""
    from spade_core.models import MultiscaleDiscriminator

    torch.manual_seed(0)
    d = MultiscaleDiscriminator(label_nc=11, contain_dontcare_label=False, use_instance=True, ndf=8, n_layers_D=3)
    d.requires_grad_(not frozen).semantic_lookups = lookups
    if hooked:  # a first conv with a hook takes the general path there (one input tensor)
        d.discriminator_0.model0[0].register_forward_hook(lambda module, args, out: None)
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 11, (2, 32, 32), generator=g)
    labels[:, 8:20, 4:30] = 3  # a region: repeated windows
    edge = (torch.rand(2, 1, 32, 32, generator=g) < 0.2).float()
    sem = torch.cat([torch.nn.functional.one_hot(labels, 11).permute(0, 3, 1, 2).float(), edge], 1)
    if not one_hot:
        sem = sem * 0.5
    images = torch.randn(4, 3, 32, 32, generator=g, requires_grad=True)
    x = torch.cat([torch.cat([sem, sem]), images.detach()], 1)
    weights = torch.linspace(-1, 1, 7)
    memory = torch.channels_last if channels_last else torch.contiguous_format

    def loss(preds):
        return sum(w * t.square().mean() for w, t in zip(weights, (t for scale in preds for t in scale)))

    full_input = x.clone().requires_grad_()
    reference = copy.deepcopy(d)  # train mode: each forward's power iteration updates u, v
    expected = reference(full_input)
    loss(expected).backward()
    expected_weight_grads = [p.grad for p in reference.parameters()]
    saved: list[torch.Size] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        got = d(images=images.contiguous(memory_format=memory), semantics=sem.contiguous(memory_format=memory))
    exact = not lookups
    for scale_got, scale_expected in zip(got, expected):
        for a, b in zip(scale_got, scale_expected):
            if exact:
                assert torch.equal(a, b)
            else:  # float summation order: within 1e-5 of the tensor's largest value
                assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    loss(got).backward()
    torch.testing.assert_close(images.grad, full_input.grad[:, 12:], rtol=1e-5, atol=1e-5 * full_input.grad.abs().max().item())
    for p, want in zip(d.parameters(), expected_weight_grads):
        assert (p.grad is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    if not hooked:
        # a frozen first conv keeps no copy of its input; the look-up path never builds it at all
        assert (x.shape in saved) == (not frozen and not lookups)
    with pytest.raises(ValueError, match="training form expects"):
        d(images=images[:, :2], semantics=sem)
    with pytest.raises(ValueError, match="training form expects"):
        d(images=images[:3], semantics=sem)
    with pytest.raises(ValueError, match="pass either x"):
        d(x, images)


def test_discriminator_reusing_semantics_prepares_them_once(monkeypatch):
    """Inside ``reusing_semantics`` training-form calls on the same semantics tensor compute its
    label keys and pooled scales once, with the numbers of separate calls."""
    from spade_core.models import MultiscaleDiscriminator, discriminator

    torch.manual_seed(0)
    d = MultiscaleDiscriminator(label_nc=5, contain_dontcare_label=False, use_instance=False, ndf=8, n_layers_D=2).eval()
    g = torch.Generator().manual_seed(3)
    sem = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 16, 16), generator=g), 5).permute(0, 3, 1, 2).float()
    images = torch.randn(4, 3, 16, 16, generator=g)
    calls = []
    original = discriminator.label_keys
    monkeypatch.setattr(discriminator, "label_keys", lambda *a: calls.append(a[0]) or original(*a))
    separate = [d(images=images, semantics=sem) for _ in range(2)]
    assert len(calls) == 2
    with d.reusing_semantics():
        shared = [d(images=images, semantics=sem) for _ in range(2)]
        d(images=images, semantics=sem.clone())  # another tensor: its own preparation
    assert len(calls) == 4
    for got, want in zip(shared, separate):
        assert all(torch.equal(a, b) for scale_a, scale_b in zip(got, want) for a, b in zip(scale_a, scale_b))
    d(images=images, semantics=sem)  # outside the context: prepared afresh
    assert len(calls) == 5

"""spade_core.fast: the optimized generator gives the plain generator's outputs (and the reference's).

Tiny generators (ngf 4; SPADE's hidden width stays 128) with kaiming weights, random biases and
batch-norm statistics calibrated by one train-mode pass, so that activations have realistic
magnitudes. Float32 outputs must agree within 1e-4. In float16 / bfloat16 both paths round
differently, so the fast path's error against the float32 output must stay within twice the
plain path's own error in that dtype (plus 2e-3 for float16, 2e-2 for bfloat16).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from spade_core.fast import FastSPADEGenerator, optimize_generator
from spade_core.hub.nvlabs import convert_nvlabs_checkpoint
from spade_core.models import SPADEGenerator
from spade_core.segmap import one_hot_semantics
from exactness import DEVICES, requires_cuda

TESTS = Path(__file__).resolve().parent
NVLABS = TESTS / "fixtures" / "nvlabs"
LABELS = sorted((TESTS / "data" / "coco_stuff_sample" / "train_label").glob("*.png"))
INSTANCES = TESTS / "data" / "coco_stuff_sample" / "train_inst"
ATOL = 1e-4


def _resize(array: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    t = torch.from_numpy(array.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].long()


def _semantics(generator: SPADEGenerator, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
    """labels (N, H, W) class indices -> one-hot (N, semantic_nc, H, W), edges of ``instances`` (or the labels) last."""
    cfg = generator.config
    instances = instances if cfg.use_instance else None
    return one_hot_semantics(labels, cfg.label_nc, cfg.contain_dontcare_label, cfg.use_instance, instances)


def _coco_layouts(generator: SPADEGenerator, size: tuple[int, int], count: int, offset: int = 0) -> torch.Tensor:
    """Real COCO-Stuff layouts mapped to the model's labels (255 -> don't-care), with their instance edges."""
    cfg = generator.config
    labels, instances = [], []
    for path in LABELS[offset : offset + count]:
        raw = np.array(Image.open(path))
        mapped = raw % cfg.label_nc
        if cfg.contain_dontcare_label:
            mapped = np.where(raw == 255, cfg.label_nc, mapped)
        labels.append(_resize(mapped, size))
        instances.append(_resize(np.array(Image.open(INSTANCES / path.name)), size))
    return _semantics(generator, torch.stack(labels), torch.stack(instances))


def _tiny(preset: str, semantics_for_calibration=None, **overrides) -> SPADEGenerator:
    """A small preset generator with realistic activations (see the module docstring).

    Three train-mode passes on the semantics the test then compares on bring the spectral-norm
    vectors near convergence (fresh random u, v give a tiny sigma and huge weights) and set every
    batch norm's statistics (momentum 1 on the last pass), so that no sample drives activations to
    saturation, where float32 rounding of huge values would dominate.
    """
    torch.manual_seed(0)
    generator = SPADEGenerator.from_preset(preset, **{"ngf": 4, "init_type": "kaiming", **overrides})
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
    sem = semantics_for_calibration(generator) if semantics_for_calibration else None
    if sem is None:
        sem = _coco_layouts(generator, generator.native_size, 1)
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    generator.train()
    with torch.no_grad():
        for step in range(3):
            for m in norms:
                m.momentum = 1.0 if step == 2 else 0.1
            generator(sem)
    for m in norms:
        m.momentum = 0.1
    return generator.eval()


def _compare(generator: SPADEGenerator, semantics: torch.Tensor, z: torch.Tensor | None = None, atol: float = ATOL) -> None:
    fast = optimize_generator(generator)
    with torch.no_grad():
        expected = generator(semantics, z)
        got = fast(semantics, z)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert expected.abs().mean() > 0.05, "test outputs too small to compare"
    if expected.dtype == torch.float32 and (got - expected).abs().max() > atol:
        # Some random-weight configurations are ill-conditioned: the plain float32 forward itself
        # is then more than atol away from the exact (float64) result. There the fast path must be
        # as exact as the plain one: no further from float64 than 1.5x the plain path's own error.
        with torch.no_grad():
            exact = copy.deepcopy(generator).double()(semantics.double(), None if z is None else z.double())
        plain_error = (expected.double() - exact).abs().max().item()
        fast_error = (got.double() - exact).abs().max().item()
        assert plain_error > atol / 2, f"fast differs from plain by more than {atol} on a well-conditioned case"
        assert fast_error <= 1.5 * plain_error, (fast_error, plain_error)
        return
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "preset, size",
    [("ade20k", (64, 64)), ("coco", (64, 64)), ("cityscapes", (64, 128))],
)
def test_presets_match_plain_on_real_layouts_batched(preset, size):
    generator = _tiny(preset, lambda g: _coco_layouts(g, size, 3))
    _compare(generator, _coco_layouts(generator, size, 3))


@pytest.mark.parametrize("mode, size", [("more", (128, 128)), ("most", (128, 128))])
def test_upsampling_modes(mode, size):
    # 'most' at 128 starts from a 1x1 map: calibrate on six layouts, or some batch-norm variances
    # come from two values and are near zero, which makes the network amplify rounding.
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, size, 6), num_upsampling_layers=mode, crop_size=size[0], label_nc=20)
    _compare(generator, _coco_layouts(generator, size, 2, offset=3))


def test_vae_with_and_without_z():
    generator = _tiny("coco", lambda g: _coco_layouts(g, (64, 64), 2), crop_size=64, use_vae=True, label_nc=20)
    sem = _coco_layouts(generator, (64, 64), 2)
    _compare(generator, sem, torch.randn(2, generator.config.z_dim))
    fast = optimize_generator(generator)
    with torch.no_grad():
        torch.manual_seed(7)
        expected = generator(sem)
        torch.manual_seed(7)
        got = fast(sem)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_other_param_free_norms(norm):
    generator = _tiny(
        "coco", lambda g: _coco_layouts(g, (64, 64), 2, offset=5), param_free_norm=norm, crop_size=64, label_nc=20
    )
    _compare(generator, _coco_layouts(generator, (64, 64), 2, offset=5))


def test_batch_norm_without_running_statistics_uses_batch_statistics():
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (64, 64), 2, offset=2), crop_size=64, label_nc=20)
    for m in generator.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    _compare(generator, _coco_layouts(generator, (64, 64), 2, offset=2))


def test_spade_kernel_5_and_no_spectral_norm():
    generator = _tiny("coco", lambda g: _coco_layouts(g, (64, 64), 2, offset=7), spade_kernel_size=5, spectral_norm=False, crop_size=64, label_nc=20)
    _compare(generator, _coco_layouts(generator, (64, 64), 2, offset=7))


def test_non_native_size():
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (64, 128), 2, offset=4), label_nc=20)  # native 256x256
    _compare(generator, _coco_layouts(generator, (64, 128), 2, offset=4))


def test_one_class_everywhere_and_dontcare_everywhere():
    generator = _tiny("coco", lambda g: _coco_layouts(g, (64, 64), 1), crop_size=64)
    labels = torch.stack([torch.full((64, 64), 17), torch.full((64, 64), generator.config.label_nc)])
    _compare(generator, _semantics(generator, labels))


@pytest.mark.parametrize("label_nc", [182, 12])  # dense via look-ups / via a conv over the one-hot map
def test_every_pixel_different_falls_back_to_dense_and_matches(label_nc):
    def noise(g: SPADEGenerator) -> torch.Tensor:
        labels = torch.randint(0, g.config.label_nc + 1, (2, 64, 64), generator=torch.Generator().manual_seed(1))
        return _semantics(g, labels)

    generator = _tiny("coco", noise, crop_size=64, label_nc=label_nc)
    sem = noise(generator)
    _compare(generator, sem)
    fast = optimize_generator(generator)
    assert fast.needs_lookups == (label_nc == 182)
    assert not fast.layout(sem).plan((64, 64), 3).sparse  # dense fallback
    assert fast.layout(_coco_layouts(generator, (64, 64), 1)).plan((64, 64), 3).sparse  # pattern path


def test_concurrent_calls_from_threads_keep_their_own_buffers():
    generator = _tiny("coco", lambda g: _coco_layouts(g, (64, 64), 3))
    fast = optimize_generator(generator)
    layouts = [_coco_layouts(generator, (64, 64), 1, offset=i) for i in range(3)]
    with torch.no_grad():
        expected = [fast(sem) for sem in layouts]
    results: dict[int, list[torch.Tensor]] = {}
    barrier = threading.Barrier(3)

    def run(i: int) -> None:
        barrier.wait()
        with torch.no_grad():
            results[i] = [fast(layouts[i]) for _ in range(5)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        for got in results[i]:
            assert torch.equal(got, expected[i])


def test_inference_mode_and_no_grad_calls_mix():
    # ComfyUI runs nodes under torch.inference_mode; buffers made there must not break later calls
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (256, 256), 1), ngf=16, label_nc=20)
    sem = _coco_layouts(generator, (256, 256), 1)
    fast = optimize_generator(generator)
    with torch.inference_mode():
        first = fast(sem)
    with torch.no_grad():
        second = fast(sem)
    with torch.inference_mode():
        third = fast(sem)
    assert torch.equal(first, second) and torch.equal(second, third)


def test_not_one_hot_input_uses_the_plain_path():
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (64, 64), 1), crop_size=64)
    sem = _coco_layouts(generator, (64, 64), 1)
    soft = 0.9 * sem + 0.1 / sem.shape[1]
    fast = optimize_generator(generator)
    assert fast.layout(soft).keys is None
    with torch.no_grad():
        assert torch.equal(fast(soft), generator(soft))


def test_input_errors_are_the_generators():
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (64, 64), 1), crop_size=64)
    fast = optimize_generator(generator)
    with pytest.raises(ValueError, match="one-hot map"):
        fast(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="not supported"):
        fast(torch.zeros(1, generator.semantic_nc, 48, 48))
    with pytest.raises(ValueError, match="SPADEGenerator"):
        optimize_generator(torch.nn.Linear(2, 2))


def test_wide_layers_run_as_winograd_and_match():
    # ngf 16 at 256x256: the 256-channel G_middle blocks at 16x16 are wide enough for Winograd
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (256, 256), 2), ngf=16, label_nc=20)
    fast = optimize_generator(generator)
    assert fast.blocks["G_middle_0"].conv_0.winograd is not None
    assert fast.blocks["head_0"].conv_0.winograd is None  # 8x8: too few tiles at this width
    _compare(generator, _coco_layouts(generator, (256, 256), 2))


def test_large_maps_run_channels_last_and_the_output_is_nchw():
    # 32x32 maps and up run channels-last on the CPU (the 8x8 and 16x16 blocks stay NCHW); dense
    # plans (a noise sample beside a real layout) switch with them
    generator = _tiny("ade20k", lambda g: _coco_layouts(g, (128, 128), 2), ngf=8, crop_size=128, label_nc=20)
    noise = torch.randint(0, 21, (1, 128, 128), generator=torch.Generator().manual_seed(3))
    for sem in (_coco_layouts(generator, (128, 128), 2), _semantics(generator, noise)):
        fast = optimize_generator(generator)
        formats = {}
        for name, block in fast.blocks.items():
            block.register_forward_hook(lambda m, args, out, name=name: formats.__setitem__(name, (args[0].shape[-1], out)))
        _compare(generator, sem)
        with torch.no_grad():
            out = fast(sem)
        assert out.is_contiguous()
        for name, (width, block_out) in formats.items():
            channels_last = block_out.is_contiguous(memory_format=torch.channels_last) and not block_out.is_contiguous()
            assert channels_last == (width * width >= 32 * 32), (name, width)


@requires_cuda
@pytest.mark.parametrize("preset, size", [("ade20k", (64, 64)), ("cityscapes", (64, 128))])
def test_cuda_matches_plain_on_real_layouts(preset, size, full_fp32):
    generator = _tiny(preset, lambda g: _coco_layouts(g, size, 3)).cuda()
    _compare(generator, _coco_layouts(generator, size, 3).cuda())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, slack", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_low_precision(device, dtype, slack, full_fp32):
    # Few classes: the plain path's float16 convolutions are very slow on CPU.
    generator = _tiny("coco", lambda g: _coco_layouts(g, (64, 64), 2, offset=1), crop_size=64, label_nc=12).to(device)
    sem = _coco_layouts(generator, (64, 64), 2, offset=1).to(device)
    with torch.no_grad():
        reference = generator(sem)
        low = generator.to(dtype)
        plain = low(sem.to(dtype))
        fast = optimize_generator(low)(sem.to(dtype))
    assert fast.dtype == dtype
    plain_error = (plain.float() - reference).abs().max().item()
    fast_error = (fast.float() - reference).abs().max().item()
    assert fast_error <= 2 * plain_error + slack, (fast_error, plain_error)


@pytest.mark.parametrize(
    "case",
    [
        "v1_normal_syncbatch_dontcare",
        "v2_more_instance_spadebatch_aspect2",
        "v3_vae_encoder_spadeinstance_64x256",
        "v4_most_nonspectral_syncbatch",
    ],
)
def test_reference_fixtures_through_the_fast_path(case):
    nets = convert_nvlabs_checkpoint(NVLABS / case)
    expected = load_file(str(NVLABS / case / "expected.safetensors"))
    fast = optimize_generator(nets.generator)
    assert isinstance(fast, FastSPADEGenerator)
    sem = expected["input_semantics"].float()
    with torch.no_grad():
        got = fast(sem, expected.get("z"))
    torch.testing.assert_close(got, expected["fake_image"], atol=ATOL, rtol=ATOL)


def test_fast_package_reads_no_private_members_of_other_objects():
    # issue 15: the fast path follows the generator's public schedule(), check_inputs() and
    # patterns module; it reads no private attribute of another object (nor tensor._version)
    import ast

    offenders = []
    for path in sorted((Path(__file__).resolve().parents[1] / "spade_core" / "fast").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_blocks_follow_the_generators_schedule():
    generator = SPADEGenerator.from_preset("ade20k", ngf=2, crop_size=128, label_nc=5, num_upsampling_layers="most")
    fast = optimize_generator(generator)
    steps = generator.schedule()
    assert list(fast.blocks) == [s.name for s in steps]
    assert [fast.upsample_before[s.name] for s in steps] == [s.upsample for s in steps]
    assert [s.upsample for s in steps] == [False, True, True, True, True, True, True, True]

"""The training benchmark's helpers: its CPU tensor-memory measure (the memory target's measure) counts
what it should, and its "floor" variant replaces every SPADE layer by a per-channel affine batch norm."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from spade_core.models import SPADEGenerator
from spade_core.models.normalization import SPADE

MiB = 2**20


def _train_step_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
    spec = importlib.util.spec_from_file_location("train_step_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensor_peak_counts_frees_of_the_first_calls_blocks_and_temporaries():
    measure = _train_step_benchmark().tensor_peak_above_start_mib
    kept: list[torch.Tensor] = []

    def step() -> None:
        kept.clear()  # frees the previous step's block (4 MiB)
        temporary = torch.ones(16 * MiB // 4)
        temporary.add_(1)
        del temporary
        kept.append(torch.ones(4 * MiB // 4))

    peak = measure(step, [step, step])
    assert abs(peak - 12.0) < 0.05, peak  # -4 + 16 at the worst point of each measured step


def test_tensor_peak_is_near_zero_for_an_in_place_step():
    measure = _train_step_benchmark().tensor_peak_above_start_mib
    x = torch.ones(1000)
    assert measure(lambda: x.mul_(1.0), [lambda: x.mul_(1.0)]) < 0.001  # a wrapped scalar: bytes


def test_floor_variant_is_an_affine_batch_norm_per_spade_layer_with_its_own_gradients():
    torch.manual_seed(0)
    g = SPADEGenerator.from_preset("landscape", crop_size=32, ngf=4, spade_hidden_nc=8)
    layer = g.up_3.norm_1
    x = torch.randn(2, layer.mlp_gamma.out_channels, 8, 8)
    layout = g.label_layout(F.one_hot(torch.randint(0, 10, (2, 32, 32)), 10).permute(0, 3, 1, 2).float())
    _train_step_benchmark().replace_spade_with_affine_batch_norm(g)
    with torch.no_grad():
        layer.floor_scale.fill_(2.0)
        layer.floor_shift.fill_(0.5)
    expected = F.batch_norm(x, None, None, training=True) * 2.0 + 0.5
    assert torch.allclose(layer(x, layout), expected, atol=1e-5)
    g(layout.semantics).mean().backward()
    spade_layers = [m for m in g.modules() if isinstance(m, SPADE)]
    assert spade_layers and all(m.floor_scale.grad is not None and m.floor_shift.grad is not None for m in spade_layers)
    assert all(m.mlp_gamma.weight.grad is None and m.mlp_shared[0].weight.grad is None for m in spade_layers)
    assert all(not any(p is m.floor_scale for p in g.parameters()) for m in spade_layers)  # not the optimizer's

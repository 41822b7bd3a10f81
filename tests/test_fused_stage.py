"""The fused SPADE stage (norm + per-pattern modulation + leaky ReLU + conv in one autograd node):
gradients against float64 finite differences and against the unfused ops, and what it keeps."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spade_core.models.blocks import SPADEResnetBlock
from spade_core.models.layers import FusedNorm, conv_weight, fusable_conv, maybe_spectral_norm, spectral_conv
from spade_core.models.patterns import LabelLayout, _NormModulateConv, norm_modulate, norm_modulate_conv
from spade_core.segmap import one_hot_semantics


def _inputs(channels_last: bool):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    table = torch.randn(6, 6, dtype=torch.float64)
    ids = torch.randint(0, 6, (2 * 5 * 4,))
    return x.requires_grad_(), table.requires_grad_(), ids


def _norm(mode: str) -> FusedNorm:
    if mode == "running":
        return FusedNorm("running", torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5)
    return FusedNorm(mode, momentum=0.1)


@pytest.mark.parametrize("slope", [0.2, None])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["batch", "running", "instance"])
@pytest.mark.parametrize("spectral", [False, True])
def test_fused_stage_gradcheck_and_matches_unfused(spectral, mode, channels_last, slope):
    x, table, ids = _inputs(channels_last)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    weight = conv.weight.detach().clone().requires_grad_()
    bias = conv.bias.detach().clone().requires_grad_()
    sigma = torch.tensor(1.7, dtype=torch.float64, requires_grad=True) if spectral else None
    norm = _norm(mode)
    inputs = (x, table, weight, bias) + ((sigma,) if spectral else ())

    def fused(x, table, weight, bias, sigma=None):
        return _NormModulateConv.apply(
            x, table, ids, norm.mode, norm.running_mean, norm.running_var, norm.momentum, norm.eps,
            weight, sigma, bias, ((1, 1), (1, 1), (1, 1), 1), slope, None,
        )

    def unfused(x, table, weight, bias, sigma=None):
        a = norm_modulate(x, table, ids, norm.mode, norm.running_mean, norm.running_var, norm.momentum, norm.eps)
        if slope is not None:
            a = F.leaky_relu(a, slope)
        return F.conv2d(a, weight if sigma is None else weight / sigma, bias, padding=1)

    torch.autograd.gradcheck(fused, inputs)
    got, want = fused(*inputs), unfused(*inputs)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got.square().sum(), inputs)
    expected = torch.autograd.grad(want.square().sum(), inputs)
    for have, exp in zip(grads, expected):
        torch.testing.assert_close(have, exp)


def _layout(size: int = 32) -> LabelLayout:
    labels = torch.zeros(2, size, size, dtype=torch.long)
    labels[:, 5:20, 3:15] = 1
    labels[1, 15:, 10:] = 2
    return LabelLayout(one_hot_semantics(labels, 3, False, False), 3, False)


def _saved_maps(fn, feature_map: int) -> tuple[int, int]:
    """(total saved bytes, how many saved tensors are full feature maps) while ``fn`` runs."""
    total, maps, seen = 0, 0, set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total, maps
        key = (t.untyped_storage().data_ptr(), t.shape)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
            maps += t.numel() * t.element_size() >= feature_map
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total, maps


@pytest.mark.parametrize("spectral", [True, False])
def test_fused_stage_keeps_its_input_not_the_conv_input(spectral):
    torch.manual_seed(0)
    block = SPADEResnetBlock(32, 32, 3, spectral_norm=spectral, spade_hidden_nc=8)
    x = torch.randn(2, 32, 32, 32, requires_grad=True)
    feature_map = x.numel() * x.element_size()
    layout = _layout()
    stage = lambda: spectral_conv(block.conv_0, F.leaky_relu(block.norm_0(x, layout), 0.2, inplace=True))  # noqa: E731
    total, maps = _saved_maps(lambda: norm_modulate_conv(
        x, *_parts(block.norm_0, x, layout), *conv_weight(block.conv_0), block.conv_0), feature_map)
    assert maps == 1, maps
    # unfused (norm_modulate, then the conv saves its input) keeps two maps: one more
    unfused_total, unfused_maps = _saved_maps(stage, feature_map)
    assert unfused_maps == 2 and 0.95 <= (unfused_total - total) / feature_map <= 1.05
    # a whole block: x (shared by both stages) and the first stage's output, no conv inputs
    _, maps = _saved_maps(lambda: block(x, layout), feature_map)
    assert maps == 2, maps


def _parts(norm, x, layout):
    fused, table, ids = norm.fused_modulation(x, layout)
    return table, ids, fused


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("param_free_norm", ["syncbatch", "batch", "instance"])
@pytest.mark.parametrize("spectral", [True, False])
def test_block_fused_equals_unfused_with_buffers(spectral, param_free_norm, channels_last):
    torch.manual_seed(1)
    block = SPADEResnetBlock(16, 8, 3, spectral_norm=spectral, param_free_norm=param_free_norm, spade_hidden_nc=8)
    twin = copy.deepcopy(block)
    for conv in (twin.conv_0, twin.conv_1, twin.conv_s):  # a hook: the stage runs unfused
        conv.register_forward_hook(lambda *args: None)
    assert fusable_conv(block.conv_0) and not fusable_conv(twin.conv_0)
    x = torch.randn(2, 16, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layout = _layout()
    for step in range(2):
        outs, grads = [], []
        for net in (block, twin):
            xi = x.clone().requires_grad_()
            out = net(xi, layout)
            out.square().mean().backward()
            outs.append(out)
            grads.append([xi.grad] + [p.grad.clone() for p in net.parameters()])
            net.zero_grad()
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
        for have, want in zip(*grads):
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    for (name, have), want in zip(block.named_buffers(), twin.buffers()):
        torch.testing.assert_close(have, want, msg=name)
    block.eval(), twin.eval()
    torch.testing.assert_close(block(x, layout), twin(x, layout), rtol=1e-4, atol=1e-5)


def test_fusable_conv_only_plain_or_torch_spectral():
    assert fusable_conv(nn.Conv2d(2, 2, 3)) and fusable_conv(maybe_spectral_norm(nn.Conv2d(2, 2, 3), True))
    assert not fusable_conv(nn.Conv2d(2, 2, 3, padding_mode="reflect"))
    assert not fusable_conv(nn.Conv2d(2, 2, 3, padding="same"))
    hooked = nn.Conv2d(2, 2, 3)
    hooked.register_forward_pre_hook(lambda *args: None)
    assert not fusable_conv(hooked)
    spectral = maybe_spectral_norm(nn.Conv2d(2, 2, 3), True)
    x = torch.randn(1, 2, 5, 5)
    u = spectral.weight_u.clone()
    weight, sigma = conv_weight(spectral)
    assert weight is spectral.weight_orig and not torch.equal(u, spectral.weight_u)  # one power iteration
    twin = maybe_spectral_norm(nn.Conv2d(2, 2, 3), True)
    twin.load_state_dict({**spectral.state_dict(), "weight_u": u})
    torch.testing.assert_close(F.conv2d(x, weight / sigma, spectral.bias), spectral_conv(twin, x))

"""spade_core.fast.winograd: F(2x2, 3x3) convolution equals F.conv2d (to float32 rounding), and the
fast generator's Winograd-stored convs keep working in every dtype."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spade_core.fast.generator import _Conv, _use_winograd
from spade_core.fast.winograd import direct_weight, winograd_conv3x3, winograd_weight
from spade_core.fast.workspace import Workspace


def _case(n: int, cin: int, cout: int, h: int, w: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (9 * cin) ** 0.5
    bias = torch.randn(cout, generator=gen)
    return x, weight, bias


@pytest.mark.parametrize(
    "n, cin, cout, h, w",
    [(1, 64, 32, 16, 16), (2, 24, 40, 7, 9), (3, 8, 8, 1, 1), (1, 5, 3, 2, 5), (2, 256, 128, 12, 8)],
)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_matches_conv2d_as_closely_as_a_direct_conv(n, cin, cout, h, w, with_bias, memory_format):
    x, weight, bias = _case(n, cin, cout, h, w)
    bias = bias if with_bias else None
    exact = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    direct = F.conv2d(x, weight, bias, padding=1)
    got = winograd_conv3x3(x.contiguous(memory_format=memory_format), winograd_weight(weight), bias)
    assert got.shape == direct.shape and got.is_contiguous(memory_format=memory_format)
    direct_error = (direct.double() - exact).abs().max().item()
    winograd_error = (got.double() - exact).abs().max().item()
    assert winograd_error <= 4 * direct_error + 1e-6, (winograd_error, direct_error)
    assert winograd_error < 2e-5


def test_float64_is_exact_to_float64_rounding():
    x, weight, bias = (t.double() for t in _case(2, 16, 8, 10, 6))
    expected = F.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(winograd_conv3x3(x, winograd_weight(weight), bias), expected, atol=1e-12, rtol=0)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(winograd_conv3x3(channels_last, winograd_weight(weight), bias), expected, atol=1e-12, rtol=0)


def test_weight_transform_round_trips_and_rejects_other_kernels():
    _, weight, _ = _case(1, 12, 7, 4, 4)
    u = winograd_weight(weight)
    assert u.shape == (16, 7, 12)
    torch.testing.assert_close(direct_weight(u), weight, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="3x3"):
        winograd_weight(torch.zeros(4, 4, 5, 5))


def test_reused_buffers_do_not_leak_between_calls_of_other_shapes():
    workspace = Workspace()
    first = _case(1, 32, 16, 8, 8, seed=1)
    second = _case(2, 16, 32, 6, 10, seed=2)
    u1, u2 = winograd_weight(first[1]), winograd_weight(second[1])
    a = winograd_conv3x3(first[0], u1, first[2], workspace)
    b = winograd_conv3x3(second[0], u2, second[2], workspace)
    a_again = winograd_conv3x3(first[0], u1, first[2], workspace)
    assert torch.equal(a, a_again)
    torch.testing.assert_close(b, F.conv2d(second[0], second[1], second[2], padding=1), atol=2e-5, rtol=0)
    assert a.data_ptr() != a_again.data_ptr()  # outputs are fresh tensors, never workspace views


def test_use_winograd_picks_wide_layers_on_big_enough_maps():
    assert _use_winograd((1024, 1024, 3, 3), (16, 16))
    assert _use_winograd((1024, 1024, 3, 3), (8, 8))  # very wide: 16 tiles suffice
    assert not _use_winograd((256, 256, 3, 3), (8, 8))  # too few tiles for its width
    assert not _use_winograd((128, 64, 3, 3), (256, 256))  # too narrow
    assert not _use_winograd((1024, 1024, 1, 1), (32, 32))  # not 3x3
    assert not _use_winograd((256, 256, 3, 3), (256, 256))  # big maps: transforms cost more


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-5), (torch.bfloat16, 0.1), (torch.float16, 1e-2)])
def test_winograd_stored_conv_in_each_dtype(dtype, atol):
    x, weight, bias = _case(1, 32, 16, 8, 8)
    conv = _Conv(weight, bias, winograd=True).to(dtype)
    assert conv.weight is None and conv.winograd is not None
    got = conv(x.to(dtype))
    assert got.dtype == dtype
    expected = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    assert (got.double() - expected).abs().max().item() < atol

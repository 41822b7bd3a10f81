"""``spectral_conv`` (spade_core.models.layers) equals torch's spectral-norm hook + ``conv(x)``.

The new path must give the same outputs, gradients and power-iteration buffers (``weight_u`` /
``weight_v``) as calling the hooked conv, within 1e-5 of each tensor's largest value (float32),
for single convs (3x3 / 1x1 / strided 4x4, with and without bias, train / eval / no grad) and for
whole generator, encoder and discriminator training steps of an ADE20K-like small config on the
COCO-Stuff sample layouts (there, tensors that are rounding noise in float32 must be as close to
a float64 run as the hook's are: ``tests/exactness.py``); its backward must not keep the
normalized weight, and a frozen conv keeps no input.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spade_core.models import (
    MultiscaleDiscriminator,
    SPADEEncoder,
    SPADEGenerator,
    blocks,
    discriminator,
    encoder,
)
from spade_core.models.layers import (
    _SpectralConv2d,
    _sigma,
    maybe_spectral_norm,
    replaying,
    spectral_conv,
)
from spade_core.segmap import one_hot_semantics
from spade_core.train.steps import LossSettings, discriminator_losses, generator_losses
from exactness import assert_matches

DATA = Path(__file__).resolve().parent / "data" / "coco_stuff_sample"
REL = 1e-5
SIZE = 64


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str, rel: float = REL) -> None:
    assert got.shape == want.shape, what
    scale = max(want.abs().max().item(), 1e-30)
    error = (got.double() - want.double()).abs().max().item()
    assert error <= rel * scale, f"{what}: max error {error:.3g} vs scale {scale:.3g}"


def _conv(cin: int, cout: int, k: int, bias: bool, stride: int = 1) -> torch.nn.Conv2d:
    torch.manual_seed(cin * 100 + k)
    conv = maybe_spectral_norm(torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias), True)
    if bias:
        with torch.no_grad():
            conv.bias.normal_()
    return conv


# the 32-channel 3x3 convs have weights larger than their maps: their backward scales the output
# gradient by 1 / sigma first and takes sigma's part from <input gradient, x>
CASES = [
    (6, 5, 3, True, 1), (6, 5, 3, False, 1), (6, 5, 1, True, 1), (6, 5, 1, False, 1), (4, 7, 4, True, 2),
    (32, 32, 3, True, 1), (32, 24, 3, False, 1),
]


@pytest.mark.parametrize("cin,cout,k,bias,stride", CASES)
def test_gradcheck_float64(cin, cout, k, bias, stride):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(cout, cin, k, k, dtype=torch.float64, generator=g, requires_grad=True)
    u = F.normalize(torch.randn(cout, dtype=torch.float64, generator=g), dim=0)
    v = F.normalize(torch.randn(cin * k * k, dtype=torch.float64, generator=g), dim=0)
    b = torch.randn(cout, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    args = ((stride, stride), (k // 2, k // 2), (1, 1), 1, None)
    # sigma = u^T W v depends on w: the check covers the whole spectral-norm gradient
    assert torch.autograd.gradcheck(lambda x, w, b: _SpectralConv2d.apply(x, w, u, v, _sigma(w.detach(), u, v), b, *args), (x, w, b))


@pytest.mark.parametrize("cin,cout,k,bias,stride", [(6, 5, 3, True, 1), (32, 32, 3, True, 1)])
def test_gradcheck_float64_frozen_input(cin, cout, k, bias, stride):
    """Weight and bias gradients when the input needs none (sigma's part from G . W_orig)."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64, generator=g)
    w = torch.randn(cout, cin, k, k, dtype=torch.float64, generator=g, requires_grad=True)
    u = F.normalize(torch.randn(cout, dtype=torch.float64, generator=g), dim=0)
    v = F.normalize(torch.randn(cin * k * k, dtype=torch.float64, generator=g), dim=0)
    b = torch.randn(cout, dtype=torch.float64, generator=g, requires_grad=True)
    args = ((stride, stride), (k // 2, k // 2), (1, 1), 1, None)
    assert torch.autograd.gradcheck(lambda w, b: _SpectralConv2d.apply(x, w, u, v, _sigma(w.detach(), u, v), b, *args), (w, b))


@pytest.mark.parametrize("cin,cout,k,bias,stride", CASES)
@pytest.mark.parametrize("mode", ["train", "eval", "no_grad"])
def test_single_conv_equals_the_hook(cin, cout, k, bias, stride, mode):
    conv = _conv(cin, cout, k, bias, stride).train(mode != "eval")
    runs = {}
    for new in (False, True):
        c = copy.deepcopy(conv)
        out = {}
        for step in range(3):  # u, v advance every train forward
            x = torch.randn(2, cin, 9, 8, generator=torch.Generator().manual_seed(step), requires_grad=mode != "no_grad")
            with torch.set_grad_enabled(mode != "no_grad"):
                y = spectral_conv(c, x) if new else c(x)
            out[f"y{step}"] = y.detach()
            if mode != "no_grad":
                (y * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()
                out[f"x.grad{step}"] = x.grad
        for name, t in [*c.named_parameters(), *c.named_buffers()]:
            out[name] = t.detach().clone()
            if t.grad is not None:
                out[f"{name}.grad"] = t.grad.clone()
        runs[new] = out
    assert runs[True].keys() == runs[False].keys()
    for key, want in runs[False].items():
        _assert_close(runs[True][key], want, key)
    if mode == "train":
        assert not torch.equal(runs[True]["weight_u"], conv.weight_u)  # the power iteration ran


def test_backward_keeps_weight_orig_not_the_normalized_weight():
    conv = _conv(16, 16, 3, True).train()
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    for new in (False, True):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = spectral_conv(conv, x) if new else conv(x)
        full = [t for t in saved if t.shape == conv.weight_orig.shape]
        copies = [t for t in full if t.data_ptr() != conv.weight_orig.data_ptr()]
        assert len(copies) == (0 if new else 1), f"new={new}: {len(copies)} normalized weight copies saved"
        y.sum().backward()


def test_bf16_autocast_equals_the_hook():
    conv = _conv(6, 5, 3, True).train()
    runs = {}
    for new in (False, True):
        c = copy.deepcopy(conv)
        x = torch.randn(2, 6, 9, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = spectral_conv(c, x) if new else c(x)
        y.float().square().sum().backward()
        runs[new] = {"y": y.detach(), "x.grad": x.grad, "w.grad": c.weight_orig.grad, "b.grad": c.bias.grad}
    assert runs[True]["y"].dtype == runs[False]["y"].dtype == torch.bfloat16
    for key, want in runs[False].items():
        _assert_close(runs[True][key].float(), want.float(), key, rel=1e-2)


def _ade20k_like() -> tuple[torch.Tensor, torch.Tensor]:
    """COCO-Stuff sample layouts mapped onto ADE20K's 150 classes (raw % 150, 255 -> don't-care)."""
    labels = []
    for path in sorted((DATA / "train_label").glob("*.png"))[:2]:
        raw = np.array(Image.open(path)).astype(np.int64)
        t = torch.from_numpy(np.where(raw == 255, 150, raw % 150))[None, None].float()
        labels.append(F.interpolate(t, size=(SIZE, SIZE), mode="nearest")[0, 0].long())
    sem = one_hot_semantics(torch.stack(labels), 150, True, False)
    image = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return sem, image


def _steps(g, d, e, sem, image) -> dict[str, torch.Tensor]:
    """Losses and gradients of two (G step, D step) rounds, then every parameter and buffer."""
    out: dict[str, torch.Tensor] = {}
    settings = LossSettings()
    nets = [("G", g), ("D", d)] + ([("E", e)] if e is not None else [])
    params = [(f"{k}.{n}", p) for k, net in nets for n, p in net.named_parameters()]
    for r in range(2):
        eps = torch.randn(sem.shape[0], 16, generator=torch.Generator().manual_seed(r)).to(sem.dtype) if e is not None else None
        losses, _ = generator_losses(g, d, e, sem, image, settings, eps=eps)
        sum(losses.values()).backward()
        out.update({f"{r}.G.{k}": v.detach() for k, v in losses.items()})
        out.update({f"{r}.gstep.grad.{n}": p.grad.clone() for n, p in params if p.grad is not None})
        for _, p in params:
            p.grad = None
        losses, _ = discriminator_losses(g, d, e, sem, image, settings, eps=eps)
        (losses["D_Fake"] + losses["D_real"]).backward()
        out.update({f"{r}.D.{k}": v.detach() for k, v in losses.items()})
        out.update({f"{r}.dstep.grad.{n}": p.grad.clone() for n, p in params if p.grad is not None})
        for _, p in params:
            p.grad = None
    for k, net in nets:
        out.update({f"state.{k}.{n}": v.clone() for n, v in net.state_dict().items()})
    return out


@pytest.mark.parametrize("use_vae,checkpointing", [(False, False), (True, False), (False, True)])
def test_training_steps_equal_plain_conv_calls(monkeypatch, use_vae, checkpointing):
    torch.manual_seed(0)
    g = SPADEGenerator.from_preset("ade20k", crop_size=SIZE, ngf=8, spade_hidden_nc=16, use_vae=use_vae, z_dim=16)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    if checkpointing:
        g.enable_gradient_checkpointing()
    d = MultiscaleDiscriminator.from_preset("ade20k", ndf=8, n_layers_D=3)
    e = SPADEEncoder.from_preset("ade20k", ngf=4, z_dim=16, crop_size=SIZE) if use_vae else None
    sem, image = _ade20k_like()
    new = _steps(copy.deepcopy(g), copy.deepcopy(d), copy.deepcopy(e), sem, image)
    monkeypatch.setattr(blocks, "spectral_conv", lambda conv, x: conv(x))
    monkeypatch.setattr(discriminator, "run_layers", lambda module, x: module(x))
    monkeypatch.setattr(encoder, "run_layers", lambda module, x: module(x))
    plain = _steps(copy.deepcopy(g), copy.deepcopy(d), copy.deepcopy(e), sem, image)
    nets64 = [None if net is None else copy.deepcopy(net).double() for net in (g, d, e)]
    truth = _steps(*nets64, sem.double(), image.double())
    assert any(k.endswith("conv_s.weight_orig") for k in new) and any("weight_u" in k for k in new)
    assert_matches(new, plain, truth, REL)


def test_replaying_reuses_u_v_and_leaves_them_alone():
    conv = _conv(6, 5, 3, True).train()
    x = torch.randn(1, 6, 5, 5)
    first = spectral_conv(conv, x)
    u, v = conv.weight_u.clone(), conv.weight_v.clone()
    with replaying(conv):
        again = spectral_conv(conv, x)
    assert torch.equal(first, again)
    assert torch.equal(conv.weight_u, u) and torch.equal(conv.weight_v, v)


def test_no_normalized_copy_stays_on_the_module():
    conv = _conv(6, 5, 3, True).train()
    conv(torch.randn(1, 6, 5, 5))  # the hook stores a normalized copy as conv.weight
    assert conv.weight.data_ptr() != conv.weight_orig.data_ptr()
    conv = conv.double()  # parameters move; the attribute would keep the old tensor alive
    spectral_conv(conv, torch.randn(1, 6, 5, 5, dtype=torch.float64))
    assert conv.weight.data_ptr() == conv.weight_orig.data_ptr() and not conv.weight.requires_grad


def test_a_frozen_conv_keeps_no_input_for_its_backward():
    """A frozen spectral conv (the discriminator in a generator step) saves no copy of its input
    (only the weight gradient needs it) and still gives the hook's input gradient."""
    conv = _conv(6, 5, 3, True).train().requires_grad_(False)
    x = torch.randn(2, 6, 9, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = spectral_conv(copy.deepcopy(conv), x)
    assert not any(t.shape == x.shape for t in saved)
    (y * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()
    x_hook = x.detach().clone().requires_grad_()
    (conv(x_hook) * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()
    _assert_close(x.grad, x_hook.grad, "x.grad")

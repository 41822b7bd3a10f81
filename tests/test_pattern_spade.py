"""Per-pattern SPADE (spade_core.models.patterns) gives the dense path's losses and gradients.

A generator step and a discriminator step run twice from identical copies, once per pattern and
once dense (``pattern_spade = False``): every loss, every parameter gradient and every buffer
afterwards (batch-norm statistics, spectral-norm vectors) must agree within 1e-4 of the tensor's
largest absolute value (float32). Gradients that are zero in exact arithmetic (biases followed by
a batch norm) are pure rounding noise: there the pattern path must be no further from a float64
run than 4x the dense float32 path is (plus 1e-4 of the float64 tensor's scale). bf16 autocast forwards agree within 2e-2 of the output scale
(both paths round to bf16 at different points).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spade_core.models import MultiscaleDiscriminator, SPADEGenerator
from spade_core.models.layers import ReferenceSyncBatchNorm2d, fused_norm
from spade_core.models.normalization import SPADE
from spade_core.models.patterns import LabelLayout, _TapProducts, make_plan, modulate, norm_modulate
from spade_core.segmap import one_hot_semantics
from spade_core.train.steps import LossSettings, discriminator_losses, generator_losses
from exactness import DEVICES, assert_matches, requires_cuda

DATA = Path(__file__).resolve().parent / "data" / "coco_stuff_sample"
LABELS = sorted((DATA / "train_label").glob("*.png"))
REL = 1e-4
SIZE = (64, 64)


def _resize(array: np.ndarray, size: tuple[int, int] = SIZE) -> torch.Tensor:
    t = torch.from_numpy(array.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].long()


def _real(g: SPADEGenerator, count: int = 2, offset: int = 0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    """COCO-Stuff sample layouts (255 -> don't-care) with their instance edges, at ``size``."""
    labels, instances = [], []
    for path in LABELS[offset : offset + count]:
        raw = np.array(Image.open(path))
        labels.append(_resize(np.where(raw == 255, g.config.label_nc, raw % g.config.label_nc), size))
        instances.append(_resize(np.array(Image.open(DATA / "train_inst" / path.name)), size))
    cfg = g.config
    return one_hot_semantics(torch.stack(labels), cfg.label_nc, True, cfg.use_instance, torch.stack(instances) if cfg.use_instance else None)


def _noise(g: SPADEGenerator) -> torch.Tensor:
    labels = torch.randint(0, g.config.label_nc + 1, (2, *SIZE), generator=torch.Generator().manual_seed(3))
    return one_hot_semantics(labels, g.config.label_nc, True, g.config.use_instance)


def _nets(**overrides) -> tuple[SPADEGenerator, MultiscaleDiscriminator]:
    torch.manual_seed(0)
    g = SPADEGenerator.from_preset("coco", **{"crop_size": SIZE[0], "ngf": 8, "spade_hidden_nc": 32, **overrides})
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)  # non-zero biases: the "outside the image" rows matter
    d = MultiscaleDiscriminator.from_preset("coco", ndf=8, n_layers_D=3)
    return g, d


def _steps(g, d, sem, image, pattern: bool, channels_last: bool = False) -> dict[str, torch.Tensor]:
    """Losses, gradients (after each step) and the state after a G step then a D step; ``pattern``
    also switches the discriminator's one-hot look-ups, as the trainer does (dense: the stacked input)."""
    g.pattern_spade = pattern
    d.semantic_lookups = pattern
    if channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
        sem, image = sem.contiguous(memory_format=torch.channels_last), image.contiguous(memory_format=torch.channels_last)
    out: dict[str, torch.Tensor] = {}
    settings = LossSettings()
    losses, fake = generator_losses(g, d, None, sem, image, settings)
    sum(losses.values()).backward()
    out.update({f"G.{k}": v.detach() for k, v in losses.items()})
    out["fake"] = fake.detach()
    out.update({f"gstep.grad.{n}": p.grad.clone() for n, p in [*g.named_parameters(), *d.named_parameters()]})
    for p in [*g.parameters(), *d.parameters()]:
        p.grad = None
    losses, _ = discriminator_losses(g, d, None, sem, image, settings)
    (losses["D_Fake"] + losses["D_real"]).backward()
    out.update({f"D.{k}": v.detach() for k, v in losses.items()})
    out.update({f"dstep.grad.{n}": p.grad.clone() for n, p in d.named_parameters()})
    out.update({f"state.G.{k}": v.clone() for k, v in g.state_dict().items()})
    out.update({f"state.D.{k}": v.clone() for k, v in d.state_dict().items()})
    return out


def _compare(
    sem_fn, train: bool = True, checkpointing: bool = False, channels_last: bool = False, device: str = "cpu", **overrides
):
    """Both float32 paths on ``device``, the float64 truth on the CPU."""
    g, d = _nets(**overrides)
    sem = sem_fn(g)
    image = torch.rand(sem.shape[0], 3, *sem.shape[2:], generator=torch.Generator().manual_seed(5)) * 2 - 1
    if checkpointing:
        g.enable_gradient_checkpointing()
    g.train(train)
    runs = {}
    for pattern in (False, True):
        on_device = (copy.deepcopy(g).to(device), copy.deepcopy(d).to(device), sem.to(device), image.to(device))
        runs[pattern] = {k: v.cpu() for k, v in _steps(*on_device, pattern, channels_last).items()}
    exact = _steps(copy.deepcopy(g).double(), copy.deepcopy(d).double(), sem.double(), image.double(), False)
    assert_matches(runs[True], runs[False], exact, REL)
    return g, sem


def test_real_layouts_train_mode_take_the_pattern_path_and_match():
    g, sem = _compare(_real)
    layout = g.label_layout(sem)
    assert layout.plan(SIZE, 3).sparse and layout.plan((32, 32), 3).sparse  # the large maps run per pattern


def test_noise_falls_back_to_dense_and_matches():
    g, sem = _compare(_noise)
    layout = g.label_layout(sem)
    assert layout.keys is not None and not layout.plan(SIZE, 3).sparse


def test_non_square_layouts_match():
    """A 2:1 layout (H 32, W 64, as Cityscapes' aspect ratio): rows and columns are not interchangeable
    anywhere in the plans, look-ups or gathers."""
    size = (32, 64)
    g, sem = _compare(lambda g: _real(g, offset=3, size=size), crop_size=size[1], aspect_ratio=size[1] / size[0])
    layout = g.label_layout(sem)
    assert sem.shape[2:] == size and layout.plan(size, 3).sparse


def test_eval_mode_matches():
    _compare(lambda g: _real(g, offset=2), train=False)


def test_gradient_checkpointing_matches():
    _compare(lambda g: _real(g, offset=4), checkpointing=True)


def test_channels_last_matches():
    _compare(lambda g: _real(g, offset=6), channels_last=True)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_other_norms_and_kernel_5(norm):
    _compare(lambda g: _real(g, offset=1), param_free_norm=norm, spade_kernel_size=5, spectral_norm=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_as_close_to_float32_as_dense(device, dtype, full_fp32):
    """Under bf16 and fp16 autocast the per-pattern output and a SPADE weight's gradient are as close
    to the float32 dense ones as the dense path's (the CPU's fp16 dense convs are slow: ~7 s)."""
    g, _ = _nets()
    g = g.to(device)
    sem = _real(g, 2, offset=3).to(device)
    g.pattern_spade = False
    reference = g(sem)
    reference.sum().backward()
    reference = reference.detach()
    reference_grad = g.head_0.norm_0.mlp_gamma.weight.grad.clone()
    errors = {}
    for pattern in (False, True):
        g.zero_grad(set_to_none=True)
        g.pattern_spade = pattern
        with torch.autocast(device, dtype=dtype):
            out = g(sem)
        assert out.dtype == dtype
        out.float().sum().backward()
        grad = g.head_0.norm_0.mlp_gamma.weight.grad
        errors[pattern] = ((out.float() - reference).abs().max().item(), (grad - reference_grad).abs().max().item())
    scale, grad_scale = reference.abs().max().item(), reference_grad.abs().max().item()
    assert errors[True][0] <= 2 * errors[False][0] + 1e-2 * scale, errors
    assert errors[True][1] <= 2 * errors[False][1] + 1e-2 * grad_scale, errors


@requires_cuda
@pytest.mark.parametrize("case", ["real", "noise", "eval", "channels_last"])
def test_cuda_steps_match(case, full_fp32):
    """The same generator and discriminator steps on a GPU: per pattern vs dense there, float64 on the CPU."""
    sem_fn = _noise if case == "noise" else (lambda g: _real(g, offset=2))
    g, sem = _compare(sem_fn, train=case != "eval", channels_last=case == "channels_last", device="cuda")
    assert g.label_layout(sem.cuda()).plan(SIZE, 3).sparse == (case != "noise")


def test_soft_or_differentiable_semantics_stay_dense():
    g, _ = _nets()
    sem = _real(g, 1)
    assert g.label_layout(sem).keys is not None
    assert g.label_layout(0.9 * sem + 0.1 / sem.shape[1]).keys is None
    assert g.label_layout(sem.clone().requires_grad_()).keys is None
    g.pattern_spade = False
    assert g.label_layout(sem).keys is None


def test_modulate_backward_equals_autograd_of_gather():
    torch.manual_seed(1)
    normalized = torch.randn(2, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 10, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 9, (2 * 6 * 7,))
    torch.autograd.gradcheck(lambda x, t: modulate(x, t, ids), (normalized, table))
    cl = normalized.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.autograd.gradcheck(lambda x, t: modulate(x, t, ids), (cl, table))


def test_plan_patterns_are_exact_windows():
    # every pixel's pattern id identifies its 5x5 window of keys (outside the image included)
    keys = torch.ones(1, 1, 24, 24)
    keys[..., :6, :6] = torch.randint(0, 3, (6, 6)).float()
    keys[..., 12:, 10:] = 2
    plan = make_plan(keys, (24, 24), 3, 4)
    assert plan.sparse
    grid = F.pad(keys[:, 0].long(), (2, 2, 2, 2), value=3)
    windows = grid.unfold(1, 5, 1).unfold(2, 5, 1).reshape(576, 25)
    ids = plan.pattern_ids
    for pattern in ids.unique():
        members = windows[ids == pattern]
        assert (members == members[0]).all()
    assert ids.unique().numel() == windows.unique(dim=0).shape[0]
    assert LabelLayout(torch.zeros(1, 4, 4, 4), 3, True).keys is None


def _fused_inputs(channels_last: bool):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    table = torch.randn(6, 6, dtype=torch.float64)
    ids = torch.randint(0, 6, (2 * 5 * 4,))
    return x.requires_grad_(), table.requires_grad_(), ids


@pytest.mark.parametrize("chunk", [20, 2**18])  # one channel per block (NCHW), or all at once
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["batch", "running", "instance"])
def test_fused_norm_modulate_gradcheck(monkeypatch, mode, channels_last, chunk):
    from spade_core.models import patterns

    monkeypatch.setattr(patterns, "GATHER_CHUNK", chunk)
    x, table, ids = _fused_inputs(channels_last)
    running = (torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5)
    stats = running if mode == "running" else (None, None)
    torch.autograd.gradcheck(lambda a, t: norm_modulate(a, t, ids, mode, *stats, 0.1, 1e-5), (x, table))
    norm = {
        "batch": torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False),
        "running": torch.nn.BatchNorm2d(3, affine=False).eval(),
        "instance": torch.nn.InstanceNorm2d(3),
    }[mode].double()
    if mode == "running":
        norm.running_mean.copy_(running[0])
        norm.running_var.copy_(running[1])
    got = norm_modulate(x, table, ids, mode, *stats, 0.1, 1e-5)
    want = modulate(norm(x), table, ids)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got.square().sum(), (x, table))
    expected = torch.autograd.grad(want.square().sum(), (x, table))
    for have, exp in zip(grads, expected):
        torch.testing.assert_close(have, exp)


@pytest.mark.parametrize("chunk", [20, 2**18])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("kind", [torch.nn.BatchNorm2d, ReferenceSyncBatchNorm2d])
def test_fused_norm_updates_running_buffers_like_batch_norm(monkeypatch, kind, momentum, chunk):
    from spade_core.models import patterns

    monkeypatch.setattr(patterns, "GATHER_CHUNK", chunk)
    torch.manual_seed(4)
    fused_module, plain = kind(3, affine=False, momentum=momentum), kind(3, affine=False, momentum=momentum)
    table = torch.randn(4, 6)
    for step in range(3):
        x = torch.randn(2, 3, 5, 4) * (step + 1) + step
        ids = torch.randint(0, 4, (2 * 5 * 4,))
        fused = fused_norm(fused_module, x)
        assert fused is not None and fused.mode == "batch"
        got = norm_modulate(x, table, ids, fused.mode, fused.running_mean, fused.running_var, fused.momentum, fused.eps)
        torch.testing.assert_close(got, modulate(plain(x), table, ids))
    for name, buffer in plain.named_buffers():
        assert torch.equal(buffer, dict(fused_module.named_buffers())[name]), name
    assert int(plain.num_batches_tracked) == (3 if kind is torch.nn.BatchNorm2d else 0)
    plain.eval()
    assert fused_norm(plain, x).mode == "running"


def test_fused_norm_covers_only_the_exact_configurations():
    x = torch.randn(2, 3, 4, 4)
    assert fused_norm(torch.nn.InstanceNorm2d(3), x).mode == "instance"
    assert fused_norm(torch.nn.InstanceNorm2d(3, affine=True), x) is None
    assert fused_norm(torch.nn.InstanceNorm2d(3, track_running_stats=True), x) is None
    assert fused_norm(torch.nn.BatchNorm2d(3), x) is None  # affine
    assert fused_norm(torch.nn.SyncBatchNorm(3, affine=False), x) is None
    hooked = torch.nn.BatchNorm2d(3, affine=False)
    hooked.register_forward_hook(lambda *args: None)
    assert fused_norm(hooked, x) is None
    assert fused_norm(torch.nn.BatchNorm2d(3, affine=False), torch.randn(1, 3, 1, 1)) is None  # module raises
    assert fused_norm(torch.nn.BatchNorm2d(3, affine=False).eval(), torch.randn(1, 3, 1, 1)).mode == "running"


def _saved_bytes(layer, x, seg) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, seg)
    return total


@pytest.mark.parametrize("norm", ["syncbatch", "batch", "instance"])
def test_pattern_path_saves_one_feature_map_not_two(norm):
    torch.manual_seed(0)
    layer = SPADE(64, 3, norm, hidden_nc=16)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 10:40, 5:30] = 1
    labels[1, 30:, 20:] = 2
    sem = one_hot_semantics(labels, 3, False, False)
    x = torch.randn(2, 64, 64, 64, requires_grad=True)
    feature_map = x.numel() * x.element_size()
    layout = LabelLayout(sem, 3, False)
    assert layout.plan((64, 64), 3).sparse
    fused = _saved_bytes(layer, x, layout)
    assert feature_map <= fused <= 1.2 * feature_map, fused / feature_map
    # the same layer unfused (a forward hook on its norm) keeps the normalized map too
    layer.param_free_norm.register_forward_hook(lambda *args: None)
    assert _saved_bytes(layer, x, layout) >= 1.9 * feature_map


def test_pattern_path_keeps_no_tap_matrix_for_the_backward():
    """The per-tap products keep no (hidden, k*k * 2C) copy of the gamma/beta weights for the
    backward (it is rebuilt there); their gradients pass gradcheck and the weights' come back contiguous."""
    torch.manual_seed(0)
    layer = SPADE(256, 3, "batch", hidden_nc=8)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, 4:12, 3:9] = 1
    layout = LabelLayout(one_hot_semantics(labels, 3, False, False), 3, False)
    x = torch.randn(1, 256, 16, 16, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x, layout)
    assert layout.plan((16, 16), 3).sparse
    assert not any(t.shape == (8, 9 * 512) for t in saved)
    weights = (layer.mlp_gamma.weight, layer.mlp_beta.weight)
    hidden = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    small = [w[:3].detach().double().requires_grad_() for w in weights]
    assert torch.autograd.gradcheck(lambda h, a, b: _TapProducts.apply(h, a, b), (hidden, *small))
    out.sum().backward()
    assert all(w.grad is not None and w.grad.is_contiguous() for w in weights)


@pytest.mark.parametrize("chunk", [7, 50, 2**18])
def test_modulate_into_gathers_in_blocks_exactly(monkeypatch, chunk):
    """Block-wise gather + multiply-add equals the full gather, for any block size, in place too."""
    from spade_core.models import patterns

    monkeypatch.setattr(patterns, "GATHER_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 4, generator=g)
    table = torch.randn(9, 10, generator=g)  # (P, 2C)
    ids = torch.randint(0, 9, (2 * 6 * 4,), generator=g)
    rows = table[ids].view(2, 6, 4, 10).permute(0, 3, 1, 2)
    expected = torch.addcmul(rows[:, 5:], x, rows[:, :5])  # one rounding, as the full gather computes it
    columns = table.t().contiguous()
    assert torch.equal(patterns.modulate_into(x, columns, ids, torch.empty_like(x)), expected)
    assert torch.equal(patterns.modulate_into(x, columns[:5], ids, torch.empty_like(x), shift=False), x * rows[:, :5])
    inplace = x.clone()
    assert patterns.modulate_into(inplace, columns, ids, inplace) is inplace and torch.equal(inplace, expected)

    # channels-last: whole rows per pixel, the same numbers
    cl = x.contiguous(memory_format=torch.channels_last)
    got = patterns.modulate_rows_into(cl, table, ids, torch.empty_like(cl))
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, expected)
    scale = table[:, :5].contiguous()
    assert torch.equal(patterns.modulate_rows_into(cl, scale, ids, torch.empty_like(cl), shift=False), x * rows[:, :5])
    buffer = torch.full((3,), float("nan"))  # too small: replaced, never read
    inplace = cl.clone()
    assert patterns.modulate_rows_into(inplace, table, ids, inplace, buffer=buffer) is inplace
    assert torch.equal(inplace, expected)


def test_bag_sum_backward_is_embedding_bags_through_the_shared_incidence():
    """The sparse backward of the summed look-ups equals embedding_bag's, passes gradcheck, warns
    nothing, and its structure is built once per plan index (shared by the layers at that size)."""
    import warnings

    from spade_core.models.patterns import bag_sum

    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:12, 3:9] = 1
    labels[1, 10:, 10:] = 2
    plan = LabelLayout(one_hot_semantics(labels, 3, False, False), 3, False).plan((16, 16), 3)
    rows = int(plan.key_index.max()) + 2
    table = torch.randn(rows, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: bag_sum(plan, plan.key_index, t), (table,))
    weights = torch.randn(plan.key_index.shape[0], 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.autograd.grad((bag_sum(plan, plan.key_index, table) * weights).sum(), table)[0]
    expected = torch.autograd.grad((F.embedding_bag(plan.key_index, table, mode="sum") * weights).sum(), table)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    first = plan.incidence(plan.key_index, rows)
    assert all(a is b for a, b in zip(first, plan.incidence(plan.key_index, rows)))


def test_reusing_layouts_builds_each_plan_once_and_changes_nothing(monkeypatch):
    """Inside ``reusing_layouts`` a generator step and a discriminator step on the same semantics
    build each resolution's plan once, and give exactly the numbers of separate layouts."""
    from spade_core.models import patterns

    g, d = _nets()
    sem = _real(g)
    image = torch.rand(2, 3, *SIZE) * 2 - 1
    separate = _steps(copy.deepcopy(g), copy.deepcopy(d), sem, image, pattern=True)
    built: list[tuple] = []
    original = patterns.make_plan
    monkeypatch.setattr(patterns, "make_plan", lambda keys, size, *a, **k: built.append(tuple(size)) or original(keys, size, *a, **k))
    shared_g = copy.deepcopy(g)
    with shared_g.reusing_layouts():
        shared = _steps(shared_g, copy.deepcopy(d), sem, image, pattern=True)
    assert built and len(built) == len(set(built))  # every size once over both steps
    assert shared.keys() == separate.keys() and all(torch.equal(shared[k], separate[k]) for k in shared)
    built.clear()
    with torch.no_grad():
        g(sem)
        g(sem)
    assert len(built) == 2 * len(set(built))  # outside the context: one layout per forward

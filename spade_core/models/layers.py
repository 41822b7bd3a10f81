"""Small building blocks shared by the networks: spectral norm, parameter-free norms, init.

The state-dict layout of these layers is a contract: it equals the NVlabs reference's, so its
checkpoints load key for key (spectral convs store ``weight_orig``, ``weight_u``, ``weight_v``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn import init
from torch.nn.utils.spectral_norm import SpectralNorm

PARAM_FREE_NORMS = ("instance", "batch", "syncbatch")
# Upsampling steps of the generator per `num_upsampling_layers` (the reference's normal / more / most).
UPSAMPLING_LAYERS = {"normal": 5, "more": 6, "most": 7}


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module`` in PyTorch's hook-based spectral norm (the reference's variant) if enabled.

    The hook keeps ``weight_orig`` / ``weight_u`` / ``weight_v`` (weight compat requires this
    layout) and runs one power iteration per forward call in train mode.
    """
    if not enabled:
        return module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.utils.spectral_norm(module)


def has_spectral_norm(module: nn.Module) -> bool:
    """True when ``module`` carries a hook-based spectral norm on its weight."""
    return hasattr(module, "weight_orig") and hasattr(module, "weight_u")


def zero_padded_conv2d(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` with numeric zero padding and no forward hooks (pre-hooks aside): one
    whose forward a custom autograd function may run as ``F.conv2d`` itself."""
    return (
        type(module) is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(module.padding, str)
        and not module._forward_hooks
    )


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs convs in on ``device_type`` right now (None when it is off)."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _spectral_hook(conv: nn.Module) -> SpectralNorm | None:
    """The ``SpectralNorm`` hook of a plain spectral-normed ``nn.Conv2d`` that ``spectral_conv``
    can run itself (its only hook, on ``weight`` along dim 0, zero numeric padding), else None."""
    if not zero_padded_conv2d(conv):
        return None
    hooks = list(conv._forward_pre_hooks.values())
    if len(hooks) != 1 or not isinstance(hooks[0], SpectralNorm) or hooks[0].name != "weight" or hooks[0].dim != 0:
        return None
    return hooks[0]


def _power_iteration(conv: nn.Module, hook: SpectralNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (u, v, sigma) this forward uses, as the hook computes them: in training,
    ``n_power_iterations`` in-place steps on ``weight_u`` / ``weight_v`` and copies for the graph; in
    eval the buffers. sigma = u^T W v reuses the last step's W v (the hook computes that product
    twice, with the same result): one pass over the weight fewer."""
    u, v = conv.weight_u, conv.weight_v
    matrix = conv.weight_orig.reshape(conv.weight_orig.shape[0], -1)
    with torch.no_grad():
        if not (conv.training and hook.n_power_iterations > 0):
            return u, v, _sigma(conv.weight_orig, u, v)
        for _ in range(hook.n_power_iterations):
            v = F.normalize(torch.mv(matrix.t(), u), dim=0, eps=hook.eps, out=v)
            weight_v = torch.mv(matrix, v)
            u = F.normalize(weight_v, dim=0, eps=hook.eps, out=u)
        # The buffers change in place next forward; the graph keeps these copies.
        u = u.clone(memory_format=torch.contiguous_format)
        v = v.clone(memory_format=torch.contiguous_format)
        return u, v, torch.dot(u, weight_v)


def _sigma(weight_orig: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sigma = u^T W v, W the weight as a matrix (out, rest)."""
    return torch.dot(u, torch.mv(weight_orig.reshape(weight_orig.shape[0], -1), v))


class _SpectralConv2d(torch.autograd.Function):
    """conv2d(x, weight_orig / sigma, bias), sigma = u^T W v (computed by the caller from the same
    weight_orig, u, v), saving x (when the weight needs a gradient), weight_orig, u, v and sigma,
    never a normalized weight.

    The backward returns the whole spectral-norm gradient of ``weight_orig`` (u, v are constants, as
    in torch's hook): G / sigma - (G . W_orig) / sigma^2 u v^T, G the conv's weight gradient.
    The conv is linear in its weight, so when the output gradient is smaller than the weight it is
    divided by sigma first and run back through weight_orig: that yields the input gradient and
    G / sigma at once, and G . W_orig = sigma <input gradient, x> (the conv is bilinear), so the
    weight-sized work is the conv's own plus one rank-1 update (instead of a normalized weight or
    a dot product and a division over the weight). Otherwise G is scaled after the conv's backward.
    (Dividing the forward's output instead of the weight changes the activations' rounding, which
    a following batch norm can amplify: the forward keeps the hook's order of operations.)
    """

    @staticmethod
    def forward(ctx, x, weight_orig, u, v, sigma, bias, stride, padding, dilation, groups, dtype):
        ctx.conv = (stride, padding, dilation, groups, dtype)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        # x only serves the weight gradient: a frozen conv (the discriminator in a generator step)
        # keeps its shape, not its values
        ctx.x_shape = x.shape
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight_orig, u, v, sigma)
        return F.conv2d(x, _cast(weight_orig / sigma, dtype), bias, stride, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight_orig, u, v, sigma = ctx.saved_tensors
        stride, padding, dilation, groups, dtype = ctx.conv
        need_x, need_w = ctx.needs_input_grad[:2]
        need_bias = ctx.needs_input_grad[5]
        if x is None:  # only its shape matters to the input gradient: a broadcast zero stands in
            x = grad.new_zeros((), dtype=weight_orig.dtype if dtype is None else dtype).expand(ctx.x_shape)
        conv = (list(stride), list(padding), list(dilation), False, [0, 0], groups)
        if dtype is None and grad.numel() < weight_orig.numel():
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad / sigma, x, weight_orig, None, *conv, [need_x, need_w, False]
            )
            grad_bias = grad.sum((0, 2, 3)) if need_bias else None
            if need_w:
                if need_x and x.numel() <= weight_orig.numel():
                    projection = torch.dot(grad_x.reshape(-1), x.reshape(-1)) / sigma  # (G . W_orig) / sigma^2
                else:
                    projection = torch.dot(grad_w.reshape(-1), weight_orig.reshape(-1)) / sigma
                grad_w = grad_w.contiguous()
                grad_w.view(grad_w.shape[0], -1).addr_(u * -projection, v)
            return grad_x, grad_w, None, None, None, grad_bias, None, None, None, None, None
        scale_input_grad = dtype is None and need_x and ctx.x_shape.numel() < weight_orig.numel()
        weight = weight_orig if scale_input_grad or not need_x else _cast(weight_orig / sigma, dtype)
        grad_x, grad_w, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, ctx.bias_sizes, *conv, [need_x, need_w, need_bias],
        )
        if scale_input_grad:
            grad_x = grad_x.div_(sigma)
        grad_weight_orig = None
        if need_w:
            grad_w = grad_w.to(weight_orig.dtype).contiguous()
            grad_sigma = -torch.dot(grad_w.view(-1), weight_orig.reshape(-1)) / (sigma * sigma)
            grad_weight_orig = grad_w.div_(sigma)
            grad_weight_orig.view(grad_w.shape[0], -1).addr_(u * grad_sigma, v)
        return grad_x, grad_weight_orig, None, None, None, grad_bias, None, None, None, None, None


def _cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """``t`` cast to ``dtype`` as autocast casts a conv input (floating, not float64); None: as is."""
    if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def spectral_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, for a spectral-normed conv without keeping a copy of its normalized weight.

    Why: torch's spectral-norm hook stores W = weight_orig / sigma on the module every forward
    and ``F.conv2d`` saves that W for backward, so training holds a full extra copy of every
    spectral weight (255 MiB for the ADE20K generator), and its backward makes several more
    weight-sized passes (recomputing W, the u v^T term). Here the hook's work is done in place of
    the hook, with the same numbers up to float rounding (the power iteration updates
    ``weight_u`` / ``weight_v`` in place in training, none in eval, so ``replaying`` still works),
    and the conv runs through ``_SpectralConv2d``, which saves weight_orig, u, v and sigma instead
    of W. Train, eval and no-grad calls all take this route, so a gradient-checkpoint recompute
    (eval-mode spectral norm under ``replaying``) saves the same tensors as the first forward, as
    checkpointing requires. ``conv.weight`` becomes a detached alias of ``weight_orig`` (as right
    after ``nn.utils.spectral_norm``), so no stale normalized copy, or a pre-``.to()`` copy, stays
    alive; nothing reads it (state dicts and the fast package use ``weight_orig``).
    Under autocast x, the weight and bias are cast as autocast would cast them.
    Convs without exactly torch's hook, or with other hooks, run as ``conv(x)``.
    """
    hook = _spectral_hook(conv)
    if hook is None:
        return conv(x)
    conv.weight = conv.weight_orig.detach()
    u, v, sigma = _power_iteration(conv, hook)
    dtype = autocast_dtype(x.device.type)
    x, bias = _cast(x, dtype), _cast(conv.bias, dtype)
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    if not torch.is_grad_enabled():
        return F.conv2d(x, _cast(conv.weight_orig / sigma, dtype), bias, *args)
    return _SpectralConv2d.apply(x, conv.weight_orig, u, v, sigma, bias, *args, dtype)


def run_layers(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the convs inside (plain ``nn.Sequential`` nesting) run by ``spectral_conv``."""
    if type(module) is nn.Sequential and not (module._forward_hooks or module._forward_pre_hooks):
        for child in module:
            x = run_layers(child, x)
        return x
    return spectral_conv(module, x)


@contextmanager
def replaying(module: nn.Module) -> Iterator[None]:
    """Make a second forward of ``module`` (gradient-checkpoint recompute) leave its state alone.

    Spectral-normed layers reuse the u, v their first forward stored instead of iterating again,
    and batch norms keep normalising with batch statistics without updating running statistics
    or ``num_batches_tracked``, so checkpointed training equals plain training exactly.
    """
    restore: list = []
    for m in module.modules():
        if m.training and has_spectral_norm(m):
            restore.append((m, "training", m.training))
            m.training = False
        if m.training and isinstance(m, nn.modules.batchnorm._BatchNorm):
            restore.append((m, "momentum", m.momentum))
            m.momentum = 0.0
            if m.num_batches_tracked is not None:
                restore.append((m.num_batches_tracked, None, m.num_batches_tracked.clone()))
    try:
        yield
    finally:
        for target, attr, value in reversed(restore):
            if attr is None:
                target.copy_(value)
            else:
                setattr(target, attr, value)


class ReferenceSyncBatchNorm2d(nn.SyncBatchNorm):
    """Cross-process batch norm that behaves like the reference's SynchronizedBatchNorm2d.

    Without a process group (or on CPU, where ``torch.nn.SyncBatchNorm`` cannot sync) it is a
    plain batch norm. Like the reference it never increments ``num_batches_tracked``; with a
    fixed momentum that counter does not affect any number, but checkpoints compare equal.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        syncing = (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
            and x.device.type != "cpu"
        )
        if syncing:
            count = self.num_batches_tracked.clone()
            out = super().forward(x)
            self.num_batches_tracked.copy_(count)
            return out
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_batch_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected a 4D input (N,C,H,W), got {x.dim()}D")


@dataclass
class FusedNorm:
    """How a parameter-free norm normalizes one input, for ``patterns.norm_modulate``."""

    mode: str  # "batch" (batch statistics), "running" (running statistics) or "instance"
    running_mean: torch.Tensor | None = None  # updated in place in "batch" mode when given
    running_var: torch.Tensor | None = None
    momentum: float = 0.0
    eps: float = 1e-5


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def fused_norm(module: nn.Module, x: torch.Tensor) -> FusedNorm | None:
    """What ``module(x)`` would compute, for a fused norm + modulation, or None (call ``module``).

    Covers exactly ``param_free_norm``'s modules on a 4D input: ``nn.BatchNorm2d`` /
    ``ReferenceSyncBatchNorm2d`` without affine (batch statistics in training, running ones in
    eval; not under a multi-process group) and ``nn.InstanceNorm2d`` without affine and running
    statistics; modules with hooks go through ``module``. For a training batch norm this does
    the bookkeeping ``module.forward`` does first: it advances ``num_batches_tracked`` (not for
    ``ReferenceSyncBatchNorm2d``, which never does) and picks the momentum (cumulative average
    when ``momentum`` is None).
    """
    if x.dim() != 4 or module._forward_hooks or module._forward_pre_hooks:
        return None
    kind = type(module)
    if kind is nn.InstanceNorm2d:
        if module.affine or module.track_running_stats:
            return None
        return FusedNorm("instance", eps=module.eps)
    if kind not in (nn.BatchNorm2d, ReferenceSyncBatchNorm2d) or module.affine or _distributed():
        return None
    batch_stats = module.training or module.running_mean is None
    if batch_stats and x.numel() // x.shape[1] <= 1:
        return None  # the module raises its own error
    if not batch_stats:
        return FusedNorm("running", module.running_mean, module.running_var, 0.0, module.eps)
    momentum = 0.0 if module.momentum is None else module.momentum
    if kind is nn.BatchNorm2d and module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        momentum = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    if kind is nn.BatchNorm2d and module.training and not module.track_running_stats:
        return FusedNorm("batch", None, None, momentum, module.eps)
    return FusedNorm("batch", module.running_mean, module.running_var, momentum, module.eps)


def param_free_norm(kind: str, num_features: int) -> nn.Module:
    """Normalization without learned affine parameters, as SPADE uses before modulation."""
    if kind == "instance":
        return nn.InstanceNorm2d(num_features, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(num_features, affine=False)
    if kind == "syncbatch":
        return ReferenceSyncBatchNorm2d(num_features, affine=False)
    raise ValueError(f"unknown parameter-free norm {kind!r}: use one of {', '.join(PARAM_FREE_NORMS)}")


def affine_norm(kind: str, num_features: int) -> nn.Module | None:
    """The norm that follows a discriminator / encoder conv ('none' gives no layer).

    Batch norms are affine there and instance norm is not, as in the reference.
    """
    if kind == "instance":
        return nn.InstanceNorm2d(num_features, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(num_features, affine=True)
    if kind == "syncbatch":
        return ReferenceSyncBatchNorm2d(num_features, affine=True)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind!r}: use one of instance, batch, syncbatch, none")


def normalized_conv(conv: nn.Conv2d, norm: str, spectral: bool) -> nn.Module:
    """conv [+ spectral norm] [+ norm]; a following norm makes the conv bias-free (reference layout)."""
    norm_layer = affine_norm(norm, conv.out_channels)
    if norm_layer is not None and conv.bias is not None:
        conv.bias = None
    conv = maybe_spectral_norm(conv, spectral)
    if norm_layer is None:
        return conv
    return nn.Sequential(conv, norm_layer)


def init_weights(module: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> None:
    """The reference's initialisation: conv/linear weights by ``init_type``, biases zero,
    batch-norm scales ~ N(1, gain). Spectral-normed layers are initialised through ``weight_orig``.
    """

    def _init(m: nn.Module) -> None:
        name = type(m).__name__
        if "BatchNorm" in name:
            if getattr(m, "weight", None) is not None:
                init.normal_(m.weight.data, 1.0, gain)
            if getattr(m, "bias", None) is not None:
                init.constant_(m.bias.data, 0.0)
            return
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            return
        weight = m.weight_orig if has_spectral_norm(m) else m.weight
        if init_type == "normal":
            init.normal_(weight.data, 0.0, gain)
        elif init_type == "xavier":
            init.xavier_normal_(weight.data, gain=gain)
        elif init_type == "xavier_uniform":
            init.xavier_uniform_(weight.data, gain=1.0)
        elif init_type == "kaiming":
            init.kaiming_normal_(weight.data, a=0, mode="fan_in")
        elif init_type == "orthogonal":
            init.orthogonal_(weight.data, gain=gain)
        elif init_type == "none":
            m.reset_parameters()
        else:
            raise ValueError(
                f"unknown init_type {init_type!r}: use normal, xavier, xavier_uniform, kaiming, orthogonal or none"
            )
        if getattr(m, "bias", None) is not None:
            init.constant_(m.bias.data, 0.0)

    module.apply(_init)


def parse_spade_norm(norm_G: str) -> dict:
    """Reference ``norm_G`` string ('spectralspadesyncbatch3x3') -> typed generator options."""
    text = norm_G.strip().lower()
    spectral = text.startswith("spectral")
    if spectral:
        text = text[len("spectral"):]
    if not text.startswith("spade"):
        raise ValueError(
            f"norm_G {norm_G!r} is not a SPADE norm: expected [spectral]spade<instance|batch|syncbatch><k>x<k>"
        )
    text = text[len("spade"):]
    for kind in ("syncbatch", "instance", "batch"):
        if text.startswith(kind):
            rest = text[len(kind):]
            parts = rest.split("x")
            if len(parts) == 2 and parts[0].isdigit() and parts[0] == parts[1]:
                return {"spectral_norm": spectral, "param_free_norm": kind, "spade_kernel_size": int(parts[0])}
    raise ValueError(
        f"cannot parse norm_G {norm_G!r}: expected [spectral]spade<instance|batch|syncbatch><k>x<k>, e.g. spectralspadesyncbatch3x3"
    )


def parse_plain_norm(norm: str) -> tuple[bool, str]:
    """Reference ``norm_D`` / ``norm_E`` string ('spectralinstance') -> (spectral, norm kind)."""
    text = norm.strip().lower()
    spectral = text.startswith("spectral")
    if spectral:
        text = text[len("spectral"):]
    text = {"": "none", "sync_batch": "syncbatch"}.get(text, text)
    if text not in ("instance", "batch", "syncbatch", "none"):
        raise ValueError(
            f"cannot parse norm {norm!r}: expected [spectral]<instance|batch|syncbatch|none>, e.g. spectralinstance"
        )
    return spectral, text

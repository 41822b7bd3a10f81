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

PARAM_FREE_NORMS = ("instance", "batch", "syncbatch")


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

"""Where and how numbers are computed: device and dtype names, and whether the network may be used.

One owner for the facts every surface asks: which device ``"auto"`` / ``"cuda:1"`` means here,
which dtype ``"bf16"`` means, whether offline mode is on (read at call time, since
huggingface_hub reads its flag once at import), and how CPU math treats denormal floats.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["DTYPES", "denormals_flushed", "flushing_denormals", "offline", "resolve_device", "resolve_dtype"]

_TRUE = {"1", "true", "yes", "on"}
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``SPADE_OFFLINE``) is set to a true value, read now."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "SPADE_OFFLINE"))


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'float32' | 'float16' | 'bfloat16' (or fp16, bf16, ...) or a torch.dtype -> torch.dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported: use torch.float32, torch.float16 or torch.bfloat16")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported: use float32, float16 or bfloat16")
    return DTYPES[key]


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """'auto' / None (CUDA, then MPS, then CPU), 'cpu', 'cuda[:i]', 'mps' -> a device that exists here.

    A bare 'cuda' names this process's GPU (``cuda:<local_rank>`` under a multi-process launcher).
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not understood: use auto, cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available here: use cpu (or auto)")
        count = torch.cuda.device_count()
        if dev.index is None:
            return torch.device("cuda", local_rank % count)
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} does not exist ({count} CUDA device(s)): use cuda:0")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was asked for but MPS is not available here: use cpu (or auto)")
    return dev


def flushing_denormals() -> bool:
    """Whether this thread's CPU math flushes denormal floats to zero (torch has no getter: a
    float32 denormal is multiplied by one and checked for zero)."""
    return torch.tensor(1e-40, dtype=torch.float32).mul(1.0).item() == 0.0


@contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """On the CPU, flush denormal floats to zero inside the block (tiny activations otherwise slow
    float math by up to 20x; outputs change only below 1.2e-38), then restore the caller's setting."""
    if device.type != "cpu":
        yield
        return
    was_flushing = flushing_denormals()
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported and not was_flushing:
            torch.set_flush_denormal(False)

"""Reusable scratch buffers for the fast inference path.

On CPU a fresh large tensor costs a page fault per 4 KiB the first time it is written; the fast
generator's per-pixel maps and Winograd intermediates have the same sizes on every call, so they
are kept per thread (concurrent calls never share one) and handed out as views by name.
"""

from __future__ import annotations

import threading
from math import prod

import torch

# A buffer above this size is dropped at ``trim`` (after each forward) instead of kept.
KEEP_BYTES = 256 * 2**20


class Workspace:
    """Named flat buffers per thread: ``get(name, shape, like)`` returns an uninitialised view,
    valid until the next ``get`` of the same name on this thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _store(self) -> dict[str, torch.Tensor]:
        if not hasattr(self._local, "store"):
            self._local.store = {}
        return self._local.store

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        store, numel = self._store(), prod(shape)
        buffer = store.get(name)
        # a buffer made under torch.inference_mode cannot be written outside it: make a normal one
        stale = buffer is not None and buffer.is_inference() and not torch.is_inference_mode_enabled()
        if stale or buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            store[name] = buffer
        return buffer[:numel].view(shape)

    def nbytes(self) -> int:
        """Bytes this thread's buffers hold."""
        return sum(b.numel() * b.element_size() for b in self._store().values())

    def trim(self, keep_bytes: int = KEEP_BYTES) -> None:
        """Drop this thread's buffers larger than ``keep_bytes``."""
        store = self._store()
        for name in [n for n, b in store.items() if b.numel() * b.element_size() > keep_bytes]:
            del store[name]

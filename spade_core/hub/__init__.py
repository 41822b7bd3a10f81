"""Hub I/O: NVlabs checkpoint conversion, model cards and publishing (imported on first use)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConvertedNetworks": "nvlabs",
    "convert_nvlabs_checkpoint": "nvlabs",
    "save_converted": "nvlabs",
    "check_state_dict": "nvlabs",
    "NVLABS_LICENSE": "model_card",
    "render_model_card": "model_card",
    "write_model_card": "model_card",
    "read_model_card_metadata": "model_card",
    "PushPlan": "publish",
    "push_folder": "publish",
    "upload_plan": "publish",
    "hub_offline": "publish",
}

__all__ = [
    "NVLABS_LICENSE",
    "ConvertedNetworks",
    "PushPlan",
    "check_state_dict",
    "convert_nvlabs_checkpoint",
    "hub_offline",
    "push_folder",
    "read_model_card_metadata",
    "render_model_card",
    "save_converted",
    "upload_plan",
    "write_model_card",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spade_core.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)

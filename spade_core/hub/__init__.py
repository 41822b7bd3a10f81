"""Hub I/O: the pipeline-folder layout, export, NVlabs conversion, model cards, publishing (imported on first use)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MODEL_INDEX": "names",
    "check_pipeline_folder": "folder",
    "embedded_model_dir": "folder",
    "load_components": "folder",
    "read_label_set": "folder",
    "read_model_index": "folder",
    "resolve_pipeline_folder": "folder",
    "write_pipeline_folder": "folder",
    "ExportResult": "export",
    "convert_nvlabs_to_folder": "export",
    "export_run": "export",
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
    "MODEL_INDEX",
    "NVLABS_LICENSE",
    "ConvertedNetworks",
    "ExportResult",
    "PushPlan",
    "check_pipeline_folder",
    "check_state_dict",
    "convert_nvlabs_checkpoint",
    "convert_nvlabs_to_folder",
    "embedded_model_dir",
    "export_run",
    "hub_offline",
    "load_components",
    "push_folder",
    "read_label_set",
    "read_model_card_metadata",
    "read_model_index",
    "render_model_card",
    "resolve_pipeline_folder",
    "save_converted",
    "upload_plan",
    "write_model_card",
    "write_pipeline_folder",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spade_core.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)

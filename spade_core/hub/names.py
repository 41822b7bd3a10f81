"""The names in a pipeline folder, importable without torch (the ComfyUI nodes list folders at start-up).

``spade_core.hub.folder`` owns the layout and re-exports these; the network files inside each
component folder (config.json, the safetensors weights) are named in ``spade_core.models.files``.
"""

from __future__ import annotations

__all__ = ["DISCRIMINATOR", "ENCODER", "GENERATOR", "MODEL_CARD", "MODEL_INDEX", "PIPELINE_CLASS"]

MODEL_INDEX = "model_index.json"
MODEL_CARD = "README.md"
PIPELINE_CLASS = "SPADEPipeline"
GENERATOR, ENCODER, DISCRIMINATOR = "generator", "encoder", "discriminator"

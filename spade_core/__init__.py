"""spade: SPADE semantic image synthesis (Park et al., CVPR 2019), exact to the reference.

The public classes are imported on first use, so ``import spade_core`` stays cheap; diffusers
resolves the pipeline components of ``model_index.json`` (library ``spade_core``) through them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SPADEGenerator": "spade_core.models",
    "SPADEEncoder": "spade_core.models",
    "MultiscaleDiscriminator": "spade_core.models",
    "SPADEPipeline": "spade_core.pipeline",
    "SPADEPipelineOutput": "spade_core.pipeline",
    "LabelSet": "spade_core.labels",
    "get_label_set": "spade_core.labels",
    # diffusers finds a component's load method through its base class, looked up on the library module.
    "ModelMixin": "diffusers.models.modeling_utils",
}

__all__ = [
    "LabelSet",
    "ModelMixin",
    "MultiscaleDiscriminator",
    "SPADEEncoder",
    "SPADEGenerator",
    "SPADEPipeline",
    "SPADEPipelineOutput",
    "__version__",
    "get_label_set",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spade_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

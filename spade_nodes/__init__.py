"""ComfyUI custom nodes for SPADE (V3 API): load a model and segmaps, encode styles, synthesize.

Inside ComfyUI the repository root's `__init__.py` exposes `comfy_entrypoint`; outside ComfyUI
the node classes import against small stand-ins (`_stub`) so their logic can be tested.
"""

from .nodes import (
    NODES,
    Segmap,
    SPADEEncodeStyle,
    SPADEExtension,
    SPADEImageToSegmap,
    SPADELoadSegmap,
    SPADEModel,
    SPADEModelLoader,
    SPADESynthesize,
    comfy_entrypoint,
)

__all__ = [
    "NODES",
    "SPADEEncodeStyle",
    "SPADEExtension",
    "SPADEImageToSegmap",
    "SPADELoadSegmap",
    "SPADEModel",
    "SPADEModelLoader",
    "SPADESynthesize",
    "Segmap",
    "comfy_entrypoint",
]

"""ComfyUI custom nodes for SPADE (V3 API): load a model and segmaps, encode styles, synthesize.

Inside ComfyUI the repository root's `__init__.py` exposes `comfy_entrypoint`; outside ComfyUI
the node classes import against small stand-ins (`_stub`) so their logic can be tested.
"""

from . import nodes
from .nodes import *  # noqa: F403 - the node classes, NODES and comfy_entrypoint

__all__ = nodes.__all__

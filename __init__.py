"""ComfyUI node-pack entry: cloned into ComfyUI/custom_nodes/, this folder is imported as a package.

It imports `spade_nodes` (and with it `spade_core`) from this checkout, whether or not the project
is also pip-installed, then takes the checkout off sys.path again so its folders cannot shadow
ComfyUI's own modules; submodules load later through the imported packages. It exposes ComfyUI's
V3 `comfy_entrypoint`.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _ROOT)
try:
    from spade_nodes import comfy_entrypoint
finally:
    sys.path.remove(_ROOT)

__all__ = ["comfy_entrypoint"]

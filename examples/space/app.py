"""Hugging Face Space entry point: the spade GauGAN-style painter.

Environment: SPADE_MODEL ('embedded' by default, a pipeline folder or a Hub repo id) and
SPADE_CONCURRENCY (inference requests run at once, default 1; more queue up).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from spade_core.demo import build_demo

demo = build_demo(
    model=os.environ.get("SPADE_MODEL") or None,
    concurrency_limit=int(os.environ.get("SPADE_CONCURRENCY", "1")),
)

if __name__ == "__main__":
    demo.launch()

"""Hugging Face Space entry point: the spade GauGAN-style painter.

Environment (the operator's settings; visitors only choose among the models named here):
- SPADE_MODEL: the model the app starts with: 'embedded' (default), a pipeline folder, a Hub repo id,
  or a NAME from SPADE_MODELS.
- SPADE_MODELS: more models visitors may switch to, comma-separated; each a pipeline folder, a Hub repo
  id or 'embedded', or NAME=SOURCE to show NAME instead of the source (keeps folder paths off the page).
  Nothing else can be loaded through the app, whatever a request sends.
- SPADE_MAX_FILE_SIZE: the upload limit (default '10mb'); SPADE_MAX_IMAGE_PIXELS lowers the pixel
  limit of input images (the demo's default is 4096x4096).
- SPADE_CONCURRENCY: inference requests run at once (default 1; more queue up).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from spade_core.demo import build_demo
from spade_core.demo.app import DEFAULT_MAX_FILE_SIZE, models_from_text

demo = build_demo(
    model=os.environ.get("SPADE_MODEL") or None,
    models=models_from_text(os.environ.get("SPADE_MODELS")),
    concurrency_limit=int(os.environ.get("SPADE_CONCURRENCY", "1")),
    max_file_size=os.environ.get("SPADE_MAX_FILE_SIZE") or DEFAULT_MAX_FILE_SIZE,
)

if __name__ == "__main__":
    demo.launch()  # applies the upload limit and the decoding limit (build_demo's settings)

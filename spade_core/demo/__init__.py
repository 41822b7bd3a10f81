"""The Gradio demo (GauGAN-style painting): `build_demo(pipe)` -> gr.Blocks, `launch_demo(model)` serves it."""

from spade_core.demo.app import build_demo, launch_demo
from spade_core.demo.layouts import blank_layout, canvas_to_labels, example_layouts, legend_html

__all__ = ["blank_layout", "build_demo", "canvas_to_labels", "example_layouts", "launch_demo", "legend_html"]

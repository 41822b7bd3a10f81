"""Procedural landscapes: label maps plus photo-like images, the training data of the embedded model.

The layout (horizon, fractal mountain ridges with snow and rock, clouds, lakes / rivers / sea with
sand shores, grass, tree clusters, a road) comes from the seed alone. The style (time of day,
season, weather and a few continuous knobs) only changes how that layout is painted, so a VAE
style encoder has a real, layout-independent signal to learn. Everything is numpy (one
`np.random.default_rng` stream per purpose), so a seed gives identical bytes on a given install.

Modules, in the order a render runs: `classes` (the class order, a contract), `style` (the look),
`noise` and `textures` (seeded fields, photo texture pyramids), `layout` and `objects` (the label map
and its geometry), `colours` and `paint` (the image), `render` (`render_landscape`), `dataset`
(files and a torch Dataset).
"""

from .classes import LANDSCAPE_CLASSES, landscape_label_set
from .dataset import SyntheticLandscapes, write_synthetic_dataset
from .render import LandscapeSample, render_landscape
from .style import LandscapeStyle

__all__ = [
    "LANDSCAPE_CLASSES",
    "LandscapeSample",
    "LandscapeStyle",
    "SyntheticLandscapes",
    "landscape_label_set",
    "render_landscape",
    "write_synthetic_dataset",
]

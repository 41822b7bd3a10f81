"""The palette: sky, sun, cloud, ground and tree colours per time of day and season, and the weather's
effect on them (`lighting`). All RGB in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import GRASS, MOUNTAIN, ROAD, ROCK, SAND, SNOW, WATER
from .style import LandscapeStyle

_SKY_COLOURS = {  # (zenith, horizon) RGB in [0, 1]
    "day": ((0.20, 0.42, 0.82), (0.68, 0.80, 0.93)),
    "sunset": ((0.20, 0.22, 0.50), (1.00, 0.58, 0.28)),
    "dusk": ((0.05, 0.06, 0.18), (0.48, 0.30, 0.45)),
}
_LIGHT = {  # sun colour, sun strength, ambient colour, sun elevation (radians), sun row above horizon
    "day": ((1.0, 0.96, 0.88), 0.75, (0.52, 0.58, 0.70), 0.95, 0.55),
    "sunset": ((1.0, 0.62, 0.32), 0.95, (0.40, 0.33, 0.44), 0.17, 0.07),
    "dusk": ((0.55, 0.40, 0.55), 0.15, (0.27, 0.27, 0.42), -0.05, -0.03),
}
_CLOUD_COLOURS = {  # lit top, shadowed base
    "day": ((1.0, 1.0, 1.0), (0.66, 0.69, 0.78)),
    "sunset": ((1.0, 0.70, 0.50), (0.42, 0.32, 0.48)),
    "dusk": ((0.50, 0.38, 0.52), (0.16, 0.15, 0.26)),
}
ALBEDO = {  # per season: class -> RGB albedo
    "summer": {GRASS: (0.30, 0.55, 0.14), MOUNTAIN: (0.40, 0.35, 0.30), ROCK: (0.50, 0.49, 0.47),
               SNOW: (0.96, 0.97, 1.0), SAND: (0.88, 0.77, 0.55), ROAD: (0.30, 0.29, 0.29),
               WATER: (0.04, 0.20, 0.26)},
    "autumn": {GRASS: (0.47, 0.46, 0.17), MOUNTAIN: (0.46, 0.36, 0.28), ROCK: (0.52, 0.48, 0.44),
               SNOW: (0.96, 0.97, 1.0), SAND: (0.80, 0.68, 0.48), ROAD: (0.33, 0.30, 0.28),
               WATER: (0.08, 0.16, 0.16)},
    "winter": {GRASS: (0.90, 0.92, 0.96), MOUNTAIN: (0.52, 0.52, 0.56), ROCK: (0.46, 0.46, 0.48),
               SNOW: (0.97, 0.98, 1.0), SAND: (0.80, 0.75, 0.66), ROAD: (0.50, 0.50, 0.53),
               WATER: (0.38, 0.48, 0.58)},
}
TREE_COLOURS = {  # deciduous options (picked by per-tree variation), conifer colour
    "summer": (((0.10, 0.33, 0.08), (0.16, 0.40, 0.10), (0.22, 0.42, 0.12)), (0.05, 0.22, 0.10)),
    "autumn": (((0.80, 0.38, 0.06), (0.65, 0.16, 0.06), (0.85, 0.62, 0.10), (0.45, 0.40, 0.10)), (0.06, 0.22, 0.10)),
    "winter": (((0.34, 0.29, 0.26), (0.40, 0.35, 0.31)), (0.06, 0.18, 0.12)),
}


def mix(a: np.ndarray, b: np.ndarray | tuple, t: np.ndarray | float) -> np.ndarray:
    """Linear interpolation a -> b by t (broadcasting)."""
    return a + (np.asarray(b, np.float32) - a) * t


@dataclass
class Lighting:
    """The colours and light of one style, weather applied (RGB float32 arrays of shape (3,))."""

    zenith: np.ndarray  # sky colour overhead
    horizon: np.ndarray  # sky colour at the horizon
    sun: np.ndarray  # sun colour
    sun_strength: float  # direct light multiplier
    ambient: np.ndarray  # sky light colour
    elevation: float  # sun elevation in radians (sets the light direction)
    sun_row: float  # sun height above the horizon, in image heights
    cloud_lit: np.ndarray  # cloud tops
    cloud_dark: np.ndarray  # cloud bases
    haze_density: float  # distance fog per world unit


def lighting(style: LandscapeStyle) -> Lighting:
    """The time of day's colours, greyed and softened by overcast or hazy weather."""
    zenith, horizon_c = (np.asarray(c, np.float32) for c in _SKY_COLOURS[style.time_of_day])
    sun_c, sun_k, ambient, elev, sun_row = _LIGHT[style.time_of_day]
    sun_c, ambient = np.asarray(sun_c, np.float32), np.asarray(ambient, np.float32)
    cloud_lit, cloud_dark = (np.asarray(c, np.float32) for c in _CLOUD_COLOURS[style.time_of_day])
    haze_density = 0.002 + 0.012 * style.haze
    if style.weather == "overcast":
        grey = np.float32({"day": 0.72, "sunset": 0.55, "dusk": 0.36}[style.time_of_day])
        zenith = mix(zenith, grey * np.array([0.95, 0.97, 1.0], np.float32), 0.85)
        horizon_c = mix(horizon_c, grey * np.array([1.02, 1.0, 0.98], np.float32) * 1.1, 0.8)
        ambient = mix(ambient, np.full(3, grey * 1.05, np.float32), 0.7)
        sun_k *= 0.15
        cloud_lit, cloud_dark = grey * np.float32(1.08) * np.ones(3, np.float32), cloud_dark * 0.6 + grey * 0.35
        haze_density += 0.01
    elif style.weather == "hazy":
        zenith = mix(zenith, horizon_c, 0.45)
        horizon_c = mix(horizon_c, (0.92, 0.90, 0.86), 0.45 if style.time_of_day == "day" else 0.2)
        sun_k *= 0.6
        ambient = ambient * 1.1
        haze_density += 0.035
    return Lighting(zenith=zenith, horizon=horizon_c, sun=sun_c, sun_strength=sun_k, ambient=ambient,
                    elevation=elev, sun_row=sun_row, cloud_lit=cloud_lit, cloud_dark=cloud_dark,
                    haze_density=haze_density)

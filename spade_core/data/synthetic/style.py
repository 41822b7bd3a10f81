"""How a layout is painted (time of day, season, weather, continuous knobs); never the label map."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TIMES_OF_DAY: tuple[str, ...] = ("day", "sunset", "dusk")
SEASONS: tuple[str, ...] = ("summer", "autumn", "winter")
WEATHERS: tuple[str, ...] = ("clear", "overcast", "hazy")


@dataclass(frozen=True)
class LandscapeStyle:
    """How a layout is painted; nothing here changes the label map."""

    time_of_day: str = "day"  # day | sunset | dusk: sky colours, sun height, light colour
    season: str = "summer"  # summer | autumn | winter: vegetation, ground and water colours
    weather: str = "clear"  # clear | overcast | hazy: sun strength, sky greyness, distance haze
    sun_x: float = 0.35  # horizontal sun position in [0, 1], left to right; sets the light direction
    haze: float = 0.3  # extra distance haze in [0, 1]
    saturation: float = 1.0  # colour saturation multiplier in [0.5, 1.5]
    exposure: float = 1.0  # brightness multiplier in [0.5, 1.5]
    warmth: float = 0.0  # colour temperature shift in [-1, 1], cool to warm

    def __post_init__(self) -> None:
        for name, options in (("time_of_day", TIMES_OF_DAY), ("season", SEASONS), ("weather", WEATHERS)):
            if getattr(self, name) not in options:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported: pass one of {', '.join(options)}")
        for name, lo, hi in (("sun_x", 0, 1), ("haze", 0, 1), ("saturation", 0.5, 1.5),
                             ("exposure", 0.5, 1.5), ("warmth", -1, 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r} is out of range: pass a number in [{lo}, {hi}]")
            object.__setattr__(self, name, float(value))

    @classmethod
    def random(cls, rng: np.random.Generator) -> LandscapeStyle:
        """A style drawn from the distribution the synthetic dataset uses."""
        return cls(
            time_of_day=TIMES_OF_DAY[rng.choice(3, p=[0.5, 0.3, 0.2])],
            season=SEASONS[rng.choice(3, p=[0.45, 0.3, 0.25])],
            weather=WEATHERS[rng.choice(3, p=[0.55, 0.25, 0.2])],
            sun_x=round(float(rng.uniform(0.1, 0.9)), 4),
            haze=round(float(rng.uniform(0.0, 1.0)), 4),
            saturation=round(float(rng.uniform(0.8, 1.2)), 4),
            exposure=round(float(rng.uniform(0.88, 1.12)), 4),
            warmth=round(float(rng.uniform(-1.0, 1.0)), 4),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; `LandscapeStyle(**d)` reads it back."""
        return asdict(self)

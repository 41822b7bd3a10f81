"""Training: TrainConfig, the Trainer, checkpoints, logging and distributed helpers.

Imports flow one way: this package uses labels, segmap, data, models and losses, never hub,
pipeline or cli.
"""

import importlib
from typing import Any

__all__ = [
    "LossSettings",
    "TrainConfig",
    "Trainer",
    "discriminator_losses",
    "generator_losses",
    "latest_checkpoint",
    "list_checkpoints",
    "load_run_networks",
]


_HOMES = {
    "LossSettings": "steps",
    "TrainConfig": "config",
    "Trainer": "trainer",
    "discriminator_losses": "steps",
    "generator_losses": "steps",
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_run_networks": "checkpoint",
}


def __getattr__(name: str) -> Any:
    """Names are imported on first use, so reading TrainConfig (e.g. for `spade train --help`) stays cheap."""
    if name not in _HOMES:
        raise AttributeError(f"module 'spade_core.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)

"""Training: TrainConfig, the Trainer, checkpoints, logging and distributed helpers.

Imports flow one way: this package uses labels, segmap, data, models and losses, never hub,
pipeline or cli.
"""

from .checkpoint import latest_checkpoint, list_checkpoints, load_run_networks
from .config import TrainConfig
from .steps import LossSettings, discriminator_losses, generator_losses

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


def __getattr__(name: str):
    """Trainer is imported on first use (it pulls in the data package)."""
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'spade_core.train' has no attribute {name!r}")

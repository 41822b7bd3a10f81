"""File names of a saved network folder (diffusers' layout): one owner for the training checkpoints and the Hub."""

from __future__ import annotations

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME"]

# A network's folder holds its constructor arguments and its weights (ModelMixin.save_pretrained).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

"""The SPADE networks: generator, VAE style encoder, multi-scale discriminator."""

from .blocks import SPADEResnetBlock
from .discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from .encoder import SPADEEncoder, reparameterize
from .generator import BlockStep, SPADEGenerator, latent_size
from .normalization import SPADE
from .patterns import LabelLayout
from .presets import available_presets, preset_options, register_preset

__all__ = [
    "SPADE",
    "SPADEResnetBlock",
    "SPADEGenerator",
    "BlockStep",
    "LabelLayout",
    "SPADEEncoder",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "reparameterize",
    "latent_size",
    "available_presets",
    "preset_options",
    "register_preset",
]

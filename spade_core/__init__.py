"""spade: SPADE semantic image synthesis (Park et al., CVPR 2019), exact to the reference."""

__version__ = "0.1.0"

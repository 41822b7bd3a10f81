"""``python -m spade_core.train``: the ``spade train`` command (also under torchrun / accelerate launch)."""

import sys

from .command import main

sys.exit(main())

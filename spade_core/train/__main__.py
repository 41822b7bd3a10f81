"""``python -m spade_core.train``: the ``spade train`` command (also under torchrun / accelerate launch)."""

import sys

from spade_core.cli import main

sys.exit(main(["train", *sys.argv[1:]]))

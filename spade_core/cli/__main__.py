"""``python -m spade_core.cli``: the ``spade`` command."""

import sys

from . import main

sys.exit(main())

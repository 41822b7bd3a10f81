"""Start-up cost of the command line: `spade COMMAND --help` imports no more than torch.

Measured by what is imported, not by time (these machines are shared): diffusers, Gradio, the
trainer and the evaluation stack load only when a command runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spade_core.cli import COMMANDS

HEAVY = ("diffusers", "gradio", "spade_core.train.trainer", "spade_core.eval.runner", "spade_core.pipeline", "scipy")
PROBE = """
import json, sys
from spade_core.cli import main
try:
    main([{command!r}, "--help"])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_help_imports_nothing_heavy(command):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command, heavy=HEAVY)], capture_output=True, text=True, check=True
    )
    assert "usage: spade " + command in result.stdout
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"spade {command} --help imported {loaded}"

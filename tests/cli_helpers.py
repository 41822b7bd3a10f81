"""Running the `spade` command in-process in tests, and checking the one-line error policy."""

from __future__ import annotations

import re

from spade_core.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``spade ARGV...`` run in this process."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(result: tuple[int, str, str], pattern: str) -> str:
    """Exit status 2 and exactly one ``spade: error:`` line matching ``pattern``; returns that line."""
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("spade: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]

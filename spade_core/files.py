"""Reading the small JSON files spade writes and reads (model indexes, configs, label sets, checkpoint state).

One reader for all of them, so a missing, corrupt or mistyped file is always one line that names
the file and the fix the caller knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_json"]


def read_json(path: str | Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line error naming the file and ``fix`` (missing, invalid, not an object)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}): {fix}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file: {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object: {fix}")
    return data

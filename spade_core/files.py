"""The small files spade writes and reads (model indexes, configs, label sets, checkpoint state, caches).

One reader for JSON objects, so a missing, corrupt or mistyped file is always one line that names
the file and the fix the caller knows; one atomic writer, so an interruption or a full disk never
leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TMP_PREFIX", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "read_json"]

TMP_PREFIX = ".tmp-"  # temporary files and folders being written; never a finished file


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


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk (after a rename), where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))

"""The command line's one error policy: a user mistake is one line, ``spade: error: ...``, exit status 2.

Library messages name keyword arguments; here their hints are rewritten in the flags of the
command that raised them. A missing optional package, an unreachable network and an exhausted
memory are the user's to fix too; anything else (a bug of ours) keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
# Optional dependencies by import name -> (what to call it, the extra that installs it).
EXTRAS = {
    "gradio": ("Gradio", "demo"),
    "gradio_client": ("Gradio", "demo"),
    "datasets": ("the datasets library", "train"),
    "skimage": ("scikit-image", "train"),
    "scipy": ("SciPy", "eval"),
    "yaml": ("PyYAML", "train"),
    "tensorboard": ("TensorBoard", "train"),
    "accelerate": ("Accelerate", "train"),
}
# Keyword names in library messages -> the flags that set them, per command (hints in CLI words).
CLI_WORDS: dict[str, list[tuple[str, str]]] = {
    "synthesize": [
        # sizes: the library speaks height x width, --size is width x height
        (r"\bsize (\d+)x(\d+) \(HxW\)", r"--size \2x\1"),
        (r"\(e\.g\. (\d+)x(\d+)\); the native size is (\d+)x(\d+)",
         r"(e.g. --size \2x\1); the native size is \4x\3 (width x height)"),
        (r"\b(\d+)x(\d+) \(HxW\)", r"\2x\1 (width x height)"),
        (r"\bomit height/width\b", "omit --size"),
        (r"\b(?:a smaller )?height/width\b", "a smaller --size"),
        (r"\ba lower num_images_per_segmap\b", "a lower --num"),
        (r"\bnum_images_per_segmap\b", "--num"),
        (r"\bstyle_image / style / latents\b", "--style"),
        (r"\bstyle_image\b", "--style"),
        (r"\binstance_map\b", "--instance"),
        (r"pass nearest=True \(nearest_color=True when coercing a segmap\)", "pass --nearest-color"),
        (r"\bpass unknown='dontcare'", "pass --unknown dontcare"),
        (r"torch_dtype=torch\.float32", "--dtype float32"),
    ],
    "push": [(r"\bdry_run=True\b", "--dry-run")],
}
# torch reports a failed CPU allocation as a RuntimeError ("DefaultCPUAllocator: can't allocate memory").
_OOM = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)


class UsageParser(argparse.ArgumentParser):
    """argparse with usage errors in the house format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"spade: error: {message} (see `{self.prog} --help`)\n")


def one_line(err: BaseException) -> str:
    """An error's message on one line (a DataLoader worker's traceback reduced to its last line)."""
    text = str(err)
    if "\n" in text:
        marker = f"{type(err).__name__}: "
        last = [line for line in text.splitlines() if line.startswith(marker)]
        if last:
            text = last[-1][len(marker):]
    return " ".join(text.split()) or type(err).__name__


def in_cli_words(command: str | None, message: str) -> str:
    """A library message with its keyword-argument hints replaced by the flags of ``command``."""
    for pattern, flag in CLI_WORDS.get(command or "", []):
        message = re.sub(pattern, flag, message)
    return message


def missing_extra(command: str | None, err: ImportError) -> str | None:
    """The one-line message for an optional dependency that is not installed, or None for our own modules.

    The missing module is read from the error or the import error it replaced (``raise ... from None``
    keeps it as the context); an error that names no module but says how to install is passed on.
    """
    name = ""
    seen: BaseException | None = err
    while seen is not None and not name:
        if isinstance(seen, ImportError):
            name = seen.name or ""
            match = None if name else re.search(r"No module named '([\w.]+)'", str(seen))
            name = (match.group(1) if match else name).split(".")[0]
        seen = seen.__cause__ or seen.__context__
    if not name:
        return one_line(err) if "pip install" in str(err) else None
    if name in ("spade_core", "spade_nodes"):
        return None
    what, extra = EXTRAS.get(name, (f"the Python package {name}", None))
    install = f"pip install 'spade[{extra}]'" if extra else f"pip install {name}"
    who = f"spade {command}" if command else "spade"
    return f"{who} needs {what}, which is not installed here: {install}"


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Connection failures of the HTTP stacks already loaded (no import when none is)."""
    if "huggingface_hub" not in sys.modules:
        return (ConnectionError, TimeoutError)
    from ..hub.publish import network_errors

    return network_errors()


def _memory_error_types() -> tuple[type[BaseException], ...]:
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return (MemoryError, oom) if oom is not None else (MemoryError,)


def fail(message: str) -> int:
    """Print ``spade: error: message`` on stderr; return the user-mistake exit status."""
    print(f"spade: error: {message}", file=sys.stderr)
    return 2


def run_guarded(command: str | None, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command, turning user mistakes into one line and exit status 2."""
    try:
        return int(run(args) or 0)
    except USER_ERRORS as err:
        return fail(in_cli_words(command, one_line(err)))
    except ImportError as err:
        message = missing_extra(command, err)
        if message is None:
            raise
        return fail(message)
    except Exception as err:  # network and memory failures are the user's to fix, not tracebacks
        if isinstance(err, _network_error_types()):
            fix = "retry, or pass --dry-run to check the folder without uploading" if command == "push" else (
                "check the connection and retry, or use local files (HF_HUB_OFFLINE=1 with a cached model)"
            )
            return fail(f"the Hugging Face Hub or the network could not be reached ({one_line(err)[:200]}): {fix}")
        if isinstance(err, _memory_error_types()) or (isinstance(err, RuntimeError) and _OOM.search(str(err))):
            hint = "a smaller --size or --num" if command == "synthesize" else "smaller inputs or settings"
            return fail(f"out of memory during spade {command} ({one_line(err)[:200]}): try {hint}, or free memory")
        raise
    except KeyboardInterrupt:
        print("spade: interrupted", file=sys.stderr)
        return 130

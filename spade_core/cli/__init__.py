"""The ``spade`` command: one module per command group, one error printer (``errors.py``).

Each command module imports only the standard library at module level and is imported only when
its command is chosen, so ``spade COMMAND --help`` costs at most what that command's options need.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from .errors import UsageParser, fail, run_guarded

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, and the module (in this package) with its ``add_arguments`` / ``run``."""

    name: str
    help: str
    module: str
    run_name: str = "run"
    arguments_name: str = "add_arguments"

    def load(self) -> tuple:
        """(add_arguments, run) of this command, importing its module."""
        module = importlib.import_module(f"{__name__}.{self.module}")
        return getattr(module, self.arguments_name), getattr(module, self.run_name)


COMMANDS: list[Command] = [
    Command("synthesize", "turn segmentation maps into images", "synthesize"),
    Command("convert-nvlabs", "convert NVlabs/SPADE checkpoints to a pipeline folder", "models",
            "run_convert", "add_convert_arguments"),
    Command("export", "turn a training run into a pipeline folder", "models", "run_export", "add_export_arguments"),
    Command("train", "train or fine-tune a model", "train"),
    Command("palette", "show a label set's classes and colours", "labels"),
    Command("push", "upload a pipeline folder to the Hugging Face Hub", "models", "run_push", "add_push_arguments"),
    Command("eval", "score a model on a labelled dataset (FID, KID, mIoU)", "eval"),
    Command("data", "generate training data (procedural landscapes)", "data"),
    Command("demo", "paint a layout in the browser (Gradio app)", "demo"),
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's options are built (the others take any arguments unseen)."""
    from .. import __version__

    parser = UsageParser(prog="spade", description="SPADE semantic image synthesis (Park et al., CVPR 2019).")
    parser.add_argument("--version", action="version", version=f"spade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UsageParser)
    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for command in COMMANDS:
        description = command.help[0].upper() + command.help[1:] + "."
        p = sub.add_parser(command.name, help=command.help, description=description)
        if command.name == chosen:
            add_arguments, run = command.load()
            add_arguments(p)
            p.set_defaults(run=run)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spade`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    if getattr(args, "run", None) is None:
        names = ", ".join(c.name for c in COMMANDS)
        return fail(f"choose a command ({names}); see `spade --help`")
    return run_guarded(args.command, args.run, args)

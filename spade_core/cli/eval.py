"""``spade eval``: score a model on a labelled dataset."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade eval`` (eval_command imports only the standard library at module level)."""
    from ..eval_command import add_eval_arguments

    add_eval_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Score a model on a labelled dataset."""
    from ..eval_command import run_eval

    return run_eval(args)

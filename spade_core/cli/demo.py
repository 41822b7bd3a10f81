"""``spade demo``: serve the Gradio painting app with the models its operator names here, and no others."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spade demo``."""
    p.add_argument("--model", metavar="REPO|DIR", help="the default model: pipeline folder or Hub repo id (default: the embedded model)")
    p.add_argument("--allow-model", action="append", dest="allow_models", metavar="REPO|DIR",
                   help="another model visitors may pick (repeatable); nothing else is ever loaded")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument("--concurrency", type=int, default=1, help="requests synthesized at the same time (default 1)")
    p.add_argument("--max-file-size", default="10mb", metavar="SIZE", help="largest upload, e.g. 10mb (default 10mb)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="largest image in pixels, checked before decoding (default 4096x4096)")


def run(args: argparse.Namespace) -> int:
    """Serve the Gradio painting demo until interrupted."""
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    from ..demo import launch_demo

    launch_demo(
        model=args.model,
        models=args.allow_models,
        host=args.host,
        port=args.port,
        share=args.share,
        concurrency_limit=args.concurrency,
        max_file_size=args.max_file_size,
        max_pixels=args.max_pixels,
    )
    return 0

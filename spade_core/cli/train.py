"""``spade train`` (and ``python -m spade_core.train``): command-line options -> TrainConfig -> Trainer.

Precedence, lowest first: TrainConfig defaults, ``--preset``, the run's saved config (with
``--resume``), ``--config FILE``, ``--set KEY=VALUE``, then the dedicated flags. Only flags given
on the command line override anything.

Every value is checked before anything is allocated or written, and a refused value is named
where it came from: ``runs/x/config.json: ngf ...``, ``--ngf ...`` or ``--set ngf ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..train.config import (
    PRECISIONS,
    SCHEDULE_UNITS,
    OptionError,
    TrainConfig,
    format_config,
    read_config_file,
)

# flag dest -> TrainConfig field
_FLAGS: dict[str, str] = {
    "data": "data_root",
    "format": "format",
    "split": "split",
    "label_set": "label_set",
    "out": "out_dir",
    "max_steps": "max_steps",
    "batch_size": "batch_size",
    "crop_size": "crop_size",
    "load_size": "load_size",
    "preprocess_mode": "preprocess_mode",
    "ngf": "ngf",
    "ndf": "ndf",
    "use_vae": "use_vae",
    "no_vgg": "no_vgg",
    "vgg_weights": "vgg_weights",
    "lr": "lr",
    "no_ttur": "no_TTUR",
    "niter": "niter",
    "niter_decay": "niter_decay",
    "schedule_unit": "schedule_unit",
    "gan_mode": "gan_mode",
    "checkpoint_every": "checkpoint_every",
    "keep_checkpoints": "keep_checkpoints",
    "sample_every": "sample_every",
    "log_every": "log_every",
    "seed": "seed",
    "num_workers": "num_workers",
    "precision": "precision",
    "channels_last": "channels_last",
    "gradient_checkpointing": "gradient_checkpointing",
    "ema_decay": "ema_decay",
    "device": "device",
    "init_from": "init_from",
}
# TrainConfig field (or run choice) -> the flag that sets it
FIELD_FLAGS: dict[str, str] = {
    **{field: "--" + dest.replace("_", "-") for dest, field in _FLAGS.items()},
    "preset": "--preset",
    "progress": "--no-progress",
    "resume": "--resume",
    "overwrite": "--overwrite",
    "resume_from": "--resume-from",
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``spade train`` options to ``parser`` (every default is None: unset flags change nothing)."""
    add = parser.add_argument
    add("--data", metavar="DIR", help="dataset folder (not needed for --format synthetic)")
    from ..data.registry import available_formats
    from ..registry import DATASETS

    label_sets = ", ".join(sorted({entry.label_set for entry in DATASETS.values()}))
    add("--format", help=f"dataset format: {', '.join(available_formats())}")
    add("--split", help="dataset split (default train)")
    add("--label-set", help=f"built-in label set: {label_sets} (default: the format's own)")
    add("--preset", help=f"take the network and preprocessing settings of a preset: {', '.join(sorted(DATASETS))}")
    add("--config", metavar="FILE", help="YAML or JSON file of TrainConfig fields")
    add("--out", metavar="RUN_DIR", help="run folder for config, checkpoints, samples and logs (default runs/spade)")
    add("--resume", action="store_true",
        help="continue the run in --out from its latest complete checkpoint (a corrupt one is skipped with a warning)")
    add("--resume-from", metavar="STEP_OR_DIR",
        help="continue the run in --out from this checkpoint: a step number, a step_XXXXXXX name or a checkpoint folder")
    add("--overwrite", action="store_true",
        help="replace the run already in --out (its config, logs, samples and checkpoints are deleted)")
    add("--max-steps", type=int, help="stop after this many steps (default: niter + niter_decay epochs)")
    add("--batch-size", type=int, help="images per step and process (default 1)")
    add("--crop-size", type=int, help="training image width (default 256)")
    add("--load-size", type=int, help="resize target before cropping (default crop size x 286/256)")
    add("--preprocess-mode", help="reference preprocess mode (default resize_and_crop)")
    add("--ngf", type=int, help="generator width (default 64)")
    add("--ndf", type=int, help="discriminator width (default 64)")
    add("--use-vae", action="store_true", default=None, help="train the style encoder too (multi-modal synthesis)")
    add("--no-vgg", action="store_true", default=None, help="skip the VGG perceptual loss (no VGG19 weights needed)")
    add("--vgg-weights", metavar="FILE", help="local VGG19 weight file (vgg19-dcbb9e9d.pth)")
    add("--lr", type=float, help="base learning rate (default 0.0002; TTUR gives G lr/2, D lr*2)")
    add("--no-ttur", action="store_true", default=None, help="equal G/D learning rates, Adam betas (0.5, 0.999)")
    add("--niter", type=int, help="epochs (or steps) at the initial learning rate (default 50)")
    add("--niter-decay", type=int, help="epochs (or steps) of linear decay to zero (default 0)")
    add("--schedule-unit", choices=SCHEDULE_UNITS, help="unit of --niter / --niter-decay (default epoch)")
    add("--gan-mode", choices=("hinge", "ls", "original", "w"), help="adversarial loss (default hinge)")
    add("--checkpoint-every", type=int, help="steps between checkpoints (default 5000)")
    add("--keep-checkpoints", type=int, help="number of newest checkpoints kept (default 3)")
    add("--sample-every", type=int, help="steps between sample grids, 0 for none (default 1000)")
    add("--log-every", type=int, help="steps between metric records (default 100)")
    add("--seed", type=int, help="seed of weights, data order, crops and noise (default 0)")
    add("--num-workers", type=int, help="data loading processes per rank (default 2)")
    add("--precision", choices=PRECISIONS, help="fp32, bf16 or fp16 autocast (default fp32)")
    add("--channels-last", action="store_true", default=None, help="NHWC memory format")
    add("--gradient-checkpointing", action="store_true", default=None,
        help="recompute generator blocks in backward")
    add("--ema-decay", type=float, help="decay of the generator's moving average (default 0.999)")
    add("--no-ema", action="store_true", help="keep no moving average of the generator")
    add("--device", help="cuda, cpu, mps, ... (default: cuda when available)")
    add("--init-from", metavar="DIR",
        help="start from the weights in DIR/generator [discriminator encoder], e.g. convert-nvlabs output")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="set any TrainConfig field (YAML value), repeatable")
    add("--print-config", action="store_true", help="print the resolved configuration (YAML) and exit")
    return parser


def _parse_set(items: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        changes[key.strip().replace("-", "_")] = _parse_value(value)
    return changes


def _parse_value(text: str) -> Any:
    try:
        import yaml

        return yaml.safe_load(text)
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text


# where a field's value came from: ("default" | "file" | "set" | "flag", the file path or flag)
Sources = dict[str, tuple[str, str]]


def _apply(config: TrainConfig, changes: dict[str, Any], sources: Sources, source: tuple[str, str]) -> TrainConfig:
    """``config.updated(changes)``, recording ``source`` for each key; unknown keys name the source."""
    try:
        config = config.updated(changes)
    except ValueError as err:
        where = f"{source[1]}: " if source[0] == "file" else ("--set: " if source[0] == "set" else "")
        raise ValueError(f"{where}{err}") from None
    sources.update({key: source for key in changes})
    return config


def _resolve(args: argparse.Namespace) -> tuple[TrainConfig, Sources]:
    """The config of the arguments and where each non-default value came from."""
    sources: Sources = {}
    config = TrainConfig()
    if getattr(args, "preset", None):
        before = config.to_dict()
        config = config.with_preset(args.preset)
        changed = [k for k, v in config.to_dict().items() if before[k] != v]
        sources.update({key: ("flag", "--preset") for key in changed})
    out = getattr(args, "out", None)
    resume = getattr(args, "resume", False) or getattr(args, "resume_from", None)
    if resume and out and (Path(out) / "config.json").is_file():
        path = Path(out) / "config.json"
        config = _apply(config, read_config_file(path), sources, ("file", str(path)))
    if getattr(args, "config", None):
        config = _apply(config, read_config_file(args.config), sources, ("file", str(args.config)))
    config = _apply(config, _parse_set(getattr(args, "set", []) or []), sources, ("set", ""))
    for dest, field in _FLAGS.items():
        if getattr(args, dest, None) is not None:
            config = _apply(config, {field: getattr(args, dest)}, sources, ("flag", FIELD_FLAGS[field]))
    if getattr(args, "no_ema", False):
        config = _apply(config, {"ema_decay": None}, sources, ("flag", "--no-ema"))
    if getattr(args, "no_progress", False):
        config = _apply(config, {"progress": False}, sources, ("flag", "--no-progress"))
    return config, sources


def cli_message(err: OptionError, sources: Sources) -> str:
    """An OptionError in the command line's words: the file and key, the flag, or ``--set KEY``."""
    kind, where = sources.get(err.primary or "", ("default", ""))

    def name(field: str) -> str:
        source = sources.get(field, ("default", ""))
        if kind == "file" and source == (kind, where):
            return field
        if field == err.primary and source[0] in ("flag", "set"):
            return source[1] if source[0] == "flag" else f"--set {field}"
        return FIELD_FLAGS.get(field, f"--set {field}")

    return err.render(name, prefix=f"{where}: " if kind == "file" else "")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed arguments describe (see the module docstring for precedence), values checked."""
    config, sources = _resolve(args)
    try:
        return config.check_values()
    except OptionError as err:
        raise ValueError(cli_message(err, sources)) from None


def run(args: argparse.Namespace) -> int:
    """Run ``spade train``; a user mistake raises ValueError in the command line's words (flags, files).

    Nothing is written before every option, the run folder, the checkpoint to resume from, the
    dataset and the networks' memory have been checked: a refused command leaves the disk as it was.
    """
    sources: Sources = {}
    try:
        config, sources = _resolve(args)
        if args.print_config:
            config.check_values()
            print(format_config(config), end="")
            return 0
        config.validate()
        from ..train.run_dir import plan_run
        from ..train.trainer import Trainer

        plan = plan_run(
            config,
            resume=bool(args.resume),
            overwrite=bool(getattr(args, "overwrite", False)),
            resume_from=getattr(args, "resume_from", None),
        )
        trainer = Trainer(config)
        try:
            result = trainer.train(plan=plan)
        finally:
            trainer.close()
    except OptionError as err:
        raise ValueError(cli_message(err, sources)) from None
    if trainer.ctx.is_main:
        print(f"trained {result['step']} steps; run folder {result['run_dir']}")
    return 0

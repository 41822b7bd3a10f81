"""The run folder's guard: what a training command may write, decided before it writes anything.

A folder that already holds a run (its config, labels, metrics, samples or checkpoints) is only
continued with ``resume`` or replaced with ``overwrite``; a resume picks a complete checkpoint
(a corrupt newest one is skipped with a warning, or one is named) and refuses changed network
options. :func:`plan_run` only reads; the Trainer applies the plan once everything else passed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .config import OptionError, TrainConfig

# what a run writes into its folder (anything else there belongs to someone else and is kept)
RUN_FILES = (
    "config.json", "config.yaml", ckpt.LABEL_SET_NAME, "metrics.jsonl", ckpt.CHECKPOINTS_DIR, "samples",
    "tensorboard", "data_trace",
)
# options a checkpoint's weights and state are shaped by: a resume must keep them
RESUME_FIXED = (
    "ngf", "ndf", "z_dim", "use_vae", "crop_size", "aspect_ratio", "num_upsampling_layers", "norm_G", "norm_D",
    "norm_E", "n_layers_D", "num_D", "spade_hidden_nc", "label_set", "use_instance",
)


@dataclass
class RunPlan:
    """What a training command will do with its run folder."""

    run_dir: Path
    checkpoint: Path | None = None  # the checkpoint to resume from
    overwrite: bool = False  # delete the old run's files before writing
    warnings: list[str] = field(default_factory=list)  # to show before training (skipped corrupt checkpoints)


def existing_run_files(run_dir: str | Path) -> list[str]:
    """Names of a run's own files already in ``run_dir``."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def clear_run(run_dir: str | Path) -> None:
    """Delete a run's own files from ``run_dir`` (each renamed away first, so none is left half-deleted)."""
    run_dir = Path(run_dir)
    for name in existing_run_files(run_dir):
        path = run_dir / name
        trash = run_dir / f"{ckpt.TRASH_PREFIX}{name}-{os.getpid()}"
        os.replace(path, trash)
        if trash.is_dir():
            shutil.rmtree(trash)
        else:
            trash.unlink()


def _named_checkpoint(run_dir: Path, resume_from: str | int | Path) -> Path:
    """The checkpoint folder ``resume_from`` names: a step number, a ``step_XXXXXXX`` name or a folder."""
    text = str(resume_from).strip()
    root = ckpt.checkpoints_root(run_dir)
    if text.isdigit():
        folder = root / ckpt.checkpoint_name(int(text))
    elif (root / text).is_dir():
        folder = root / text
    else:
        folder = Path(text)
    if not folder.is_dir():
        steps = ", ".join(p.name.split("_")[1].lstrip("0") or "0" for p in ckpt.list_checkpoints(run_dir))
        raise OptionError(
            f"{{resume_from}} {text}: no checkpoint {folder} (the run's checkpoints are at steps {steps or 'none'}): "
            "name one of them",
            "resume_from",
        )
    return folder


def _choose_checkpoint(run_dir: Path, resume_from: str | int | Path | None, warnings: list[str]) -> Path | None:
    """The newest complete checkpoint (or the named one), verified; skipped corrupt ones become warnings."""
    if resume_from is not None:
        folder = _named_checkpoint(run_dir, resume_from)
        problem = ckpt.verify_checkpoint(folder)
        if problem:
            raise OptionError(f"checkpoint {folder} is unusable ({problem}): name another with {{resume_from}}",
                              "resume_from")
        return folder
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        return None
    step = ckpt.checkpoint_step(latest)
    candidates = [latest] + [p for p in reversed(ckpt.list_checkpoints(run_dir)) if ckpt.checkpoint_step(p) < step]
    problems = []
    for folder in candidates:
        problem = ckpt.verify_checkpoint(folder)
        if problem is None:
            return folder
        problems.append(problem)
        warnings.append(
            f"spade: warning: checkpoint {folder.name} in {run_dir} is corrupt ({problem}); "
            "trying the previous complete one"
        )
    raise OptionError(
        f"{run_dir} holds no complete checkpoint ({len(problems)} corrupt, newest: {problems[0]}): "
        "start a new run with {overwrite} or another {out_dir}",
    )


def _check_resume_options(config: TrainConfig, checkpoint: Path) -> None:
    """Refuse options that would not fit the checkpoint's networks, naming the first one."""
    saved: dict[str, Any] = ckpt.read_json(checkpoint / ckpt.CONFIG_NAME)
    defaults = TrainConfig().to_dict()
    for name in RESUME_FIXED:
        then = saved.get(name, defaults[name])
        now = getattr(config, name)
        if now != then:
            raise OptionError(
                f"{{{name}}} {now!r} differs from the {then!r} the run in {config.out_dir} was trained with "
                f"(checkpoint {checkpoint.name}): resume without changing {{{name}}}, or start a new run in another "
                "{out_dir}",
                name,
            )


def plan_run(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_from: str | int | Path | None = None,
) -> RunPlan:
    """Check the run folder of ``config`` for this command and return the plan; reads only, never writes."""
    run_dir = Path(config.out_dir)
    resume = resume or resume_from is not None
    if resume and overwrite:
        raise OptionError("{resume} and {overwrite} exclude each other: continue the run or replace it, not both")
    if run_dir.exists() and not run_dir.is_dir():
        raise OptionError(f"{run_dir} is a file, not a run folder: choose another {{out_dir}}")
    plan = RunPlan(run_dir, overwrite=overwrite)
    existing = existing_run_files(run_dir)
    if resume:
        plan.checkpoint = _choose_checkpoint(run_dir, resume_from, plan.warnings)
        if plan.checkpoint is not None:
            _check_resume_options(config, plan.checkpoint)
    elif existing and not overwrite:
        raise OptionError(
            f"{run_dir} already holds a run ({', '.join(existing)}): pass {{resume}} to continue it, "
            "{overwrite} to replace it, or choose another {out_dir}"
        )
    return plan

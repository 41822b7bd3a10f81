"""Pipeline folders from trained weights: a training run's checkpoint, or an NVlabs/SPADE checkpoint.

Both write the same layout (spade_core.hub.folder) plus a model card, and return what they wrote so
that a caller (the ``spade export`` / ``spade convert-nvlabs`` commands) only has to print it. An
``out`` folder that is a file, or not empty without ``overwrite``, is refused before anything is read
or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..labels import LabelSet, available_label_sets, matching_label_set
from .folder import (
    DISCRIMINATOR,
    ENCODER,
    GENERATOR,
    check_out_folder,
    write_pipeline_folder,
)
from .model_card import NVLABS_LICENSE, write_model_card

__all__ = ["ExportResult", "convert_nvlabs_to_folder", "export_run"]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the folder, its network folders, the label set it ships, and for a run which generator."""

    path: Path
    parts: tuple[str, ...]
    label_set: LabelSet
    used_ema: bool | None = None
    step: int | None = None

    def describe(self) -> str:
        """One line for people: the networks written and the label set, e.g. 'generator, encoder; label set coco, 182 classes'."""
        names = ["EMA generator" if part == GENERATOR and self.used_ema else part for part in self.parts]
        return f"{', '.join(names)}; label set {self.label_set.name}, {self.label_set.label_nc} classes"


def export_run(
    run_dir: str | Path,
    out: str | Path,
    use_ema: bool = True,
    license: str = "other",
    overwrite: bool = False,
) -> ExportResult:
    """A training run's latest checkpoint (or one checkpoint folder) -> a pipeline folder with a model card.

    The EMA generator is exported when the run kept one and ``use_ema`` is true, else the raw generator.
    """
    out = check_out_folder(out, overwrite)
    from ..train.checkpoint import load_run_networks
    nets = load_run_networks(run_dir)
    ema = use_ema and nets.get("ema_generator") is not None
    generator = nets["ema_generator"] if ema else nets["generator"]
    encoder = nets.get("encoder")
    stored = nets.get("label_set")
    label_set = LabelSet.from_dict(dict(stored)) if stored is not None else matching_label_set(generator)
    write_pipeline_folder(out, generator, encoder, label_set)
    step = nets.get("step")
    which = "EMA generator" if ema else "generator"
    at_step = f", step {step}" if step is not None else ""
    write_model_card(out, license=license, source=f"Trained with `spade train` (run `{Path(run_dir).name}`{at_step}, {which}).")
    parts = (GENERATOR,) + ((ENCODER,) if encoder is not None else ())
    return ExportResult(path=out, parts=parts, label_set=label_set, used_ema=ema, step=step)


def convert_nvlabs_to_folder(
    checkpoint_dir: str | Path,
    out: str | Path,
    preset: str | None = None,
    opt_file: str | Path | None = None,
    label_set_name: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """NVlabs checkpoints (latest_net_G.pth, + _E / _D) -> a pipeline folder with a CC BY-NC-SA 4.0 model card.

    The configuration comes from ``preset`` or the run's ``opt_file`` (its opt.txt, found beside the
    checkpoints when neither is given); the label set is ``label_set_name``, else the preset's, else
    the built-in set with the model's class count, else numbered classes. A discriminator is kept in
    ``discriminator/`` for fine-tuning.
    """
    from .nvlabs import convert_nvlabs_checkpoint

    out = check_out_folder(out, overwrite)
    nets = convert_nvlabs_checkpoint(checkpoint_dir, preset=preset, opt_file=opt_file)
    name = label_set_name or (preset if preset in available_label_sets() else None)
    label_set = matching_label_set(nets.generator, name)
    write_pipeline_folder(out, nets.generator, nets.encoder, label_set, discriminator=nets.discriminator)
    how = f"preset `{preset}`" if preset else f"its `opt.txt` ({nets.options.get('name', 'unnamed run')})"
    write_model_card(
        out,
        license=NVLABS_LICENSE,
        source=f"Converted losslessly from the NVlabs/SPADE checkpoint `{Path(checkpoint_dir).name}` with {how}; "
        "outputs equal the reference's.",
    )
    parts = (GENERATOR,) + ((ENCODER,) if nets.encoder is not None else ()) + (
        (DISCRIMINATOR,) if nets.discriminator is not None else ()
    )
    return ExportResult(path=out, parts=parts, label_set=label_set)

"""TrainConfig: every setting of a training run, with the paper's recipe as defaults.

Field names keep the reference's option names where one exists (``ngf``, ``norm_G``,
``lambda_feat``, ``niter``...), so a reference command line translates field for field. A config
is saved with the run as a commented ``config.yaml`` and as ``config.json``; reading YAML needs PyYAML.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..losses import GAN_MODES
from ..models.presets import preset_options

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULE_UNITS = ("epoch", "step")
LOAD_TO_CROP = 286 / 256  # the reference's load_size / crop_size for resize-and-crop training


@dataclass
class TrainConfig:
    """One training run. Defaults reproduce the paper / NVlabs recipe unless a comment says otherwise."""

    # --- data ---
    data_root: str | None = None  # dataset folder (ignored by the synthetic format)
    format: str = "folder"  # dataset format: ade20k | cityscapes | coco | folder | hf | synthetic
    split: str = "train"  # dataset split to train on
    label_set: str | None = None  # built-in label set name; None = the format's own
    use_instance: bool | None = None  # instance edge channel; None = the label set's choice
    dataset_options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the format
    preprocess_mode: str = "resize_and_crop"  # reference --preprocess_mode
    load_size: int | None = None  # resize target; None = round(crop_size * 286 / 256) for crop modes, else crop_size
    no_flip: bool = False  # disable random horizontal flips
    num_workers: int = 2  # DataLoader worker processes per rank

    # --- networks (reference option names) ---
    preset: str | None = None  # model preset that filled the fields below (ade20k | coco | cityscapes), for the record
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    z_dim: int = 256  # style code size (use_vae)
    use_vae: bool = False  # train the VAE style encoder with the generator (multi-modal synthesis)
    crop_size: int = 256  # training image width
    aspect_ratio: float = 1.0  # width / height of the generated image
    num_upsampling_layers: str = "normal"  # normal | more | most
    norm_G: str = "spectralspadesyncbatch3x3"  # generator normalization, reference syntax
    norm_D: str = "spectralinstance"  # discriminator normalization
    norm_E: str = "spectralinstance"  # encoder normalization
    n_layers_D: int = 4  # layers per PatchGAN
    num_D: int = 2  # discriminator scales
    init_type: str = "xavier"  # weight init: normal | xavier | xavier_uniform | kaiming | orthogonal | none
    init_variance: float = 0.02  # gain of the weight init
    init_from: str | None = None  # start from these weights: a folder with generator/ [discriminator/ encoder/]
    spade_hidden_nc: int = 128  # SPADE's shared MLP width (fixed at 128 in the reference; smaller only for tests)

    # --- losses ---
    gan_mode: str = "hinge"  # hinge | ls | original | w
    lambda_feat: float = 10.0  # weight of the discriminator feature-matching loss
    lambda_vgg: float = 10.0  # weight of the VGG perceptual loss
    lambda_kld: float = 0.05  # weight of the KL loss (use_vae)
    no_ganFeat_loss: bool = False  # disable feature matching
    no_vgg: bool = False  # disable the VGG loss (it needs the VGG19 ImageNet weights)
    vgg_weights: str | None = None  # local VGG19 weight file; None = the cache / download

    # --- optimization ---
    batch_size: int = 1  # images per step and process (reference default; the paper trained on 8 GPUs)
    lr: float = 0.0002  # base learning rate; with TTUR G uses lr/2 and D lr*2
    no_TTUR: bool = False  # equal G/D learning rates and the Adam betas below (TTUR: G lr/2, D lr*2, betas (0, 0.9))
    beta1: float | None = None  # Adam beta1 without TTUR; None = 0.5, the reference's no_TTUR default
    beta2: float | None = None  # Adam beta2 without TTUR; None = 0.999, the reference's no_TTUR default
    D_steps_per_G: int = 1  # a generator step every this many discriminator steps
    niter: int = 50  # epochs (or steps, see schedule_unit) at the initial learning rate
    niter_decay: int = 0  # epochs (or steps) of linear decay to zero after niter
    schedule_unit: str = "epoch"  # unit of niter / niter_decay: epoch (the reference) or step
    max_steps: int | None = None  # stop after this many steps; None = (niter + niter_decay) units

    # --- beyond the reference ---
    ema_decay: float | None = 0.999  # exponential moving average of the generator; None disables it
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a gradient scaler)
    channels_last: bool = False  # NHWC memory format for the networks and inputs
    gradient_checkpointing: bool = False  # recompute generator blocks in backward to save memory
    device: str | None = None  # cuda | cpu | mps ...; None = cuda when available, else cpu

    # --- run ---
    out_dir: str = "runs/spade"  # run folder: config, checkpoints, samples, logs
    seed: int = 0  # seeds weights, data order, crops and noise
    log_every: int = 100  # steps between metric lines (reference print_freq)
    sample_every: int = 1000  # steps between sample grids; 0 disables
    num_samples: int = 4  # images in a sample grid
    checkpoint_every: int = 5000  # steps between checkpoints (reference save_latest_freq)
    keep_checkpoints: int = 3  # newest checkpoints kept
    progress: bool = True  # progress bar on rank 0
    tensorboard: bool = True  # TensorBoard event files when tensorboard is installed
    trace_data: bool = False  # each rank writes the sample paths it trains on to data_trace/rank<r>.txt

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON / YAML serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Config from a dict; unknown keys raise a ValueError naming them."""
        return cls().updated(data)

    def updated(self, changes: dict[str, Any]) -> TrainConfig:
        """A copy with ``changes`` applied (keys must be field names)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ValueError(
                f"unknown training option(s) {', '.join(unknown)}: see `spade train --print-config` for the valid names"
            )
        return dataclasses.replace(self, **changes)

    def with_preset(self, name: str) -> TrainConfig:
        """A copy whose network and preprocessing fields are those of model preset ``name``."""
        opts = preset_options(name)
        changes = {k: opts[k] for k in _PRESET_FIELDS if k in opts}
        changes["preset"] = name
        if name == "cityscapes":
            changes.update(preprocess_mode="fixed", load_size=opts["crop_size"])
        return self.updated(changes)

    def validate(self) -> TrainConfig:
        """Raise a ValueError naming the first inconsistent option; return self."""
        _choice("gan_mode", self.gan_mode, GAN_MODES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        for name in ("batch_size", "ngf", "ndf", "crop_size", "D_steps_per_G", "keep_checkpoints", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("niter", "niter_decay", "log_every", "sample_every", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 (or None), got {self.max_steps}")
        if self.max_steps is None and self.niter + self.niter_decay < 1:
            raise ValueError("niter + niter_decay is 0: train for at least one epoch/step, or pass max_steps")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.format != "synthetic" and not self.data_root:
            raise ValueError(f"the {self.format} format reads files: pass --data DIR (data_root)")
        return self

    def optimizer_settings(self) -> dict[str, tuple[float, tuple[float, float]]]:
        """(lr, betas) of the generator and discriminator optimizers, as the reference derives them."""
        if self.no_TTUR:
            betas = (0.5 if self.beta1 is None else self.beta1, 0.999 if self.beta2 is None else self.beta2)
            return {"generator": (self.lr, betas), "discriminator": (self.lr, betas)}
        return {"generator": (self.lr / 2, (0.0, 0.9)), "discriminator": (self.lr * 2, (0.0, 0.9))}

    def resolved_load_size(self) -> int:
        """The resize target: load_size, or the reference's 286/256 ratio of crop_size for crop modes."""
        if self.load_size is not None:
            return self.load_size
        if "crop" in self.preprocess_mode:
            return round(self.crop_size * LOAD_TO_CROP)
        return self.crop_size

    def save(self, run_dir: str | Path) -> list[Path]:
        """Write ``config.json`` and a commented ``config.yaml`` into ``run_dir``, atomically."""
        from .checkpoint import atomic_write_text

        run_dir = Path(run_dir)
        return [
            atomic_write_text(run_dir / "config.json", json.dumps(self.to_dict(), indent=2) + "\n"),
            atomic_write_text(run_dir / "config.yaml", format_config(self)),
        ]

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config file (.yaml / .yml / .json); missing fields take the defaults."""
        return cls.from_dict(read_config_file(path))


_PRESET_FIELDS = (
    "ngf", "ndf", "z_dim", "use_vae", "crop_size", "aspect_ratio", "num_upsampling_layers", "norm_G", "norm_D",
    "norm_E", "n_layers_D", "num_D", "init_type", "init_variance",
)


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")


def field_comments() -> dict[str, str]:
    """Each field's trailing comment in this file's source (empty when the source is unavailable)."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):
        return {}
    comments = {}
    for line in source.splitlines():
        match = re.match(r"^\s{4}(\w+): [^#]*#\s*(.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def format_config(config: TrainConfig) -> str:
    """The config as commented YAML, one ``name: value  # meaning`` line per field (JSON values)."""
    comments = field_comments()
    lines = []
    for name, value in config.to_dict().items():
        comment = comments.get(name)
        lines.append(f"{name}: {json.dumps(value)}" + (f"  # {comment}" if comment else ""))
    return "\n".join(lines) + "\n"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The dict stored in a YAML or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found: pass an existing .yaml or .json file")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"reading {path} needs PyYAML: pip install pyyaml, or pass a .json config") from None
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}): fix the file or pass a .yaml config") from None
    if isinstance(data, dict):
        return data
    raise ValueError(f"{path} must hold a mapping of option names to values, found {type(data).__name__}")

"""TrainConfig: every setting of a training run, with the paper's recipe as defaults.

Field names keep the reference's option names where one exists (``ngf``, ``norm_G``,
``lambda_feat``, ``niter``...), so a reference command line translates field for field. A config
is saved with the run as a commented ``config.yaml`` and as ``config.json``; reading YAML needs PyYAML.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.registry import available_formats
from ..data.transforms import PREPROCESS_MODES
from ..files import atomic_write_text, read_json
from ..images import MAX_SIDE
from ..registry import DATASETS

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULE_UNITS = ("epoch", "step")
LOAD_TO_CROP = 286 / 256  # the reference's load_size / crop_size for resize-and-crop training
INIT_TYPES = ("normal", "xavier", "xavier_uniform", "kaiming", "orthogonal", "none")

# integer fields: (lowest, highest) accepted value
INT_RANGES: dict[str, tuple[int, int]] = {
    "ngf": (1, 1024), "ndf": (1, 1024), "z_dim": (1, 4096), "crop_size": (1, MAX_SIDE), "load_size": (1, 2 * MAX_SIDE),
    "batch_size": (1, 4096), "n_layers_D": (1, 8), "num_D": (1, 8), "spade_hidden_nc": (1, 1024),
    "D_steps_per_G": (1, 1000), "niter": (0, 10**7), "niter_decay": (0, 10**7), "max_steps": (1, 10**9),
    "num_workers": (0, 256), "seed": (0, 2**63 - 1), "log_every": (0, 10**9), "sample_every": (0, 10**9),
    "num_samples": (1, 64), "checkpoint_every": (0, 10**9), "keep_checkpoints": (1, 10**6),
}
# float fields: (lowest, highest, lowest excluded, highest excluded)
FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "aspect_ratio": (0.125, 8.0, False, False), "init_variance": (0.0, 10.0, True, False), "lr": (0.0, 1.0, True, False),
    "lambda_feat": (0.0, 1e6, False, False), "lambda_vgg": (0.0, 1e6, False, False),
    "lambda_kld": (0.0, 1e6, False, False), "beta1": (0.0, 1.0, False, True), "beta2": (0.0, 1.0, False, True),
    "ema_decay": (0.0, 1.0, False, True),
}
# integer entries of dataset_options the formats take
DATASET_INT_OPTIONS: dict[str, tuple[int, int]] = {
    "label_nc": (1, 1024), "max_dataset_size": (1, 10**9), "length": (1, 10**9), "dontcare_id": (0, 2**31 - 1),
}


class OptionError(ValueError):
    """A refused option value whose message names options as ``{field}`` placeholders.

    ``str(err)`` names them as TrainConfig fields (the API's words); the CLI renders the same
    error with its flags and the file a value came from (:meth:`render`).
    """

    def __init__(self, template: str, primary: str | None = None) -> None:
        self.template = template
        self.primary = primary
        super().__init__(self.render())

    def fields(self) -> list[str]:
        """The option names the message mentions."""
        return re.findall(r"\{(\w+)\}", self.template)

    def render(self, name: Callable[[str], str] | None = None, prefix: str = "") -> str:
        """The message with each ``{field}`` replaced by ``name(field)`` (the API's words by default)."""
        namer = name or (lambda f: API_WORDS.get(f, f))
        return prefix + re.sub(r"\{(\w+)\}", lambda m: namer(m.group(1)), self.template)


# how the API spells the run choices that are arguments of Trainer.train rather than fields
API_WORDS = {"resume": "resume=True", "overwrite": "overwrite=True", "resume_from": "resume_from=STEP_OR_DIR"}


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
    pattern_spade: bool = True  # SPADE modulation once per distinct label window, one-hot convs as look-ups (exact); False: dense
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
        from ..models.presets import preset_options

        opts = preset_options(name)
        changes = {k: opts[k] for k in _PRESET_FIELDS if k in opts}
        changes["preset"] = name
        entry = DATASETS.get(name.lower())
        if entry is not None:
            prep = entry.preprocessing
            derived = "crop" in prep.mode and prep.load_size_train == round(prep.crop_size * LOAD_TO_CROP)
            load_size = None if derived else prep.load_size_train
            changes.update(preprocess_mode=prep.mode, load_size=load_size)
        return self.updated(changes)

    def check_values(self) -> TrainConfig:
        """Raise an OptionError naming the first field of a wrong type or out of range; return self.

        Runs before anything is allocated: types are strict (the text "false" is not a bool, 64.0
        is not an integer), every size has a sign and a sane upper bound, choices are checked.
        """
        for f in dataclasses.fields(self):
            problem = _field_problem(f.name, f.type, getattr(self, f.name))
            if problem:
                raise OptionError(f"{{{f.name}}} {problem}", f.name)
        for key, value in self.dataset_options.items():
            if not isinstance(key, str):
                raise OptionError(f"{{dataset_options}} keys must be option names, got {key!r}", "dataset_options")
            if key in DATASET_INT_OPTIONS and value is not None:
                problem = _int_problem(value, *DATASET_INT_OPTIONS[key])
                if problem:
                    raise OptionError(f"{{dataset_options}}.{key} {problem}", "dataset_options")
        from ..models.generator import UPSAMPLING_LAYERS, latent_size

        if min(latent_size(self.crop_size, self.aspect_ratio, self.num_upsampling_layers)) < 1:
            step = 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
            least = next(
                c for c in range(step, MAX_SIDE + step, step)
                if min(latent_size(c, self.aspect_ratio, self.num_upsampling_layers)) >= 1
            )
            raise OptionError(
                f"{{crop_size}} {self.crop_size} is too small for {self.num_upsampling_layers!r} upsampling with "
                f"{{aspect_ratio}} {self.aspect_ratio}: use a {{crop_size}} of at least {least}",
                "crop_size",
            )
        return self

    def validate(self) -> TrainConfig:
        """:meth:`check_values`, then that the run is complete (data, length); return self."""
        self.check_values()
        if self.max_steps is None and self.niter + self.niter_decay < 1:
            raise OptionError("{niter} + {niter_decay} is 0: train for at least one epoch/step, or set {max_steps}",
                              "niter")
        if self.format != "synthetic" and not self.data_root:
            raise OptionError(f"the {self.format} format reads files: pass the dataset folder as {{data_root}}",
                              "data_root")
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
        run_dir = Path(run_dir)
        return [
            atomic_write_text(run_dir / "config.json", json.dumps(self.to_dict(), indent=2) + "\n"),
            atomic_write_text(run_dir / "config.yaml", format_config(self)),
        ]

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config file (.yaml / .yml / .json); missing fields take the defaults; bad values name the file."""
        config = cls.from_dict(read_config_file(path))
        try:
            return config.check_values()
        except OptionError as err:
            raise ValueError(err.render(prefix=f"{path}: ")) from None


_PRESET_FIELDS = (
    "ngf", "ndf", "z_dim", "use_vae", "crop_size", "aspect_ratio", "num_upsampling_layers", "norm_G", "norm_D",
    "norm_E", "n_layers_D", "num_D", "init_type", "init_variance",
)


# The networks and losses (and diffusers with them) are imported only when a value is checked,
# so that reading the config's fields (`spade train --help`) stays cheap.
def _gan_modes() -> tuple[str, ...]:
    from ..losses import GAN_MODES

    return tuple(GAN_MODES)


def _upsampling_choices() -> tuple[str, ...]:
    from ..models.generator import UPSAMPLING_LAYERS

    return tuple(UPSAMPLING_LAYERS)


def _preset_choices() -> tuple[str, ...]:
    from ..models.presets import available_presets

    return tuple(available_presets())


def _choices(name: str) -> tuple[str, ...] | None:
    """The values a string field accepts, or None when any text goes."""
    table: dict[str, Callable[[], tuple[str, ...]]] = {
        "gan_mode": _gan_modes,
        "precision": lambda: PRECISIONS,
        "schedule_unit": lambda: SCHEDULE_UNITS,
        "num_upsampling_layers": _upsampling_choices,
        "preprocess_mode": lambda: tuple(PREPROCESS_MODES),
        "init_type": lambda: INIT_TYPES,
        "format": lambda: tuple(available_formats()),
        "preset": _preset_choices,
    }
    return table[name]() if name in table else None


def _shown(value: Any) -> str:
    """A value as a message shows it; text is marked as text (the usual YAML / JSON slip)."""
    return f"the text {value!r}" if isinstance(value, str) else repr(value)


def _int_problem(value: Any, low: int, high: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"must be an integer in {low}..{high}, got {_shown(value)}"
    return None


def _float_problem(value: Any, low: float, high: float, open_low: bool, open_high: bool) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if ok:
        return None
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    return f"must be a number in {interval}, got {_shown(value)}"


def _field_problem(name: str, annotation: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of type ``annotation`` (None when it is fine)."""
    kinds = [part.strip() for part in str(annotation).split("|")]
    optional = "None" in kinds
    if value is None:
        return None if optional else "must be set, got null"
    suffix = " (or null)" if optional else ""
    kind = kinds[0]
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false{suffix}, got {_shown(value)}"
    if kind == "int":
        problem = _int_problem(value, *INT_RANGES.get(name, (-(2**63), 2**63 - 1)))
        return problem and problem.replace(", got", f"{suffix}, got", 1)
    if kind == "float":
        problem = _float_problem(value, *FLOAT_RANGES.get(name, (-math.inf, math.inf, True, True)))
        return problem and problem.replace(", got", f"{suffix}, got", 1)
    if kind == "str":
        choices = _choices(name)
        if not isinstance(value, str) or not value or (choices is not None and value not in choices):
            what = f"one of {', '.join(choices)}" if choices else "a non-empty text"
            return f"must be {what}{suffix}, got {_shown(value)}"
        return None
    if kind.startswith("dict"):
        return None if isinstance(value, dict) else f"must be a mapping of option names to values, got {_shown(value)}"
    return None


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
        data = read_json(path, "fix the file or pass a .yaml config")
    if isinstance(data, dict):
        return data
    raise ValueError(f"{path} must hold a mapping of option names to values, found {type(data).__name__}")

"""What a TrainConfig turns into: the dataset, the three networks, the optimizers and schedules."""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset

from ..data import PreprocessConfig, build_dataset
from ..labels import LabelSet
from ..models import MultiscaleDiscriminator, SPADEEncoder, SPADEGenerator
from ..models.presets import discriminator_kwargs, encoder_kwargs, generator_kwargs
from .config import OptionError, TrainConfig

# bytes of training state per parameter: fp32 weight, gradient and two Adam moments (+ one EMA copy for G)
_BYTES_PER_PARAM = 4 * 4


def preprocess_config(config: TrainConfig) -> PreprocessConfig:
    """The training-time resize / crop / flip of the config."""
    return PreprocessConfig(
        preprocess_mode=config.preprocess_mode,
        load_size=config.resolved_load_size(),
        crop_size=config.crop_size,
        aspect_ratio=config.aspect_ratio,
        flip=not config.no_flip,
        is_train=True,
    )


def build_training_dataset(config: TrainConfig) -> Dataset:
    """The dataset of ``config`` with crops and flips seeded by ``config.seed`` (see ``set_epoch``)."""
    options: dict[str, Any] = {"seed": config.seed, **config.dataset_options}
    if config.label_set is not None:
        options["label_set"] = config.label_set
    if config.use_instance is not None:
        options["use_instance"] = config.use_instance
    try:
        return build_dataset(config.format, config.data_root, config.split, preprocess_config(config), **options)
    except TypeError as err:
        raise ValueError(
            f"the {config.format} format does not accept these options ({err}): drop them from dataset_options / flags"
        ) from None


def dataset_label_set(dataset: Dataset, config: TrainConfig) -> LabelSet:
    """The label set the networks are built for, with the instance channel the run actually uses."""
    label_set: LabelSet = dataset.label_set
    use_instance = getattr(dataset, "use_instance", label_set.use_instance)
    if config.use_instance is not None:
        use_instance = config.use_instance
    if use_instance != label_set.use_instance:
        label_set = dataclasses.replace(label_set, use_instance=bool(use_instance))
    return label_set


def reference_options(config: TrainConfig, label_set: LabelSet) -> dict[str, Any]:
    """The network options of ``config`` under the reference's names, for the preset translators."""
    return {
        "label_nc": label_set.label_nc,
        "contain_dontcare_label": label_set.contain_dontcare_label,
        "no_instance": not label_set.use_instance,
        **{k: getattr(config, k) for k in (
            "ngf", "ndf", "z_dim", "use_vae", "crop_size", "aspect_ratio", "num_upsampling_layers", "norm_G",
            "norm_D", "norm_E", "n_layers_D", "num_D", "init_type", "init_variance",
        )},
        "output_nc": 3,
    }


def build_networks(
    config: TrainConfig, label_set: LabelSet
) -> tuple[SPADEGenerator, MultiscaleDiscriminator, SPADEEncoder | None]:
    """(generator, discriminator, encoder or None), freshly initialised as the reference does."""
    opts = reference_options(config, label_set)
    generator = SPADEGenerator(**generator_kwargs(opts), spade_hidden_nc=config.spade_hidden_nc)
    discriminator = MultiscaleDiscriminator(**discriminator_kwargs(opts))
    encoder = SPADEEncoder(**encoder_kwargs(opts)) if config.use_vae else None
    return generator, discriminator, encoder


def lr_factor(position: int, niter: int, niter_decay: int) -> float:
    """Learning-rate multiplier in epoch/step ``position`` (0-based): 1 for ``niter`` units, then
    linearly down by 1/niter_decay per unit (the reference's update_learning_rate)."""
    if niter_decay <= 0 or position <= niter:
        return 1.0
    return max(0.0, 1.0 - (position - niter) / niter_decay)


def build_optimizers(
    config: TrainConfig, generator: nn.Module, discriminator: nn.Module, encoder: nn.Module | None
) -> dict[str, torch.optim.Optimizer]:
    """Adam for G (+ E, as in the reference) and for D, with TTUR learning rates and betas by default.

    Fused (one kernel per parameter) where torch has it for the parameters' device: the same update
    up to float rounding, several times faster than the default per-tensor loop on the CPU (the
    ADE20K generator's step: 61 ms instead of 313 ms).
    """
    settings = config.optimizer_settings()
    g_params = list(generator.parameters()) + (list(encoder.parameters()) if encoder is not None else [])
    d_params = list(discriminator.parameters())
    g_lr, g_betas = settings["generator"]
    d_lr, d_betas = settings["discriminator"]
    return {
        "generator": torch.optim.Adam(g_params, lr=g_lr, betas=g_betas, fused=_fusable(g_params)),
        "discriminator": torch.optim.Adam(d_params, lr=d_lr, betas=d_betas, fused=_fusable(d_params)),
    }


def _fusable(params: list[torch.Tensor]) -> bool | None:
    """True when fused Adam supports every parameter (floating point, on the CPU or a CUDA device), else None (torch's default)."""
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok and params else None


def build_schedulers(config: TrainConfig, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, LambdaLR]:
    """Constant-then-linear-decay schedules, stepped once per ``config.schedule_unit``."""
    factor = partial(lr_factor, niter=config.niter, niter_decay=config.niter_decay)
    return {name: LambdaLR(opt, factor) for name, opt in optimizers.items()}


def parameter_counts(config: TrainConfig, label_set: LabelSet) -> dict[str, int] | None:
    """Parameters of each network of ``config``, counted on the meta device (nothing allocated); None if unsupported."""
    try:
        with torch.device("meta"):
            nets = build_networks(config, label_set)
    except (NotImplementedError, RuntimeError):
        return None
    names = ("generator", "discriminator", "encoder")
    return {name: sum(p.numel() for p in net.parameters()) for name, net in zip(names, nets) if net is not None}


def memory_limit_bytes(device: torch.device) -> int | None:
    """The memory of ``device``: a GPU's own, else the machine's RAM (None when unknown)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def training_state_bytes(config: TrainConfig, counts: dict[str, int]) -> int:
    """Bytes of weights, gradients and Adam moments of the networks (plus the generator's EMA copy)."""
    ema = counts["generator"] if config.ema_decay is not None else 0
    return _BYTES_PER_PARAM * sum(counts.values()) + 4 * ema


def check_training_memory(config: TrainConfig, label_set: LabelSet, device: torch.device) -> None:
    """Refuse, before allocating, networks whose training state alone exceeds the device's memory."""
    counts = parameter_counts(config, label_set)
    limit = memory_limit_bytes(device)
    if counts is None or limit is None:
        return
    need = training_state_bytes(config, counts)
    if need > limit:
        biggest = max(counts, key=counts.__getitem__)
        width = "ndf" if biggest == "discriminator" else "ngf"
        raise OptionError(
            f"{{{width}}} {getattr(config, width)} makes a {biggest} of {counts[biggest] / 1e6:,.0f}M parameters: "
            f"the networks' weights, gradients and optimizer state alone need about {need / 1e9:,.1f} GB, more than "
            f"the {limit / 1e9:,.1f} GB of memory of {device}: lower {{{width}}} (the reference uses 64)",
            width,
        )

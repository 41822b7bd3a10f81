"""The Trainer: the reference's alternating generator / discriminator updates, plus EMA, mixed
precision, channels-last, gradient checkpointing, distributed data parallel and exact resume.

Determinism: data order comes from (seed, epoch) through the sampler, crops and flips from
(seed, epoch, index) in the dataset, the VAE noise from (seed, step, rank), and the remaining RNG
states are checkpointed, so a resumed run repeats an uninterrupted one step for step.
"""

from __future__ import annotations

import errno
import json
import random
import re
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..devices import keep_freed_heap
from ..losses import VGGLoss
from ..segmap import one_hot_semantics
from . import checkpoint as ckpt
from .builders import (
    build_networks,
    build_optimizers,
    build_schedulers,
    build_training_dataset,
    check_training_memory,
    dataset_label_set,
)
from .config import OptionError, TrainConfig
from .distributed import (
    ResumableDistributedSampler,
    barrier,
    localize_sync_batchnorm,
    setup_distributed,
    teardown_distributed,
    wrap_ddp,
)
from .ema import EMA
from .logging import RunLogger, image_grid
from .run_dir import RunPlan, clear_run, plan_run
from .steps import (
    LossSettings,
    discriminator_losses,
    frozen,
    generate,
    generator_losses,
)

_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack label (N,1,H,W), image (N,3,H,W) and instance maps; keep paths as a list."""
    batch: dict[str, Any] = {
        "label": torch.stack([s["label"] for s in samples]),
        "image": torch.stack([s["image"] for s in samples]),
        "path": [str(s.get("path", "")) for s in samples],
    }
    if all("instance" in s for s in samples):
        batch["instance"] = torch.stack([s["instance"] for s in samples])
    return batch


def _last_line(err: BaseException) -> str:
    """The message of an exception re-raised from a DataLoader worker (its traceback's last line)."""
    marker = f"{type(err).__name__}: "
    lines = [line for line in str(err).splitlines() if line.startswith(marker)]
    return lines[-1][len(marker):] if lines else " ".join(str(err).split())


def _noise_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class Trainer:
    """Trains SPADE as configured; ``train(resume=...)`` runs to ``total_steps`` and checkpoints."""

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None, vgg_loss: nn.Module | None = None) -> None:
        self.config = config.validate()
        self.ctx = setup_distributed(config.device)
        self.device = self.ctx.device
        self.run_dir = Path(config.out_dir)
        self._seed_everything(config.seed)
        self.dataset = dataset if dataset is not None else build_training_dataset(config)
        self.label_set = dataset_label_set(self.dataset, config)
        check_training_memory(config, self.label_set, self.device)
        self.generator, self.discriminator, self.encoder = build_networks(config, self.label_set)
        if config.init_from:
            self._load_initial_weights(Path(config.init_from))
        for net in self.networks().values():
            if self.ctx.is_distributed and self.device.type == "cpu":
                localize_sync_batchnorm(net)
            net.to(self.device)
            if config.channels_last:
                net.to(memory_format=torch.channels_last)
            net.train()
        if config.gradient_checkpointing:
            self.generator.enable_gradient_checkpointing()
        self.generator.pattern_spade = config.pattern_spade
        self.discriminator.semantic_lookups = config.pattern_spade  # its one-hot input conv, likewise
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals slow CPU steps up to 20x; the parity tests pass flushed
            keep_freed_heap()  # large activations are reallocated every step: no page faults for them
        self.ema = EMA(self.generator, config.ema_decay) if config.ema_decay is not None else None
        self.generator_ddp = wrap_ddp(self.generator, self.ctx)
        self.discriminator_ddp = wrap_ddp(self.discriminator, self.ctx)
        self.encoder_ddp = wrap_ddp(self.encoder, self.ctx) if self.encoder is not None else None
        self.optimizers = build_optimizers(config, self.generator, self.discriminator, self.encoder)
        self.schedulers = build_schedulers(config, self.optimizers)
        scaling = config.precision == "fp16"
        self.scalers = {name: torch.amp.GradScaler(self.device.type, enabled=scaling) for name in self.optimizers}
        self.vgg_loss = vgg_loss
        if self.vgg_loss is None and not config.no_vgg:
            self.vgg_loss = VGGLoss(lambda_vgg=config.lambda_vgg, weights_path=config.vgg_weights)
        if self.vgg_loss is not None:
            self.vgg_loss.to(self.device)
        self.loss_settings = LossSettings(
            gan_mode=config.gan_mode,
            lambda_feat=config.lambda_feat,
            no_ganFeat_loss=config.no_ganFeat_loss,
            lambda_kld=config.lambda_kld,
        )
        self.sampler = ResumableDistributedSampler(self.dataset, self.ctx, seed=config.seed, shuffle=True)
        self.steps_per_epoch = self.sampler.full_length() // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the dataset has {len(self.dataset)} samples, {self.sampler.full_length()} per process: too few for "
                f"one batch of {config.batch_size}; lower --batch-size or add data"
            )
        self.step = 0
        self._sample_batch = collate([self.dataset[i] for i in range(min(config.num_samples, len(self.dataset)))])

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _load_initial_weights(self, folder: Path) -> None:
        """Start from another run's or a converted NVlabs model's weights (generator/, discriminator/, encoder/)."""
        if not (folder / "generator").is_dir():
            raise FileNotFoundError(
                f"{folder}/generator not found: init_from takes a folder with generator/ [discriminator/ encoder/]"
            )
        nets = {"generator": self.generator, "discriminator": self.discriminator, "encoder": self.encoder}
        for name, net in nets.items():
            if net is not None and (folder / name).is_dir():
                ckpt.load_network_state(net, folder / name)

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks, unwrapped (no EMA)."""
        nets = {"generator": self.generator, "discriminator": self.discriminator}
        if self.encoder is not None:
            nets["encoder"] = self.encoder
        return nets

    @property
    def total_steps(self) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return cfg.max_steps
        units = cfg.niter + cfg.niter_decay
        return units * self.steps_per_epoch if cfg.schedule_unit == "epoch" else units

    def autocast(self):
        """Autocast context of the configured precision (a no-op for fp32)."""
        if self.config.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_PRECISION_DTYPES[self.config.precision])

    # ------------------------------------------------------------------ one step

    def prepare(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch -> (one-hot semantics (N, semantic_nc, H, W), image (N, 3, H, W) in [-1, 1]) on the device."""
        ls = self.label_set
        labels = batch["label"].to(self.device)
        instance = batch.get("instance")
        if instance is not None and ls.use_instance:
            instance = instance.to(self.device)
        else:
            instance = None
        semantics = one_hot_semantics(labels, ls.label_nc, ls.contain_dontcare_label, ls.use_instance, instance)
        image = batch["image"].to(self.device, torch.float32)
        if self.config.channels_last:
            semantics = semantics.contiguous(memory_format=torch.channels_last)
            image = image.contiguous(memory_format=torch.channels_last)
        return semantics, image

    def _eps(self, batch_size: int, phase: int) -> torch.Tensor | None:
        """The VAE's N(0, 1) draw for this step, rank and phase (0: G step, 1: D step)."""
        if self.encoder is None:
            return None
        gen = torch.Generator().manual_seed(_noise_seed(self.config.seed, self.step, self.ctx.rank, phase))
        return torch.randn(batch_size, self.config.z_dim, generator=gen).to(self.device)

    def _update(self, name: str, loss: torch.Tensor) -> None:
        scaler, optimizer = self.scalers[name], self.optimizers[name]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def generator_step(self, semantics: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator (+ encoder) update; the discriminator is frozen and called unwrapped."""
        self.optimizers["generator"].zero_grad(set_to_none=True)
        with frozen(self.discriminator), self.autocast():
            losses, _ = generator_losses(
                self.generator_ddp, self.discriminator, self.encoder_ddp, semantics, image,
                self.loss_settings, self.vgg_loss, self._eps(image.shape[0], 0),
            )
            total = sum(losses.values())
        self._update("generator", total)
        return {k: v.detach() for k, v in losses.items()}

    def discriminator_step(self, semantics: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator update on a fake regenerated without gradients."""
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        with self.autocast():
            losses, _ = discriminator_losses(
                self.generator, self.discriminator_ddp, self.encoder, semantics, image,
                self.loss_settings, self._eps(image.shape[0], 1),
            )
            total = losses["D_Fake"] + losses["D_real"]
        self._update("discriminator", total)
        return {k: v.detach() for k, v in losses.items()}

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Generator step (every ``D_steps_per_G`` steps), discriminator step, EMA update."""
        semantics, image = self.prepare(batch)
        losses: dict[str, torch.Tensor] = {}
        # both steps' generator and discriminator forwards share the pattern plans and pooled semantics
        with self.generator.reusing_layouts(), self.discriminator.reusing_semantics():
            if self.step % self.config.D_steps_per_G == 0:
                losses.update(self.generator_step(semantics, image))
            losses.update(self.discriminator_step(semantics, image))
        if self.ema is not None:
            self.ema.update(self.generator, self.step)
        return losses

    # ------------------------------------------------------------------ data

    def loader(self, epoch: int, start_batch: int = 0) -> DataLoader:
        """This rank's batches of ``epoch``, from batch ``start_batch`` on."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start_batch * self.config.batch_size)
        workers = self.config.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(_noise_seed(self.config.seed, epoch)),
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Optimizer, schedule, scaler and RNG state as (tensors, JSON-able dict)."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {
            "epoch": self.step // self.steps_per_epoch,
            "batch_size": self.config.batch_size,
            "world_size": self.ctx.world_size,
            "optimizers": {},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
        }
        for name, optimizer in self.optimizers.items():
            flat, rest = ckpt.flatten_optimizer(f"optimizer.{name}", optimizer.state_dict())
            tensors.update(flat)
            meta["optimizers"][name] = rest
        rng_tensors, meta["rng"] = ckpt.capture_rng_state()
        tensors.update(rng_tensors)
        return tensors, meta

    def save_checkpoint(self) -> Path | None:
        """Write the current state on rank 0; returns the checkpoint folder there (None elsewhere)."""
        if not self.ctx.is_main:
            return None
        networks: dict[str, nn.Module | None] = dict(self.networks())
        networks["ema_generator"] = self.ema.model if self.ema is not None else None
        tensors, meta = self.state()
        return ckpt.save_checkpoint(
            self.run_dir, self.step, networks, tensors, meta,
            self.config.to_dict(), self.label_set.to_dict(), keep=self.config.keep_checkpoints,
        )

    def load_checkpoint(self, folder: str | Path) -> None:
        """Restore every network, optimizer, schedule, scaler, RNG state and the step from ``folder``."""
        folder = Path(folder)
        for name, net in self.networks().items():
            ckpt.load_network_state(net, folder / name)
        if self.ema is not None:
            if (folder / "ema_generator").is_dir():
                ckpt.load_network_state(self.ema.model, folder / "ema_generator")
            else:
                self.ema = EMA(self.generator, self.config.ema_decay)
        tensors, meta = ckpt.read_training_state(folder)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(ckpt.unflatten_optimizer(f"optimizer.{name}", tensors, meta["optimizers"][name]))
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(meta["schedulers"][name])
        for name, scaler in self.scalers.items():
            if meta["scalers"].get(name):
                scaler.load_state_dict(meta["scalers"][name])
        ckpt.restore_rng_state(tensors, meta["rng"])
        self.step = int(meta["step"])
        if (meta.get("batch_size"), meta.get("world_size")) != (self.config.batch_size, self.ctx.world_size):
            self._note(
                f"resuming with batch size {self.config.batch_size} x {self.ctx.world_size} processes instead of "
                f"{meta.get('batch_size')} x {meta.get('world_size')}: the data order will differ from the original run"
            )

    # ------------------------------------------------------------------ samples

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """Fixed samples as a grid: label colours | real | generator (eval) | EMA generator."""
        semantics, image = self.prepare(self._sample_batch)
        zeros = torch.zeros(image.shape[0], self.config.z_dim, device=self.device) if self.encoder is not None else None
        columns = [self._label_colors(self._sample_batch["label"]), image]
        nets = [self.generator] + ([self.ema.model] if self.ema is not None else [])
        encoder = self.encoder
        modes = [(m, m.training) for m in [*nets, encoder] if m is not None]
        for module, _ in modes:
            module.eval()
        try:
            for net in nets:
                fake, _, _ = generate(net, encoder, semantics, image, zeros)
                columns.append(fake.float())
        finally:
            for module, mode in modes:
                module.train(mode)
        return image_grid(columns)

    def _label_colors(self, labels: torch.Tensor) -> torch.Tensor:
        rgb = torch.from_numpy(np.ascontiguousarray(self.label_set.colorize(labels[:, 0].cpu())))  # (N, H, W, 3)
        return rgb.permute(0, 3, 1, 2).float().div(127.5).sub(1)

    # ------------------------------------------------------------------ loop

    def _note(self, message: str) -> None:
        if self.ctx.is_main:
            print(message, flush=True)

    def _warn(self, message: str) -> None:
        if self.ctx.is_main:
            print(message, file=sys.stderr, flush=True)

    def _start_run(self, plan: RunPlan) -> Path | None:
        """Load the plan's checkpoint, then (and only then) write the run folder; return the checkpoint."""
        for message in plan.warnings:
            self._warn(message)
        if plan.checkpoint is not None:
            self.load_checkpoint(plan.checkpoint)
        if self.ctx.is_main:
            try:
                if plan.overwrite:
                    clear_run(self.run_dir)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                ckpt.remove_partial(self.run_dir)
                self.config.save(self.run_dir)
                label_set = json.dumps(self.label_set.to_dict(), indent=2)
                ckpt.atomic_write_text(self.run_dir / ckpt.LABEL_SET_NAME, label_set)
            except OSError as err:
                raise ckpt.write_error(err, "the run's config", self.run_dir) from None
        barrier(self.ctx)
        return plan.checkpoint

    def _trace(self, batch: dict[str, Any]) -> None:
        folder = self.run_dir / "data_trace"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"rank{self.ctx.rank}.txt", "a", encoding="utf-8") as handle:
            handle.writelines(f"{self.step}\t{p}\n" for p in batch["path"])

    def _log_values(self, losses: dict[str, torch.Tensor], logger: RunLogger) -> dict[str, float]:
        values = {f"loss/{k}": float(v) for k, v in losses.items()}
        for name, optimizer in self.optimizers.items():
            values[f"lr/{name}"] = optimizer.param_groups[0]["lr"]
        values["epoch"] = self.step // self.steps_per_epoch
        values["images_per_sec"] = round(logger.images_per_second(), 3)
        return values

    def _advance_schedules(self) -> None:
        with warnings.catch_warnings():
            # fp16 scaling may skip the first optimizer steps on purpose; torch would warn about the order
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            for scheduler in self.schedulers.values():
                scheduler.step()

    def train(
        self,
        resume: bool = False,
        *,
        overwrite: bool = False,
        resume_from: str | int | Path | None = None,
        plan: RunPlan | None = None,
    ) -> dict[str, Any]:
        """Train until ``total_steps``.

        A folder that holds a run is continued with ``resume`` (from its latest complete
        checkpoint, or ``resume_from``: a step, a ``step_XXXXXXX`` name or a checkpoint folder) or
        replaced with ``overwrite``; otherwise it is refused before anything is written.
        """
        try:
            plan = plan or plan_run(self.config, resume=resume, overwrite=overwrite, resume_from=resume_from)
            barrier(self.ctx)  # every rank has checked the folder before rank 0 writes into it
            return self._train(plan)
        except OSError as err:
            if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise ckpt.write_error(err, "the run's logs", self.run_dir) from None
            raise

    def _batches(self, epoch: int, offset: int):
        """The loader's batches; a dataset error from a worker process comes back as its one-line message."""
        iterator = iter(self.loader(epoch, offset))
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (ValueError, FileNotFoundError) as err:
                if isinstance(err, OptionError) or "\n" not in str(err):
                    raise
                raise type(err)(_last_line(err)) from None
            yield batch

    def _train(self, plan: RunPlan) -> dict[str, Any]:
        cfg = self.config
        start = self._start_run(plan)
        if start is not None:
            self.load_checkpoint(start)
            self._note(f"resumed {self.run_dir} from {start.name} (step {self.step})")
        total = self.total_steps
        logger = RunLogger(
            self.run_dir, enabled=self.ctx.is_main, total_steps=total, start_step=self.step,
            progress=cfg.progress, tensorboard=cfg.tensorboard,
        )
        images_per_step = cfg.batch_size * self.ctx.world_size
        saved_at = self.step if start is not None else -1
        last: dict[str, float] = {}
        try:
            while self.step < total:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                for batch in self._batches(epoch, offset):
                    if cfg.trace_data:
                        self._trace(batch)
                    losses = self.train_step(batch)
                    self.step += 1
                    if cfg.schedule_unit == "step" or self.step % self.steps_per_epoch == 0:
                        self._advance_schedules()
                    logger.advance(images_per_step)
                    if cfg.log_every and (self.step % cfg.log_every == 0 or self.step == total):
                        last = self._log_values(losses, logger)
                        logger.log(self.step, last)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                        saved_at = self.step
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and self.ctx.is_main:
                        logger.log_images(self.step, self.sample_grid())
                    if self.step >= total:
                        break
            if saved_at != self.step:
                self.save_checkpoint()
        finally:
            logger.close()
        barrier(self.ctx)
        return {"run_dir": self.run_dir, "step": self.step, "losses": last}

    def close(self) -> None:
        """Leave the process group (if this trainer joined it)."""
        teardown_distributed(self.ctx)

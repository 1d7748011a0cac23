"""What a fit measures and says about itself: its data and model at the start (:class:`FitSummary`),
and tokens/s and MFU while it trains (:class:`TokenThroughput`). How it is shown on a terminal or in a
log is :mod:`gptkit.progress`.

Reading a device value (``.item()``) waits for the GPU to finish everything queued, so these read
values and the clock only when the run logs (every ``trainer.log_every_n_steps`` updates) and around
validations, never on the updates in between.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import Throughput, measure_flops

from gptkit.devices import compute_dtype, peak_flops


def batch_size(batch) -> int:
    """Sequences in a batch (a pretraining block tensor, or a fine-tuning batch dict)."""
    return (batch["input_ids"] if isinstance(batch, dict) else batch).size(0)


def batch_tokens(batch) -> int:
    """Input tokens in a batch."""
    if isinstance(batch, dict):
        return batch["input_ids"].numel()
    return batch.size(0) * (batch.size(1) - 1)  # pretraining blocks hold n_ctx inputs + 1 target


def measure_flops_per_token(config) -> float:
    """Training FLOPs (forward + backward) per token of a GPT of ``config``, counted by Lightning's
    ``measure_flops`` on a model on the meta device."""
    from gptkit.model import GPT, lm_loss

    with torch.device("meta"):
        model = GPT(config)
        x = torch.zeros(1, config.n_ctx, dtype=torch.long)
    flops = measure_flops(model, lambda: lm_loss(model, model(x), x), loss_fn=lambda loss: loss)
    return flops / config.n_ctx


def logging_update(trainer: pl.Trainer) -> bool:
    """Whether the update that just ended logs its metrics (as Lightning decides for ``self.log``)."""
    return trainer.global_step % trainer.log_every_n_steps == 0


class FitSummary(pl.Callback):
    """Says what a fit trains on, once the DataModule has read its data: the data, the model's size and
    the run folder."""

    def __init__(self, run_dir) -> None:
        from gptkit.console import log_mark

        self.run_dir = run_dir
        self.log_mark = log_mark()  # a note the data printed while it was prepared is not repeated

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from gptkit.console import log, unrepeated

        summary = getattr(trainer.datamodule, "summary", None)
        if summary is not None:
            log(unrepeated(summary(), self.log_mark))
        backbone = getattr(pl_module, "backbone", pl_module)  # (any LightningModule: all its parameters)
        log(f"model: {sum(p.numel() for p in backbone.parameters()):,} parameters; run folder {self.run_dir}")


class TokenThroughput(pl.Callback):
    """Tokens/s per device, and MFU where the device's peak FLOP/s is known, through Lightning's
    :class:`~lightning_fabric.utilities.throughput.Throughput`.

    Lightning's ThroughputMonitor synchronises CUDA after every training batch so that its clock is
    right; that stall leaves the GPU idle while the host prepares the next batch, every batch. This one
    counts every batch but synchronises and reads the clock only on the updates that log, after the
    first update (so compilation is left out; its time is logged as ``train/first_update_s``) and
    before each validation (validation time is left out). It logs ``train/device/items_per_sec``
    (tokens/s), ``train/device/flops_per_sec``, ``train/device/mfu`` and, with several processes, the
    same summed over them (``train/items_per_sec``...), each over the last logging interval; and after
    each validation, ``validate/device/items_per_sec`` over that validation. FLOPs per token are
    counted on the module's ``backbone`` (else Lightning's convention: the module's ``flops_per_batch``).
    """

    def __init__(self) -> None:
        self.latest: dict[str, float] = {}  # the last metrics logged (the plain progress lines show them)
        self.available_flops: float | None = None
        self.flops_per_token: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.available_flops = peak_flops(trainer.strategy.root_device, compute_dtype(trainer.precision))
        backbone = getattr(pl_module, "backbone", None)
        if self.flops_per_token is None and backbone is not None:
            self.flops_per_token = measure_flops_per_token(backbone.config)

    @staticmethod
    def of(trainer: pl.Trainer) -> TokenThroughput | None:
        """The fit's TokenThroughput, if it has one."""
        return next((cb for cb in trainer.callbacks if isinstance(cb, TokenThroughput)), None)

    def tokens_per_second(self) -> float | None:
        """The training tokens/s logged last, summed over the processes when there are several (a number on
        the host: free to read)."""
        tokens = self.latest.get("train/items_per_sec", self.latest.get("train/device/items_per_sec"))
        return None if tokens is None else float(tokens)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # two readings: the rates are over the last interval
        self.train = Throughput(available_flops=self.available_flops, world_size=trainer.world_size, window_size=2)
        self.batches = self.samples = self.tokens = self.batches_read = 0
        self.flops = 0.0  # since the last reading
        self.clock_start = time.perf_counter()  # moved on by each validation's time
        self.step_seen = trainer.global_step
        self.first_logged = False

    def _flops_of(self, pl_module: pl.LightningModule, tokens: int) -> float | None:
        if self.flops_per_token is not None:
            return self.flops_per_token * tokens
        return getattr(pl_module, "flops_per_batch", None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        tokens = batch_tokens(batch)
        self.batches, self.samples, self.tokens = self.batches + 1, self.samples + batch_size(batch), self.tokens + tokens
        flops = self._flops_of(pl_module, tokens)
        self.flops = None if flops is None else self.flops + flops
        if trainer.global_step == self.step_seen:
            return  # accumulating gradients: the update is not over
        self.step_seen = trainer.global_step
        first = not self.first_logged
        if first or logging_update(trainer):
            elapsed = self.read_clock(trainer)
            step = trainer.global_step - 1  # the step Lightning logs this update's own metrics at
            if first:  # compilation and warm-up, reported apart from the steady-state rates
                self.first_logged = True
                self._log(trainer, {"train/first_update_s": elapsed}, step)
            if logging_update(trainer):
                self._log(trainer, {f"train/{k}": v for k, v in self.train.compute().items()}, step)

    def read_clock(self, trainer: pl.Trainer) -> float:
        """Add a reading (time, batches, samples, tokens, FLOPs since the last one) once the device is
        done; returns the training time so far."""
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self.clock_start
        if self.batches != self.batches_read:  # something new since the last reading
            self.train.update(time=elapsed, batches=self.batches, samples=self.samples, lengths=self.tokens,
                              flops=self.flops)
            self.batches_read, self.flops = self.batches, 0.0 if self.flops is not None else None
        return elapsed

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        self.read_clock(trainer)  # training time ends here, not at the last log
        self.val_start, self.val_tokens = time.perf_counter(), 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit" and trainer.is_global_zero:
            self.val_tokens += batch_tokens(batch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - self.val_start
        self.clock_start += took  # left out of the training rates
        if took > 0:
            self._log(trainer, {"validate/device/items_per_sec": self.val_tokens / took}, trainer.global_step)

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        self.latest.update(metrics)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

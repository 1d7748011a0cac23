"""Callbacks gptkit adds to Lightning's own: plain log lines for non-terminals, and throughput."""

from __future__ import annotations

import sys
import time
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar, ThroughputMonitor
from pytorch_lightning.trainer.states import RunningStage


def _batch_size(batch) -> int:
    return (batch["input_ids"] if isinstance(batch, dict) else batch).size(0)


def _batch_tokens(batch) -> int:
    if isinstance(batch, dict):
        return batch["input_ids"].numel()
    return batch.size(0) * (batch.size(1) - 1)  # pretraining blocks hold n_ctx inputs + 1 target


# Dense peaks of Hopper chips (datasheets), by the device name's words, first match: the PCIe and NVL
# boards are clocked lower than the SXM ones ("NVIDIA H100 80GB HBM3", "NVIDIA H200"). Lightning's table
# lists the 2:4-sparse figures for Hopper and does not recognise a plain "NVIDIA H200", so MFU against
# it would be halved or missing.
_HOPPER_DENSE = (
    (("h100", "pcie"), {torch.bfloat16: 756.0e12, torch.float16: 756.0e12, "tfloat32": 378.0e12, torch.float32: 51.2e12}),
    (("nvl",), {torch.bfloat16: 835.5e12, torch.float16: 835.5e12, "tfloat32": 417.5e12, torch.float32: 60.0e12}),
    ((), {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12}),
)


def _hopper(device: torch.device) -> bool:
    return device.type == "cuda" and any(chip in torch.cuda.get_device_name(device).lower() for chip in ("h100", "h200"))


def _hopper_dense(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device).lower()
    return next(peaks for words, peaks in _HOPPER_DENSE if all(w in name for w in words))


def peak_flops(device: torch.device, dtype) -> float | None:
    """The device's dense peak FLOP/s for ``dtype``: Hopper from the datasheet, else Lightning's table."""
    from lightning_fabric.utilities.throughput import get_available_flops

    if _hopper(device):
        if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            dtype = "tfloat32"
        return _hopper_dense(device).get(dtype)
    return get_available_flops(device, dtype)


class _Throughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor, reading the clock only when it logs, with dense Hopper peaks.

    Lightning's monitor synchronises CUDA after every training batch so that its clock is right. That
    stall leaves the GPU idle while the host prepares the next batch, every batch. This one counts
    every batch but synchronises and reads the clock only on the batches whose metrics are logged
    (every ``trainer.log_every_n_steps`` updates), after the first batch (so compilation is left out;
    its time is logged as ``train/first_update_s``) and before each validation (so validation time is
    left out). Rates are over the last interval.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(window_size=2, **kwargs)  # two clock readings: the last logging interval
        self._pending_flops: dict = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        with warnings.catch_warnings():
            if _hopper(trainer.strategy.root_device):  # Lightning warns it has no peak; gptkit has one
                warnings.filterwarnings("ignore", message="FLOPs not found")
            super().setup(trainer, pl_module, stage)
        from pytorch_lightning.callbacks.throughput_monitor import _plugin_to_compute_dtype

        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        self.available_flops = peak_flops(trainer.strategy.root_device, dtype)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops

    def _start(self, trainer) -> None:
        super()._start(trainer)
        self._pending_flops.pop(trainer.state.stage, None)

    def _update(self, trainer, pl_module, batch, iter_num: int) -> None:
        stage = trainer.state.stage
        self._lengths[stage] += self.length_fn(batch)
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        flops = getattr(pl_module, "flops_per_batch", None)
        if flops is not None:
            self._pending_flops[stage] = self._pending_flops.get(stage, 0.0) + flops
        logging_now = trainer._logger_connector.should_update_logs and not trainer.fit_loop._should_accumulate()
        first = stage == RunningStage.TRAINING and self._batches[stage] == 1
        if stage != RunningStage.TRAINING or first or logging_now:
            self._read_clock(trainer, stage)
        if first:  # compilation and warm-up, reported apart from the steady-state rates
            first_update_s = self._throughputs[stage]._time[-1]
            step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step other train metrics use
            trainer._logger_connector.log_metrics({"train/first_update_s": first_update_s}, step=step)

    def _read_clock(self, trainer, stage) -> None:
        """Add a (time, batches, samples, tokens, FLOPs since the last reading) point, once the device is done."""
        throughput = self._throughputs[stage]
        if throughput._batches and throughput._batches[-1] == self._batches[stage]:
            return  # nothing new since the last reading
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        throughput.update(
            time=time.perf_counter() - self._t0s[stage], batches=self._batches[stage],
            samples=self._samples[stage], lengths=self._lengths[stage], flops=self._pending_flops.pop(stage, None),
        )

    def on_validation_start(self, trainer, *args) -> None:
        if not trainer.sanity_checking and RunningStage.TRAINING in self._throughputs and trainer.is_global_zero:
            self._read_clock(trainer, RunningStage.TRAINING)  # training time ends here, not at the last log
        super().on_validation_start(trainer, *args)


def throughput_monitor() -> ThroughputMonitor:
    """gptkit's ThroughputMonitor counting tokens; FLOPs come from the module's ``flops_per_batch``.

    It logs ``train/device/items_per_sec`` (tokens/s per device), ``train/device/mfu`` where the
    device's peak FLOP/s is known, and the same summed over devices (``train/items_per_sec``...), each
    over the last ``trainer.log_every_n_steps`` updates.
    """
    return _Throughput(batch_size_fn=_batch_size, length_fn=_batch_tokens)


class PlainProgress(pl.Callback):
    """One log line every ``every`` updates and after each validation, for logs that are not terminals."""

    def __init__(self, every: int = 50, stream=None) -> None:
        self.every = max(1, every)
        self.stream = stream or sys.stderr
        self._t0 = time.perf_counter()  # reset when training starts: "elapsed" is training time
        self._seen_first = False
        self._last: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def _write(self, trainer: pl.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(text, file=self.stream, flush=True)

    @staticmethod
    def _fmt(metrics: dict, keys: tuple[str, ...]) -> str:
        parts = []
        for key, value in metrics.items():
            if key.startswith(keys) and isinstance(value, torch.Tensor) and value.numel() == 1:
                parts.append(f"{key} {value.item():.4g}")
        return "  ".join(parts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._seen_first:  # the throughput monitor logs it on the first batch
            self._seen_first = True
            first = trainer.logged_metrics.get("train/first_update_s")
            if first is not None:
                what = "torch.compile and warm-up" if getattr(pl_module, "_compiled", False) else "warm-up"
                self._write(trainer, f"first update: {float(first):.1f}s ({what}; tokens/s leaves it out)")
        step = trainer.global_step
        if step % self.every or self._last == step:
            return
        self._last = step
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        elapsed = time.perf_counter() - self._t0
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        line = self._fmt(trainer.callback_metrics, ("train/",))
        speed = trainer.logged_metrics  # ThroughputMonitor logs straight to the logger
        tokens = speed.get("train/items_per_sec", speed.get("train/device/items_per_sec"))  # all devices if >1
        if tokens is not None:
            line += f"  tokens/s {float(tokens):,.0f}"
        if "train/device/mfu" in speed:
            line += f"  mfu {100 * float(speed['train/device/mfu']):.1f}%"
        self._write(trainer, f"step {step}/{int(total)}  {line}  lr {lr:.3g}  elapsed {elapsed:.0f}s")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return  # (gptkit validate prints its metrics itself)
        line = self._fmt(trainer.callback_metrics, ("val/",))
        self._write(trainer, f"validation at step {trainer.global_step}: {line}")


class RichProgress(RichProgressBar):
    """Lightning's rich progress bar, with its metrics refreshed only when they are logged.

    Reading a value (``.item()``) waits for the GPU to finish everything queued, so this bar moves
    every batch but reads the values every ``trainer.log_every_n_steps`` updates, after each
    validation and at the end of each epoch. The training losses are not logged with ``prog_bar``
    (Lightning would read those after every batch); the bar takes them from the callback metrics.
    """

    _read_metrics = True

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        for key in ("train/loss", "train/task_loss"):
            value = trainer.callback_metrics.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                metrics[key] = value.item()
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._read_metrics = trainer._logger_connector.should_update_logs
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._read_metrics = True

    def _update_metrics(self, trainer, pl_module) -> None:
        if self._read_metrics:
            super()._update_metrics(trainer, pl_module)

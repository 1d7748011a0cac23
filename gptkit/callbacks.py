"""Callbacks gptkit adds to Lightning's own: plain log lines for non-terminals, and throughput."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ThroughputMonitor


def _batch_size(batch) -> int:
    return (batch["input_ids"] if isinstance(batch, dict) else batch).size(0)


def _batch_tokens(batch) -> int:
    if isinstance(batch, dict):
        return batch["input_ids"].numel()
    return batch.size(0) * (batch.size(1) - 1)  # pretraining blocks hold n_ctx inputs + 1 target


def throughput_monitor() -> ThroughputMonitor:
    """Lightning's ThroughputMonitor counting tokens; FLOPs come from the module's ``flops_per_batch``.

    It logs ``train/device/items_per_sec`` (tokens/s per device), ``train/device/mfu`` where Lightning
    knows the device's peak FLOP/s, and the same summed over devices (``train/items_per_sec``...),
    averaged over a window of 20 batches.
    """
    return ThroughputMonitor(batch_size_fn=_batch_size, length_fn=_batch_tokens, window_size=20)


class PlainProgress(pl.Callback):
    """One log line every ``every`` updates and after each validation, for logs that are not terminals."""

    def __init__(self, every: int = 50, stream=None) -> None:
        self.every = max(1, every)
        self.stream = stream or sys.stderr
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
        step = trainer.global_step
        if step % self.every or getattr(self, "_last", None) == step:
            return
        self._last = step
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        elapsed = time.perf_counter() - self._t0
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        line = self._fmt(trainer.callback_metrics, ("train/",))
        self._write(trainer, f"step {step}/{int(total)}  {line}  lr {lr:.3g}  elapsed {elapsed:.0f}s")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        line = self._fmt(trainer.callback_metrics, ("val/",))
        self._write(trainer, f"validation at step {trainer.global_step}: {line}")

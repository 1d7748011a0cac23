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


# Dense peaks of Hopper chips (datasheet). Lightning's table lists the 2:4-sparse figures for them and
# does not recognise a plain "NVIDIA H200", so MFU against it would be halved or missing.
_HOPPER_DENSE = {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12}


def peak_flops(device: torch.device, dtype) -> float | None:
    """The device's dense peak FLOP/s for ``dtype``: Hopper from the datasheet, else Lightning's table."""
    from lightning_fabric.utilities.throughput import get_available_flops

    if device.type == "cuda" and any(chip in torch.cuda.get_device_name(device).lower() for chip in ("h100", "h200")):
        if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            dtype = "tfloat32"
        return _HOPPER_DENSE.get(dtype)
    return get_available_flops(device, dtype)


class _Throughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor with the dense peak of :func:`peak_flops` for MFU."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        from pytorch_lightning.callbacks.throughput_monitor import _plugin_to_compute_dtype

        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        self.available_flops = peak_flops(trainer.strategy.root_device, dtype)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops


def throughput_monitor() -> ThroughputMonitor:
    """Lightning's ThroughputMonitor counting tokens; FLOPs come from the module's ``flops_per_batch``.

    It logs ``train/device/items_per_sec`` (tokens/s per device), ``train/device/mfu`` where Lightning
    knows the device's peak FLOP/s, and the same summed over devices (``train/items_per_sec``...),
    averaged over a window of 20 batches.
    """
    return _Throughput(batch_size_fn=_batch_size, length_fn=_batch_tokens, window_size=20)


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
        speed = trainer.logged_metrics  # ThroughputMonitor logs straight to the logger
        tokens = speed.get("train/items_per_sec", speed.get("train/device/items_per_sec"))  # all devices if >1
        if tokens is not None:
            line += f"  tokens/s {float(tokens):,.0f}"
        if "train/device/mfu" in speed:
            line += f"  mfu {100 * float(speed['train/device/mfu']):.1f}%"
        self._write(trainer, f"step {step}/{int(total)}  {line}  lr {lr:.3g}  elapsed {elapsed:.0f}s")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        line = self._fmt(trainer.callback_metrics, ("val/",))
        self._write(trainer, f"validation at step {trainer.global_step}: {line}")

"""How a fit shows its progress: plain log lines for logs that are not terminals (:class:`PlainProgress`),
and on a terminal a bar of updates with one line per validation kept above it (:class:`RichProgress`).

Reading a device value (``.item()``) waits for the GPU to finish everything queued, so both read the
metrics only on the updates that log (every ``trainer.log_every_n_steps``), after validations and at
the ends of epochs, never on the updates in between.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.callbacks.progress.rich_progress import RichProgressBarTheme
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.style import Style
from rich.table import Column
from rich.text import Text

from gptkit.callbacks import TokenThroughput, logging_update
from gptkit.console import duration


def scalars_text(metrics: dict, keys: tuple[str, ...]) -> str:
    """``val/loss 5.81  val/ppl 334``: the one-number metrics whose names start with ``keys`` (reads them)."""
    parts = []
    for key, value in metrics.items():
        if key.startswith(keys) and isinstance(value, torch.Tensor) and value.numel() == 1:
            parts.append(f"{key} {value.item():.4g}")
    return "  ".join(parts)


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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        monitor = TokenThroughput.of(trainer)
        speed = monitor.latest if monitor is not None else {}
        if not self._seen_first:  # the throughput monitor logs it on the first update
            self._seen_first = True
            first = speed.get("train/first_update_s")
            if first is not None:
                what = "torch.compile and warm-up" if getattr(pl_module, "compiled", False) else "warm-up"
                self._write(trainer, f"first update: {float(first):.1f}s ({what}; tokens/s leaves it out)")
        step = trainer.global_step
        if step % self.every or self._last == step:
            return
        self._last = step
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        elapsed = time.perf_counter() - self._t0
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        line = scalars_text(trainer.callback_metrics, ("train/",))
        if (tokens := monitor.tokens_per_second() if monitor is not None else None) is not None:
            line += f"  tokens/s {tokens:,.0f}"
        if "train/device/mfu" in speed:
            line += f"  mfu {100 * float(speed['train/device/mfu']):.1f}%"
        self._write(trainer, f"step {step}/{int(total)}  {line}  lr {lr:.3g}  elapsed {elapsed:.0f}s")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return  # (gptkit validate prints its metrics itself)
        line = scalars_text(trainer.callback_metrics, ("val/",))
        self._write(trainer, f"validation at step {trainer.global_step}: {line}")


class CountColumn(ProgressColumn):
    """``370/1,200 updates`` (``370 updates`` when the total is not known)."""

    def __init__(self, style: str | Style = "") -> None:
        super().__init__()
        self.style = style

    def render(self, task: Task) -> Text:
        total = "" if task.total is None else f"/{int(task.total):,}"
        return Text(f"{int(task.completed):,}{total} {task.fields.get('unit', '')}", style=self.style)


class TimeColumn(ProgressColumn):
    """Elapsed and remaining time and the rate: ``0:01:12 • 0:00:31 • 0.71/s``."""

    def __init__(self, style: str | Style = "") -> None:
        super().__init__()
        self.style = style

    def render(self, task: Task) -> Text:
        def clock(seconds: float | None) -> str:
            return "-:--:--" if seconds is None else str(timedelta(seconds=int(seconds)))

        speed = task.finished_speed or task.speed
        remaining = 0 if task.finished else task.time_remaining
        rate = "" if speed is None else f" • {speed:.3g}/s"
        return Text(f"{clock(task.elapsed)} • {clock(remaining)}{rate}", style=self.style)


class RichProgress(ProgressBar):
    """The progress display on a terminal: a bar of updates against the run's length, one line per
    validation kept above it, and a bar of batches while evaluating.

    The training bar counts optimizer updates (``trainer.global_step``, from the update a resumed run
    starts at) against ``trainer.estimated_stepping_batches``: ``trainer.max_steps``, or the epochs where
    they end the run first (the bar then also says which epoch it is in). It shows the training loss and
    tokens/s, read (:meth:`read_metrics`) only on the updates that log and at the ends of epochs: a read
    waits for the device, so the updates in between read nothing. Each validation of a fit leaves a line
    above the bar (``validation at update 300/1,200: val/loss 5.81  val/ppl 334  (1m12s)``); the sanity
    check shows no values; the last frame stays on the screen, once.

    It is a Lightning ``ProgressBar`` (so the Trainer takes it for the run's progress bar) that draws its
    own display with ``rich`` from Lightning's public hooks, in the styles of Lightning's
    ``RichProgressBarTheme``: Lightning's RichProgressBar counts batches per epoch (``Epoch 0/-2`` on a
    run bounded by ``max_steps``) and shows every progress-bar value, ``v_num`` and the sanity check's
    included.
    ``refresh_rate`` is in frames per second; ``console`` is where it draws (default: stderr, with
    gptkit's own lines).
    """

    def __init__(self, refresh_rate: int = 5, theme: RichProgressBarTheme | None = None,
                 console: Console | None = None) -> None:
        super().__init__()
        self.refresh_rate, self.theme, self.console = refresh_rate, theme or RichProgressBarTheme(), console
        self.enabled = True  # (Lightning disables the bar in the processes other than the first)
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}  # "train", and the evaluation loop running now
        self.shown: dict[str, float] = {}  # the values last read
        self.epochs_bound = False  # the epochs end the run before trainer.max_steps
        self.total_updates: float | None = None
        self.step_read: int | None = None
        self.throughput: TokenThroughput | None = None
        self.t0 = time.perf_counter()

    # -- what it shows
    def read_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        """The values to show, as numbers: Lightning's progress-bar metrics but ``v_num`` (the last
        validation's: Lightning drops the sanity check's when it ends, and the bar reads none during it)
        and the training losses (not logged with ``prog_bar``: Lightning would read those after every
        batch). Reads device values."""
        metrics = {key: value for key, value in super().get_metrics(trainer, pl_module).items() if key != "v_num"}
        for key in ("train/loss", "train/task_loss"):
            value = trainer.callback_metrics.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                metrics[key] = value.item()
        return metrics

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        return self.read_metrics(trainer, pl_module)

    @staticmethod
    def metrics_text(metrics: dict, tokens_per_second: float | None = None) -> str:
        """The values on the training bar: every one but the validation's (they have their lines), and tokens/s."""
        parts = [f"{key} {value:.4g}" for key, value in metrics.items()
                 if not key.startswith("val/") and isinstance(value, (int, float))]
        if tokens_per_second is not None:
            parts.append(f"{tokens_per_second:,.0f} tokens/s")
        return "  ".join(parts)

    def train_label(self, trainer: pl.Trainer) -> str:
        return f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}" if self.epochs_bound else "train"

    # -- the display
    def display(self) -> Progress | None:
        """The live display, started on first use (None in the processes other than the first)."""
        if self.is_disabled:
            return None
        if self.progress is None:
            t = self.theme
            self.progress = Progress(
                TextColumn("{task.description}", style=t.description),
                BarColumn(bar_width=30, complete_style=t.progress_bar, finished_style=t.progress_bar_finished,
                          pulse_style=t.progress_bar_pulse),
                CountColumn(style=t.batch_progress),
                TimeColumn(style=t.time),
                TextColumn("{task.fields[metrics]}", style=t.metrics,
                           table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=self.console or Console(stderr=True),
                refresh_per_second=self.refresh_rate,
                redirect_stdout=sys.stdout.isatty(),  # a print to the terminal goes above the bar, not into it
            )
            self.progress.start()
        return self.progress

    def stop_display(self) -> None:
        """Stop the live display; its last frame stays on the screen."""
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.tasks = None, {}

    def show_task(self, name: str, description: str, total: float | None, completed: int = 0,
                  unit: str = "batches") -> None:
        progress = self.display()
        if progress is None:
            return
        total = None if total is None or math.isinf(total) else float(total)
        if name in self.tasks:
            progress.reset(self.tasks[name], total=total, completed=completed, description=description,
                           visible=True, unit=unit, metrics="")
        else:
            self.tasks[name] = progress.add_task(description, total=total, completed=completed, unit=unit, metrics="")

    def update_task(self, name: str, **changes: Any) -> None:
        if self.progress is not None and name in self.tasks:
            self.progress.update(self.tasks[name], **changes)

    def end_task(self, name: str) -> None:
        """Take a bar off the display (the next one of that name is drawn below the others)."""
        if self.progress is not None and name in self.tasks:
            self.progress.remove_task(self.tasks.pop(name))

    def write(self, line: str) -> None:
        """A line above the live display, kept on the screen."""
        if self.progress is not None:
            self.progress.console.print(Text(line))
        elif not self.is_disabled:
            print(line, file=sys.stderr, flush=True)

    @property
    def is_enabled(self) -> bool:
        return self.enabled

    @property
    def is_disabled(self) -> bool:
        return not self.enabled

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def __getstate__(self) -> dict:  # (a live display does not pickle)
        return {**self.__dict__, "console": None, "progress": None}

    # -- fit
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.shown, self.step_read = {}, None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t0 = time.perf_counter()
        self.throughput = TokenThroughput.of(trainer)
        total = trainer.estimated_stepping_batches  # max_steps, or fewer where the epochs end the run first
        self.total_updates = None if math.isinf(total) else total
        self.epochs_bound = (trainer.max_epochs is not None and trainer.max_epochs > 0
                             and not 0 < trainer.max_steps <= total)
        self.show_task("train", self.train_label(trainer), total, trainer.global_step, "updates")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.update_task("train", description=self.train_label(trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if logging_update(trainer) and self.step_read != trainer.global_step:  # (once per update, not per batch)
            self.step_read = trainer.global_step
            self.shown = self.read_metrics(trainer, pl_module)
        # tokens/s is logged after this callback has run (on logging updates): shown from the next update on
        text = self.metrics_text(self.shown, self.throughput and self.throughput.tokens_per_second())
        self.update_task("train", completed=trainer.global_step, metrics=text)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.shown = self.read_metrics(trainer, pl_module)
        self.update_task("train", metrics=self.metrics_text(self.shown, self.throughput and self.throughput.tokens_per_second()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_display()

    # -- evaluation (a fit's validations, and the validate, test and predict verbs)
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            self.show_task("eval", "sanity check", sum(trainer.num_sanity_val_batches))
        else:
            self.show_task("eval", "validate", sum(trainer.num_val_batches))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.progress is not None and "eval" in self.tasks:
            self.progress.advance(self.tasks["eval"])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "fit":  # gptkit validate prints the metrics itself
            self.stop_display()
            return
        self.end_task("eval")
        if trainer.sanity_checking:
            return
        total = self.total_updates
        where = f"update {trainer.global_step:,}" + (f"/{int(total):,}" if total is not None else "")
        if self.epochs_bound:
            where += f" (epoch {trainer.current_epoch + 1}/{trainer.max_epochs})"
        values = scalars_text(trainer.callback_metrics, ("val/",))
        self.write(f"validation at {where}: {values}  ({duration(time.perf_counter() - self.t0)})")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.show_task("eval", "test", sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_display()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.show_task("eval", "predict", sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_display()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.stop_display()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.stop_display()

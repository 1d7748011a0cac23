"""The checkpoint callbacks of a fit: the best checkpoints by ``checkpoint.monitor``, and ``last.ckpt``.

- :class:`BestCheckpoint` is Lightning's ``ModelCheckpoint``, saving at the end of each validation,
  which never keeps a NaN/inf score as a best one.
- :class:`LastCheckpoint` writes ``last.ckpt`` (through ``Trainer.save_checkpoint``) every
  ``checkpoint.every_n_train_steps`` updates, or else at each validation, and when training ends, so
  that a killed run can resume (``ckpt_path=last``) and a finished one holds its final update. It is
  written after the validation's best checkpoint, so it records it.

Both are ``Checkpoint`` callbacks, which Lightning runs after every other callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from gptkit.console import log

LAST = "last.ckpt"


class BestCheckpoint(ModelCheckpoint):
    """The ModelCheckpoint keeping the best checkpoints, at the end of each validation.

    It also takes over the saved state of gptkit's earlier single checkpoint callback (checkpoints
    written before ``last.ckpt`` got its own callback stored it under ``ModelCheckpoint{...}``), so
    resuming an older run keeps its best score and best files.
    """

    def __init__(self, *args: Any, legacy_every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        # at the end of each validation, also for one that ends an epoch: LastCheckpoint then follows at the
        # epoch's end, and the two never depend on Lightning's choice between the two moments
        super().__init__(*args, save_on_train_epoch_end=False, **kwargs)
        every = legacy_every_n_train_steps or 0  # the key ModelCheckpoint.state_key gave the single callback
        settings = {"monitor": self.monitor, "mode": self.mode, "every_n_train_steps": every,
                    "every_n_epochs": 0 if every else 1, "train_time_interval": None}
        self.legacy_state_key = f"ModelCheckpoint{settings!r}"

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("callbacks")
        if isinstance(states, dict) and self.state_key not in states and self.legacy_state_key in states:
            states[self.state_key] = states[self.legacy_state_key]  # Lightning loads each state by its key next

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and not torch.isfinite(current).all():  # never "best"; Lightning would keep it
            log(f"{self.monitor} is {current.item()} at update {trainer.global_step} (the model diverged, or the "
                "metric is undefined here); this checkpoint is not kept as a best one")
            return False
        return super().check_monitor_top_k(trainer, current)

    def kept_best(self) -> str:
        """The best checkpoint kept in this callback's folder ("" if none; a run resumed from another
        run folder's checkpoint restores that folder's best path)."""
        best = self.best_model_path
        return best if best and self.dirpath and Path(best).parent.resolve() == Path(self.dirpath).resolve() else ""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_top_k and not self.kept_best() and not trainer.interrupted:
            log(f"training ended before its first validation, so no best checkpoint ({self.monitor}) was kept; "
                "last.ckpt holds the final update (validation runs every trainer.val_check_interval updates, "
                "or at the end of each epoch)")


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: every ``every_n_train_steps`` updates (null: at the end of each validation), and
    when training ends, so that after a finished ``gptkit fit`` it always holds the final update.

    A validation on an epoch's last batch is followed by ``last.ckpt`` at the epoch's end, so that the
    checkpoint counts the epoch as done and a resume does not run the epoch's end again; a fit with no
    validation at all writes it at each epoch's end. Written once per update at most: a resume that
    trains nothing writes nothing.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps or 0
        self.last_model_path = ""  # set once written (and by Preemption's save)
        self.saved_step: int | None = None
        self._epoch_ends_validated = False

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def save(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this update."""
        if self.saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state, to resume from
        self.saved_step, self.last_model_path = trainer.global_step, str(self.path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the checkpoint a fit resumes holds this update already
        self.saved_step = trainer.global_step if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_train_steps or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._epoch_ends_validated = True  # saved at the epoch's end, just after
        else:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        validated, self._epoch_ends_validated = self._epoch_ends_validated, False
        if not self.every_n_train_steps and (validated or not trainer.enable_validation):
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)


def last_checkpoint(trainer: pl.Trainer) -> LastCheckpoint | None:
    """The fit's :class:`LastCheckpoint`, if it has one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)

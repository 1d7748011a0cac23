"""Resuming a fit exactly: its random state, and the recipe's training settings.

- :class:`RNGState` saves the Python, NumPy and torch (CPU and CUDA) random states in every
  checkpoint and puts them back when training resumes, so dropout masks continue as if the run had
  never stopped (Lightning does not restore them itself).
- :class:`ResumedSettings` makes a resumed fit train with the recipe's optimizer settings (Lightning
  restores the checkpoint's over them) and logs each setting that differs from the checkpoint's.
- :func:`caller_rng_state` gives a script its own random state back after a run.

The data order's position is saved by :class:`gptkit.data.sampler.ResumableDataLoader`; the model,
optimizer and schedule by Lightning.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from gptkit.console import log


def collect_rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain Python values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def caller_rng_state() -> Iterator[None]:
    """Give the caller's random state back after a run, which seeds every generator from ``run.seed``
    (a script drawing settings at random between runs would otherwise draw the same ones each time)."""
    state = collect_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


class RNGState(pl.Callback):
    """Saves the random generators' states in checkpoints and restores them when training resumes.

    They are restored at ``on_train_start``: after the sanity check and the checkpoint load, just
    before the first resumed update. Every process is seeded alike and draws alike, so the state of
    rank 0 (the one saved) restores every rank.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None


class ResumedSettings(pl.Callback):
    """A resumed fit trains with the recipe's settings, and says which differ from the checkpoint's.

    Lightning restores the checkpoint's optimizer (its lr, betas, eps, weight decay, fused) and the
    schedule's peak lr over the ones this run was configured with; they are set back when training
    starts, so that resuming with, say, a lower ``optim.lr`` (the advice after a non-finite loss) takes
    effect. The schedule's shape (``schedule``, warmup, ``trainer.max_steps``) is the recipe's already;
    where the rate at this update differs from the checkpoint's, it is set and the jump logged.
    """

    def __init__(self) -> None:
        self.resumed_step: int | None = None  # the update of the checkpoint this fit resumes, if any
        self._hparams: dict = {}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.resumed_step = int(checkpoint.get("global_step", 0))
        self._hparams = checkpoint.get("hyper_parameters") or {}

    @staticmethod
    def _settings(hp) -> dict:
        model = hp.get("model") or {}
        return {**{f"{section}.{k}": v for section in ("optim", "objective") for k, v in (hp.get(section) or {}).items()},
                **{f"model.{k}": model[k] for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop") if k in model},
                **({"model.clf_pdrop": hp["head_dropout"]} if hp.get("task") and "head_dropout" in hp else {})}

    def changes(self, hparams) -> list[str]:
        """The training settings (``optim.*``, ``objective.*``, the dropouts) that differ between
        ``hparams`` and the checkpoint's, as ``key=this run's (the checkpoint's: its)``."""
        mine, theirs = self._settings(hparams), self._settings(self._hparams)
        return [f"{k}={v} (the checkpoint's: {theirs[k]})" for k, v in mine.items() if k in theirs and theirs[k] != v]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        configs = trainer.lr_scheduler_configs
        scheduler = configs[0].scheduler if configs else None
        if self.resumed_step is None or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        optimizer, o = trainer.optimizers[0], pl_module.hparams.optim
        group = optimizer.param_groups[0]  # the decayed weights (gptkit.optim.param_groups)
        if changed := self.changes(pl_module.hparams):
            log("resuming with " + ", ".join(changed))
        step = scheduler.last_epoch
        rate = o["lr"] * scheduler.lr_lambdas[0](step)
        if not math.isclose(group["lr"], rate, rel_tol=1e-6, abs_tol=1e-12):
            log(f"resuming at update {step}: the learning rate goes from {group['lr']:.3g} (the checkpoint's) to "
                f"{rate:.3g} (the recipe's schedule: optim.lr, the schedule, the warmup or the number of updates changed)")
        scheduler.base_lrs = [o["lr"]] * len(optimizer.param_groups)
        # Through state_dict / load_state_dict, so that torch places AdamW's step counters for the
        # fused setting the groups now have (the device differs between fused and not).
        state = optimizer.state_dict()
        for i, g in enumerate(state["param_groups"]):
            g.update(lr=rate, initial_lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                     fused=True if pl_module.fused_adamw else None)
            if i == 0:
                g["weight_decay"] = o["weight_decay"]
        optimizer.load_state_dict(state)

"""Shared helpers for the tests that train in-process: a tiny pretraining run on real news text, a
callback that records each update's loss (and can stop the run at one), and TensorBoard scalars."""

from __future__ import annotations

import glob
import os
import signal

import pytorch_lightning as pl
from conftest import QUICK

from gptkit.builder import build
from gptkit.config import load_config
from gptkit.verbs import fit as fit_components

N_STEPS = 30


def tiny_args(corpus, root, name, *extra):
    return [
        "data.corpus=null", f"data.files=[{corpus}]", "model.n_layer=2", "model.n_head=2", "model.n_embd=32",
        "model.n_ctx=32", "tokenizer.vocab_size=300", "data.batch_size=8", "data.val_fraction=0.1",
        "optim.lr=3e-3", "optim.warmup_steps=5", f"trainer.max_steps={N_STEPS}", "trainer.val_check_interval=5",
        "trainer.limit_val_batches=2", "trainer.log_every_n_steps=5", "trainer.accelerator=cpu",
        "trainer.devices=1", "checkpoint.every_n_train_steps=4", "logging.progress=none",
        "logging.throughput=false", f"run.dir={root / 'runs'}", f"run.data_dir={root / 'data'}", f"run.name={name}",
        *extra,
    ]


class Record(pl.Callback):
    """Per-update training loss and learning rate, and an optional stop (signal or crash) at one update."""

    def __init__(self, stop_at=None, how=None):
        self.losses, self.lrs, self.stop_at, self.how = {}, {}, stop_at, how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not outputs:  # a skipped batch (objective.nonfinite=skip)
            return
        self.losses[step] = outputs["loss"].item()
        self.lrs[step] = trainer.optimizers[0].param_groups[0]["lr"]
        if step == self.stop_at:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            elif self.how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise RuntimeError("simulated node failure")


def fit(args, record, recipe=QUICK):
    """Build the recipe with ``args`` and ``record`` among its callbacks, and fit it; returns the components."""
    c = build(load_config(recipe, args), callbacks=[record])
    fit_components(c)
    return c


def scalars(run_dir, tag):
    """``(step, value)`` of every TensorBoard scalar ``tag`` written into a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for path in sorted(glob.glob(str(run_dir / "tensorboard" / "*" / "events.*"))):
        acc = EventAccumulator(path)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values += [(e.step, e.value) for e in acc.Scalars(tag)]
    return values

"""`gptkit.run` from a Python script, as a sweep calls it: extra callbacks, several fits in one
process, the caller's random state and Ctrl-C handler left as they were."""

import logging
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from finetune_helpers import GLUE, tiny_tokenizer

from gptkit import load_config, run

RECIPE = str(Path(__file__).parent.parent / "recipes" / "sst2.yaml")


@pytest.fixture
def cfg_for(tmp_path):
    tiny_tokenizer().save(tmp_path / "tok.json")

    def cfg(name: str, *extra: str):
        return load_config(RECIPE, [
            f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path / 'runs'}",
            f"run.name={name}", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=64",
            "data.batch_size=4", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
            "trainer.accelerator=cpu", "trainer.devices=1", "logging.progress=none", "logging.throughput=false", *extra,
        ])
    return cfg


class Steps(pl.Callback):
    """Records the updates it sees; optionally fails at one."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.steps, self.fail_at = [], fail_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(trainer.global_step)
        if trainer.global_step == self.fail_at:
            raise RuntimeError("the callback failed")


def test_callbacks_join_the_fit_and_runs_in_a_loop_repeat(cfg_for):
    seen = Steps()
    first = run("fit", cfg_for("a"), callbacks=[seen])
    assert seen.steps == [1, 2, 3, 4]
    again = run("fit", cfg_for("b"))  # the same settings under another name, in the same process
    assert again["val/acc"] == first["val/acc"] and again["val/loss"] == pytest.approx(first["val/loss"], rel=1e-6)
    tested = run("test", cfg_for("a", "ckpt_path=best"))
    assert set(tested) >= {"test/acc", "test/loss"}
    assert len(logging.getLogger("pytorch_lightning.utilities.rank_zero").filters) == 1  # not one per run


def test_the_callers_random_state_and_ctrl_c_come_back(cfg_for):
    def seed_all(seed):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, handler)
    try:
        seed_all(5)
        expected = draws()
        seed_all(5)
        run("fit", cfg_for("rng"))  # seeds everything from run.seed
        assert draws() == expected  # a random search drawing its next settings here gets new ones
        assert signal.getsignal(signal.SIGINT) is handler
        with pytest.raises(RuntimeError, match="the callback failed"):
            run("fit", cfg_for("fails"), callbacks=[Steps(fail_at=2)])
        assert signal.getsignal(signal.SIGINT) is handler  # not gptkit's stop-at-the-next-update handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_ctrl_c_stops_at_once(cfg_for, tmp_path):
    """The first Ctrl-C asks for a stop at the next update; a second one stops now, as a KeyboardInterrupt
    (the CLI: `interrupted`, status 130), not as the sys.exit(1) Lightning makes of one."""
    class Twice(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN where pytest runs in the background)
    with pytest.raises(KeyboardInterrupt):
        run("fit", cfg_for("twice"), callbacks=[Twice()])
    assert not (tmp_path / "runs" / "twice" / "checkpoints").exists()  # nothing saved
    assert signal.getsignal(signal.SIGINT) is before

"""The training loop never makes the host wait for the device between logging steps.

On a GPU, reading a tensor's value (``.item()``, ``bool()``, ``float()``) or an op whose output shape
depends on the data (``nonzero``, boolean indexing) waits for every kernel queued so far, so the GPU
runs dry while the host catches up. Such reads are ops a CPU run dispatches too, so this counts them
in real in-process ``gptkit fit`` runs (pretraining and fine-tuning) and requires that the steps whose
metrics are not logged and that write no checkpoint make none (before the last), apart from the allowed ones below.
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import NEWS, REPO
from finetune_helpers import GLUE, SAMPLES, tiny_tokenizer
from torch.utils._python_dispatch import TorchDispatchMode

from gptkit.builder import build
from gptkit.config import load_config
from gptkit.reliability import FiniteFlag, HostCopy
from gptkit.verbs import fit

LOG_EVERY = 4
STEPS = 10

# ops that make a CUDA host wait: a value read, or an output shape that depends on the values
READS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"}

# reads that do not wait on a GPU, by the function that makes them
ALLOWED = {
    "__bool__": HostCopy.__bool__.__code__,  # a value of an earlier step, copied to pinned memory
}
ALLOWED_FILES = ("torch/utils/data/",)  # a DataLoader draws its CPU seed when an epoch starts


class HostReads(TorchDispatchMode):
    """Records each host read with the training step it happened in and where it came from."""

    def __init__(self) -> None:
        super().__init__()
        self.where = "setup"
        self.reads: dict = collections.defaultdict(list)
        self.checkpoint_steps: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        boolean_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ()
        )
        if name in READS or boolean_index:
            self._record(name)
        return func(*args, **(kwargs or {}))

    def _record(self, name: str) -> None:
        frames = traceback.extract_stack()[:-2]
        codes = {f.f_code for f, _ in traceback.walk_stack(None)}
        if ALLOWED["__bool__"] in codes or any(s in f.filename.replace("\\", "/") for f in frames for s in ALLOWED_FILES):
            return
        site = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-5:])
        self.reads[self.where].append(f"{name} at {site}")


class Window(pl.Callback):
    """Labels the reads: by training step (from one batch's start to the next), or as validation."""

    def __init__(self, mode: HostReads) -> None:
        self.mode = mode

    def on_train_start(self, trainer, pl_module):
        self.mode.__enter__()

    def on_train_end(self, trainer, pl_module):
        self.mode.__exit__(None, None, None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.mode.where = trainer.global_step + 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.mode.checkpoint_steps.add(trainer.global_step)  # writing weights to disk waits anyway

    def on_validation_start(self, trainer, pl_module):
        self.where_before, self.mode.where = self.mode.where, "validation"

    def on_validation_end(self, trainer, pl_module):
        self.mode.where = self.where_before


def fit_and_count(recipe: str, args: list[str]) -> dict:
    common = [f"trainer.max_steps={STEPS}", f"trainer.log_every_n_steps={LOG_EVERY}", "trainer.val_check_interval=5",
              "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer.devices=1",
              "checkpoint.every_n_train_steps=3", "run.overwrite=true"]
    cfg = load_config(str(REPO / "recipes" / recipe), [*common, *args])
    mode = HostReads()
    c = build(cfg, callbacks=[Window(mode)])
    fit(c)
    assert c.trainer.global_step == STEPS
    assert mode.checkpoint_steps and not mode.checkpoint_steps & {1, 2, 7}  # some steps stay quiet
    return mode


def assert_quiet_between_logging_steps(mode: HostReads) -> None:
    reads = mode.reads
    logged = {step for step in range(1, STEPS + 1) if step % LOG_EVERY == 0}
    busy = logged | mode.checkpoint_steps | {STEPS}  # after the last step the host waits for the end anyway
    waits = {step: sites for step, sites in reads.items() if isinstance(step, int) and step not in busy}
    assert not waits, "host reads in steps whose metrics are not logged:\n" + "\n".join(
        f"step {step}: {site}" for step, sites in sorted(waits.items()) for site in sorted(set(sites))
    )
    assert any(isinstance(step, int) and step in busy for step in reads)  # the counter does see reads


@pytest.mark.parametrize("progress", ["plain", "rich"])
def test_pretraining_steps_do_not_wait_for_the_device(tmp_path, progress):
    text = tmp_path / "news.txt"
    text.write_text(NEWS.read_text()[:40000])  # more than one epoch of STEPS batches
    reads = fit_and_count("quickstart/pretrain.yaml", [
        "data.corpus=null", f"data.files=[{text}]", "model.n_layer=2", "model.n_head=2", "model.n_embd=32",
        "model.n_ctx=32", "tokenizer.vocab_size=300", "data.batch_size=8", "data.val_fraction=0.1",
        f"logging.progress={progress}", f"run.dir={tmp_path / 'runs'}", f"run.data_dir={tmp_path / 'data'}",
    ])
    assert_quiet_between_logging_steps(reads)


@pytest.mark.parametrize(("recipe", "root"), [("race.yaml", SAMPLES), ("stsb.yaml", GLUE)])
def test_finetuning_steps_do_not_wait_for_the_device(tmp_path, recipe, root):
    tiny_tokenizer().save(tmp_path / "tok.json")
    reads = fit_and_count(recipe, [
        f"data.root={root}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path}", "model.n_layer=1",
        "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=2", "logging.progress=plain",
    ])
    assert_quiet_between_logging_steps(reads)


def test_the_counter_catches_a_read_in_a_step(tmp_path, monkeypatch):
    """The check can fail: a per-step ``.item()`` in the module is reported with its step and place."""
    from gptkit.module import GPTModule

    original = GPTModule.training_step

    def reads_its_loss(self, batch, batch_idx):
        out = original(self, batch, batch_idx)
        out["loss"].item()
        return out

    monkeypatch.setattr(GPTModule, "training_step", reads_its_loss)
    tiny_tokenizer().save(tmp_path / "tok.json")
    reads = fit_and_count("stsb.yaml", [
        f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path}", "model.n_layer=1",
        "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=2", "logging.progress=none",
    ])
    with pytest.raises(AssertionError, match=r"step 1: _local_scalar_dense at .*reads_its_loss"):
        assert_quiet_between_logging_steps(reads)


def test_finite_flag_reads_the_loss():
    assert FiniteFlag(torch.tensor(2.5)) and FiniteFlag(torch.tensor(2.5)).loss == 2.5
    assert not FiniteFlag(torch.tensor(float("nan"))) and not FiniteFlag(torch.tensor(float("-inf")))

"""Preemption by real signals, atomic checkpoints, DDP on CPU, non-finite losses, safe loading."""

import errno
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUICK, REPO, run_cli
from fit_helpers import Record, fit, tiny_args

import gptkit.verbs as verbs
from gptkit.config import load_config
from gptkit.errors import CheckpointError
from gptkit.reliability import AtomicCheckpointIO, Preempted


def start_cli(args, cwd, log, env=None):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "gptkit.cli", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def wait_for(log: Path, text: str, proc, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"never saw {text!r}:\n{log.read_text()[-3000:]}")


# -- preemption -----------------------------------------------------------------------------------
@pytest.mark.slow  # a real `gptkit fit` in subprocesses
@pytest.mark.parametrize("how", ["sigterm", "slurm-requeue", "slurm-scancel"])
def test_signal_saves_resumable_checkpoint_and_exits_cleanly(corpus, tmp_path, how):
    root, path = corpus
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env, signum = {}, signal.SIGTERM
    if how.startswith("slurm"):  # a fake SLURM job whose `scontrol` records the requeue request
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'requeued'}\n")
        (bin_dir / "scontrol").chmod(0o755)
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "gptkit",
               "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
        signum = signal.SIGUSR1 if how == "slurm-requeue" else signal.SIGTERM  # scancel sends SIGTERM
    args = ["fit", QUICK, *tiny_args(path, root, how), "trainer.max_steps=100000", "logging.progress=plain",
            "trainer.log_every_n_steps=5", "ckpt_path=auto"]
    log = tmp_path / "stderr.txt"
    proc = start_cli(args, cwd, log, env)
    wait_for(log, "step 10/", proc)
    proc.send_signal(signum)
    rc = proc.wait(timeout=60)
    err = log.read_text()
    assert rc == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    line = next(ln for ln in err.splitlines() if ln.startswith("stopped:"))
    assert f"{name} received: training stopped cleanly after update" in line and "ckpt_path=last" in line
    step = int(line.split("after update ")[1].split(";")[0])
    last = root / "runs" / how / "checkpoints" / "last.ckpt"
    assert last.is_file() and not last.is_symlink()
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == step >= 10
    assert list(cwd.iterdir()) == []  # nothing written outside run.dir / run.data_dir
    if how == "slurm-requeue":
        assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
        return
    if how == "slurm-scancel":  # a cancelled job stays cancelled
        assert not (tmp_path / "requeued").exists()
        return
    # the same command (ckpt_path=auto) continues from the next update
    resumed = Record()
    fit([*tiny_args(path, root, how), f"trainer.max_steps={step + 3}", "ckpt_path=auto"], resumed)
    assert sorted(resumed.losses) == [step + 1, step + 2, step + 3]


class TermAtFirstBatch(pl.Callback):
    """Sends this process SIGTERM after the first evaluation batch, as a scheduler would."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    on_test_batch_end = on_validation_batch_end


def test_sigterm_during_an_evaluation_is_a_clean_stop(corpus, tmp_path):
    """Lightning ends an evaluation on SIGTERM with a bare SystemExit (status 0, as if it had finished);
    gptkit makes it a stop with status 143 and one line, and writes no results."""
    root, path = corpus
    args = [*tiny_args(path, root, "eval-term"), "trainer.max_steps=4"]
    fit(args, Record())
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # (never the default: it would end pytest)
    try:
        with pytest.raises(Preempted) as stop:
            verbs.run("validate", load_config(QUICK, [*args, "ckpt_path=last"]), callbacks=[TermAtFirstBatch()])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stop.value.exit_code == 128 + signal.SIGTERM and stop.value.prefix == "stopped"
    assert str(stop.value).startswith("SIGTERM received: validate stopped before the end and wrote no results")
    assert not (root / "runs" / "eval-term" / "results").exists()


# -- atomic checkpoints ---------------------------------------------------------------------------
SLOW_WRITER = """
import io, sys, time, torch
from gptkit.reliability import AtomicCheckpointIO
path = sys.argv[1]
AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
real_save = torch.save
def half_then_hang(obj, fh):  # write half the bytes, say so, then hang until killed
    buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
    fh.write(data[: len(data) // 2]); fh.flush()
    open(path + ".half-written", "w").close()
    time.sleep(120)
torch.save = half_then_hang
AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
"""


@pytest.mark.slow  # a writer in a subprocess, killed half-way
def test_sigkill_during_checkpoint_write_leaves_last_intact(tmp_path):
    last = tmp_path / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(last)], env=env)
    deadline = time.time() + 60
    while not Path(str(last) + ".half-written").exists():
        assert proc.poll() is None and time.time() < deadline, "the writer did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stale = list(tmp_path.glob(".last.ckpt.tmp-*"))
    assert len(stale) == 1  # the half-written temp file, next to (never over) last.ckpt
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, last)  # the next save tidies up
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert not list(tmp_path.glob(".last.ckpt.tmp-*"))


def test_every_file_gptkit_replaces_is_written_all_at_once(tmp_path, monkeypatch):
    """Run configs, results, predictions, tokenizers and exports go through one atomic writer: a write
    that fails half-way leaves the previous file whole and no temporary file behind."""
    import gptkit.outputs
    from gptkit.outputs import atomic_file, atomic_write_text

    path = tmp_path / "sub" / "results.json"
    atomic_write_text(path, "old\n")
    assert path.read_text() == "old\n" and not list(path.parent.glob(".*"))
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and not list(path.parent.glob(".*"))
    renames = []
    monkeypatch.setattr(gptkit.outputs.os, "replace", lambda a, b: renames.append((Path(a).name, Path(b).name)))
    atomic_write_text(path, "new\n")
    assert renames == [(f".results.json.tmp-{socket.gethostname()}-{os.getpid()}", "results.json")]


def test_a_non_finite_score_is_never_the_best_checkpoint(tmp_path, capsys):
    from types import SimpleNamespace

    from gptkit.checkpointing import BestCheckpoint

    best = BestCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="min", save_top_k=1)
    assert not best.check_monitor_top_k(SimpleNamespace(global_step=7), torch.tensor(float("nan")))
    assert list(tmp_path.iterdir()) == [] and best.best_model_path == ""
    assert "val/loss is nan at update 7 (the model diverged, or the metric is undefined here)" in capsys.readouterr().err


def test_a_best_checkpoint_of_another_run_folder_is_not_this_runs(tmp_path):
    """Resuming another run's checkpoint into a new folder restores that run's best path: not kept here."""
    from gptkit.checkpointing import BestCheckpoint

    best = BestCheckpoint(dirpath=tmp_path / "new" / "checkpoints", monitor="val/loss", mode="min")
    best.best_model_path = str(tmp_path / "old" / "checkpoints" / "best-step5-val_loss1.0000.ckpt")
    assert best.kept_best() == ""
    best.best_model_path = str(tmp_path / "new" / "checkpoints" / "best-step9-val_loss0.9000.ckpt")
    assert best.kept_best() == best.best_model_path


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, last)

    def no_space(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError, match="the disk is full; .*last.ckpt still holds the previous checkpoint"):
        io.save_checkpoint({"global_step": 2}, last)
    monkeypatch.undo()
    assert io.load_checkpoint(last)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('GPTKIT_PWNED', '/nonexistent/pwned')}",))


def test_checkpoints_never_unpickle_code(tmp_path, monkeypatch, capsys):
    from gptkit.cli import main

    pwned = tmp_path / "pwned"
    monkeypatch.setenv("GPTKIT_PWNED", str(pwned))
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil2.ckpt")
    for path in (evil, tmp_path / "evil2.ckpt"):
        with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
            AtomicCheckpointIO().load_checkpoint(path, weights_only=False)  # asking for unsafe is ignored
        assert main(["generate", str(path)]) == 2
        assert main(["fit", QUICK, f"ckpt_path={path}", "data.corpus=null", f"data.files=[{REPO / 'README.md'}]",
                     f"run.dir={tmp_path}", f"run.data_dir={tmp_path}", "tokenizer.vocab_size=300"]) == 2
    assert not pwned.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 4


# -- non-finite losses ----------------------------------------------------------------------------
class PoisonAt(Record):
    """Turns the loss of one update into NaN (through the model output, so backward would see it)."""

    def __init__(self, step):
        super().__init__()
        self.poison = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.poison and not getattr(self, "_done", False):
            self._done = True
            original = pl_module.backbone.forward

            def nan_once(*a, **k):
                pl_module.backbone.forward = original
                return original(*a, **k) * float("nan")

            pl_module.backbone.forward = nan_once


def test_nonfinite_loss_stops_with_step_and_checkpoint(corpus):
    from gptkit.reliability import NonFiniteLossError

    root, path = corpus
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan in update 7\. The last checkpoint is "
                                                 r".*last\.ckpt; resume from it with ckpt_path=last"):
        fit([*tiny_args(path, root, "nan-stop"), "trainer.max_steps=10"], PoisonAt(7))
    assert torch.load(root / "runs" / "nan-stop" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 4  # the last good one (periodic, every 4), untouched
    # following the advice: a resume with a lower lr that fails again at its first checkpoint (the periodic
    # one of update 8) leaves config.yaml describing the checkpoints (the module refuses that save only
    # after the callbacks' hooks have run)
    with pytest.raises(NonFiniteLossError, match=r"in update 8\."):
        fit([*tiny_args(path, root, "nan-stop"), "trainer.max_steps=10", "trainer.val_check_interval=null",
             "optim.lr=1e-3", "ckpt_path=last"], PoisonAt(8))
    assert "lr: 0.003" in (root / "runs" / "nan-stop" / "config.yaml").read_text()


def test_nonfinite_loss_skip_skips_the_batch(corpus, capsys):
    root, path = corpus
    record = PoisonAt(3)
    c = fit([*tiny_args(path, root, "nan-skip"), "trainer.max_steps=6", "objective.nonfinite=skip"], record)
    assert c.module.nonfinite_skipped == 1
    assert c.trainer.global_step == 6  # the skipped batch took no update; training went on
    assert all(torch.isfinite(p).all() for p in c.module.parameters())
    assert "batch skipped (1 so far)" in capsys.readouterr().err  # a log line, on stderr


# -- two processes (DDP on CPU) -------------------------------------------------------------------
def scalars(run_dir, tag):
    from fit_helpers import scalars as read

    return dict(read(run_dir, tag))


@pytest.mark.slow  # a real `gptkit fit` in subprocesses
def test_ddp_two_processes_match_one_process(corpus, tmp_path):
    root, path = corpus
    common = [*tiny_args(path, root, "x"), "trainer.max_steps=8", "trainer.log_every_n_steps=2",
              "trainer.val_check_interval=4", "trainer.limit_val_batches=null", "model.embd_pdrop=0",
              "model.attn_pdrop=0", "model.resid_pdrop=0", "checkpoint.every_n_train_steps=null",
              "logging.progress=plain", "data.val_fraction=0.15"]
    one = fit([*common, "run.name=one"], Record())
    out = run_cli("fit", QUICK, *common, "run.name=two", "data.batch_size=4", "trainer.strategy=ddp",
                  "trainer.devices=2", cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.count("step 8/8") == 1 and out.stderr.count("validation at step 8") == 1  # rank 0 only
    two_dir, one_dir = root / "runs" / "two", root / "runs" / "one"
    assert len(list((two_dir / "tensorboard").glob("*/events.*"))) == 1
    ckpts = sorted(p.name for p in (two_dir / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts  # one best + last, each written once
    for tag in ("train/loss", "val/loss"):
        a, b = scalars(one_dir, tag), scalars(two_dir, tag)
        assert a.keys() == b.keys() and len(a) >= 2
        for step in a:
            assert b[step] == pytest.approx(a[step], rel=1e-4), (tag, step)
    w1 = torch.load(one_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w2 = torch.load(two_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-3, atol=1e-4)
    assert one.trainer.global_step == 8


POISON_ONE_RANK = """
import sys
from gptkit import cli
from gptkit.model import GPT
from gptkit.module import GPTModule

forward, training_step, poison = GPT.forward, GPTModule.training_step, [False]


def poisoned_forward(self, *args, **kwargs):
    out = forward(self, *args, **kwargs)
    return out * float("nan") if poison[0] else out


def poisoned_step(self, batch, batch_idx):  # rank 1's update 4 gets a NaN loss; rank 0's stays finite
    poison[0] = self.global_rank == 1 and self.trainer.global_step + 1 == 4
    try:
        return training_step(self, batch, batch_idx)
    finally:
        poison[0] = False


GPT.forward, GPTModule.training_step = poisoned_forward, poisoned_step
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow  # a real `gptkit fit` in subprocesses
def test_ddp_nonfinite_loss_on_one_process_stops_both(corpus, tmp_path):
    """Both processes stop at the same update with the same message (the check reads the loss summed
    over processes), instead of one raising while the other waits in a collective."""
    root, path = corpus
    script = tmp_path / "poisoned_gptkit.py"
    script.write_text(POISON_ONE_RANK)
    args = [*tiny_args(path, root, "ddp-nan"), "trainer.max_steps=10", "trainer.strategy=ddp", "trainer.devices=2",
            "data.batch_size=4", "trainer.val_check_interval=null", "checkpoint.every_n_train_steps=null"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(script), "fit", QUICK, *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240, env=env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.count("error: the loss became nan in update 4") == 2, out.stderr[-3000:]


COUNT_BARRIERS = """
import collections
import json
import sys
import pytorch_lightning as pl
import torch.distributed as dist
from gptkit import builder, cli

counts, where = collections.Counter(), ["setup"]
barrier = dist.barrier


def counted_barrier(*args, **kwargs):
    counts[where[0]] += 1
    return barrier(*args, **kwargs)


class Steps(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        where[0] = trainer.global_step + 1

    def on_train_end(self, trainer, pl_module):
        where[0] = "end"
        with open(f"barriers-rank{trainer.global_rank}.json", "w") as fh:  # not stderr: ranks interleave there
            json.dump({str(k): v for k, v in counts.items()}, fh)


dist.barrier = counted_barrier
build_callbacks = builder.build_callbacks
builder.build_callbacks = lambda *args: [*build_callbacks(*args), Steps()]
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow  # a real `gptkit fit` in subprocesses
def test_ddp_steps_have_no_barriers(corpus, tmp_path):
    """A barrier makes a GPU host wait for the device (NCCL), so DDP training steps that log nothing
    and save nothing must not call one (Lightning's sync_dist puts one before every all-reduce)."""
    root, path = corpus
    script = tmp_path / "counting_gptkit.py"
    script.write_text(COUNT_BARRIERS)
    args = [*tiny_args(path, root, "ddp-barriers"), "trainer.max_steps=8", "trainer.strategy=ddp", "trainer.devices=2",
            "data.batch_size=4", "trainer.val_check_interval=null", "checkpoint.every_n_train_steps=null",
            "trainer.log_every_n_steps=4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(script), "fit", QUICK, *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    for rank in (0, 1):
        counts = json.loads((tmp_path / f"barriers-rank{rank}.json").read_text())
        assert counts.get("setup") and set(counts) - {"setup", "end"} <= {"4", "8"}, (rank, counts)


@pytest.mark.slow  # a real `gptkit fit` in subprocesses
def test_ddp_fine_tuning_with_length_grouped_batches(tmp_path):
    """data.group_by_length under DDP: Lightning keeps gptkit's sampler (a DistributedSampler), and
    both processes train on their shares of the same global batches."""
    from finetune_helpers import GLUE, tiny_tokenizer

    tiny_tokenizer().save(tmp_path / "tok.json")
    out = run_cli("fit", str(REPO / "recipes" / "stsb.yaml"), f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}",
                  f"run.dir={tmp_path / 'runs'}", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
                  "model.n_ctx=64", "data.batch_size=2", "data.group_by_length=true", "trainer.max_steps=6",
                  "trainer.limit_val_batches=2", "trainer.strategy=ddp", "trainer.devices=2",
                  "trainer.accelerator=cpu", "logging.progress=plain", "trainer.log_every_n_steps=3",
                  cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and out.stderr.count("step 6/6") == 1


@pytest.mark.slow  # a real `gptkit fit` in subprocesses
@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_ddp_sigterm_stops_every_process_at_one_update(corpus, tmp_path, recipe):
    """SIGTERM to the launching process under DDP: every process stops at the same update and rank 0
    saves a resumable last.ckpt (no collective is started inside a signal handler, which could pair
    with another rank's gradient all-reduce and hang)."""
    from finetune_helpers import GLUE, tiny_tokenizer

    root, path = corpus
    ddp = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_steps=100000",
           "logging.progress=plain", "trainer.log_every_n_steps=5"]
    if recipe == "pretrain":
        args = ["fit", QUICK, *tiny_args(path, root, "ddp-term"), "data.batch_size=4", *ddp]
        run = root / "runs" / "ddp-term"
    else:
        tiny_tokenizer().save(tmp_path / "tok.json")
        args = ["fit", str(REPO / "recipes" / "stsb.yaml"), f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}",
                f"run.dir={tmp_path / 'runs'}", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
                "model.n_ctx=64", "data.batch_size=2", "trainer.limit_val_batches=2", *ddp]
        run = tmp_path / "runs" / "stsb"
    log = tmp_path / "stderr.txt"
    proc = start_cli(args, tmp_path, log)
    wait_for(log, "step 10/", proc, timeout=120)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-9", "-f", str(run)], check=False)
        proc.kill()
        raise AssertionError(f"DDP run hung after SIGTERM:\n{log.read_text()[-3000:]}") from None
    err = log.read_text()
    assert rc == 143, err[-3000:]
    assert "Traceback" not in err
    assert err.count("stopped: SIGTERM received") == 1  # rank 0 reports it
    step = int(re.search(r"stopped: SIGTERM received: training stopped cleanly after update (\d+)", err).group(1))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step >= 10


@pytest.mark.slow  # a real `gptkit fit` in subprocesses
def test_ddp_with_fewer_validation_blocks_than_processes(corpus, tmp_path):
    root, path = corpus
    out = run_cli("fit", QUICK, *tiny_args(path, root, "ddp-small-val"), "data.val_fraction=0.001",
                  "trainer.strategy=ddp", "trainer.devices=2", "data.batch_size=4", cwd=tmp_path, timeout=240)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "the validation set has 1 block(s) of 32 tokens, fewer than the 2 processes" in out.stderr
    assert "raise data.val_fraction (now 0.001)" in out.stderr


def test_periodic_checkpoint_before_the_first_validation(corpus):
    """last.ckpt is written every checkpoint.every_n_train_steps even before validation has produced
    the monitored metric (Lightning defers a monitoring callback's periodic saves until then)."""
    root, path = corpus
    with pytest.raises(RuntimeError, match="simulated"):
        fit([*tiny_args(path, root, "early-crash"), "trainer.val_check_interval=10"], Record(7, "crash"))
    folder = root / "runs" / "early-crash" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]  # no validation yet, so no best
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 4


def test_last_checkpoint_holds_the_final_update(corpus):
    root, path = corpus
    fit([*tiny_args(path, root, "final"), "trainer.max_steps=10"], Record())  # checkpoints every 4 updates
    last = root / "runs" / "final" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 10

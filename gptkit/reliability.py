"""What keeps long runs safe: atomic checkpoints, clean stops on signals, and a stop on a non-finite loss.

- :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the same folder, fsyncs it
  and renames it over the target, so a process killed mid-write (or a full disk) leaves the
  previous ``last.ckpt`` whole; it reads checkpoints with ``torch.load(weights_only=True)`` only.
- :class:`Preemption` turns SIGTERM, Ctrl-C (SIGINT) and, on SLURM, the requeue signal into a stop at
  the end of the current update: it writes ``last.ckpt`` there and (for the requeue signal) requeues
  the job. ``gptkit fit`` then exits with status 128 + the signal number. Under DDP every process stops
  at the same update.
- :func:`evaluation_stops` makes a SIGTERM during ``validate``, ``test`` or ``predict`` the same kind of
  stop (status 143 and one ``stopped:`` line) instead of Lightning's, which ends the process with
  status 0, as if the evaluation had finished.
- :class:`NonFiniteLoss` stops training at a NaN/inf loss (``objective.nonfinite=stop``) before any
  checkpoint holds weights updated from it, without making the host wait for the device.
- :class:`HostCopy` brings a small device tensor to the host without making the host wait.

Resuming exactly (random state, the recipe's settings) is :mod:`gptkit.resume`; the data order's
position is saved by :class:`gptkit.data.sampler.ResumableDataLoader`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from gptkit.checkpointing import last_checkpoint
from gptkit.console import log
from gptkit.errors import CheckpointError, GptkitError
from gptkit.lightning_internals import skip_sigterm_broadcast
from gptkit.outputs import atomic_file


class Preempted(GptkitError):
    """Training stopped on a signal after saving a resumable checkpoint (not a mistake of the user)."""

    prefix = "stopped"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class Interrupted(BaseException):
    """Ctrl-C before training started, or a second one during it: stop at once, without saving. Not a
    ``KeyboardInterrupt`` while it passes through Lightning, which would turn that into ``sys.exit(1)``;
    :func:`gptkit.builder.fit` raises it on as one."""


class HostCopy:
    """A small device tensor's value, brought to the host without making the host wait for the device.

    ``bool(cuda_tensor)`` or ``.item()`` waits for every kernel queued so far, which drains the GPU's
    queue. On CUDA the value is copied into pinned host memory by a non-blocking copy behind an event
    instead: reading it a step later waits only for that event, which the device passed long ago.
    Elsewhere the value is read directly (there is no queue to drain).
    """

    def __init__(self, value: torch.Tensor) -> None:
        self._event = None
        if value.device.type == "cuda":
            self._value = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            self._value.copy_(value, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._value = value

    def __bool__(self) -> bool:
        if self._event is not None:
            self._event.synchronize()
        return bool(self._value)


# -- atomic checkpoint files ----------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` all at once or not at all (temp file, fsync, rename, fsync folder)."""
    path = Path(path)
    if path.parent.is_dir():  # a checkpoint is large: drop what a writer that was killed left behind
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
    try:
        with atomic_file(path) as fh:
            torch.save(obj, fh)
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else f"{exc.strerror or exc}"
        keep = f"; {path} still holds the previous checkpoint" if path.exists() else ""
        raise CheckpointError(f"could not write checkpoint {path}: {why}{keep}. Free space or fix the "
                              "folder, then resume with ckpt_path=last") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written file and never unpickles code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        from gptkit.checkpoint import load_ckpt

        return load_ckpt(path)  # always weights_only=True, whatever the caller asked


# -- preemption -----------------------------------------------------------------------------------
class Preemption(Checkpoint):
    """Stop cleanly on SIGTERM, SIGINT or SLURM's requeue signal, with a resumable ``last.ckpt``.

    The signal handlers only record the request. The fit stops at the end of the update in progress
    (or of a validation in progress), once every other callback has seen that update: it writes
    ``last.ckpt`` there, so the saved model, optimizer, schedule, data position and random states
    belong to one and the same update, and raises :class:`Preempted`. A signal before training starts
    stops at once (nothing to save); a second Ctrl-C interrupts at once, without saving.

    It is a ``Checkpoint`` callback, which Lightning runs after every other callback, and it follows
    the other checkpoint callbacks. Its handlers are installed by :meth:`installed` around ``trainer.fit`` and again when training
    starts, replacing the SIGTERM handler Lightning registers when a fit starts (under DDP, Lightning's
    broadcasts from inside the handler, where the collective can pair with another process's gradient
    all-reduce and hang). Under DDP the processes settle a stop between them at the end of each update
    (:meth:`_agreed`), without making the host wait for the device.
    """

    def __init__(self, requeue_signal: int | None = None) -> None:
        self.signals = [signal.SIGINT, signal.SIGTERM] + ([requeue_signal] if requeue_signal else [])
        self.signum: int | None = None
        self.requeue = False
        self.saved: Path | None = None
        self._training = False
        self._trainer: pl.Trainer | None = None
        self._pending: HostCopy | None = None

    @contextlib.contextmanager
    def installed(self, trainer: pl.Trainer) -> Iterator[None]:
        """The handlers, for the fit run inside the block; the caller's are given back after it, also
        after an error (Lightning restores the handlers it found when the fit started: these)."""
        self._trainer, self.signum, self.requeue, self.saved, self._training = trainer, None, False, None, False
        previous = {}
        try:
            for signum in self.signals:
                previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: no signal handling at all
            pass
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            self._trainer = None

    def _install_again(self) -> None:
        """After Lightning has registered its own SIGTERM handler for the fit: ours again."""
        if self._trainer is None or os.name == "nt":
            return
        with contextlib.suppress(ValueError):
            for signum in self.signals:
                signal.signal(signum, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if not self._training:  # during start-up nothing is worth saving: stop now
            if signum == signal.SIGINT:
                raise Interrupted
            raise Preempted(f"{signal.Signals(signum).name} received before training started; nothing was "
                            "saved", signum)
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise Interrupted  # the second Ctrl-C: stop now
        first = self.signum is None
        self.signum = signum
        # only SLURM's requeue signal requeues: `scancel` and other stops send SIGTERM
        self.requeue = signum not in (signal.SIGINT, signal.SIGTERM)
        launcher = self._trainer.strategy.launcher if self._trainer is not None else None
        if signum == signal.SIGTERM and first and launcher is not None:
            launcher.kill(signum)  # the other local processes, as Lightning's own handler does

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install_again()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install_again()
        self._training, self._pending = True, None
        if trainer.world_size > 1:  # Lightning's own per-update agreement reads a device value: a host sync
            skip_sigterm_broadcast(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._agreed(trainer) if trainer.world_size > 1 else self.signum is not None:
            self._stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # one process: a signal during a validation stops at its end, unless the epoch ends just after it
        if (self.signum is not None and trainer.world_size == 1 and self._training and not trainer.sanity_checking
                and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum is not None and trainer.world_size == 1:
            self._stop(trainer)

    def _agreed(self, trainer: pl.Trainer) -> bool:
        """Whether any process has been asked to stop, as of the previous update, the same on every process.

        Each update all-reduces (max) this process's request and reads the previous update's result,
        copied to the host without waiting (:class:`HostCopy`): all processes read the same value at
        the same update, so they stop together, one update after the signal.
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending:
            self.signum = self.signum or signal.SIGTERM  # (the signal reached another process)
            return True
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self.signum is not None
        # a fill on the device: torch.tensor([...], device=cuda) would copy from pageable memory and wait
        flag = torch.full((1,), int(self.signum is not None), device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self._pending = HostCopy(flag)
        return False

    def _stop(self, trainer: pl.Trainer) -> None:
        """Save ``last.ckpt`` at this update (unless it holds it already) and end the fit."""
        signum = self.signum or signal.SIGTERM
        last = last_checkpoint(trainer)
        if last is not None:
            last.save(trainer)  # the full state, to resume from
            self.saved = last.path
        if self.requeue and trainer.is_global_zero:
            requeue_slurm_job()
        where = (f"saved {self.saved}; resume with ckpt_path=last" if self.saved else "no checkpoint could be saved")
        raise Preempted(f"{signal.Signals(signum).name} received: training stopped cleanly after update "
                        f"{trainer.global_step}; {where}", signum)


@contextlib.contextmanager
def evaluation_stops(verb: str) -> Iterator[None]:
    """A SIGTERM during an evaluation (``validate``, ``test``, ``predict``) as a clean stop: :class:`Preempted`.

    Lightning's own SIGTERM handler stops the evaluation loop at the next batch by raising its
    ``SIGTERMException``, a ``SystemExit`` without a status: the process would end with status 0 and no
    word, and a sweep or a job scheduler would take the evaluation for finished. Nothing is lost (results
    are written when an evaluation ends), so the stop says to run the command again.
    Tested by ``tests/test_reliability.py::test_sigterm_during_an_evaluation_is_a_clean_stop``."""
    try:
        yield
    except SIGTERMException:
        raise Preempted(f"SIGTERM received: {verb} stopped before the end and wrote no results; run the same command "
                        "again to evaluate from the start", signal.SIGTERM) from None


def requeue_slurm_job() -> None:
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job:
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"warning: could not requeue SLURM job {job} ({exc}); resubmit it with ckpt_path=last")
        return
    if result.returncode == 0:
        log(f"requeued SLURM job {job}")
    else:
        log(f"warning: `scontrol requeue {job}` failed ({result.stderr.strip()}); resubmit it with ckpt_path=last")


# -- non-finite losses ----------------------------------------------------------------------------
class NonFiniteLossError(GptkitError):
    """The loss became NaN or infinite."""


class FiniteFlag(HostCopy):
    """Whether a loss is finite, brought to the host without waiting (:class:`HostCopy`)."""

    def __init__(self, loss: torch.Tensor) -> None:
        super().__init__(torch.isfinite(loss))
        self.loss = loss


class NonFiniteLoss(pl.Callback):
    """``objective.nonfinite=stop``: stop at a NaN/inf training loss, naming the update and the last checkpoint.

    Each update's loss (averaged over processes by the module, so NaN on any process is NaN on all and
    every process stops at the same update) is copied to the host without waiting (:class:`FiniteFlag`)
    and checked when the next update starts, so the host keeps running ahead of the device. The
    pending flag is also checked before any checkpoint is written and when training ends, so a
    checkpoint never holds weights updated from a non-finite loss. It runs before the callbacks that
    write the run folder (their order in the fit).
    """

    def __init__(self) -> None:
        self._pending: tuple[FiniteFlag, int] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(outputs, dict) and "mean_loss" in outputs:  # (None: a batch objective.nonfinite=skip skipped)
            self._pending = (FiniteFlag(outputs["mean_loss"]), trainer.global_step)

    def check(self, trainer: pl.Trainer) -> None:
        """Raise :class:`NonFiniteLossError` if the last update's loss was not finite."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0]:
            return
        loss, update = pending[0].loss, pending[1]
        last = last_checkpoint(trainer)
        ckpt = last.last_model_path if last is not None else ""
        advice = "a lower optim.lr or longer optim.warmup_steps"
        where = (f"The last checkpoint is {ckpt}; resume from it with ckpt_path=last and {advice}" if ckpt
                 else f"No checkpoint was saved before it; start again with {advice}")
        raise NonFiniteLossError(f"the loss became {loss.item()} in update {update}. {where}, or set "
                                 "objective.nonfinite=skip to skip such batches")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

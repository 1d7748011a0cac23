"""What keeps long runs safe: atomic checkpoints, exact resume of RNG state, and graceful preemption.

- :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the same folder, fsyncs it
  and renames it over the target, so a process killed mid-write (or a full disk) leaves the
  previous ``last.ckpt`` whole; it reads checkpoints with ``torch.load(weights_only=True)`` only.
- :class:`RNGState` saves the Python, NumPy and torch (CPU and CUDA) random states in every
  checkpoint and puts them back when training resumes, so dropout masks continue as if the run had
  never stopped (Lightning does not restore them itself).
- :class:`Preemption` turns SIGTERM, Ctrl-C (SIGINT) and, on SLURM with auto-requeue, the requeue
  signal into a stop at the next update boundary, writes ``last.ckpt`` there, and (for the requeue
  signal) requeues the job. ``gptkit fit`` then exits with status 128 + the signal number. Under
  DDP every process stops at the same update (see :meth:`Preemption.agree`).
- :class:`HostCopy` brings a small device tensor to the host without making the host wait.
- :class:`RunFolder` writes a fit's run folder (``config.yaml``, ``tokenizer.json``, and removing an
  earlier run's checkpoints, results and predictions under ``run.overwrite=true``) only once training starts, so a run that
  fails on its data, settings or checkpoint leaves the folder as it was.

The data order's position is saved by :class:`gptkit.data.sampler.ResumableDataLoader`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from gptkit.console import log
from gptkit.errors import CheckpointError, ConfigError, GptkitError
from gptkit.outputs import TENSORBOARD_DIR, atomic_file, atomic_write_text


class Preempted(GptkitError):
    """Training stopped on a signal after saving a resumable checkpoint (not a mistake of the user)."""

    prefix = "stopped"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class Interrupted(BaseException):
    """A second Ctrl-C during a fit: stop at once, without saving. Not a ``KeyboardInterrupt`` while it
    passes through Lightning, which would turn that into ``sys.exit(1)``; ``fit_or_stop`` raises it
    on as one."""


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


# -- random state ---------------------------------------------------------------------------------
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


# -- checkpoint callbacks -------------------------------------------------------------------------
class BestCheckpoint(ModelCheckpoint):
    """The ModelCheckpoint keeping the best checkpoints (at validation), which also takes over the
    saved state of gptkit's earlier single checkpoint callback, so that resuming an older run keeps
    its best score and best files.

    Lightning finds a callback's saved state by a key built from its settings; checkpoints written
    before ``last.ckpt`` got its own callback stored that state under the one callback's key.
    """

    def __init__(self, *args: Any, legacy_every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._legacy_every = legacy_every_n_train_steps
        self._validated = False  # a validation has run in this process

    @property
    def _legacy_state_key(self) -> str:  # type: ignore[override]
        every = self._legacy_every or 0  # the key of ModelCheckpoint._generate_state_key, under its class name
        settings = {"monitor": self.monitor, "mode": self.mode, "every_n_train_steps": every,
                    "every_n_epochs": 0 if every else 1, "train_time_interval": None}
        return f"ModelCheckpoint{settings!r}"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking
        super().on_validation_end(trainer, pl_module)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        # Before the first validation the monitored metric does not exist yet: nothing to rank. (Lightning
        # would warn and ask whether the module logs it; after a validation it raises, as it should.)
        if self.monitor is not None and self.monitor not in monitor_candidates and not self._validated:
            return
        score = monitor_candidates.get(self.monitor)
        if score is not None and not torch.isfinite(score).all():  # never "best"; Lightning would keep it
            log(f"{self.monitor} is {score.item()} at update {trainer.global_step} (the model diverged, or the metric "
                "is undefined here); this checkpoint is not kept as a best one")
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

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


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: periodically (its ``every_n_train_steps``, or at validation) and when training
    ends, so that after a finished ``gptkit fit`` it always holds the final update."""

    # Lightning 2.6 writes last.ckpt at validation only when this callback also saved a top-k checkpoint
    # there, and this one keeps none (save_top_k=0): without every_n_train_steps, last.ckpt would wait for
    # the end of training. It is written at the end of each validation, after BestCheckpoint's save
    # (checkpoint callbacks run in their order), so that it records the best checkpoint; except for a
    # validation on the epoch's last batch when Lightning has BestCheckpoint save at the epoch's end:
    # last.ckpt then follows at the epoch's end too (and Lightning counts the epoch as done in it, so a
    # resume does not run the epoch's end again).
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._deferred_to_epoch_end(trainer):
            self._save_last_unless_periodic(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_unless_periodic(trainer)

    def _deferred_to_epoch_end(self, trainer: pl.Trainer) -> bool:
        """A validation on the epoch's last batch, whose best checkpoint Lightning saves at the epoch's end."""
        return self._should_save_on_train_epoch_end(trainer) and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # the checkpoint a fit resumes holds this update already: a resume that trains nothing writes nothing
        if trainer.ckpt_path:
            self._last_global_step_saved = trainer.global_step

    def _save_last_unless_periodic(self, trainer: pl.Trainer) -> None:
        if self._every_n_train_steps < 1 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # not already saved at this update
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RunFolder(pl.Callback):
    """Writes what describes a fit into its run folder when training starts, not before.

    By then the data has been read, the settings accepted and any checkpoint to resume restored, so
    a fit that fails on one of them leaves an earlier run in the folder whole: its checkpoints (even
    under ``run.overwrite=true``), its ``config.yaml`` and its tokenizer.
    """

    def __init__(self, folder: Path, tokenizer: Any, config_yaml: str, replace: tuple[str, ...] = ()) -> None:
        self.folder, self.tokenizer, self.config_yaml = Path(folder), tokenizer, config_yaml
        self.replace = replace  # subfolders of an earlier run to remove (run.overwrite=true)
        self._config_written = False

    def _write_config(self) -> None:
        atomic_write_text(self.folder / "config.yaml", self.config_yaml)
        self._config_written = True

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # a resumed run's settings describe the run folder once they have made a checkpoint: a resume
        # that fails before that leaves config.yaml describing the checkpoints already there
        if trainer.is_global_zero and not self._config_written:
            # GPTModule refuses the save after a non-finite loss, but its hook runs after this one
            if check := getattr(pl_module, "raise_if_nonfinite", None):
                check()
            self._write_config()

    def _remove_earlier_curves(self, trainer: pl.Trainer) -> None:
        """The TensorBoard versions of the run being replaced (this run's own is open already)."""
        own = Path(trainer.logger.log_dir).resolve() if trainer.logger is not None else None
        for version in (self.folder / TENSORBOARD_DIR).glob("version_*"):
            if version.resolve() != own:
                shutil.rmtree(version, ignore_errors=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self.replace:  # run.overwrite=true: the earlier run's checkpoints, their results and curves go now
            for name in self.replace:
                shutil.rmtree(self.folder / name, ignore_errors=True)
            self._remove_earlier_curves(trainer)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(self.folder / "tokenizer.json")
        if not trainer.ckpt_path:
            self._write_config()


LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_folder_lock(folder: Path) -> Iterator[None]:
    """Hold a run folder for one ``fit``: another fit into it (the same run.name, started before this
    one ends: a sweep launched twice, a job array with a repeated name) is refused instead of mixing
    its checkpoints and config.yaml with this one's. An ``flock``, so a process that dies holds nothing;
    taken by the first process only (the others of a DDP run belong to the same fit). A fit that fails
    before writing anything leaves no folder behind."""
    if rank_zero_only.rank != 0:
        yield
        return
    created = [f for f in (folder, *folder.parents) if not f.exists()]  # the run folder and any above it
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as fh:  # (left empty: a failed fit changes nothing in the folder)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"run folder {folder} is in use by another `gptkit fit` that has not ended; wait for "
                              "it, or give this run its own run.name") from None
        except OSError as exc:  # a file system without locks (Lustre mounted with noflock, some NFS)
            log(f"warning: cannot lock run folder {folder} ({exc.strerror or exc}): a second fit into it at the "
                "same time would not be noticed")
        try:
            yield
        finally:
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # nothing else was written
                (folder / LOCK_FILE).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # (stops at the first folder that is not empty)
                    for made in created:
                        made.rmdir()


def last_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that writes ``last.ckpt`` (the first one with ``save_last``)."""
    return next((cb for cb in trainer.checkpoint_callbacks if cb.save_last), trainer.checkpoint_callback)


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    cb = last_checkpoint_callback(trainer)
    if cb is None or cb.dirpath is None:
        return None
    return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"


# -- preemption -----------------------------------------------------------------------------------
class Preemption(pl.Callback):
    """Stop cleanly on SIGTERM, SIGINT or SLURM's requeue signal, with a resumable ``last.ckpt``.

    Lightning already turns SIGTERM into a stop at the next update boundary; this callback routes
    SIGINT (and the requeue signal) the same way, then saves ``last.ckpt`` at that boundary, so the
    saved model, optimizer, schedule, data position and RNG states belong to one and the same update.
    A second Ctrl-C interrupts at once, without saving.

    Under DDP the processes must stop at the same update. Lightning 2.6 broadcasts from inside its
    SIGTERM handler, where the collective can pair with another process's gradient all-reduce and
    hang; here the handlers only record the request and forward SIGTERM to the other local processes,
    and :meth:`agree` settles it at a fixed point of every update.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.requeue = False
        self.saved: Path | None = None
        self.stop_requested = False
        self._previous: dict[int, Any] = {}
        self._pending: HostCopy | None = None

    def _signals(self, trainer: pl.Trainer) -> list[int]:
        from lightning_fabric.plugins.environments import SLURMEnvironment

        signums = [signal.SIGINT]
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None:
            signums.append(env.requeue_signal)  # registered first, so Lightning leaves it to us
        return signums

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or os.name == "nt":
            return
        self.stop_requested, self._pending = False, None
        handler = self._make_handler(trainer)
        # Lightning composes its SIGTERM handler from this attribute when fit starts (after setup)
        trainer._signal_connector._sigterm_notifier_fn = handler
        if trainer.world_size > 1 and hasattr(trainer.fit_loop.epoch_loop, "_broadcast_sigterm_tensor"):
            trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = lambda: self.agree(trainer)
        for signum in self._signals(trainer):
            try:
                self._previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread
                return

    def _make_handler(self, trainer: pl.Trainer):
        def handler(signum, frame):
            if self.signum == signal.SIGINT and signum == signal.SIGINT:
                raise Interrupted  # the second Ctrl-C: stop now
            first = self.signum is None
            self.signum = signum
            # only SLURM's requeue signal requeues: `scancel` and other stops send SIGTERM
            self.requeue = signum not in (signal.SIGINT, signal.SIGTERM)
            if signum == signal.SIGTERM and first and trainer.strategy.launcher is not None:
                trainer.strategy.launcher.kill(signum)  # the other local processes, as Lightning does
            if trainer.world_size > 1:
                self.stop_requested = True  # settled by agree(), so that every process stops together
            else:
                trainer._signal_connector.received_sigterm = True  # Lightning stops at the next boundary

        return handler

    def agree(self, trainer: pl.Trainer) -> None:
        """Called by Lightning's training loop at the start of every update under DDP.

        Each update all-reduces (max) whether any process has been asked to stop, and reads the
        previous update's result, copied to the host without waiting (:class:`HostCopy`): all
        processes read the same value at the same update, so they raise ``SIGTERMException``
        together, one update after the signal, and the host never waits for the GPU here.
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending:
            trainer._signal_connector.received_sigterm = True
            if self.signum is None:
                self.signum = signal.SIGTERM
            raise SIGTERMException()
        # a fill on the device: torch.tensor([...], device=cuda) would copy from pageable memory and wait
        flag = torch.full((1,), int(self.stop_requested), device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self._pending = HostCopy(flag)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handlers(trainer)

    def _restore_handlers(self, trainer: pl.Trainer) -> None:
        # Lightning snapshots every handler when fit starts (ours included) and puts the snapshot back when
        # the fit ends, also after an exception: the snapshot gets the caller's handlers too
        snapshot = getattr(trainer._signal_connector, "_original_handlers", {})
        for signum, previous in self._previous.items():
            handler = previous if previous is not None else signal.SIG_DFL
            signal.signal(signum, handler)
            if signum in snapshot:
                snapshot[signum] = handler
        self._previous = {}

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # after an exception Lightning restores its own snapshot of the handlers (_teardown) but calls no
        # callback's teardown: the caller's handlers come back here (a script that runs fits in a loop
        # keeps its Ctrl-C after one that failed)
        try:
            self._save_on_stop(trainer, exception)
        finally:
            self._restore_handlers(trainer)

    def _save_on_stop(self, trainer: pl.Trainer, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return  # errors do not write checkpoints: the last good one stays `last`
        if self.signum is None:
            self.signum = signal.SIGTERM
        path = last_checkpoint_path(trainer)
        if path is None:
            return
        last_checkpoint_callback(trainer).last_model_path = str(path)
        trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume from (not a load)
        self.saved = path
        if self.requeue and trainer.is_global_zero:
            requeue_slurm_job()


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


def preemption_message(trainer: pl.Trainer, callback: Preemption) -> Preempted:
    signum = callback.signum or signal.SIGTERM
    name = signal.Signals(signum).name
    where = (f"saved {callback.saved}; resume with ckpt_path=last" if callback.saved
             else "no checkpoint could be saved")
    return Preempted(f"{name} received: training stopped cleanly after update {trainer.global_step}; {where}",
                     signum)

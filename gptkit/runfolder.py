"""A fit's run folder (``<run.dir>/<run.name>``): which folder a verb writes into, who holds it, and
what describes the run in it.

- :func:`run_dir` and :func:`evaluation_dir`: where ``fit`` writes, and where ``validate`` / ``test`` /
  ``predict`` write (the run folder of the checkpoint they score).
- :func:`run_folder_lock`: a fit holds its folder; a second fit into it is refused.
- :func:`guard_run_dir`: a fresh run never mixes with, or silently replaces, an earlier run's checkpoints.
- :class:`RunFolder`: ``config.yaml`` and ``tokenizer.json`` are written when training starts, so a fit
  that fails before leaves the folder as it was.

The layout inside the folder (``checkpoints/``, ``results/``, ``predictions/``, ``tensorboard/``) and
the results files are :mod:`gptkit.outputs`.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from gptkit.console import log
from gptkit.errors import ConfigError
from gptkit.outputs import CHECKPOINTS_DIR, TENSORBOARD_DIR, atomic_write_text, checkpoint_run_folder


def run_dir(cfg: DictConfig) -> Path:
    """The folder a fit writes into: ``<run.dir>/<run.name>``."""
    return Path(cfg.run.dir).expanduser() / cfg.run.name


def evaluation_dir(cfg: DictConfig, checkpoint: str | None) -> Path:
    """Where ``validate``, ``test`` and ``predict`` write: the run folder of the checkpoint they score
    (the folder above its ``checkpoints/``, with the run's ``config.yaml``), so a checkpoint of another
    run does not put its results into the recipe's run folder; ``run.dir/run.name`` otherwise."""
    folder = checkpoint_run_folder(checkpoint) if checkpoint else None
    return folder if folder is not None and (folder / "config.yaml").is_file() else run_dir(cfg)


def guard_run_dir(cfg: DictConfig, rdir: Path) -> bool:
    """A fresh run never silently mixes with, or overwrites, an earlier run's checkpoints.

    True when ``run.overwrite=true`` replaces them: :class:`RunFolder` removes them when training
    starts, so a run that fails before keeps the earlier one.
    """
    if not any((rdir / CHECKPOINTS_DIR).glob("*.ckpt")) or rank_zero_only.rank != 0:
        return False
    if not cfg.run.overwrite:
        resume = "ckpt_path=last" if (rdir / CHECKPOINTS_DIR / "last.ckpt").is_file() else "ckpt_path=best"
        raise ConfigError(
            f"run folder {rdir} already holds checkpoints from an earlier run. Resume it with "
            f"{resume}, start a separate run with run.name=<new name>, or replace it with run.overwrite=true"
        )
    return True


def tensorboard_version(rdir: Path, resume: bool) -> int | None:
    """The run's latest TensorBoard version (``tensorboard/version_N``) when resuming, else None (a new one)."""
    versions = [int(m.group(1)) for p in (rdir / TENSORBOARD_DIR).glob("version_*")
                if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions) if resume and versions else None


class RunFolder(pl.Callback):
    """Writes what describes a fit into its run folder when training starts, not before.

    By then the data has been read, the settings accepted and any checkpoint to resume restored, so
    a fit that fails on one of them leaves an earlier run in the folder whole: its checkpoints (even
    under ``run.overwrite=true``), its ``config.yaml`` and its tokenizer; and the TensorBoard folder
    Lightning opens before it reads the data goes again.
    """

    def __init__(self, folder: Path, tokenizer: Any, config_yaml: str, replace: tuple[str, ...] = ()) -> None:
        self.folder, self.tokenizer, self.config_yaml = Path(folder), tokenizer, config_yaml
        self.replace = replace  # subfolders of an earlier run to remove (run.overwrite=true)
        self._config_written = False
        self.started = False  # training has started: the folder is this run's
        self._curves_before = self._curves()

    def _curves(self) -> set[Path]:
        """The TensorBoard folder and its versions, as they are now."""
        root = self.folder / TENSORBOARD_DIR
        return {root, *root.glob("version_*")} if root.is_dir() else set()

    def _write_config(self) -> None:
        atomic_write_text(self.folder / "config.yaml", self.config_yaml)
        self._config_written = True

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # a resumed run's settings describe the run folder once they have made a checkpoint: a resume
        # that fails before that leaves config.yaml describing the checkpoints already there
        if trainer.is_global_zero and not self._config_written:
            self._write_config()  # (after NonFiniteLoss, earlier in the fit's callbacks, accepted the save)

    def _remove_earlier_curves(self, trainer: pl.Trainer) -> None:
        """The TensorBoard versions of the run being replaced (this run's own is open already)."""
        own = Path(trainer.logger.log_dir).resolve() if trainer.logger is not None else None
        for version in (self.folder / TENSORBOARD_DIR).glob("version_*"):
            if version.resolve() != own:
                shutil.rmtree(version, ignore_errors=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.started or not trainer.is_global_zero:
            return
        for made in sorted(self._curves() - self._curves_before, reverse=True):  # versions, then the folder
            shutil.rmtree(made, ignore_errors=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True
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

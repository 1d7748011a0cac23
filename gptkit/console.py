"""Progress messages on stderr (first process only), and quieting of irrelevant library chatter."""

from __future__ import annotations

import collections
import logging
import os
import sys
import warnings


def process_rank() -> int:
    """This process's rank in a multi-process run: Lightning's, once Lightning is imported (its
    strategies set it), else the launcher's environment (as Lightning reads it). Importing Lightning
    just to ask would cost a command such as ``gptkit generate`` seconds."""
    rank_zero = sys.modules.get("lightning_fabric.utilities.rank_zero")
    if rank_zero is not None:
        return getattr(rank_zero.rank_zero_only, "rank", 0)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


_logged: collections.deque[str] = collections.deque(maxlen=64)  # the latest lines log() printed
_log_count = 0  # lines log() has printed in this process


def log(msg: str) -> None:
    """One line of progress on stderr, from the first process only."""
    global _log_count
    if process_rank() == 0:
        print(f"[gptkit] {msg}", file=sys.stderr, flush=True)
    _logged.append(msg)
    _log_count += 1


def log_mark() -> int:
    """Where the log stands now, for :func:`unrepeated`."""
    return _log_count


def unrepeated(summary: str, since: int) -> str:
    """``summary`` without the ``"; "``-joined notes that :func:`log` printed on their own line since
    ``since`` (a :func:`log_mark`): a note said while the data was prepared is not said again in the
    run's summary."""
    for note in list(_logged)[max(0, len(_logged) - (_log_count - since)):]:
        summary = summary.replace(f"; {note}", "")
    return summary


def duration(seconds: float) -> str:
    """``4.2s``, ``45s``, ``1m12s``, ``2h05m``: a wall time as a person reads it."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# Lightning's own start-up and ending lines that tell a gptkit user nothing: which devices exist (the recipe's
# trainer.accelerator picks the run's, and Lightning still warns of a GPU left unused), the stepping-batch
# estimate, "`Trainer.fit` stopped: `max_steps=N` reached" (the `done:` line says how the run ended) and the
# checkpoint connector's default. Written by Lightning's log handler to the stream it found at import, they
# also break a live progress bar (its last frame was drawn twice, with the line glued to it).
_NOISE = ("GPU available: ", "TPU available: ", "Loading `train_dataloader` to estimate", "`weights_only` was not set",
          "`Trainer.fit` stopped: `max_steps=", "`Trainer.fit` stopped: `max_epochs=")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "💡 Tip" not in message and not message.startswith(_NOISE)


_DROP_NOISE = _DropNoise()
_NOISY_LOGGERS = tuple(f"{package}.{module}" for package in ("pytorch_lightning", "lightning.pytorch")
                       for module in ("utilities.rank_zero", "trainer.connectors.checkpoint_connector"))


def quiet_libraries() -> None:
    """Drop advertising and deprecation noise that says nothing about the user's run, and Lightning's
    lines that gptkit's own say better (once per process: a script running many fits adds nothing more;
    ``warnings`` replaces a repeated filter itself)."""
    for name in (*_NOISY_LOGGERS, "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP_NOISE)  # (a filter already there is not added twice)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # gptkit decides what a run folder's checkpoints mean (resume, or run.overwrite=true): not a surprise
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # objective.nonfinite=skip returns None on purpose, and says so itself
    warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
    # evaluating a checkpoint restores no callback state, and needs none
    warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")

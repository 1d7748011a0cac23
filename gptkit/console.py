"""Progress messages on stderr (first process only), and quieting of irrelevant library chatter."""

from __future__ import annotations

import logging
import sys
import warnings

from lightning_fabric.utilities.rank_zero import rank_zero_only


def log(msg: str) -> None:
    """One line of progress on stderr, from the first process only."""
    if rank_zero_only.rank == 0:
        print(f"[gptkit] {msg}", file=sys.stderr, flush=True)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


_DROP_TIPS = _DropTips()


def quiet_libraries() -> None:
    """Drop advertising and deprecation noise that says nothing about the user's run (once per process:
    a script running many fits adds nothing more; ``warnings`` replaces a repeated filter itself)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP_TIPS)  # (a filter already there is not added twice)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # gptkit decides what a run folder's checkpoints mean (resume, or run.overwrite=true): not a surprise
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # objective.nonfinite=skip returns None on purpose, and says so itself
    warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
    # evaluating a checkpoint restores no callback state, and needs none
    warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")

"""The one place where gptkit touches Lightning's private internals.

Everything else in gptkit uses Lightning's public API (``tests/test_lightning_internals.py`` fails if
a private Lightning name is used in any other module). Each use below names the Lightning behaviour
it works around and the test that fails if Lightning changes it; after a Lightning upgrade, run
``pytest tests/test_lightning_internals.py tests/test_reliability.py``.
"""

from __future__ import annotations

import pytorch_lightning as pl


def skip_sigterm_broadcast(trainer: pl.Trainer) -> None:
    """Drop Lightning's per-update SIGTERM broadcast in a multi-process fit.

    Lightning 2.6 starts every training update of a multi-process run by broadcasting rank 0's
    ``trainer.received_sigterm`` and reading the result with ``.item()``
    (``_TrainingEpochLoop._broadcast_sigterm_tensor``): a host sync per update, which on NCCL makes the
    host wait for the GPU's queue to drain. gptkit's :class:`~gptkit.reliability.Preemption` replaces
    Lightning's SIGTERM handler, so ``received_sigterm`` never becomes true and the broadcast carries
    nothing; Preemption settles a stop between processes itself, without waiting.

    Caught by ``tests/test_lightning_internals.py::test_the_sigterm_broadcast_is_still_lightnings``
    (the method still exists and the training loop still calls it) and, for the stop itself, by
    ``tests/test_reliability.py::test_ddp_sigterm_stops_every_process_at_one_update``.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    if hasattr(epoch_loop, "_broadcast_sigterm_tensor"):
        epoch_loop._broadcast_sigterm_tensor = _no_broadcast


def _no_broadcast() -> None:
    return None

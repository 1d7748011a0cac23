"""The recipe verbs: ``fit``, ``validate``, ``test``, ``predict`` and ``zeroshot``.

Each reads like a training script: build the run from its config (:func:`gptkit.builder.build`),
hand it to the Trainer, report. The CLI calls :func:`run`, :func:`predict` and :func:`zeroshot`; so can
a script or a sweep (``from gptkit import load_config, run``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from gptkit.builder import Components, build
from gptkit.checkpoint import CheckpointInfo, checkpoint_must_fit
from gptkit.checkpointing import BestCheckpoint
from gptkit.console import duration, log
from gptkit.errors import ConfigError, GptkitError
from gptkit.outputs import CHECKPOINTS_DIR, PREDICTIONS_DIR, checkpoint_run_folder, write_results
from gptkit.reliability import Interrupted, Preemption, evaluation_stops
from gptkit.resume import caller_rng_state
from gptkit.runfolder import run_dir, run_folder_lock


def run(verb: str, cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> dict[str, float]:
    """Build and run ``fit``, ``validate`` or ``test``; returns the final logged metrics.

    ``validate`` and ``test`` also write them to ``<run dir>/results/<verb>.json`` (``gptkit glue``
    reads them). ``predict`` is :func:`predict`, which returns the prediction files it writes.
    ``callbacks`` are Lightning callbacks added to the run's own. The run seeds the random generators
    from ``run.seed``; the caller's random state (Python, NumPy, torch) is given back when it returns.
    A ``fit`` holds its run folder while it runs: a second fit into it is refused.
    """
    if verb not in ("fit", "validate", "test"):
        raise ValueError(f"run() runs fit, validate or test, not {verb!r} (predict: gptkit.verbs.predict)")
    if verb == "test" and cfg.data.name == "pretrain":
        raise ConfigError("`gptkit test` needs a fine-tuning recipe: pretraining holds out only a validation split "
                          "(data.val_fraction), which `gptkit validate` scores")
    held = run_folder_lock(run_dir(cfg)) if verb == "fit" else contextlib.nullcontext()
    with caller_rng_state(), held:
        c = build(cfg, verb, callbacks)
        return fit(c) if verb == "fit" else evaluate(c, verb)


def fit(c: Components) -> dict[str, float]:
    """Train the built run (resuming ``c.ckpt_path`` if set) and say how it ended; returns the final
    logged metrics. A preemption signal ends it as :class:`~gptkit.reliability.Preempted` once saved."""
    preemption = next((cb for cb in c.trainer.callbacks if isinstance(cb, Preemption)), None)
    stops = preemption.installed(c.trainer) if preemption is not None else contextlib.nullcontext()
    started = time.perf_counter()
    with stops, checkpoint_must_fit(c.ckpt_path):
        try:
            c.trainer.fit(c.module, datamodule=c.datamodule, ckpt_path=c.ckpt_path, weights_only=True)
        except Interrupted:  # a Ctrl-C before training, or a second one (Lightning has cleaned up)
            raise KeyboardInterrupt from None
        except ValueError as exc:
            if "val_check_interval" not in str(exc):
                raise
            raise ConfigError(f"trainer.val_check_interval: {' '.join(str(exc).split())} (with this data, "
                              "trainer.val_check_interval must be at most the number of training batches per "
                              "epoch, or set trainer.check_val_every_n_epoch=null)") from None
    if skipped := getattr(c.module, "nonfinite_skipped", 0):
        log(f"skipped {skipped} batch(es) with a non-finite loss (objective.nonfinite=skip)")
    start = c.resumed.step if c.resumed is not None else None
    if start is not None and c.trainer.global_step <= start:
        log(f"nothing to train: {c.ckpt_path} is at update {start}, where trainer.max_steps / max_epochs end the "
            "run; raise them to train longer")
    log(fit_report(c, start, time.perf_counter() - started))
    return final_metrics(c.trainer)


def fit_report(c: Components, start: int | None, seconds: float) -> str:
    """The ``done:`` line that closes a fit: the updates it trained and its wall time, the best and the
    final value of ``checkpoint.monitor``, and the checkpoints to go on from, e.g. ``done: 60 updates in
    1m12s; best val/loss 5.81 (update 60), final 5.81; last checkpoint ..., best ...``. Reads the metrics
    once, here, from the best checkpoint's callback and ``trainer.callback_metrics``."""
    trainer, step = c.trainer, c.trainer.global_step
    trained = step - (start or 0)
    parts = [f"{trained:,} update{'' if trained == 1 else 's'}" + (f" ({start:,} to {step:,})" if start and trained else "")
             + f" in {duration(seconds)}"]
    ckpt = trainer.checkpoint_callback
    best = ckpt.kept_best() if isinstance(ckpt, BestCheckpoint) else ""
    if isinstance(ckpt, BestCheckpoint) and ckpt.monitor:
        final = trainer.callback_metrics.get(ckpt.monitor)  # the last validation of this fit, if it had one
        final = None if final is None else f"{float(final):.4g}"
        if best and ckpt.best_model_score is not None:
            try:
                at = CheckpointInfo.read(best).step
            except (OSError, GptkitError):  # (the done line never fails a finished run)
                at = None
            scores = f"best {ckpt.monitor} {float(ckpt.best_model_score):.4g}" + (f" (update {at:,})" if at is not None else "")
            parts.append(scores + (f", final {final}" if final is not None else ""))
        elif final is not None:
            parts.append(f"final {ckpt.monitor} {final}")
    parts.append(f"last checkpoint {(c.run_dir / CHECKPOINTS_DIR / 'last.ckpt').resolve()}" + (f", best {best}" if best else ""))
    return "done: " + "; ".join(parts)


def evaluate(c: Components, verb: str) -> dict[str, float]:
    """``validate`` or ``test`` the built run's checkpoint; the metrics also go to ``results/<verb>.json``
    in the checkpoint's run folder, with the checkpoint and the update they score."""
    with checkpoint_must_fit(c.ckpt_path), evaluation_stops(verb):
        # verbose=False: Lightning's table of results would go to stdout before the CLI's own lines
        getattr(c.trainer, verb)(c.module, datamodule=c.datamodule, ckpt_path=c.ckpt_path, weights_only=True,
                                 verbose=False)
    metrics = final_metrics(c.trainer)
    scored = c.resumed or c.init
    if scored is not None and rank_zero_only.rank == 0:
        path = write_results(c.run_dir, verb, metrics, scored.path, scored.step)
        log(f"{verb} results -> {path}")
        if checkpoint_run_folder(scored.path) != c.run_dir.resolve():
            log(f"note: {scored.path} is not a checkpoint of run folder {c.run_dir}; its results were written there "
                "all the same")
    return metrics


def final_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def predict(cfg: DictConfig) -> list[Path]:
    """Test-set predictions of a fine-tuned checkpoint, one ``index<TAB>prediction`` file per test
    split, named as GLUE submissions expect (``SST-2.tsv``, ``MNLI-m.tsv`` ...). The caller's random
    state is given back, as by :func:`run`."""
    if cfg.data.name == "pretrain":
        raise ConfigError("`gptkit predict` needs a fine-tuning recipe (data.name set to a task, e.g. sst2)")
    with caller_rng_state():
        c = build(cfg, "predict")
        if c.trainer.world_size > 1:  # each process would write only its own share of the test set
            raise ConfigError(f"`gptkit predict` writes its files from one process, but trainer.devices / num_nodes "
                              f"give {c.trainer.world_size}; add trainer.devices=1 trainer.num_nodes=1")
        with checkpoint_must_fit(c.ckpt_path), evaluation_stops("predict"):
            outputs = c.trainer.predict(c.module, datamodule=c.datamodule, ckpt_path=c.ckpt_path, weights_only=True)
        task = c.module.task
        splits = c.datamodule.predict_split_names
        per_split = [outputs] if len(splits) == 1 else outputs
        written = []
        for split, batches in zip(splits, per_split):
            index = torch.cat([b["index"] for b in batches]).tolist()
            preds = torch.cat([b["pred"] for b in batches]).tolist()
            path = task.write_predictions(c.run_dir / PREDICTIONS_DIR / task.prediction_file(split), index, preds,
                                          stats=c.datamodule.splits[split].stats)
            log(f"{task.title} {split}: {len(index)} predictions -> {path}")
            written.append(path)
        return written


def zeroshot(cfg: DictConfig) -> dict[str, float]:
    """``gptkit zeroshot``: score a checkpoint's language model alone, with no fine-tuning, on
    ``zeroshot.tasks`` (or the recipe's own task) by the paper's zero-shot heuristics
    (:mod:`gptkit.zeroshot`); returns ``{"zeroshot/<task>/<metric>": value}``. The checkpoint is
    ``ckpt_path`` (a .ckpt, ``last`` / ``best`` of the recipe's run, or a pretrained-model folder), else
    ``init.checkpoint``; ``zeroshot.untrained=true`` scores a randomly initialised model of the same size
    instead. The metrics also go to ``results/zeroshot.json`` (``zeroshot-untrained.json``) in the
    checkpoint's run folder. The caller's random state is given back, as by :func:`run`."""
    from gptkit.zeroshot import zeroshot as score

    with caller_rng_state():
        pl.seed_everything(cfg.run.seed, workers=True, verbose=False)  # an untrained model's weights
        scored = score(cfg)
    metrics, info = scored.metrics, scored.checkpoint
    kept = info if info is not None and not scored.untrained else None
    path = write_results(scored.folder, "zeroshot-untrained" if scored.untrained else "zeroshot", metrics,
                         kept.path if kept is not None else None, kept.step if kept is not None else None)
    log(f"zeroshot results -> {path}")
    return metrics

"""From a validated config to running objects: tokenizer, DataModule, LightningModule, callbacks, Trainer.

:func:`build` is the one place where a recipe becomes components, in the order the data flows; the
verbs that run them (``fit``, ``validate``, ``test``, ``predict``) are :mod:`gptkit.verbs`. What a
checkpoint says is read once (:class:`~gptkit.checkpoint.CheckpointInfo`); which folder a run writes
into is :mod:`gptkit.runfolder`; which metric picks the best checkpoint is :mod:`gptkit.monitor`.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from gptkit.checkpoint import (
    CheckpointInfo,
    adopt_model_sizes,
    read_init_checkpoint,
    resolve_ckpt_path,
    transfer_backbone,
)
from gptkit.config import GPTConfig, to_yaml
from gptkit.console import log, quiet_libraries
from gptkit.data.cache import resolve_data_dir
from gptkit.devices import default_precision, on_cuda, pin_memory
from gptkit.errors import ConfigError, DataError
from gptkit.host import shared_cores_warning
from gptkit.monitor import check_monitor, checkpoint_mode, run_spec, run_task
from gptkit.openai_gpt.tokenizer import load_tokenizer
from gptkit.outputs import CHECKPOINTS_DIR, PREDICTIONS_DIR, RESULTS_DIR, TENSORBOARD_DIR
from gptkit.runfolder import RunFolder, evaluation_dir, guard_run_dir, run_dir, tensorboard_version
from gptkit.tokenizer import Tokenizer, train_tokenizer


@dataclass
class Components:
    """Everything a verb runs, built from one config."""

    cfg: DictConfig  # with the model sizes a checkpoint fixed
    run_dir: Path  # where the verb writes
    tokenizer: Any
    datamodule: pl.LightningDataModule
    module: pl.LightningModule
    trainer: pl.Trainer
    ckpt_path: str | None = None  # the checkpoint to resume or evaluate, resolved (ckpt_path=last/best/auto)
    resumed: CheckpointInfo | None = None  # what that checkpoint says
    init: CheckpointInfo | None = None  # init.checkpoint, read


def build(cfg: DictConfig, verb: str = "fit", callbacks: Sequence[pl.Callback] = ()) -> Components:
    """Make every component of a run from its config, in the order the data flows; ``callbacks`` are
    Lightning callbacks added to gptkit's own (a fit's checkpoints, progress, throughput...)."""
    quiet_libraries()
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls left outside autocast
    if verb == "fit" and not on_cuda(cfg) and (busy := shared_cores_warning()) is not None:
        log(f"warning: {busy}")  # two CPU runs on the same cores slow each other 4-8x

    # the checkpoints: the one to resume or evaluate, and the one to start from
    ckpt_path = resolve_ckpt_path(cfg, run_dir(cfg))
    if verb != "fit":
        require_checkpoint(cfg, verb, ckpt_path)
    resumed = CheckpointInfo.read(ckpt_path) if ckpt_path else None
    init = read_init_checkpoint(cfg)
    if resumed is not None:
        resumed.check_task(run_task(cfg))

    # the run folder: a fit that does not resume this run's own checkpoint must not mix with the ones there
    rdir = run_dir(cfg) if verb == "fit" else evaluation_dir(cfg, ckpt_path or cfg.init.checkpoint)
    own = resumed is not None and resumed.run_folder == rdir.resolve()
    replace = verb == "fit" and not own and guard_run_dir(cfg, rdir)
    cfg = adopt_model_sizes(cfg, resumed, init)
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)

    # the task (or pretraining) and its monitor, checked before the data is tokenised
    task = build_task(cfg)
    if resumed is not None:
        resumed.check_labels(task)
    check_monitor(cfg)
    sources = None
    if task is None:
        from gptkit.data.sources import resolve_sources

        sources = resolve_sources(list(cfg.data.files), cfg.data.corpus, cfg.data.text_field,
                                  resolve_data_dir(cfg.run.data_dir))

    # evaluating, fine-tuning and resuming by path take the checkpoint's tokenizer (see build_tokenizer)
    carried = resumed if sources is None or verb != "fit" or resumed_by_path(cfg) else None
    tokenizer, kind = build_tokenizer(cfg, sources, carried, init)
    record = {"kind": kind, "exact": kind == "openai-gpt", "path": str((rdir / "tokenizer.json").resolve()),
              "fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size}
    if resumed is not None:
        resumed.check_tokenizer(tokenizer.fingerprint)

    datamodule = build_datamodule(cfg, tokenizer, sources, task)
    module = build_module(cfg, tokenizer, record, task)
    if init is not None and resumed is None:  # (ckpt_path=auto on a first start: init too)
        transfer_backbone(module.backbone, init, cfg.init.n_transfer)

    # The run folder is written when training starts (RunFolder): a fit that fails before leaves it as it
    # was. run.overwrite=true then removes the earlier run's checkpoints and what was made from them.
    earlier = (CHECKPOINTS_DIR, RESULTS_DIR, PREDICTIONS_DIR) if replace else ()
    run_folder = RunFolder(rdir, tokenizer, to_yaml(cfg), replace=earlier) if verb == "fit" else None
    own_callbacks = build_callbacks(cfg, rdir, verb, run_folder, tokenizer)
    trainer = build_trainer(cfg, rdir, [*own_callbacks, *callbacks], verb, resume=own)
    return Components(cfg, rdir, tokenizer, datamodule, module, trainer, ckpt_path, resumed, init)


def resumed_by_path(cfg: DictConfig) -> bool:
    """A fit that resumes a checkpoint named by its path (not its own run's ``last`` / ``best`` / ``auto``)."""
    return cfg.ckpt_path not in (None, "last", "best", "auto")


def require_checkpoint(cfg: DictConfig, verb: str, ckpt_path: str | None) -> None:
    """Evaluating and predicting score a trained checkpoint (for pretraining, ``init.checkpoint`` will do)."""
    if verb == "predict" and ckpt_path is None:
        raise ConfigError("`gptkit predict` needs a fine-tuned checkpoint: add ckpt_path=PATH (or ckpt_path=best)")
    if ckpt_path is None and (cfg.data.name != "pretrain" or not cfg.init.checkpoint):
        # a fine-tuning recipe's init.checkpoint has no trained head: scoring it would mean nothing
        raise ConfigError(f"`gptkit {verb}` needs a checkpoint of the run: add ckpt_path=best (or last, or "
                          "PATH of a .ckpt file)")


# -- tokenizer --------------------------------------------------------------------------------------

def build_tokenizer(cfg: DictConfig, sources: list | None, carried: CheckpointInfo | None,
                    init: CheckpointInfo | None) -> tuple[Any, str]:
    """The run's tokenizer: named by the recipe, carried by a checkpoint (``carried``: the checkpoint to
    evaluate, or to resume when fine-tuning or named by its path; else ``init.checkpoint``), or trained on
    the corpus and cached.

    A pretraining fit that resumes its own run (``ckpt_path=last``...) derives its tokenizer from the
    corpus again, and the build compares it with the checkpoint's: a changed corpus or ``tokenizer.*``
    is refused.
    """
    t = cfg.tokenizer
    if t.kind != "bpe":
        return load_tokenizer({"kind": t.kind, "path": t.path}, "the recipe")
    if t.path:
        path = Path(t.path).expanduser()
        if path.is_file():
            return Tokenizer.from_file(path), "bpe"
        if path.is_dir():
            raise DataError(f"tokenizer.path {path} is a directory; give the tokenizer.json file (e.g. "
                            f"{path / 'tokenizer.json'})")
        if sources is None:
            raise DataError(f"tokenizer.path {path} does not exist and there is no corpus to train one on")
    else:
        for ckpt in (carried, init):
            if ckpt is not None and ckpt.tokenizer:
                return load_tokenizer(ckpt.tokenizer, str(ckpt.path))
        if sources is None:
            raise ConfigError(
                "no tokenizer for this run: a fine-tuning run takes it from init.checkpoint (a gptkit .ckpt "
                "or a `gptkit import` folder), so set init.checkpoint=...; from scratch, set "
                "tokenizer.path=PATH/tokenizer.json or tokenizer.kind=openai-gpt"
            )
        limit = t.train_max_bytes and f"{t.train_max_bytes} utf-8"  # (a new key: it counted characters before)
        ident = {"sources": [s.identity() for s in sources], "vocab_size": t.vocab_size,
                 "lowercase": t.lowercase, "min_frequency": t.min_frequency, "max_bytes": limit}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        path = resolve_data_dir(cfg.run.data_dir) / "tokenizers" / key / "tokenizer.json"
        if path.is_file():
            return Tokenizer.from_file(path), "bpe"
    from gptkit.data.sources import read_sources

    return train_tokenizer(read_sources(sources), path, t.vocab_size, t.lowercase, t.min_frequency,
                           t.train_max_bytes), "bpe"


# -- data -------------------------------------------------------------------------------------------
def build_task(cfg: DictConfig):
    """The fine-tuning task (a :class:`~gptkit.tasks.base.TaskSpec`) of the recipe, or None for pretraining;
    ``data.files`` is a list for pretraining, a mapping from split to file for a table, unset otherwise."""
    from gptkit.tasks import TABLE

    files = cfg.data.files
    if cfg.data.name == "pretrain" and isinstance(files, DictConfig):
        raise ConfigError("data.files is a mapping from split to file, which a table task reads (data.name=table); "
                          "pretraining reads a list of files or globs, e.g. data.files='[corpus/*.txt]'")
    if cfg.data.name not in ("pretrain", TABLE) and files:  # (data.corpus may be left over from pretraining)
        raise ConfigError(f"data.files is read by pretraining (data.name=pretrain) and your own tables "
                          f"(data.name=table); task {cfg.data.name} reads its files from data.root "
                          f"({cfg.data.root}): drop data.files")
    return run_spec(cfg)


def build_datamodule(cfg: DictConfig, tokenizer, sources: list | None, task=None) -> pl.LightningDataModule:
    """The pretraining DataModule (token shards of ``sources``), or the fine-tuning task's (``task``: the
    recipe's, when already built)."""
    d = cfg.data
    if d.name == "pretrain":
        from gptkit.data.pretrain import PretrainDataModule

        return PretrainDataModule(
            sources, tokenizer, resolve_data_dir(cfg.run.data_dir) / "shards", n_ctx=cfg.model.n_ctx,
            batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, val_fraction=d.val_fraction,
            num_workers=d.num_workers, pin_memory=pin_memory(cfg), verify_shards=d.verify_shards,
            seed=cfg.run.seed,
        )
    from gptkit.data.finetune import FinetuneDataModule

    return FinetuneDataModule(
        task or build_task(cfg), root=d.root, tokenizer=tokenizer, n_ctx=cfg.model.n_ctx, batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size, num_workers=d.num_workers, skip_bad_rows=d.skip_bad_rows,
        subset=d.subset, seed=cfg.run.seed, data_dir=resolve_data_dir(cfg.run.data_dir),
        group_by_length=d.group_by_length, pin_memory=pin_memory(cfg), train_examples=d.train_examples,
    )


# -- module -----------------------------------------------------------------------------------------
def build_module(cfg: DictConfig, tokenizer, tokenizer_record: dict, task=None):
    """The :class:`~gptkit.module.GPTModule`: the recipe's model sizes over the tokenizer's vocabulary,
    with the task's head when fine-tuning (``task``: the recipe's, when already built)."""
    from gptkit.module import GPTModule

    m = cfg.model
    if m.vocab_size is not None and m.vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size={m.vocab_size} but the tokenizer has {tokenizer.vocab_size:,} ids; "
                          "drop model.vocab_size (null: the tokenizer's)")
    sizes = {f: m[f] for f in GPTConfig.__dataclass_fields__ if f != "vocab_size"}
    compile_ = on_cuda(cfg) if m.compile is None else m.compile
    return GPTModule(
        model={**sizes, "vocab_size": tokenizer.vocab_size}, optim=OmegaConf.to_container(cfg.optim),
        objective=OmegaConf.to_container(cfg.objective), task=task or build_task(cfg),
        head_dropout=m.clf_pdrop, tokenizer=tokenizer_record, compile=compile_, compile_mode=m.compile_mode,
        compile_tuning=m.compile_tuning,
    )


# -- callbacks and trainer --------------------------------------------------------------------------
def build_callbacks(cfg: DictConfig, rdir: Path, verb: str = "fit", run_folder: pl.Callback | None = None,
                    tokenizer: Any = None) -> list[pl.Callback]:
    """gptkit's callbacks: for a fit, the checkpoints (best and last), clean stops, exact resume, the
    learning rate, throughput and progress, and the zero-shot curve when ``zeroshot.tasks`` names tasks
    (scored with ``tokenizer``). Lightning runs the checkpoint callbacks after the others."""
    from pytorch_lightning.callbacks import LearningRateMonitor

    from gptkit.callbacks import FitSummary, TokenThroughput
    from gptkit.checkpointing import BestCheckpoint, LastCheckpoint
    from gptkit.progress import PlainProgress, RichProgress
    from gptkit.reliability import NonFiniteLoss, Preemption
    from gptkit.resume import ResumedSettings, RNGState

    c = cfg.checkpoint
    progress = cfg.logging.progress
    if progress == "auto":
        progress = "rich" if sys.stderr.isatty() else "plain"
    callbacks: list[pl.Callback] = [RichProgress()] if progress == "rich" else []
    if verb != "fit":
        return callbacks
    callbacks += [
        FitSummary(rdir),
        NonFiniteLoss() if cfg.objective.nonfinite == "stop" else None,  # before the run folder's callbacks
        run_folder,
        LearningRateMonitor(logging_interval="step"),
        RNGState(),
        ResumedSettings(),
        TokenThroughput() if cfg.logging.throughput else None,
        PlainProgress(every=cfg.trainer.log_every_n_steps) if progress == "plain" else None,
        zeroshot_curve(cfg, rdir, tokenizer),
        # the best checkpoints, at validation (first of the checkpoint callbacks: trainer.checkpoint_callback)
        BestCheckpoint(
            dirpath=rdir / CHECKPOINTS_DIR, filename=f"best-step{{step}}-{c.monitor.replace('/', '_')}{{{c.monitor}:.4f}}",
            monitor=c.monitor, mode=checkpoint_mode(cfg), save_top_k=c.save_top_k, auto_insert_metric_name=False,
            legacy_every_n_train_steps=c.every_n_train_steps,
            # a resumed run that saves at an update the stopped run had saved at replaces that file (the same
            # update, left untracked by the checkpoint it resumed), rather than keeping it beside a -v1 copy
            enable_version_counter=False,
        ),
        LastCheckpoint(rdir / CHECKPOINTS_DIR, every_n_train_steps=c.every_n_train_steps),  # after the best one
        Preemption(requeue_signal=slurm_requeue_signal()),  # last: every other callback has seen the update
    ]
    return [cb for cb in callbacks if cb is not None]


def zeroshot_curve(cfg: DictConfig, rdir: Path, tokenizer: Any) -> pl.Callback | None:
    """The zero-shot curve (:class:`gptkit.zeroshot.ZeroshotCurve`) when ``zeroshot.tasks`` names tasks."""
    from gptkit.config import zeroshot_tasks

    if not zeroshot_tasks(cfg.zeroshot) or tokenizer is None:
        return None
    from gptkit.zeroshot import ZeroshotCurve

    return ZeroshotCurve(cfg, tokenizer, rdir)


def slurm_requeue_signal() -> int | None:
    """The signal SLURM sends before it ends a job that gptkit then requeues (Lightning's: SIGUSR1), when
    running under SLURM."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return signal.SIGUSR1 if SLURMEnvironment.detect() and hasattr(signal, "SIGUSR1") else None


def build_trainer(cfg: DictConfig, rdir: Path, callbacks: Sequence[pl.Callback] = (), verb: str = "fit",
                  resume: bool = False) -> pl.Trainer:
    """The Trainer; only ``fit`` logs to TensorBoard (an evaluation's metrics go to ``results/`` and stdout,
    not into a new one-point TensorBoard version of the run), and a fit that resumes the run's own
    checkpoint goes on writing into its latest TensorBoard version, so its curves continue."""
    from lightning_fabric.plugins.environments import SLURMEnvironment
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.callbacks import ProgressBar
    from pytorch_lightning.loggers import TensorBoardLogger

    from gptkit.reliability import AtomicCheckpointIO

    kwargs = OmegaConf.to_container(cfg.trainer)  # None is meaningful (check_val_every_n_epoch=null)
    if kwargs["precision"] is None:
        kwargs["precision"] = default_precision(cfg)
    plugins = [AtomicCheckpointIO()]  # temp file + fsync + rename; weights_only loading
    if SLURMEnvironment.detect():  # gptkit's Preemption saves and requeues, at an update's end
        plugins.append(SLURMEnvironment(auto_requeue=False))
    logger = (TensorBoardLogger(save_dir=str(rdir), name=TENSORBOARD_DIR, version=tensorboard_version(rdir, resume))
              if verb == "fit" else False)
    try:
        return pl.Trainer(
            **kwargs, default_root_dir=str(rdir), logger=logger, callbacks=list(callbacks), plugins=plugins,
            enable_progress_bar=any(isinstance(cb, ProgressBar) for cb in callbacks),
            enable_model_summary=False, enable_checkpointing=verb == "fit",
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as exc:
        # Lightning reports a bad setting with any of these; a device that fails to start, too
        detail = " ".join(str(exc).split())
        raise ConfigError(f"Lightning could not set up the trainer with these trainer.* settings (accelerator, "
                          f"devices, strategy, precision, ...): {detail}") from None

"""From a validated config to running objects: tokenizer, DataModule, LightningModule, callbacks, Trainer.

``build(cfg)`` is the one place where a recipe becomes components; ``run(verb, cfg)`` calls the
Trainer. The CLI only parses arguments and calls ``run``; tests and sweeps can call either directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gptkit.config import check_mode, check_pretrain_monitor, monitor_mode, to_yaml
from gptkit.console import log, quiet_libraries
from gptkit.errors import CheckpointError, ConfigError, DataError
from gptkit.outputs import (
    CHECKPOINTS_DIR,
    PREDICTIONS_DIR,
    RESULTS_DIR,
    TENSORBOARD_DIR,
    checkpoint_run_folder,
    write_results,
)
from gptkit.reliability import RunFolder, caller_rng_state, run_folder_lock
from gptkit.tokenizer import SPECIAL_TOKENS, Tokenizer


@dataclass
class Components:
    cfg: DictConfig
    run_dir: Path
    tokenizer: Any
    datamodule: pl.LightningDataModule
    module: pl.LightningModule
    trainer: pl.Trainer
    ckpt_path: str | None = None  # the checkpoint to resume or evaluate, resolved (ckpt_path=last/best/auto)


# -- paths ------------------------------------------------------------------------------------------
def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir).expanduser() / cfg.run.name


def evaluation_dir(cfg: DictConfig, ckpt_path: str | None) -> Path:
    """Where ``validate``, ``test`` and ``predict`` write: the run folder of the checkpoint they score
    (the folder above its ``checkpoints/``, with the run's ``config.yaml``), so a checkpoint of another
    run does not put its results into the recipe's run folder; ``run.dir/run.name`` otherwise."""
    folder = checkpoint_run_folder(ckpt_path) if ckpt_path else None
    return folder if folder is not None and (folder / "config.yaml").is_file() else run_dir(cfg)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last`` / ``best`` name the run folder's checkpoints; other values are paths.

    ``auto`` resumes from ``last.ckpt`` when the run folder has one and starts afresh otherwise: the
    same command line then serves the first start and every restart of a preempted job.
    """
    ckpt = cfg.ckpt_path
    if ckpt == "auto":
        last = run_dir(cfg) / CHECKPOINTS_DIR / "last.ckpt"
        return str(last) if last.is_file() else None
    if ckpt in ("last", "best"):
        folder = run_dir(cfg) / CHECKPOINTS_DIR
        if ckpt == "last":
            path = folder / "last.ckpt"
        else:
            path = run_best_checkpoint(cfg, folder)
            if path is None:
                raise CheckpointError(
                    f"ckpt_path=best: run '{cfg.run.name}' has no best checkpoint in {folder} (one is saved at each "
                    "validation that improves checkpoint.monitor); use ckpt_path=last, or check run.name / run.dir"
                )
        if not path.is_file():
            best = run_best_checkpoint(cfg, folder)
            hint = f"; it has {best.name}: use ckpt_path=best" if best else f" (has run '{cfg.run.name}' saved one?)"
            raise CheckpointError(f"ckpt_path={ckpt}: {path} does not exist{hint}")
        return str(path)
    if ckpt is not None and not Path(ckpt).expanduser().is_file():
        raise CheckpointError(f"ckpt_path {ckpt} does not exist; give the path of a .ckpt file, or last / best")
    return str(Path(ckpt).expanduser()) if ckpt else None


def checkpoint_mode(cfg: DictConfig) -> str:
    """``checkpoint.mode``; when null, the direction the monitor improves in: ``min`` for a loss or
    perplexity, else the task metric's (torchmetrics' ``higher_is_better``), else ``max``. A mode that
    would keep the worst checkpoints is refused."""
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    best = monitor_mode(monitor)
    if best is None and cfg.data.name != "pretrain":
        from gptkit.tasks import get_task

        best = task_metric_mode(get_task(cfg.data.name), monitor)
    check_mode(monitor, mode, best)
    return mode or best or "max"


def task_metric_mode(task, monitor: str) -> str | None:
    """``max`` or ``min`` for the task metric ``monitor`` names (``val/acc``, ``val/acc_matched``,
    ``val/acc_high``...), as its torchmetrics ``higher_is_better`` says; None if it does not say."""
    name = monitor.split("/", 1)[-1]
    metrics = task.metrics()
    key = name if name in metrics else next((k for k in metrics if name.startswith(k + "_")), None)
    better = None if key is None else metrics[key].higher_is_better
    if better is None and key is not None and "corrcoef" in type(metrics[key]).__name__.lower():
        better = True  # torchmetrics leaves correlations unsaid
    return None if better is None else "max" if better else "min"


def run_best_checkpoint(cfg: DictConfig, folder: Path) -> Path | None:
    """``ckpt_path=best``: the best score of the recipe's ``checkpoint.monitor``; where no file carries
    that monitor's score, of the one the run recorded in its ``config.yaml`` (it was trained with
    another); failing both, the newest ``best-*.ckpt``, and a line that says so."""
    if not folder.is_dir() or not any(folder.glob("best*.ckpt")):
        return None
    path = best_checkpoint(folder, cfg.checkpoint.monitor, checkpoint_mode(cfg))
    recorded = folder.parent / "config.yaml"
    if path is None and recorded.is_file():
        try:
            trained = OmegaConf.load(recorded).checkpoint
            run_cfg = OmegaConf.merge(cfg, {"checkpoint": {"monitor": trained.monitor, "mode": trained.mode}})
            path = best_checkpoint(folder, trained.monitor, checkpoint_mode(run_cfg))
        except Exception:  # a damaged or foreign config.yaml: the file names still give the newest
            path = None
    if path is None:
        path = max(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        log(f"ckpt_path=best: no best checkpoint in {folder} carries a {cfg.checkpoint.monitor} score; using the "
            f"newest, {path.name}")
    return path


def best_checkpoint(folder: Path, monitor: str, mode: str) -> Path | None:
    """Of the ``best-step…-<monitor><score>.ckpt`` files in ``folder`` (``checkpoint.save_top_k`` may keep
    several), the one with the best score of ``monitor``, the earliest among equals (as Lightning keeps
    it); None when no file carries that monitor's score."""
    files = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    tag = re.escape(monitor.replace("/", "_"))
    score = re.compile(rf"-{tag}(-?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|nan|inf))(?:-v\d+)?\.ckpt$")
    scored = [(float(m.group(1)), i, p) for i, p in enumerate(files) if (m := score.search(p.name))]
    sign = 1 if mode == "max" else -1
    ranked = [(-math.inf if math.isnan(s) else sign * s, -i, p) for s, i, p in scored]
    return max(ranked)[2] if ranked else None


def checkpoint_record(path: str | os.PathLike) -> dict:
    """What a checkpoint says about how it was made (``model`` sizes, ``tokenizer`` record...): the
    hyper-parameters of a gptkit ``.ckpt``, or the ``config.json`` of a pretrained-model folder."""
    from gptkit.checkpoint import CONFIG_FILE, ckpt_hparams, run_folder_hint

    path = Path(path).expanduser()
    if not path.is_dir():
        return ckpt_hparams(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not a pretrained-model folder: expected {CONFIG_FILE} in it"
                              + run_folder_hint(path))
    return json.loads((path / CONFIG_FILE).read_text())


def checkpoint_tokenizer(path: str | os.PathLike) -> dict | None:
    """The tokenizer record (kind, path, fingerprint) kept with a checkpoint, if any."""
    from gptkit.checkpoint import TOKENIZER_FILE

    path = Path(path).expanduser()
    if not path.is_dir():
        return checkpoint_record(path).get("tokenizer")
    info = dict(checkpoint_record(path).get("tokenizer") or {})
    info.setdefault("kind", "bpe")
    if (path / TOKENIZER_FILE).is_file():
        info["path"] = str(path / TOKENIZER_FILE)
    return info


# -- tokenizer --------------------------------------------------------------------------------------
def _load_tokenizer_record(info: dict, where: str):
    """A tokenizer from its record: ``{"kind": "bpe" | "openai-gpt" | "openai-gpt-fast", "path", "exact"}``."""
    kind = info.get("kind", "bpe")
    path = info.get("path")
    if path and not Path(path).is_file():
        raise CheckpointError(
            f"the tokenizer of {where} ({path}) is missing; set tokenizer.path to the tokenizer.json it was "
            "trained with"
        )
    if kind != "bpe":
        from gptkit.openai_gpt import load_openai_tokenizer

        exact = info.get("exact", kind == "openai-gpt")
        return load_openai_tokenizer(exact=exact, path=path), "openai-gpt" if exact else "openai-gpt-fast"
    if not path:
        raise CheckpointError(f"{where} records no tokenizer file; set tokenizer.path to its tokenizer.json")
    return Tokenizer.from_file(path), kind


def build_tokenizer(cfg: DictConfig, sources: list | None, ckpt_path: str | None = None,
                    verb: str = "fit") -> tuple[Any, str]:
    """The run's tokenizer: named by the recipe, carried by a checkpoint (``ckpt_path``, the resolved
    checkpoint to resume or evaluate, or ``init.checkpoint``), or trained on the corpus."""
    t = cfg.tokenizer
    if t.kind != "bpe":
        return _load_tokenizer_record({"kind": t.kind, "path": t.path}, "the recipe")
    if t.path:
        path = Path(t.path).expanduser()
        if path.is_file():
            return Tokenizer.from_file(path), "bpe"
        if path.is_dir():
            raise DataError(f"tokenizer.path {path} is a directory; give the tokenizer.json file (e.g. {path / 'tokenizer.json'})")
        if sources is None:
            raise DataError(f"tokenizer.path {path} does not exist and there is no corpus to train one on")
    else:
        # Evaluating, and a fine-tuning run, take the checkpoint's tokenizer (also for ckpt_path=last/best).
        # A pretraining fit that resumes its own run derives its tokenizer from the corpus again, and
        # check_same_tokenizer compares it with the checkpoint's: a changed corpus or tokenizer.* is refused.
        use_ckpt_tokenizer = sources is None or verb != "fit" or cfg.ckpt_path not in ("last", "best", "auto")
        for ckpt in (ckpt_path if use_ckpt_tokenizer else None, cfg.init.checkpoint):
            if ckpt and Path(ckpt).expanduser().exists():
                info = checkpoint_tokenizer(ckpt)
                if info:
                    return _load_tokenizer_record(info, ckpt)
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
        path = Path(cfg.run.data_dir).expanduser() / "tokenizers" / key / "tokenizer.json"
        if path.is_file():
            return Tokenizer.from_file(path), "bpe"
    return train_tokenizer(cfg, sources, path), "bpe"


def train_tokenizer(cfg: DictConfig, sources: list, path: Path) -> Tokenizer:
    import time

    from gptkit.data.sources import read_sources

    t = cfg.tokenizer

    def texts():
        seen = 0
        for piece in read_sources(sources):
            yield piece
            seen += len(piece.encode())  # UTF-8 bytes, as the key says
            if t.train_max_bytes is not None and seen >= t.train_max_bytes:
                return

    log(f"training a {t.vocab_size:,}-token BPE tokenizer on the corpus ...")
    t0 = time.perf_counter()
    tok = Tokenizer.train(texts(), t.vocab_size, lowercase=t.lowercase, min_frequency=t.min_frequency)
    tok.save(path)
    log(f"tokenizer trained in {time.perf_counter() - t0:.1f}s ({tok.vocab_size:,} ids) -> {path}")
    return tok


# -- data -------------------------------------------------------------------------------------------
def pin_memory(cfg: DictConfig) -> bool:
    if cfg.data.pin_memory is not None:
        return cfg.data.pin_memory
    return torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def build_datamodule(cfg: DictConfig, tokenizer, sources: list | None) -> pl.LightningDataModule:
    d = cfg.data
    if d.name == "pretrain":
        from gptkit.data.pretrain import PretrainDataModule

        return PretrainDataModule(
            sources, tokenizer, Path(cfg.run.data_dir).expanduser() / "shards", n_ctx=cfg.model.n_ctx,
            batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, val_fraction=d.val_fraction,
            num_workers=d.num_workers, pin_memory=pin_memory(cfg), verify_shards=d.verify_shards,
            seed=cfg.run.seed,
        )
    return build_task_datamodule(cfg, tokenizer)


def build_task_datamodule(cfg: DictConfig, tokenizer) -> pl.LightningDataModule:
    """Fine-tuning DataModule for ``data.name`` (the registered task)."""
    from gptkit.data.finetune import FinetuneDataModule

    d = cfg.data
    return FinetuneDataModule(
        d.name, root=d.root, tokenizer=tokenizer, n_ctx=cfg.model.n_ctx, batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size, num_workers=d.num_workers, skip_bad_rows=d.skip_bad_rows,
        subset=d.subset, seed=cfg.run.seed, data_dir=cfg.run.data_dir, group_by_length=d.group_by_length,
        pin_memory=pin_memory(cfg),
    )


# -- module -----------------------------------------------------------------------------------------
def build_module(cfg: DictConfig, tokenizer, tokenizer_record: dict, ckpt_path: str | None):
    from gptkit.module import GPTModule

    m = OmegaConf.to_container(cfg.model)
    head_dropout = m.pop("clf_pdrop")
    compile_, compile_mode, compile_tuning = m.pop("compile"), m.pop("compile_mode"), m.pop("compile_tuning")
    if compile_ is None:
        compile_ = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    m["vocab_size"] = tokenizer.vocab_size
    task = None if cfg.data.name == "pretrain" else cfg.data.name
    module = GPTModule(
        model=m, optim=OmegaConf.to_container(cfg.optim), objective=OmegaConf.to_container(cfg.objective),
        task=task, head_dropout=head_dropout, tokenizer=tokenizer_record, compile=compile_,
        compile_mode=compile_mode, compile_tuning=compile_tuning,
    )
    if cfg.init.checkpoint and ckpt_path is None:  # (ckpt_path=auto on a first start: init too)
        init_from(module, cfg.init.checkpoint, cfg.init.n_transfer)
    return module


def init_from(module, checkpoint: str, n_transfer: int | None) -> None:
    from gptkit.checkpoint import load_backbone

    state, ckpt_config, _ = load_backbone(checkpoint)
    mine = module.backbone.config
    for field, key in (("n_embd", "n_embd"), ("n_head", "n_head"), ("mlp_width", "n_inner")):
        if getattr(ckpt_config, field) != getattr(mine, field):
            raise CheckpointError(
                f"init.checkpoint {checkpoint} has model.{key}={getattr(ckpt_config, field)} but the recipe "
                f"says {getattr(mine, field)}; set model.{key} to match the checkpoint"
            )
    if ckpt_config.n_layer < mine.n_layer and n_transfer is None:
        raise CheckpointError(
            f"init.checkpoint {checkpoint} has {ckpt_config.n_layer} blocks but model.n_layer={mine.n_layer}; "
            "match it, or set init.n_transfer to transfer fewer"
        )
    if n_transfer is not None and n_transfer > ckpt_config.n_layer:
        raise CheckpointError(
            f"init.n_transfer={n_transfer} but init.checkpoint {checkpoint} has {ckpt_config.n_layer} blocks; "
            f"set init.n_transfer to at most {ckpt_config.n_layer}"
        )
    theirs = state["tokens_embed.weight"].shape[0]
    # the tokenizer may add GPT-1's fine-tuning tokens to the checkpoint's vocabulary, and nothing else
    if not theirs <= mine.vocab_size <= theirs + len(SPECIAL_TOKENS):
        raise CheckpointError(
            f"init.checkpoint {checkpoint} has a {theirs}-token vocabulary but the tokenizer has "
            f"{mine.vocab_size}; use the tokenizer the checkpoint was trained with (drop tokenizer.kind and "
            "tokenizer.path from the recipe: a fine-tuning run takes the checkpoint's own)"
        )
    try:
        keys = module.load_pretrained(state, n_transfer)
    except CheckpointError as exc:
        raise CheckpointError(f"init.checkpoint {checkpoint}: {exc}") from None
    message = f"initialised {len(keys)} backbone tensors from {checkpoint}"
    if n_transfer is not None:
        message += f" (embeddings + {n_transfer} blocks)"
    if fresh := max(0, mine.n_layer - (ckpt_config.n_layer if n_transfer is None else n_transfer)):
        message += f"; {fresh} of the model's {mine.n_layer} blocks (model.n_layer) start from random weights"
    log(message)


ARCHITECTURE = ("n_layer", "n_head", "n_embd", "n_ctx", "n_inner")


def adopt_checkpoint_model(cfg: DictConfig, ckpt_path: str | None) -> DictConfig:
    """Model sizes come from the weights they must fit, not from a recipe's defaults.

    A checkpoint to resume or evaluate (``ckpt_path``) fixes every size; ``init.checkpoint`` fixes
    the width (``n_embd``, ``n_head``, ``n_inner``), the context (``n_ctx``: its position embeddings)
    and, when the recipe asks for more blocks than it has and ``init.n_transfer`` is unset, the depth.
    Each size taken over is logged.
    """
    if ckpt_path:
        source, fields = ckpt_path, ARCHITECTURE
    elif cfg.init.checkpoint:  # build() has checked that it exists
        source, fields = cfg.init.checkpoint, ("n_head", "n_embd", "n_inner", "n_ctx")
    else:
        return cfg
    theirs = checkpoint_record(source).get("model") or {}
    changes = {f: theirs[f] for f in fields if f in theirs and theirs[f] != cfg.model[f]}
    if not ckpt_path and theirs.get("n_layer", cfg.model.n_layer) < cfg.model.n_layer and cfg.init.n_transfer is None:
        changes["n_layer"] = theirs["n_layer"]
    if not changes:
        return cfg
    log(f"model sizes from {source}: " + ", ".join(f"model.{k}={v} (recipe: {cfg.model[k]})" for k, v in changes.items()))
    adopted = OmegaConf.merge(cfg, {"model": changes})
    OmegaConf.set_readonly(adopted, True)
    return adopted


def check_checkpoint_task(ckpt_path: str, task: str | None) -> None:
    """Refuse to resume or evaluate a checkpoint of another task (or pretraining) with this recipe."""
    from gptkit.checkpoint import ckpt_hparams

    hp = ckpt_hparams(ckpt_path)
    if "model" not in hp:
        raise CheckpointError(f"{ckpt_path} was not written by `gptkit fit` (no model hyper-parameters inside); "
                              "give a .ckpt from a run's checkpoints folder")
    theirs = hp.get("task")
    if theirs is not None and task is not None:  # names as the registry knows them (data.name=SST2 is sst2)
        from gptkit.tasks import get_task

        theirs, task = get_task(theirs).name, get_task(task).name
    if theirs == task:
        return

    def what(t: str | None) -> str:
        return f"{t} fine-tuning" if t else "pretraining"

    fix = f"use the {theirs} recipe (data.name={theirs})" if theirs else "use a pretraining recipe"
    if task and not theirs:
        fix += f", or start fine-tuning from it with init.checkpoint={ckpt_path} instead of ckpt_path"
    raise CheckpointError(f"checkpoint {ckpt_path} is from {what(theirs)} but the recipe is for {what(task)}; {fix}")


def check_same_tokenizer(ckpt_path: str, tokenizer_record: dict) -> None:
    """Refuse to resume or evaluate a checkpoint with a tokenizer other than the one it was trained with."""
    from gptkit.checkpoint import ckpt_hparams

    hp = ckpt_hparams(ckpt_path)
    theirs = (hp.get("tokenizer") or {}).get("fingerprint")
    if theirs and theirs != tokenizer_record.get("fingerprint"):
        raise CheckpointError(
            f"checkpoint {ckpt_path} was trained with tokenizer {theirs} but this run's tokenizer is "
            f"{tokenizer_record.get('fingerprint')}: the tokenizer.* settings or the pretraining data differ from "
            "the run's (see its config.yaml); use those, or drop tokenizer.path if you set it"
        )


# -- trainer ----------------------------------------------------------------------------------------
def default_precision(cfg: DictConfig) -> str:
    """``bf16-mixed`` on GPUs with bf16 tensor cores (compute capability 8.0+, or unknown), ``16-mixed``
    on older ones, ``32-true`` elsewhere."""
    if not (torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")):
        return "32-true"
    capability = cuda_capability()
    return "16-mixed" if capability is not None and capability < (8, 0) else "bf16-mixed"


def cuda_capability() -> tuple[int, int] | None:
    """The first visible GPU's compute capability, without initialising CUDA in this process.

    ``torch.cuda`` initialises CUDA to answer, after which Lightning cannot fork its processes
    (``trainer.strategy=ddp_fork`` or ``ddp_notebook``); NVML answers without that. ``None`` if
    NVML cannot be asked.
    """
    if torch.cuda.is_initialized():
        return torch.cuda.get_device_capability()
    import ctypes

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    index = int(visible) if visible.isdigit() else 0  # NVML numbers GPUs physically
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
    except (OSError, AttributeError):
        return None
    try:
        handle, major, minor = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
        ok = (nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) == 0
              and nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) == 0)
        return (major.value, minor.value) if ok else None
    except AttributeError:
        return None
    finally:
        nvml.nvmlShutdown()


def build_callbacks(cfg: DictConfig, rdir: Path) -> tuple[list[pl.Callback], bool]:
    from pytorch_lightning.callbacks import LearningRateMonitor

    from gptkit.callbacks import PlainProgress, RichProgress, throughput_monitor
    from gptkit.reliability import BestCheckpoint, LastCheckpoint, Preemption, RNGState

    c = cfg.checkpoint
    monitor_name = c.monitor.replace("/", "_")
    callbacks: list[pl.Callback] = [
        # the best checkpoints, at validation (first: it is trainer.checkpoint_callback)
        BestCheckpoint(
            dirpath=rdir / CHECKPOINTS_DIR, filename=f"best-step{{step}}-{monitor_name}{{{c.monitor}:.4f}}",
            monitor=c.monitor, mode=checkpoint_mode(cfg), save_top_k=c.save_top_k, auto_insert_metric_name=False,
            legacy_every_n_train_steps=c.every_n_train_steps,
            # a resumed run that saves at an update the stopped run had saved at replaces that file (the same
            # update, left untracked by the checkpoint it resumed), rather than keeping it beside a -v1 copy
            enable_version_counter=False,
        ),
        # last.ckpt every checkpoint.every_n_train_steps (null: at each validation) and at the end. Apart, because
        # Lightning defers a monitoring callback's periodic saves until the monitored metric exists.
        # Always last.ckpt (no last-v1.ckpt when resuming a run saved with other settings; writes are atomic).
        LastCheckpoint(dirpath=rdir / CHECKPOINTS_DIR, save_top_k=0, save_last=True,
                       every_n_train_steps=c.every_n_train_steps, enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
        RNGState(),
        Preemption(),
    ]
    if cfg.logging.throughput:
        callbacks.append(throughput_monitor())
    progress = cfg.logging.progress
    if progress == "auto":
        progress = "rich" if sys.stderr.isatty() else "plain"
    if progress == "rich":
        callbacks.append(RichProgress())
    elif progress == "plain":
        callbacks.append(PlainProgress(every=cfg.trainer.log_every_n_steps))
    return callbacks, progress == "rich"


def tensorboard_version(rdir: Path, resume: bool) -> int | None:
    """The run's latest TensorBoard version (``tensorboard/version_N``) when resuming, else None (a new one)."""
    versions = [int(m.group(1)) for p in (rdir / TENSORBOARD_DIR).glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions) if resume and versions else None


def build_trainer(cfg: DictConfig, rdir: Path, extra_callbacks: list[pl.Callback] = (), verb: str = "fit",
                  resume: bool = False) -> pl.Trainer:
    """The Trainer; only ``fit`` logs to TensorBoard (an evaluation's metrics go to ``results/`` and stdout,
    not into a new one-point TensorBoard version of the run), and a fit that resumes the run's own
    checkpoint goes on writing into its latest TensorBoard version, so its curves continue."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.loggers import TensorBoardLogger

    from gptkit.reliability import AtomicCheckpointIO

    kwargs = OmegaConf.to_container(cfg.trainer)  # None is meaningful (check_val_every_n_epoch=null)
    if kwargs["precision"] is None:
        kwargs["precision"] = default_precision(cfg)
    callbacks, bar = build_callbacks(cfg, rdir)
    try:
        return pl.Trainer(
            **kwargs,
            default_root_dir=str(rdir),
            logger=TensorBoardLogger(save_dir=str(rdir), name=TENSORBOARD_DIR, version=tensorboard_version(rdir, resume))
            if verb == "fit" else False,
            callbacks=[*callbacks, *extra_callbacks],
            plugins=[AtomicCheckpointIO()],  # temp file + fsync + rename; weights_only loading
            enable_progress_bar=bar,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as exc:
        # Lightning reports a bad setting with any of these; a device that fails to start, too
        detail = " ".join(str(exc).split())
        raise ConfigError(f"Lightning could not set up the trainer with these trainer.* settings (accelerator, "
                          f"devices, strategy, precision, ...): {detail}") from None


# -- the whole build --------------------------------------------------------------------------------
def build(cfg: DictConfig, verb: str = "fit", callbacks: Sequence[pl.Callback] = ()) -> Components:
    """Make every component of a run from its config, in the order the data flows; ``callbacks`` are
    Lightning callbacks added to gptkit's own (a fit's checkpoints, progress, throughput...)."""
    quiet_libraries()
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls left outside autocast
    ckpt_path = resolve_ckpt_path(cfg)
    if verb != "fit":
        require_checkpoint(cfg, verb, ckpt_path)
    rdir = run_dir(cfg) if verb == "fit" else evaluation_dir(cfg, ckpt_path or cfg.init.checkpoint)
    if cfg.init.checkpoint and not Path(cfg.init.checkpoint).expanduser().exists():
        raise CheckpointError(
            f"init.checkpoint {cfg.init.checkpoint} does not exist; give a gptkit .ckpt file (e.g. "
            "runs/<pretraining run>/checkpoints/last.ckpt) or a `gptkit import` folder"
        )
    if cfg.init.checkpoint and "model" not in checkpoint_record(cfg.init.checkpoint):
        init = cfg.init.checkpoint
        hint = (f"; a transformers folder converts with `gptkit import openai-gpt --from {init} --out FOLDER`"
                if Path(init).expanduser().is_dir() else "")
        raise CheckpointError(f"init.checkpoint {init} was not written by gptkit (no model sizes in it); give a "
                              f".ckpt from a gptkit run or a `gptkit import` folder{hint}")
    if ckpt_path:
        check_checkpoint_task(ckpt_path, None if cfg.data.name == "pretrain" else cfg.data.name)
    # a fit that does not resume this run's own checkpoint must not mix with the ones already in its folder
    own = ckpt_path is not None and checkpoint_run_folder(ckpt_path) == rdir.resolve()
    replace = verb == "fit" and not own and guard_run_dir(cfg, rdir)
    cfg = adopt_checkpoint_model(cfg, ckpt_path)
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)

    sources = None
    if cfg.data.name != "pretrain":
        from gptkit.tasks import get_task

        check_task_config(cfg, get_task(cfg.data.name))  # an unknown task names the closest one
    else:
        from gptkit.data.sources import resolve_sources

        check_pretrain_monitor(cfg)  # before any data is read, as check_task_config
        sources = resolve_sources(list(cfg.data.files), cfg.data.corpus, cfg.data.text_field, cfg.run.data_dir)
    tokenizer, kind = build_tokenizer(cfg, sources, ckpt_path, verb)
    record = {"kind": kind, "exact": kind == "openai-gpt", "path": str((rdir / "tokenizer.json").resolve()),
              "fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size}
    if ckpt_path:
        check_same_tokenizer(ckpt_path, record)

    datamodule = build_datamodule(cfg, tokenizer, sources)
    module = build_module(cfg, tokenizer, record, ckpt_path)
    # The run folder is written when training starts (RunFolder): a fit that fails before leaves it as it
    # was. run.overwrite=true then removes the earlier run's checkpoints and what was made from them.
    earlier = (CHECKPOINTS_DIR, RESULTS_DIR, PREDICTIONS_DIR) if replace else ()
    extra = [RunFolder(rdir, tokenizer, to_yaml(cfg), replace=earlier)] if verb == "fit" else []
    extra += list(callbacks)
    trainer = build_trainer(cfg, rdir, extra, verb, resume=own)
    return Components(cfg, rdir, tokenizer, datamodule, module, trainer, ckpt_path)


def require_checkpoint(cfg: DictConfig, verb: str, ckpt_path: str | None) -> None:
    """Evaluating and predicting score a trained checkpoint (for pretraining, ``init.checkpoint`` will do)."""
    if verb == "predict" and ckpt_path is None:
        raise ConfigError("`gptkit predict` needs a fine-tuned checkpoint: add ckpt_path=PATH (or ckpt_path=best)")
    if ckpt_path is None and (cfg.data.name != "pretrain" or not cfg.init.checkpoint):
        # a fine-tuning recipe's init.checkpoint has no trained head: scoring it would mean nothing
        raise ConfigError(f"`gptkit {verb}` needs a checkpoint of the run: add ckpt_path=best (or last, or "
                          "PATH of a .ckpt file)")


def check_task_config(cfg: DictConfig, task) -> None:
    """Catch fine-tuning recipe mistakes before any data is read."""
    if cfg.data.files:  # (data.corpus may be left over from a pretraining recipe: harmless)
        raise ConfigError(f"data.files is read by pretraining only (data.name=pretrain); task {task.name} reads its "
                          f"files from data.root ({cfg.data.root}): drop data.files")
    names = {"loss"}
    for split in task.val_splits:
        names |= {f"{k}{task.metric_suffix(split)}" for k in task.metrics().keys()}
        names |= {f"{k}_{g}{task.metric_suffix(split)}" for k in task.metrics().keys() for g in task.groups}
    logged = [f"val/{n}" for n in sorted(names)] + ["train/loss", "train/task_loss"]
    if cfg.checkpoint.monitor not in logged:
        raise ConfigError(f"checkpoint.monitor={cfg.checkpoint.monitor} is not a metric that task {task.name} logs; "
                          f"choose one of {', '.join(logged)}")
    checkpoint_mode(cfg)  # a mode that would keep the worst checkpoints


def guard_run_dir(cfg: DictConfig, rdir: Path) -> bool:
    """A fresh run never silently mixes with, or overwrites, an earlier run's checkpoints.

    True when ``run.overwrite=true`` replaces them: :class:`~gptkit.reliability.RunFolder` removes
    them when training starts, so a run that fails before keeps the earlier one.
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


def run(verb: str, cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> dict[str, float]:
    """Build and run ``fit``, ``validate`` or ``test``; returns the final logged metrics.

    ``validate`` and ``test`` also write them to ``<run dir>/results/<verb>.json`` (``gptkit glue``
    reads them). ``predict`` is :func:`predict`, which returns the prediction files it writes.
    ``callbacks`` are Lightning callbacks added to the run's own. The run seeds the random generators
    from ``run.seed``; the caller's random state (Python, NumPy, torch) is given back when it returns.
    A ``fit`` holds its run folder while it runs: a second fit into it is refused.
    """
    held = run_folder_lock(run_dir(cfg)) if verb == "fit" else contextlib.nullcontext()
    with caller_rng_state(), held:
        return _run(verb, cfg, callbacks)


def _run(verb: str, cfg: DictConfig, callbacks: Sequence[pl.Callback]) -> dict[str, float]:
    if verb not in ("fit", "validate", "test"):
        raise ValueError(f"run() runs fit, validate or test, not {verb!r} (predict: builder.predict)")
    if verb == "test" and cfg.data.name == "pretrain":
        raise ConfigError("`gptkit test` needs a fine-tuning recipe: pretraining holds out only a validation split "
                          "(data.val_fraction), which `gptkit validate` scores")
    c = build(cfg, verb, callbacks)
    ckpt_path = c.ckpt_path
    if verb == "fit":
        c.datamodule.prepare_data()
        c.datamodule.setup("fit")
        log(c.datamodule.summary())
        log(f"model: {c.module.backbone.num_parameters():,} parameters; run folder {c.run_dir}")
        with checkpoint_must_fit(ckpt_path):
            fit_or_stop(c, ckpt_path)
        if getattr(c.module, "nonfinite_skipped", 0):
            log(f"skipped {c.module.nonfinite_skipped} batch(es) with a non-finite loss (objective.nonfinite=skip)")
        start = c.module.resumed_from["step"] if c.module.resumed_from else None
        if start is not None and c.trainer.global_step <= start:
            log(f"nothing to train: {ckpt_path} is at update {start}, where trainer.max_steps / max_epochs end the "
                "run; raise them to train longer")
        best = c.trainer.checkpoint_callback.kept_best()
        log(f"done: last checkpoint {(c.run_dir / CHECKPOINTS_DIR / 'last.ckpt').resolve()}" + (f", best {best}" if best else ""))
    else:
        with checkpoint_must_fit(ckpt_path):
            # verbose=False: Lightning's table of results would go to stdout before the CLI's own lines
            getattr(c.trainer, verb)(c.module, datamodule=c.datamodule, ckpt_path=ckpt_path, weights_only=True,
                                     verbose=False)
    metrics = {k: float(v) for k, v in c.trainer.callback_metrics.items() if v.numel() == 1}
    if verb in ("validate", "test") and rank_zero_only.rank == 0:
        scored = ckpt_path or cfg.init.checkpoint
        path = write_results(c.run_dir, verb, metrics, scored, checkpoint_step(scored))
        log(f"{verb} results -> {path}")
        if scored and checkpoint_run_folder(scored) != c.run_dir.resolve():
            log(f"note: {scored} is not a checkpoint of run folder {c.run_dir}; its results were written there all "
                "the same")
    return metrics


@contextlib.contextmanager
def checkpoint_must_fit(ckpt_path: str | None):
    """A checkpoint whose weights do not fit the recipe's model is a user error, not a traceback."""
    try:
        yield
    except RuntimeError as exc:
        if not ckpt_path or "Error(s) in loading state_dict" not in str(exc):
            raise
        detail = " ".join(str(exc).split("\n", 1)[-1].split())
        raise CheckpointError(
            f"checkpoint {ckpt_path} does not fit the model of this recipe ({detail[:300]}); resume or evaluate "
            "it with the recipe and overrides it was trained with (its run folder's config.yaml)"
        ) from None


def checkpoint_step(checkpoint: str | None) -> int | None:
    """The update a ``.ckpt`` file was saved at; None for none, or for a pretrained-model folder."""
    from gptkit.checkpoint import load_ckpt

    if not checkpoint or not Path(checkpoint).expanduser().is_file():
        return None
    return load_ckpt(Path(checkpoint).expanduser(), mmap=True).get("global_step")


def predict(cfg: DictConfig) -> list[Path]:
    """Test-set predictions of a fine-tuned checkpoint, one ``index<TAB>prediction`` file per test
    split, named as GLUE submissions expect (``SST-2.tsv``, ``MNLI-m.tsv`` ...). The caller's random
    state is given back, as by :func:`run`."""
    with caller_rng_state():
        return _predict(cfg)


def _predict(cfg: DictConfig) -> list[Path]:
    if cfg.data.name == "pretrain":
        raise ConfigError("`gptkit predict` needs a fine-tuning recipe (data.name set to a task, e.g. sst2)")
    c = build(cfg, "predict")
    ckpt_path = c.ckpt_path
    if c.trainer.world_size > 1:  # each process would write only its own share of the test set
        raise ConfigError(f"`gptkit predict` writes its files from one process, but trainer.devices / num_nodes "
                          f"give {c.trainer.world_size}; add trainer.devices=1 trainer.num_nodes=1")
    with checkpoint_must_fit(ckpt_path):
        outputs = c.trainer.predict(c.module, datamodule=c.datamodule, ckpt_path=ckpt_path, weights_only=True)
    task = c.module.task
    splits = c.datamodule.predict_split_names
    per_split = [outputs] if len(splits) == 1 else outputs
    written = []
    if rank_zero_only.rank == 0:
        for split, batches in zip(splits, per_split):
            index = torch.cat([b["index"] for b in batches]).tolist()
            preds = torch.cat([b["pred"] for b in batches]).tolist()
            path = task.write_predictions(c.run_dir / PREDICTIONS_DIR / task.prediction_file(split), index, preds,
                                          stats=c.datamodule.splits[split].stats)
            log(f"{task.title} {split}: {len(index)} predictions -> {path}")
            written.append(path)
    return written


def fit_or_stop(c: Components, ckpt_path: str | None) -> None:
    """``trainer.fit``; a preemption signal becomes :class:`~gptkit.reliability.Preempted` once saved."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from gptkit.reliability import Interrupted, Preemption, preemption_message

    try:
        c.trainer.fit(c.module, datamodule=c.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except Interrupted:  # a second Ctrl-C (Lightning has cleaned up)
        raise KeyboardInterrupt from None
    except SIGTERMException:
        callback = next(cb for cb in c.trainer.callbacks if isinstance(cb, Preemption))
        raise preemption_message(c.trainer, callback) from None
    except ValueError as exc:
        if "val_check_interval" not in str(exc):
            raise
        raise ConfigError(f"trainer.val_check_interval: {' '.join(str(exc).split())} (with this data, "
                          "trainer.val_check_interval must be at most the number of training batches per "
                          "epoch, or set trainer.check_val_every_n_epoch=null)") from None

"""Checkpoints: reading one once (:class:`CheckpointInfo`), finding a run's last and best, starting a
model from one (:func:`transfer_backbone`), and safe I/O of ``.ckpt`` files and pretrained-model folders.

A *pretrained-model folder* is what ``gptkit import`` writes and what ``init.checkpoint`` accepts
besides a Lightning checkpoint::

    model.safetensors   backbone weights, gptkit parameter names (``tokens_embed.weight``, ...)
    config.json         {"model": GPTConfig fields, "tokenizer": {...}, "source": "..."}
    tokenizer.json      the tokenizer (``tokenizers`` format)

Nothing here unpickles arbitrary objects: safetensors holds only tensors, and ``.ckpt`` files are
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gptkit.console import log
from gptkit.errors import CheckpointError
from gptkit.model import GPT, GPTConfig
from gptkit.monitor import checkpoint_mode, metric_mode, run_spec
from gptkit.outputs import CHECKPOINTS_DIR, atomic_write_bytes, checkpoint_run_folder
from gptkit.tokenizer import SPECIAL_TOKENS

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
BACKBONE_PREFIX = "backbone."


def save_pretrained(
    directory: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    config: GPTConfig,
    tokenizer_json: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a pretrained-model folder; each file is replaced atomically."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors))
    meta = {"model": config.to_dict(), **(extra or {})}
    atomic_write_bytes(directory / CONFIG_FILE, json.dumps(meta, indent=2).encode())
    if tokenizer_json is not None:
        atomic_write_bytes(directory / TOKENIZER_FILE, tokenizer_json.encode())
    return directory


def run_folder_hint(path: Path) -> str:
    """For a run folder given where a checkpoint belongs: which file to give instead."""
    if not (path / CHECKPOINTS_DIR).is_dir():
        return ""
    return f"; for a run folder, give its checkpoint ({path / CHECKPOINTS_DIR / 'last.ckpt'})"


def missing_checkpoint(path: Path) -> CheckpointError:
    """A checkpoint path that names no file, with the checkpoints its folder does hold (``best-….ckpt``
    carries the step and the score in its name)."""
    held = sorted(p.name for p in path.parent.glob("*.ckpt")) if path.parent.is_dir() else []
    hint = f"; {path.parent} holds {', '.join(held)}" if held else ""
    return CheckpointError(f"checkpoint {path} does not exist{hint}")


def _not_a_checkpoint(path: Path, content: Any) -> CheckpointError:
    return CheckpointError(f"{path} holds a {type(content).__name__}, not a Lightning checkpoint; give a .ckpt "
                           "written by `gptkit fit` (in a run's checkpoints folder) or a pretrained-model folder")


def load_ckpt(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling arbitrary objects.

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the hyper-parameters
    are wanted (a 117M run's checkpoint with optimizer state is 1.4 GB).
    """
    path = Path(path)
    if not path.is_file():
        raise missing_checkpoint(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or ["empty or cut short"])[0]
        if "weights only load failed" in detail.lower():  # not PyTorch's advice to unpickle it anyway
            detail = "it holds Python objects other than tensors and plain containers"
        raise CheckpointError(
            f"{path} is not a loadable checkpoint ({type(exc).__name__}: {detail}); it may be truncated or not a "
            "gptkit/Lightning checkpoint (for a run's damaged last.ckpt, resume from another one, e.g. ckpt_path=best)"
        ) from None
    if not isinstance(content, dict):
        raise _not_a_checkpoint(path, content)
    return content


def load_backbone(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], GPTConfig, Path | None]:
    """Backbone weights, model config and tokenizer file from a ``.ckpt`` file or a pretrained folder.

    Returns ``(state_dict, config, tokenizer_path)`` with gptkit backbone parameter names; the
    tokenizer path is ``None`` when the checkpoint does not carry one.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file() or not (path / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{path} is not a pretrained-model folder: expected {WEIGHTS_FILE} and {CONFIG_FILE} "
                f"(write one with `gptkit import` or `gptkit export --to gptkit`){run_folder_hint(path)}"
            )
        from safetensors.torch import load_file

        meta = json.loads((path / CONFIG_FILE).read_text())
        if "model" not in meta:
            raise CheckpointError(
                f"{path} is not a gptkit pretrained-model folder: its {CONFIG_FILE} has no 'model' sizes (a "
                f"transformers folder?); convert it with `gptkit import openai-gpt --from {path} --out FOLDER` "
                "and use FOLDER"
            )
        tok = path / TOKENIZER_FILE
        return load_file(str(weights)), GPTConfig(**meta["model"]), tok if tok.is_file() else None
    ckpt = load_ckpt(path)
    hparams = ckpt.get("hyper_parameters", {})
    if "model" not in hparams or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} was not written by gptkit (no model hyper-parameters inside)")
    state = {
        k[len(BACKBONE_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(BACKBONE_PREFIX)
    }
    tok = (hparams.get("tokenizer") or {}).get("path")
    return state, GPTConfig(**hparams["model"]), Path(tok) if tok and Path(tok).is_file() else None


# -- one checkpoint, read once --------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about how it was made, read once: a gptkit ``.ckpt`` file's
    hyper-parameters and update (its tensors are mapped, not read), or a pretrained-model folder's
    ``config.json``. It answers every question a run asks of a checkpoint before loading its weights."""

    path: Path
    record: dict  # the .ckpt's hyper-parameters, or the folder's config.json
    step: int | None  # the update a .ckpt was saved at; None for a folder
    is_folder: bool

    @classmethod
    def read(cls, path: str | os.PathLike) -> CheckpointInfo:
        path = Path(path).expanduser()
        if path.is_dir():
            if not (path / CONFIG_FILE).is_file():
                raise CheckpointError(f"{path} is not a pretrained-model folder: expected {CONFIG_FILE} in it"
                                      + run_folder_hint(path))
            return cls(path, json.loads((path / CONFIG_FILE).read_text()), None, True)
        ckpt = load_ckpt(path, mmap=True)
        return cls(path, ckpt.get("hyper_parameters") or {}, ckpt.get("global_step"), False)

    @property
    def by_gptkit(self) -> bool:
        """Written by gptkit (it records the model's sizes)."""
        return "model" in self.record

    @property
    def model(self) -> dict:
        """The model's sizes (:class:`~gptkit.config.GPTConfig` fields)."""
        return self.record.get("model") or {}

    @property
    def task(self) -> str | None:
        """The fine-tuning task it was trained on; None for pretraining (or a folder)."""
        return self.record.get("task")

    @property
    def tokenizer(self) -> dict | None:
        """The tokenizer record kept with it (``kind``, ``path``, ``fingerprint``...), if any."""
        info = self.record.get("tokenizer")
        if not self.is_folder:
            return info
        info = dict(info or {})
        info.setdefault("kind", "bpe")
        if (self.path / TOKENIZER_FILE).is_file():
            info["path"] = str(self.path / TOKENIZER_FILE)
        return info

    @property
    def run_folder(self) -> Path | None:
        """The run folder it sits in (above its ``checkpoints/``), or None."""
        return None if self.is_folder else checkpoint_run_folder(self.path)

    def check_task(self, task: str | None) -> None:
        """Refuse to resume or evaluate a checkpoint of another task (or pretraining) as ``task``."""
        if not self.by_gptkit:
            raise CheckpointError(f"{self.path} was not written by `gptkit fit` (no model hyper-parameters inside); "
                                  "give a .ckpt from a run's checkpoints folder")
        from gptkit.tasks import canonical_name

        theirs, task = canonical_name(self.task), canonical_name(task)  # (data.name=SST2 is sst2)
        if theirs == task:
            return

        def what(t: str | None) -> str:
            return f"{t} fine-tuning" if t else "pretraining"

        fix = f"use the {theirs} recipe (data.name={theirs})" if theirs else "use a pretraining recipe"
        if task and not theirs:
            fix += f", or start fine-tuning from it with init.checkpoint={self.path} instead of ckpt_path"
        raise CheckpointError(f"checkpoint {self.path} is from {what(theirs)} but the recipe is for {what(task)}; {fix}")

    def check_labels(self, task) -> None:
        """Refuse to resume or evaluate it on a task (a TaskSpec) whose transform or labels differ from the
        ones it was trained on (a table task's labels may be inferred from a train file that changed)."""
        theirs = self.record.get("task_info")
        if not theirs or task is None:
            return
        mine = task.record()
        for key in ("transform", "labels"):
            if theirs.get(key) != mine[key]:
                fix = "set data.labels to the checkpoint's" if key == "labels" else "use the checkpoint's recipe"
                raise CheckpointError(f"checkpoint {self.path} was trained with {key} {theirs.get(key)} but this "
                                      f"recipe's data gives {mine[key]}: the head's outputs would mean other classes; "
                                      f"{fix}")

    def check_tokenizer(self, fingerprint: str | None) -> None:
        """Refuse to resume or evaluate it with a tokenizer other than the one it was trained with."""
        theirs = (self.record.get("tokenizer") or {}).get("fingerprint")
        if theirs and theirs != fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} was trained with tokenizer {theirs} but this run's tokenizer is "
                f"{fingerprint}: the tokenizer.* settings or the pretraining data differ from the run's (see its "
                "config.yaml); use those, or drop tokenizer.path if you set it"
            )


def read_init_checkpoint(cfg: DictConfig) -> CheckpointInfo | None:
    """``init.checkpoint``, read, once it is known to be a gptkit checkpoint; None when unset."""
    init = cfg.init.checkpoint
    if not init:
        return None
    if not Path(init).expanduser().exists():
        raise CheckpointError(
            f"init.checkpoint {init} does not exist; give a gptkit .ckpt file (e.g. "
            "runs/<pretraining run>/checkpoints/last.ckpt) or a `gptkit import` folder"
        )
    info = CheckpointInfo.read(init)
    if not info.by_gptkit:
        hint = (f"; a transformers folder converts with `gptkit import openai-gpt --from {init} --out FOLDER`"
                if info.is_folder else "")
        raise CheckpointError(f"init.checkpoint {init} was not written by gptkit (no model sizes in it); give a "
                              f".ckpt from a gptkit run or a `gptkit import` folder{hint}")
    return info


# -- a run's checkpoints: ckpt_path=last / best / auto ---------------------------------------------
def resolve_ckpt_path(cfg: DictConfig, run_folder: Path) -> str | None:
    """``ckpt_path``: ``last`` / ``best`` name the checkpoints of ``run_folder``; other values are paths.

    ``auto`` resumes from ``last.ckpt`` when the run folder has one and starts afresh otherwise: the
    same command line then serves the first start and every restart of a preempted job.
    """
    ckpt, folder = cfg.ckpt_path, run_folder / CHECKPOINTS_DIR
    if ckpt == "auto":
        last = folder / "last.ckpt"
        return str(last) if last.is_file() else None
    if ckpt in ("last", "best"):
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


def best_scores(folder: Path) -> list[tuple[Path, str, float]]:
    """Each ``best-*.ckpt`` in ``folder``, oldest first, with the monitor and score it was kept for, as
    the checkpoint callback recorded them in it (a file without that record is left out)."""
    scored = []
    for path in sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime):
        try:
            states = load_ckpt(path, mmap=True).get("callbacks") or {}
        except CheckpointError:
            continue  # a damaged file is never the best one
        for state in states.values():
            if isinstance(state, dict) and state.get("monitor") and state.get("current_score") is not None:
                scored.append((path, state["monitor"], float(state["current_score"])))
                break
    return scored


def best_checkpoint(scored: list[tuple[Path, str, float]], monitor: str, mode: str) -> Path | None:
    """Of ``scored`` files, the one with the best score of ``monitor``, the earliest among equals (as
    Lightning keeps it); None when no file carries that monitor's score."""
    sign = 1 if mode == "max" else -1
    ranked = [(-math.inf if math.isnan(s) else sign * s, -i, p) for i, (p, m, s) in enumerate(scored) if m == monitor]
    return max(ranked)[2] if ranked else None


def run_best_checkpoint(cfg: DictConfig, folder: Path) -> Path | None:
    """``ckpt_path=best``: the best score of the recipe's ``checkpoint.monitor``; where no file carries
    that monitor's score, of the monitor the files were kept for (the run was trained with another);
    failing both, the newest ``best-*.ckpt``, and a line that says so."""
    if not folder.is_dir() or not any(folder.glob("best*.ckpt")):
        return None
    scored = best_scores(folder)
    path = best_checkpoint(scored, cfg.checkpoint.monitor, checkpoint_mode(cfg))
    if path is None and scored:
        trained = scored[-1][1]
        path = best_checkpoint(scored, trained, metric_mode(trained, run_spec(cfg)) or "max")
    if path is None:
        path = max(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        log(f"ckpt_path=best: no best checkpoint in {folder} carries a {cfg.checkpoint.monitor} score; using the "
            f"newest, {path.name}")
    return path


# -- model sizes and weights from a checkpoint ----------------------------------------------------
ARCHITECTURE = ("n_layer", "n_head", "n_embd", "n_ctx", "n_inner")


def adopt_model_sizes(cfg: DictConfig, resumed: CheckpointInfo | None, init: CheckpointInfo | None) -> DictConfig:
    """Model sizes come from the weights they must fit, not from a recipe's defaults.

    A checkpoint to resume or evaluate (``resumed``) fixes every size; ``init.checkpoint`` fixes the
    width (``n_embd``, ``n_head``, ``n_inner``), the context (``n_ctx``: its position embeddings) and,
    when the recipe asks for more blocks than it has and ``init.n_transfer`` is unset, the depth.
    Each size taken over is logged.
    """
    source = resumed or init
    if source is None:
        return cfg
    fields = ARCHITECTURE if resumed else ("n_head", "n_embd", "n_inner", "n_ctx")
    theirs = source.model
    changes = {f: theirs[f] for f in fields if f in theirs and theirs[f] != cfg.model[f]}
    if not resumed and theirs.get("n_layer", cfg.model.n_layer) < cfg.model.n_layer and cfg.init.n_transfer is None:
        changes["n_layer"] = theirs["n_layer"]
    if not changes:
        return cfg
    log(f"model sizes from {source.path}: " + ", ".join(f"model.{k}={v} (recipe: {cfg.model[k]})"
                                                        for k, v in changes.items()))
    adopted = OmegaConf.merge(cfg, {"model": changes})
    OmegaConf.set_readonly(adopted, True)
    return adopted


def transfer_backbone(backbone: GPT, init: CheckpointInfo, n_transfer: int | None) -> None:
    """Start ``backbone`` from ``init``'s weights: all of them, or the embeddings and the first
    ``n_transfer`` blocks (the paper's layer-transfer experiment). Blocks left out keep their
    N(0, 0.02) initialisation, and so do the fine-tuning tokens' new embedding rows."""
    checkpoint, mine = init.path, backbone.config
    state, ckpt_config, _ = load_backbone(checkpoint)
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
        keys = load_pretrained(backbone, state, n_transfer)
    except CheckpointError as exc:
        raise CheckpointError(f"init.checkpoint {checkpoint}: {exc}") from None
    message = f"initialised {len(keys)} backbone tensors from {checkpoint}"
    if n_transfer is not None:
        message += f" (embeddings + {n_transfer} blocks)"
    if fresh := max(0, mine.n_layer - (ckpt_config.n_layer if n_transfer is None else n_transfer)):
        message += f"; {fresh} of the model's {mine.n_layer} blocks (model.n_layer) start from random weights"
    log(message)


def load_pretrained(backbone: GPT, state: dict[str, torch.Tensor], n_transfer: int | None = None) -> list[str]:
    """Copy backbone weights (all, or embeddings + first ``n_transfer`` blocks); returns the keys set."""
    if n_transfer is not None and not 0 <= n_transfer <= backbone.config.n_layer:
        raise CheckpointError(
            f"init.n_transfer={n_transfer} is outside 0..{backbone.config.n_layer} (model.n_layer)"
        )

    def transferred(key: str) -> bool:  # embeddings, and the first n_transfer blocks (all when unset)
        return n_transfer is None or not key.startswith("blocks.") or int(key.split(".")[1]) < n_transfer

    own = backbone.state_dict()
    keep = {}
    for key, value in state.items():
        if not transferred(key):
            continue
        if key not in own:
            raise CheckpointError(f"checkpoint tensor '{key}' has no place in this model; check model.n_layer")
        if key == "tokens_embed.weight" and value.shape[0] < own[key].shape[0]:
            grown = own[key].clone()  # new (special-token) rows keep their N(0, 0.02) init
            grown[: value.shape[0]] = value
            value = grown
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"checkpoint tensor '{key}' has shape {tuple(value.shape)} but the model expects "
                f"{tuple(own[key].shape)}; the recipe's model sizes must match the checkpoint"
            )
        keep[key] = value
    missing = [k for k in own if transferred(k) and k not in keep]
    if missing:  # they would silently keep their random initialisation
        raise CheckpointError(
            f"the checkpoint lacks {len(missing)} backbone tensor(s) that it should transfer ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}); it is incomplete or from another model"
        )
    backbone.load_state_dict(keep, strict=False)
    return sorted(keep)


@contextlib.contextmanager
def checkpoint_must_fit(ckpt_path: str | None) -> Iterator[None]:
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

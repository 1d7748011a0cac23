"""Safe checkpoint I/O: pretrained-model folders (safetensors) and Lightning ``.ckpt`` files.

A *pretrained-model folder* is what ``gptkit import`` writes and what ``init.checkpoint`` accepts
besides a Lightning checkpoint::

    model.safetensors   backbone weights, gptkit parameter names (``tokens_embed.weight``, ...)
    config.json         {"model": GPTConfig fields, "tokenizer": {...}, "source": "..."}
    tokenizer.json      the tokenizer (``tokenizers`` format)

Nothing here unpickles arbitrary objects: safetensors holds only tensors, and ``.ckpt`` files are
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from gptkit.errors import CheckpointError
from gptkit.model import GPTConfig
from gptkit.outputs import CHECKPOINTS_DIR, atomic_write_bytes

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


def ckpt_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """The hyper-parameters a gptkit checkpoint was trained with, without reading its tensors."""
    return load_ckpt(path, mmap=True).get("hyper_parameters", {})


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

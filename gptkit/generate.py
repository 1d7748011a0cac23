"""Sampling text from a checkpoint (``gptkit generate``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gptkit.errors import CheckpointError, ConfigError


def load_for_generation(checkpoint: str, tokenizer_path: str | None = None):
    """The backbone (eval mode) and tokenizer of a ``.ckpt`` file or a pretrained-model folder."""
    from gptkit.builder import _load_tokenizer_record, checkpoint_tokenizer
    from gptkit.checkpoint import load_backbone
    from gptkit.model import GPT

    state, config, _ = load_backbone(checkpoint)
    if tokenizer_path:
        info = {"kind": "bpe", "path": tokenizer_path}
    else:
        info = checkpoint_tokenizer(checkpoint)
        if not info:
            raise CheckpointError(f"{checkpoint} carries no tokenizer; pass --tokenizer PATH/tokenizer.json")
    tokenizer, _ = _load_tokenizer_record(info, checkpoint)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tokenizer.vocab_size:,} ids but {checkpoint} has a {config.vocab_size:,}-row "
            "embedding; use the tokenizer the checkpoint was trained with"
        )
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval(), tokenizer


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, num_samples: int) -> None:
    """Raise :class:`~gptkit.errors.ConfigError` for sampling settings that make no sense."""
    if num_samples < 1:
        raise ConfigError(f"num_samples is {num_samples}; ask for at least 1 sample")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens is {max_new_tokens}; generate at least 1 token")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"top_k is {top_k}; use k >= 1, or 0 to keep every token")
    if not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"temperature is {temperature}; use a finite number >= 0 (0 picks the most likely token)")


def generate(
    checkpoint: str,
    prompt: str = "",
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int | None = 40,
    num_samples: int = 1,
    seed: int = 1337,
    tokenizer_path: str | None = None,
) -> list[str]:
    """``num_samples`` continuations of ``prompt``, decoded (prompt included).

    ``temperature`` 0 picks the most likely token; ``top_k`` 0 or None keeps every token.
    """
    from gptkit.checkpoint import missing_checkpoint

    check_sampling(max_new_tokens, temperature, top_k, num_samples)
    if not Path(checkpoint).expanduser().exists():
        raise missing_checkpoint(Path(checkpoint).expanduser())
    model, tokenizer = load_for_generation(checkpoint, tokenizer_path)
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:  # an empty prompt starts from the _start_ token
        ids = [tokenizer.start_id]
    generator = torch.Generator().manual_seed(seed)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k or None, generator=generator)
    skip = {tokenizer.start_id, tokenizer.delimiter_id, tokenizer.classify_id}  # GPT-1's special tokens: not text
    return [tokenizer.decode([i for i in row.tolist() if i not in skip]) for row in out]

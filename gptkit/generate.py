"""Sampling text from a checkpoint (``gptkit generate``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from gptkit.errors import CheckpointError, ConfigError

# detokenize(): GPT-1's tokenizers split words from punctuation, and its decoded text keeps them apart
_CLITIC = re.compile(r"(?<=\w) ' (?=(?:s|t|re|ve|ll|d|m)\b)")  # trump ' s, don ' t (gptkit's trained BPE)
_SPACY_CLITIC = re.compile(r"(?<=\w) (?=(?:n't|'(?:s|re|ve|ll|d|m))\b)")  # trump 's, do n't (the released BPE)
_IN_NUMBER = re.compile(r"(?<=\d) ([.,:]) (?=\d)")  # 3 . 5, 1 , 000, 10 : 30
_INITIALS = re.compile(r"\b(\w) \. (?=\w \.)")  # u . s . -> u.s .
_HYPHEN = re.compile(r"(?<=\w) - (?=\w)")  # well - known, 1990 - 1995
_ELLIPSIS = re.compile(r"\. \. \.")
_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", "%", ")", "]", "}", "...", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#"}


def detokenize(text: str) -> str:
    """GPT-1's decoded text as prose: ``trump ' s plan , he said . " it ' s 3 . 5 % of u . s . well - known
    firms . "`` reads ``trump's plan, he said. "it's 3.5% of u.s. well-known firms."``.

    Both GPT-1 tokenizers split punctuation from words (gptkit's trained BPE splits at every punctuation
    character, the released one as spaCy does, ``do n't``), and decoding joins the tokens with spaces.
    This joins clitics (``'s``, ``n't``, ``'re``...) and hyphens to their words, numbers (``3.5``,
    ``1,000``) and initials (``u.s.``) back together, closing punctuation to the word before, opening
    brackets, ``$`` and ``#`` to the word after, and double quotes to the text they enclose (paired in
    order; a first quote right after ``.``, ``!`` or ``?`` on a line with an odd number of them closes a
    quote the sample started inside). The case stays as the model wrote it: GPT-1 is trained lower-cased.
    A single quote that is not a clitic is left apart (a quote or a plural possessive: the text does not say).
    """
    lines = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        line = _ELLIPSIS.sub("...", line)
        for pattern, joined in ((_CLITIC, "'"), (_SPACY_CLITIC, ""), (_IN_NUMBER, r"\1"), (_INITIALS, r"\1."),
                                (_HYPHEN, "-")):
            line = pattern.sub(joined, line)
        tokens = line.split()
        quotes = tokens.count('"')
        quote_open = bool(quotes % 2) and next(
            (i > 0 and tokens[i - 1] in {".", "!", "?"} for i, t in enumerate(tokens) if t == '"'), False)
        out, glue = "", True  # glue: no space before the next token
        for token in tokens:
            if token == '"':
                closing, quote_open = quote_open, not quote_open
                out += token if closing or glue else " " + token
                glue = not closing
                continue
            out += token if glue or token in _NO_SPACE_BEFORE else " " + token
            glue = token in _NO_SPACE_AFTER
        lines.append(out)
    return "\n".join(lines)


def load_for_generation(checkpoint: str, tokenizer_path: str | None = None):
    """The backbone (eval mode) and tokenizer of a ``.ckpt`` file or a pretrained-model folder."""
    from gptkit.checkpoint import CheckpointInfo, load_backbone
    from gptkit.model import GPT
    from gptkit.openai_gpt.tokenizer import load_tokenizer

    state, config, _ = load_backbone(checkpoint)
    if tokenizer_path:
        info = {"kind": "bpe", "path": tokenizer_path}
    else:
        info = CheckpointInfo.read(checkpoint).tokenizer
        if not info:
            raise CheckpointError(f"{checkpoint} carries no tokenizer; pass --tokenizer PATH/tokenizer.json")
    tokenizer, _ = load_tokenizer(info, checkpoint)
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
    raw: bool = False,
) -> list[str]:
    """``num_samples`` continuations of ``prompt``, decoded (prompt included) and made readable by
    :func:`detokenize`; ``raw=True`` keeps the tokenizer's decoded form (lower-cased tokens separated by
    spaces: ``trump ' s``, ``said . "``).

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
    texts = [tokenizer.decode([i for i in row.tolist() if i not in skip]) for row in out]
    return texts if raw else [detokenize(text) for text in texts]

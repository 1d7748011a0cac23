"""BPE tokenizer built with the Hugging Face ``tokenizers`` library.

The trained tokenizer follows GPT-1's scheme: lower-cased (by default) character-level BPE whose
word-final pieces carry the ``</w>`` suffix, ``<unk>`` = 0, and the three fine-tuning tokens
``_start_``, ``_delimiter_``, ``_classify_`` appended after the learned vocabulary — the same places
they hold in the released model (ids 40478, 40479, 40480 for its 40,478-token vocabulary).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from gptkit.errors import DataError
from gptkit.outputs import atomic_write_text

UNK = "<unk>"
START, DELIMITER, CLASSIFY = "_start_", "_delimiter_", "_classify_"
SPECIAL_TOKENS = (START, DELIMITER, CLASSIFY)
WORD_END = "</w>"


class Tokenizer:
    """A text <-> token-id mapping with GPT-1's three special tokens.

    Any object with this interface (``encode``, ``encode_batch``, ``decode``, ``vocab_size``,
    ``start_id``, ``delimiter_id``, ``classify_id``, ``fingerprint``, ``save``) can stand in for it;
    the exact released GPT-1 text pipeline in :mod:`gptkit.openai_gpt` does.
    """

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise DataError(
                f"tokenizer lacks the special tokens {missing}; retrain it with gptkit "
                "(delete the tokenizer.json so that the next run trains a new one)"
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        return cls(read_backend(path))

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        lowercase: bool = True,
        min_frequency: int = 2,
    ) -> Tokenizer:
        """Learn a BPE vocabulary of ``vocab_size`` tokens (special tokens come on top)."""
        backend = _Backend(models.BPE(unk_token=UNK, end_of_word_suffix=WORD_END))
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.BPEDecoder(suffix=WORD_END)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[UNK],
            end_of_word_suffix=WORD_END,
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        backend.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(backend)

    # -- use ------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Number of embedding rows the model needs: learned vocabulary plus special tokens."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def start_id(self) -> int:
        return self.backend.token_to_id(START)

    @property
    def delimiter_id(self) -> int:
        return self.backend.token_to_id(DELIMITER)

    @property
    def classify_id(self) -> int:
        return self.backend.token_to_id(CLASSIFY)

    @property
    def fingerprint(self) -> str:
        """A short hash of the full tokenizer definition; shards and checkpoints record it."""
        canonical = json.dumps(json.loads(self.backend.to_str()), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` atomically (a crash never leaves a half-written file)."""
        atomic_write_text(path, self.backend.to_str(pretty=True))


def read_backend(path: str | os.PathLike) -> _Backend:
    """A ``tokenizers`` tokenizer from its JSON file, with a clear error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {path} does not exist")
    try:
        return _Backend.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise DataError(f"{path} is not a valid tokenizers JSON file ({exc})") from None


def train_tokenizer(texts: Iterable[str], path: Path, vocab_size: int, lowercase: bool, min_frequency: int,
                    max_bytes: int | None = None) -> Tokenizer:
    """Train a BPE tokenizer on ``texts`` (at most ``max_bytes`` UTF-8 bytes of them) and save it at ``path``."""
    import time

    from gptkit.console import log

    def limited():
        seen = 0
        for piece in texts:
            yield piece
            seen += len(piece.encode())  # UTF-8 bytes, as the cache key says
            if max_bytes is not None and seen >= max_bytes:
                return

    log(f"training a {vocab_size:,}-token BPE tokenizer on the corpus ...")
    t0 = time.perf_counter()
    tok = Tokenizer.train(limited(), vocab_size, lowercase=lowercase, min_frequency=min_frequency)
    tok.save(path)
    log(f"tokenizer trained in {time.perf_counter() - t0:.1f}s ({tok.vocab_size:,} ids) -> {path}")
    return tok

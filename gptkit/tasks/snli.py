"""SNLI 1.0 (Bowman et al., 2015), read from the official ``snli_1.0/`` folder.

``snli_1.0_{train,dev,test}.jsonl`` is read (one JSON object per line); where a split has no
``.jsonl`` the tab-separated ``.txt`` of the same distribution is read instead. Pairs whose
``gold_label`` is ``-`` (no majority among the annotators) are excluded, as is standard, and
counted in the split's summary.
"""

from __future__ import annotations

from pathlib import Path

from gptkit.errors import DataError
from gptkit.tasks.base import NLI3, Example, RowReader, TaskSpec
from gptkit.tasks.metrics import accuracy
from gptkit.tasks.table import Table, TableFormat, read_rows

FILES = {"train": "snli_1.0_train", "dev": "snli_1.0_dev", "test": "snli_1.0_test"}
NO_GOLD = "gold label '-': no annotator majority"
COLUMNS = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}
JSONL = Table("entailment", COLUMNS, NLI3, TableFormat("jsonl"), exclude={"-": NO_GOLD})
TXT = Table("entailment", COLUMNS, NLI3, TableFormat("tsv", quoting="none", min_columns=10),  # label2..5 may be absent
            exclude={"-": NO_GOLD})


def _folder(root: Path) -> Path:
    return root / "snli_1.0" if (root / "snli_1.0").is_dir() else root


def read_snli(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    folder = _folder(root)
    path = folder / f"{FILES[split]}.jsonl"
    if not path.is_file() and (folder / f"{FILES[split]}.txt").is_file():
        path = folder / f"{FILES[split]}.txt"
    if not path.is_file():
        raise DataError(f"missing SNLI {split} file {path} (expected the snli_1.0 folder of the official zip)")
    table = JSONL if path.suffix == ".jsonl" else TXT
    return table.examples(path, read_rows(path, table.fmt, reader), reader)


SNLI = TaskSpec(
    name="snli",
    title="SNLI",
    transform="entailment",
    read=read_snli,
    metrics=lambda: accuracy(3),
    labels=NLI3,
    description="Stanford NLI, image captions (accuracy); gold label '-' pairs excluded and counted",
)

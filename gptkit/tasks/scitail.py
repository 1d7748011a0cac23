"""SciTail 1.1 (Khot et al., 2018): ``SciTailV1.1/tsv_format/scitail_1.0_{train,dev,test}.tsv``.

Three tab-separated columns, no header: premise, hypothesis, ``entails`` or ``neutral``.
"""

from __future__ import annotations

from pathlib import Path

from gptkit.tasks.base import Example, RowReader, TaskSpec, require_file
from gptkit.tasks.metrics import accuracy
from gptkit.tasks.table import Table, TableFormat, read_rows

LABELS = ("entails", "neutral")
TABLE = Table("entailment", {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}, LABELS,
              TableFormat("tsv", quoting="none", header=("premise", "hypothesis", "label")))


def _folder(root: Path) -> Path:
    for candidate in (root / "SciTailV1.1" / "tsv_format", root / "tsv_format"):
        if candidate.is_dir():
            return candidate
    return root


def read_scitail(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    path = require_file(_folder(root) / f"scitail_1.0_{split}.tsv", f"SciTail {split}")
    return TABLE.examples(path, read_rows(path, TABLE.fmt, reader), reader)


SCITAIL = TaskSpec(
    name="scitail",
    title="SciTail",
    transform="entailment",
    read=read_scitail,
    metrics=lambda: accuracy(2),
    labels=LABELS,
    description="SciTail science-question entailment (accuracy)",
)

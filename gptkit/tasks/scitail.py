"""SciTail 1.1 (Khot et al., 2018): ``SciTailV1.1/tsv_format/scitail_1.0_{train,dev,test}.tsv``.

Three tab-separated columns, no header: premise, hypothesis, ``entails`` or ``neutral``.
"""

from __future__ import annotations

from pathlib import Path

from gptkit.tasks.base import Example, RowReader, TaskSpec, check_texts, parse_label, read_tsv, require_file
from gptkit.tasks.metrics import accuracy

LABELS = ("entails", "neutral")


def _folder(root: Path) -> Path:
    for candidate in (root / "SciTailV1.1" / "tsv_format", root / "tsv_format"):
        if candidate.is_dir():
            return candidate
    return root


def read_scitail(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    path = require_file(_folder(root) / f"scitail_1.0_{split}.tsv", f"SciTail {split}")
    examples = []
    for ordinal, (line, row) in enumerate(read_tsv(path, reader, header=False, n_columns=3)):
        premise, hypothesis, value = row
        if not check_texts(path, line, reader, premise=premise, hypothesis=hypothesis):
            continue
        label = parse_label(value, LABELS, path, line, reader)
        if label is not None:
            examples.append(Example(premise, hypothesis, label=label, index=ordinal))
    return examples


SCITAIL = TaskSpec(
    name="scitail",
    title="SciTail",
    transform="entailment",
    read=read_scitail,
    metrics=lambda: accuracy(2),
    labels=LABELS,
    description="SciTail science-question entailment (accuracy)",
)

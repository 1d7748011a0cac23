"""SNLI 1.0 (Bowman et al., 2015), read from the official ``snli_1.0/`` folder.

``snli_1.0_{train,dev,test}.jsonl`` is read (one JSON object per line); where a split has no
``.jsonl`` the tab-separated ``.txt`` of the same distribution is read instead. Pairs whose
``gold_label`` is ``-`` (no majority among the annotators) are excluded, as is standard, and
counted in the split's summary.
"""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.errors import DataError
from gptkit.tasks.base import (
    NLI3,
    Example,
    RowReader,
    TaskSpec,
    check_texts,
    parse_label,
    read_lines,
    read_tsv,
)
from gptkit.tasks.metrics import accuracy

FILES = {"train": "snli_1.0_train", "dev": "snli_1.0_dev", "test": "snli_1.0_test"}
NO_GOLD = "gold label '-': no annotator majority"


def _folder(root: Path) -> Path:
    return root / "snli_1.0" if (root / "snli_1.0").is_dir() else root


def _rows(path: Path, reader: RowReader):
    """(line, record) pairs from the .jsonl or the .txt layout."""
    if path.suffix == ".jsonl":
        for line, text in read_lines(path):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                reader.bad(path, line, f"not a JSON object ({exc.msg}); expected one SNLI pair per line")
                continue
            if not isinstance(record, dict):
                reader.bad(path, line, "not a JSON object; expected one SNLI pair per line")
                continue
            yield line, record
    else:
        yield from read_tsv(path, reader, min_columns=10)  # label2..label5 may be absent


def read_snli(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    folder = _folder(root)
    path = folder / f"{FILES[split]}.jsonl"
    if not path.is_file() and (folder / f"{FILES[split]}.txt").is_file():
        path = folder / f"{FILES[split]}.txt"
    if not path.is_file():
        raise DataError(f"missing SNLI {split} file {path} (expected the snli_1.0 folder of the official zip)")
    examples: list[Example] = []
    for ordinal, (line, rec) in enumerate(_rows(path, reader)):
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in rec]
        if missing:
            reader.bad(path, line, f"missing field(s) {', '.join(missing)}")
            continue
        if rec["gold_label"] == "-":
            reader.exclude(NO_GOLD)
            continue
        premise, hypothesis = str(rec["sentence1"]), str(rec["sentence2"])
        if not check_texts(path, line, reader, sentence1=premise, sentence2=hypothesis):
            continue
        label = parse_label(str(rec["gold_label"]), NLI3, path, line, reader)
        if label is None:
            continue
        examples.append(Example(premise, hypothesis, label=label, index=ordinal))
    return examples


SNLI = TaskSpec(
    name="snli",
    title="SNLI",
    transform="entailment",
    read=read_snli,
    metrics=lambda: accuracy(3),
    labels=NLI3,
    description="Stanford NLI, image captions (accuracy); gold label '-' pairs excluded and counted",
)

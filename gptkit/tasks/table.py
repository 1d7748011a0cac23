"""Tables of labelled rows: the one reader behind your own files (``data.name=table``) and behind the
built-in tasks whose files are plain tables (the nine GLUE tasks, SciTail, SNLI).

A :class:`Table` says how a task's examples sit in rows: the input transform, which column plays which
role (:data:`ROLES`), the label set and the file format (:class:`TableFormat`). :func:`read_rows` reads
records from CSV, TSV, JSON lines, Parquet or a folder written by Hugging Face ``datasets``'
``save_to_disk``, and gzip-compressed text files; :meth:`Table.examples` turns records into
:class:`~gptkit.tasks.base.Example` objects. Every bad row goes to the
:class:`~gptkit.tasks.base.RowReader`: an error naming the file and line, or, with
``data.skip_bad_rows=true``, skipped and counted.

:func:`table_task` makes the task of a recipe's ``data`` section::

    data:
      name: table
      files: {train: reviews/train.tsv, validation: reviews/dev.tsv, test: reviews/test.tsv}
      transform: classification
      columns: {text: review, label: sentiment}
      labels: [negative, positive]     # "infer" (the default): the train file's values, sorted
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptkit.console import log
from gptkit.errors import ConfigError, DataError
from gptkit.tasks.base import (
    TRANSFORMS,
    Example,
    RowReader,
    TaskSpec,
    check_texts,
    parse_label,
    read_lines,
    read_tsv,
    require_file,
)
from gptkit.tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, named

# File formats, by extension (after a final .gz); a folder is a saved Hugging Face dataset.
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
FORMATS = ("csv", "tsv", "jsonl", "parquet", "hf")
QUOTING = ("none", "csv")  # none: split on the delimiter, quotes are text; csv: RFC 4180 quoting

# The column roles of each transform: (required, optional); every transform also has ``label`` (required
# in train and validation files) and ``id`` (optional: the index written to prediction files).
ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "classification": (("text",), ()),
    "entailment": (("premise", "hypothesis"), ()),
    "similarity": (("a", "b"), ()),
    "multiple_choice": (("context", "choices"), ("question",)),
}
COMMON_ROLES = ("label", "id")
SPLITS = ("train", "validation", "test")
MAX_INFERRED_LABELS = 100

Record = tuple[str, "int | None", dict]  # (where: the file, or "file row N"; line number; the row's values)


# ---------------------------------------------------------------------------------------------
# Reading records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableFormat:
    """How a file's rows are written: ``format`` (None: from the file's name), the ``delimiter`` and
    ``quoting`` of delimited text (defaults: ``,`` with CSV quoting; tabs with none, as GLUE's TSV files
    need), ``header``: the column names of files without a header row, ``min_columns``: rows may leave
    out trailing columns down to this many (SNLI's ``.txt``)."""

    format: str | None = None
    delimiter: str | None = None
    quoting: str | None = None
    header: tuple[str, ...] | None = None
    min_columns: int | None = None

    def of(self, path: Path) -> str:
        """The format ``path`` is read in."""
        if self.format is not None:
            return self.format
        if path.is_dir():
            return "hf"
        name = path.name.lower().removesuffix(".gz")
        suffix = Path(name).suffix
        if suffix not in EXTENSIONS:
            raise ConfigError(f"cannot tell the format of {path} from its name ({suffix or 'no extension'}); set "
                              f"data.format to one of {', '.join(FORMATS)}")
        return EXTENSIONS[suffix]

    def text_options(self, fmt: str) -> tuple[str, str]:
        """(delimiter, quoting) of a delimited text format."""
        delimiter = self.delimiter or ("\t" if fmt == "tsv" else ",")
        quoting = self.quoting or ("none" if fmt == "tsv" else "csv")
        return delimiter, quoting


def read_rows(path: Path, fmt: TableFormat, reader: RowReader, split: str | None = None) -> Iterator[Record]:
    """The records of one file (or saved dataset) in its format; bad rows go to ``reader``."""
    kind = fmt.of(path)
    if kind in ("csv", "tsv"):
        delimiter, quoting = fmt.text_options(kind)
        if quoting == "none":
            n = len(fmt.header) if fmt.header else None
            for line, row in read_tsv(path, reader, header=fmt.header is None, n_columns=n,
                                      min_columns=fmt.min_columns, delimiter=delimiter):
                yield str(path), line, row if isinstance(row, dict) else dict(zip(fmt.header or (), row))
        else:
            yield from _read_csv(path, reader, delimiter, fmt.header)
    elif kind == "jsonl":
        yield from _read_jsonl(path, reader)
    elif kind == "parquet":
        yield from _read_parquet(path)
    else:
        yield from _read_saved_dataset(path, split)


def _read_csv(path: Path, reader: RowReader, delimiter: str, header: tuple[str, ...] | None) -> Iterator[Record]:
    """Rows of a delimited file with CSV quoting (a quoted field may hold delimiters and line breaks)."""
    at = [0]

    def lines() -> Iterator[str]:
        for number, text in read_lines(path, keep_ends=True):
            at[0] = number
            yield text

    rows = csv.reader(lines(), delimiter=delimiter, strict=True)
    names = list(header) if header else None
    while True:
        start = at[0] + 1
        try:
            fields = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            reader.bad(path, start, f"not a well-formed CSV row ({exc}); if quotes in this file are plain text, "
                                    "set data.quoting=none")
            continue
        if not fields:
            continue  # a blank line
        if names is None:
            names = fields
            continue
        if len(fields) != len(names):
            reader.bad(path, start, f"expected {len(names)} columns ({', '.join(names)}), found {len(fields)}")
            continue
        yield str(path), start, dict(zip(names, fields))
    if names is None:
        raise DataError(f"{path} is empty; expected a header line and rows")


def _read_jsonl(path: Path, reader: RowReader) -> Iterator[Record]:
    for line, text in read_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "; a JSON array is not JSON lines: write one object per line" if text.strip() == "[" else ""
            reader.bad(path, line, f"not a JSON object ({exc.msg}); expected one object per line{hint}")
            continue
        if not isinstance(record, dict):
            reader.bad(path, line, f"not a JSON object but a {type(record).__name__}; expected one object per line")
            continue
        yield str(path), line, record


def _read_parquet(path: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"reading {path} (Parquet) needs pyarrow: pip install 'gptkit[parquet]'") from None
    try:
        batches = pq.ParquetFile(path).iter_batches()
        number = 0
        for batch in batches:
            for record in batch.to_pylist():
                number += 1
                yield f"{path} row {number}", None, record
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]}); check that it "
                        "is one, or set data.format to the format it is in") from None


def _read_saved_dataset(path: Path, split: str | None) -> Iterator[Record]:
    """Rows of a folder written by ``Dataset.save_to_disk`` (or one split of a ``DatasetDict``'s);
    class-label columns give their label names."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"reading {path} (a saved Hugging Face dataset) needs the datasets package: "
                          "pip install 'gptkit[hf]'") from None
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError... for a folder it did not write
        raise DataError(f"{path}: not a dataset folder written by datasets' save_to_disk "
                        f"({' '.join(str(exc).split())[:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = {"validation": ("validation", "valid", "dev", "val")}.get(split or "", (split,))
        found = next((n for n in names if n in ds), None)
        if found is None:
            raise DataError(f"{path} is a DatasetDict with splits {', '.join(ds)}, none of them the {split} split; "
                            f"point data.files.{split} at one of its split folders, e.g. {path / next(iter(ds))}")
        ds = ds[found]
    classes = {name: f for name, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    for number, record in enumerate(ds, start=1):
        for name, feature in classes.items():
            if isinstance(record.get(name), int) and record[name] >= 0:
                record[name] = feature.int2str(record[name])
        yield f"{path} row {number}", None, record


# ---------------------------------------------------------------------------------------------
# Records to examples
# ---------------------------------------------------------------------------------------------
def _cell(value: Any) -> str | None:
    """A text cell as a string (None where it holds a list or mapping)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclass(frozen=True)
class Table:
    """Where a task's texts and label sit in its rows.

    ``columns`` maps a role of :data:`ROLES` (and ``label``, ``id``) to a column name; ``choices`` may
    instead name several columns (an empty cell leaves that answer out, so rows may have different
    numbers of answers), or one column holding a list (a JSON array in CSV and TSV files).
    ``labels``: class names (a cell's value is its class; for multiple choice the k-th name is the k-th
    answer), or None for a regression score (within ``score_range`` when set). Rows whose label is a
    key of ``exclude`` are left out and counted under its reason (SNLI's ``-``).
    """

    transform: str
    columns: Mapping[str, Any]
    labels: tuple[str, ...] | None
    fmt: TableFormat = TableFormat()
    score_range: tuple[float, float] | None = None
    exclude: Mapping[str, str] = field(default_factory=dict)
    mc_label: str = "index"  # multiple choice without labels: the label is the answer's 0-based index or text

    @property
    def text_roles(self) -> tuple[str, ...]:
        required, optional = ROLES[self.transform]
        return tuple(r for r in (*required, *optional) if r != "choices" and r in self.columns)

    def needed(self, labelled: bool) -> list[str]:
        """The columns a file must have (the label's only where ``labelled``)."""
        required, _ = ROLES[self.transform]
        names = [c for role in required for c in _names(self.columns[role])]
        return names + ([self.columns["label"]] if labelled and "label" in self.columns else [])

    def examples(self, path: Path, records: Iterator[Record], reader: RowReader, label_optional: bool = False
                 ) -> list[Example]:
        """The examples of one file; the label column may be absent only where ``label_optional`` (a test
        file whose labels are private)."""
        out: list[Example] = []
        has_label = False
        for ordinal, (where, line, record) in enumerate(records):
            if ordinal == 0:
                has_label = self._check_columns(path, record, label_optional)
            example = self._example(where, line, record, ordinal, reader, has_label)
            if example is not None:
                out.append(example)
        return out

    def _check_columns(self, path: Path, record: dict, label_optional: bool) -> bool:
        """Refuse a file without a needed column, naming the columns it has; whether it has labels."""
        label = self.columns.get("label")
        has_label = label is not None and label in record
        missing = [c for c in self.needed(labelled=not label_optional) if c not in record]
        if missing:
            have = ", ".join(repr(str(k)) for k in record) or "none"
            hint = ""
            if len(record) == 1 and any(d in str(next(iter(record))) for d in ",\t;|"):
                hint = ("; its header is one column holding delimiters: set data.format (csv or tsv) or "
                        "data.delimiter to the file's")
            raise DataError(f"{path}: no column {missing[0]!r}; the file has columns {have}{hint}")
        return has_label

    def _example(self, where: str, line: int | None, record: dict, ordinal: int, reader: RowReader,
                 has_label: bool) -> Example | None:
        texts: dict[str, str] = {}
        for role in self.text_roles:
            column = self.columns[role]
            value = _cell(record.get(column))
            if value is None:
                reader.bad(where, line, f"column {column!r} holds a {type(record[column]).__name__}, not text")
                return None
            texts[role] = value
        required = {self.columns[r]: texts[r] for r in self.text_roles if r in ROLES[self.transform][0]}
        if not check_texts(where, line, reader, **required):  # type: ignore[arg-type]
            return None
        choices: tuple[str, ...] = ()
        if self.transform == "multiple_choice":
            found = self._choices(where, line, record, reader)
            if found is None:
                return None
            if self.labels is not None and len(found) > len(self.labels):
                reader.bad(where, line, f"{len(found)} answers, but the task has at most {len(self.labels)} (the train "
                                        f"file's most, or data.labels {list(self.labels)})")
                return None
            choices = found
        label: int | float | None = None
        if has_label:
            raw = record.get(self.columns["label"])
            value = _cell(raw)
            if value is not None and value.strip() in self.exclude:
                reader.exclude(self.exclude[value.strip()])
                return None
            label = self._label(where, line, value, choices, reader)
            if label is None:
                return None
        index = ordinal
        id_column = self.columns.get("id")
        if id_column and id_column in record:
            try:
                index = int(str(record[id_column]).strip())
            except ValueError:
                reader.bad(where, line, f"{id_column} {record[id_column]!r} is not an integer")
                return None
        a, b = _pair(self.transform, texts)
        return Example(a, b, choices=choices, label=label, index=index)

    def _choices(self, where: str, line: int | None, record: dict, reader: RowReader) -> tuple[str, ...] | None:
        spec = self.columns["choices"]
        if isinstance(spec, str):  # one column holding a list
            value = record.get(spec)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    value = None
            if not isinstance(value, (list, tuple)):
                reader.bad(where, line, f"column {spec!r} holds {record.get(spec)!r}, not a list of answers (in a "
                                        "CSV or TSV file, write it as a JSON array: [\"yes\", \"no\"])")
                return None
            answers = [_cell(v) for v in value]
            where_from = f"column {spec!r}"
        else:
            answers = [_cell(record.get(c)) for c in spec]
            where_from = f"columns {', '.join(spec)}"
        if any(a is None for a in answers):
            reader.bad(where, line, f"an answer in {where_from} is a list or mapping, not text")
            return None
        kept = tuple(a for a in answers if a and a.strip())  # type: ignore[union-attr]
        if len(kept) < 2:
            reader.bad(where, line, f"fewer than two non-empty answers in {where_from}")
            return None
        return kept

    def _label(self, where: str, line: int | None, value: str | None, choices: tuple[str, ...],
               reader: RowReader) -> int | float | None:
        column = self.columns["label"]
        if value is None:
            reader.bad(where, line, f"the label in column {column!r} is a list or mapping")
            return None
        if not value.strip():
            reader.bad(where, line, f"empty label (column {column!r})")
            return None
        if self.labels is None:
            return self._score(where, line, value, reader)
        if self.transform != "multiple_choice":
            return parse_label(value, self.labels, where, line, reader)  # type: ignore[arg-type]
        if self.mc_label == "names":
            k = parse_label(value, self.labels, where, line, reader)  # type: ignore[arg-type]
        else:
            k = _answer_index(value, choices)
            if k is None:
                reader.bad(where, line, f"label {value!r} is neither an answer's 0-based index nor one of the "
                                        f"row's answers; set data.labels (e.g. [A, B, C, D]) if it names answers")
                return None
        if k is not None and k >= len(choices):
            reader.bad(where, line, f"label {value!r} is answer {k + 1}, but the row has {len(choices)} answers")
            return None
        return k

    def _score(self, where: str, line: int | None, value: str, reader: RowReader) -> float | None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        what = "similarity score" if self.transform == "similarity" else "score"
        if self.score_range is not None:
            low, high = self.score_range
            if not low <= score <= high:  # also refuses nan
                reader.bad(where, line, f"{what} {value!r} is not a number in [{low:g}, {high:g}]")
                return None
        elif not math.isfinite(score):
            reader.bad(where, line, f"{what} {value!r} is not a finite number (data.labels is null: a regression "
                                    "score)")
            return None
        return score


def _names(spec: Any) -> tuple[str, ...]:
    return (spec,) if isinstance(spec, str) else tuple(spec)


def _pair(transform: str, texts: dict[str, str]) -> tuple[str, str | None]:
    """(text_a, text_b) of an Example from the texts by role."""
    if transform == "classification":
        return texts["text"], None
    if transform == "entailment":
        return texts["premise"], texts["hypothesis"]
    if transform == "similarity":
        return texts["a"], texts["b"]
    question = texts.get("question") or None
    return texts["context"], question if question and question.strip() else None


def _answer_index(value: str, choices: tuple[str, ...]) -> int | None:
    """A multiple-choice label: the 0-based index of the right answer, or its text."""
    try:
        return int(value.strip())
    except ValueError:
        pass
    matches = [k for k, c in enumerate(choices) if c.strip() == value.strip()]
    return matches[0] if matches else None


# ---------------------------------------------------------------------------------------------
# A recipe's table task
# ---------------------------------------------------------------------------------------------
def check_columns(transform: str, columns: Any) -> dict[str, Any]:
    """``data.columns`` of a table task, checked against the roles of ``transform``."""
    required, optional = ROLES[transform]
    allowed = (*required, *optional, *COMMON_ROLES)
    example = {"classification": "{text: review, label: sentiment}",
               "entailment": "{premise: sentence1, hypothesis: sentence2, label: label}",
               "similarity": "{a: sentence1, b: sentence2, label: score}",
               "multiple_choice": "{context: article, question: question, choices: [A, B, C, D], label: answer}"}
    if not isinstance(columns, Mapping) or not columns:
        raise ConfigError(f"data.columns must map each role of transform {transform} to a column of your files, "
                          f"e.g. data.columns={example[transform]}")
    unknown = [r for r in columns if r not in allowed]
    if unknown:
        raise ConfigError(f"data.columns.{unknown[0]} is not a role of transform {transform}; its roles are "
                          f"{', '.join(allowed)} (e.g. {example[transform]})")
    missing = [r for r in (*required, "label") if r not in columns]
    if missing:
        raise ConfigError(f"data.columns has no {missing[0]!r} (transform {transform} needs {', '.join(required)} "
                          f"and label), e.g. data.columns={example[transform]}")
    out: dict[str, Any] = {}
    for role, column in columns.items():
        names = [column] if isinstance(column, str) else list(column) if isinstance(column, Sequence) else []
        if not names or not all(isinstance(c, str) and c for c in names) or (len(names) > 1 and role != "choices") \
                or (role == "choices" and isinstance(column, Sequence) and not isinstance(column, str)
                    and len(names) < 2):
            shape = ("a column name, or a list of two or more columns" if role == "choices" else "a column name")
            raise ConfigError(f"data.columns.{role} must be {shape}, got {column!r}")
        out[role] = column if isinstance(column, str) else tuple(names)
    return out


@dataclass(frozen=True)
class TableFiles:
    """A table task's files by split, relative paths taken from ``root``."""

    paths: Mapping[str, Path]
    val_from_train: float | None
    split_seed: int

    @classmethod
    def of(cls, files: Any, root: str | None, val_from_train: float | None, split_seed: int) -> TableFiles:
        if not isinstance(files, Mapping) or not files:
            raise ConfigError("data.name=table reads data.files as a mapping from split to file, e.g. "
                              "data.files={train: train.csv, validation: dev.csv, test: test.csv}")
        unknown = [k for k in files if k not in SPLITS]
        if unknown:
            raise ConfigError(f"data.files.{unknown[0]}: the splits of a table task are {', '.join(SPLITS)}")
        if "train" not in files:
            raise ConfigError("data.files has no train file; add data.files.train=PATH")
        if "validation" in files and val_from_train is not None:
            raise ConfigError("data.val_from_train carves a validation split from train, but data.files has a "
                              "validation file; drop one of them")
        base = Path(root).expanduser() if root else Path(".")
        paths = {split: base / Path(str(p)).expanduser() for split, p in files.items()}
        return cls(paths, val_from_train, split_seed)

    def carved(self, n: int) -> dict[str, np.ndarray]:
        """Row positions of train and validation when validation is carved from train's ``n`` examples."""
        n_val = max(1, round(self.val_from_train * n)) if self.val_from_train else 0
        perm = np.random.RandomState(self.split_seed).permutation(n)
        return {"validation": np.sort(perm[:n_val]), "train": np.sort(perm[n_val:])}


def read_split(table: Table, files: TableFiles, split: str, reader: RowReader) -> list[Example]:
    """The examples of one split of a table task (validation carved from train when asked)."""
    if split == "validation" and "validation" not in files.paths and not files.val_from_train:
        raise ConfigError("data.files has no validation file: add data.files.validation=PATH, or set "
                          "data.val_from_train=0.1 to hold out 10% of train (seeded by data.split_seed)")
    if split == "test" and "test" not in files.paths:
        raise ConfigError("data.files has no test file: add data.files.test=PATH to score or predict a test set")
    carve = split in ("train", "validation") and files.val_from_train is not None
    path = files.paths["train" if carve else split]
    if not path.is_dir():
        require_file(path, f"{split}" if not carve else "train")
    reader.stats.source = path
    examples = table.examples(path, read_rows(path, table.fmt, reader, split), reader, label_optional=split == "test")
    if carve:
        if split == "validation":
            reader.stats.counted_with_train()
        examples = [examples[i] for i in files.carved(len(examples))[split]]
    if split == "validation" and table.labels is not None and table.transform != "multiple_choice":
        seen = {e.label for e in examples}
        if absent := [name for k, name in enumerate(table.labels) if k not in seen]:
            log(f"warning: {len(absent)} of the {len(table.labels)} labels have no validation example: "
                f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''} (validation metrics cannot reward them)")
    return examples


# Labels inferred from a train file, by (path, size, mtime, options): the builder, the monitor checks and
# the DataModule all ask for the task, and the file is read for them once.
_INFERRED: dict[tuple, tuple[tuple[str, ...], int]] = {}


def infer_labels(table: Table, path: Path, skip_bad_rows: bool) -> tuple[str, ...]:
    """The label set of a train file (sorted; numerically when every label is an integer), reported with
    each class's count; a class with a single example is reported too. For multiple choice, the positions
    of the most answers any row has."""
    stat = path.stat() if path.exists() else None
    key = (str(path.resolve()), stat and stat.st_size, stat and stat.st_mtime_ns, table.columns.get("label"),
           table.transform, table.fmt, skip_bad_rows)
    if key not in _INFERRED:
        reader = RowReader(skip_bad_rows)
        probe = Table(table.transform, table.columns, ("__any__",), table.fmt, mc_label="index")
        counts: Counter[str] = Counter()
        most = 0
        if not path.is_dir():
            require_file(path, "train")
        try:
            for ordinal, (where, line, record) in enumerate(read_rows(path, table.fmt, reader, "train")):
                if ordinal == 0:
                    probe._check_columns(path, record, label_optional=False)
                value = _cell(record.get(table.columns["label"]))
                if table.transform == "multiple_choice":
                    choices = probe._choices(where, line, record, reader)
                    most = max(most, len(choices or ()))
                elif value is not None and value.strip() and value.strip() not in table.exclude:
                    counts[value.strip()] += 1
        except DataError as exc:
            raise DataError(f"task table, train split: {exc}") from None
        if table.transform == "multiple_choice":
            if most < 2:
                raise DataError(f"task table, train split: {path}: no row with two or more answers in "
                                f"{', '.join(_names(table.columns['choices']))}")
            labels = tuple(str(k) for k in range(most))
        else:
            labels = _sorted_labels(counts, path, table.columns["label"])
            shown = ", ".join(f"{name} ({counts[name]:,})" for name in labels)
            log(f"data.labels inferred from {path}: {shown}; set data.labels to fix their order")
            if single := [n for n in labels if counts[n] == 1]:
                log(f"warning: {len(single)} class(es) of {path} have a single example: {', '.join(single[:10])}")
        _INFERRED[key] = (labels, most)
    return _INFERRED[key][0]


def _sorted_labels(counts: Counter[str], path: Path, column: str) -> tuple[str, ...]:
    if not counts:
        raise DataError(f"{path}: no labels in column {column!r} to infer data.labels from")
    values = list(counts)

    def number(v: str) -> float | None:
        try:
            return float(v)
        except ValueError:
            return None

    numbers = [number(v) for v in values]
    if all(n is not None for n in numbers) and not all(float(n).is_integer() for n in numbers):  # type: ignore[arg-type]
        raise DataError(f"{path}: column {column!r} holds {len(values):,} distinct numbers, some fractional (e.g. "
                        f"{', '.join(values[:3])}); for a regression score set data.labels=null, for classes list "
                        "them in data.labels")
    if len(values) > MAX_INFERRED_LABELS:
        raise DataError(f"{path}: column {column!r} holds {len(values):,} distinct values (more than "
                        f"{MAX_INFERRED_LABELS}), e.g. {', '.join(values[:3])}; is it the label column? For a "
                        "regression score set data.labels=null, for classes list them in data.labels")
    if all(n is not None for n in numbers):
        return tuple(sorted(values, key=float))
    return tuple(sorted(values))


def table_task(data: Any) -> TaskSpec:
    """The task of a recipe's ``data`` section with ``name: table`` (see the module docstring)."""
    transform = data.transform
    if transform is None:
        raise ConfigError(f"data.name=table needs data.transform: one of {', '.join(TRANSFORMS)}")
    columns = check_columns(transform, data.columns)
    header = data.header
    fmt = TableFormat(data.format, data.delimiter, data.quoting, tuple(header) if header else None)
    files = TableFiles.of(data.files, data.root, data.val_from_train, data.split_seed)
    labels_value = data.labels
    regression = labels_value is None
    if regression and transform == "multiple_choice":
        raise ConfigError("data.labels=null means a regression score, which multiple choice has none of; leave "
                          "data.labels unset (the label is the right answer's 0-based index or text) or name the "
                          "answers, e.g. data.labels=[A, B, C, D]")
    table = Table(transform, columns, None, fmt)
    if regression:
        labels = None
    elif labels_value == "infer":
        labels = infer_labels(table, files.paths["train"], data.skip_bad_rows)
    elif isinstance(labels_value, Sequence) and not isinstance(labels_value, str) and len(labels_value) >= 2:
        labels = tuple(str(v).strip() for v in labels_value)
        if len(set(labels)) != len(labels):
            raise ConfigError(f"data.labels repeats a label: {list(labels)}")
    else:
        raise ConfigError(f"data.labels is {labels_value!r}; give two or more labels (e.g. [negative, positive]), "
                          "infer (read from the train file), or null for a regression score")
    named_answers = transform == "multiple_choice" and labels_value != "infer"
    table = Table(transform, columns, labels, fmt, mc_label="names" if named_answers else "index")
    metric_names = check_metrics(data.metrics, regression, transform)
    n_classes = None if regression else len(labels)  # type: ignore[arg-type]

    def read(root: Path, split: str, reader: RowReader, subset: str | None) -> list[Example]:
        return read_split(table, files, split, reader)

    return TaskSpec(
        name="table",
        title=f"table {files.paths['train']}",
        transform=transform,
        read=read,
        metrics=lambda: named(metric_names, n_classes),
        labels=labels,
        val_splits=("validation",),
        test_splits=("test",),
        label_names=not regression,
        needs_root=False,
        description="your own labelled table (data.files, data.columns)",
    )


def check_metrics(names: Any, regression: bool, transform: str) -> tuple[str, ...]:
    """``data.metrics``, checked against the label kind (null: accuracy, or Pearson and Spearman)."""
    known = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    if names is None:
        return tuple(known) if regression else ("acc",)
    names = tuple(names)
    bad = [n for n in names if n not in known]
    if bad or not names:
        kind = "a regression score (data.labels=null)" if regression else "classes"
        listing = "; ".join(f"{k}: {v}" for k, v in known.items())
        raise ConfigError(f"data.metrics: {bad[0] if bad else 'empty'!r} is not a metric for {kind}; choose from "
                          f"{listing}")
    if transform == "multiple_choice" and names != ("acc",):
        raise ConfigError("data.metrics: multiple choice is scored by accuracy only (data.metrics=[acc])")
    return names

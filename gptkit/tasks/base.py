"""What every fine-tuning task shares: examples, the paper's four input transforms, truncation,
bad-row handling, metrics and the batch layout.

A task (one small module per dataset family) reads its official files into :class:`Example` objects;
:func:`encode` turns an example into token sequences with the transform of the paper's Figure 1;
:func:`collate` pads encoded examples into the batch dict the LightningModule consumes.

Input transforms (``s`` = ``_start_``, ``d`` = ``_delimiter_``, ``c`` = ``_classify_``)::

    classification   s text c
    entailment       s premise d hypothesis c
    similarity       s a d b c   and   s b d a c        (two sequences, K = 2)
    multiple_choice  s context [question] d answer_k c  (one sequence per answer, K = #answers)

Truncation rule (the same for every task, applied to token ids, counted per split):

* One text side (classification) keeps its first ``n_ctx - 2`` tokens.
* Two sides (entailment, similarity, multiple choice) each get ``half = n_ctx // 2 - 2`` tokens,
  the released ROCStories code's limit. A side shorter than ``half`` lends its unused room to the
  other side, so nothing is cut when both fit in ``2 * half`` tokens, and when both sides are
  longer than ``half`` the result is exactly the released code's (each side clipped to ``half``).
* A side is cut at its end, except that a context side with a question (RACE, COPA) keeps the
  question whole and cuts the end of the passage before it.
* For multiple choice the context is cut once, against the longest answer, so every candidate
  sees the same context.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from gptkit.errors import ConfigError, DataError
from gptkit.outputs import atomic_write_text

log = logging.getLogger(__name__)

Transform = Literal["classification", "entailment", "similarity", "multiple_choice"]
TRANSFORMS: tuple[str, ...] = ("classification", "entailment", "similarity", "multiple_choice")
IGNORE_INDEX = -100
MIN_N_CTX = 8


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One labelled (or unlabelled) example, as text.

    ``text_a``: the text (classification), premise (entailment), first sentence (similarity) or
    context passage (multiple choice). ``text_b``: hypothesis, second sentence, or the question
    appended to a multiple-choice context (``None`` if there is none). ``choices``: the candidate
    answers (multiple choice only). ``label``: class id, float score (regression) or ``None`` when
    the split carries no label (e.g. GLUE test). ``index``: the example's id in its split, written
    to prediction files. ``group``: optional subset id (RACE: middle 0, high 1).
    """

    text_a: str
    text_b: str | None = None
    choices: tuple[str, ...] = ()
    label: int | float | None = None
    index: int = 0
    group: int | None = None


@dataclass
class Encoded:
    """An example after the input transform: ``K`` token sequences and where to read each one."""

    sequences: list[np.ndarray]  # int32 token ids, one array per sequence
    extract_pos: list[int]
    label: int | float | None
    index: int
    group: int | None = None
    truncated: bool = False


@dataclass(frozen=True)
class SpecialIds:
    start: int
    delimiter: int
    classify: int

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialIds:
        return cls(tokenizer.start_id, tokenizer.delimiter_id, tokenizer.classify_id)


# ---------------------------------------------------------------------------------------------
# Truncation and transforms
# ---------------------------------------------------------------------------------------------
def pair_caps(len_a: int, len_b: int, n_ctx: int) -> tuple[int, int]:
    """Token budgets of the two sides of a pair (see the module docstring)."""
    half = n_ctx // 2 - 2
    budget = 2 * half
    return max(half, budget - len_b), max(half, budget - len_a)


def clip_side(body: list[int], cap: int, tail: list[int] | None = None) -> list[int]:
    """Keep at most ``cap`` tokens of ``body + tail``, cutting the end of ``body`` first."""
    tail = tail or []
    if len(body) + len(tail) <= cap:
        return body + tail
    if len(tail) >= cap:
        return tail[:cap]
    return body[: cap - len(tail)] + tail


def _check_n_ctx(n_ctx: int) -> None:
    if n_ctx < MIN_N_CTX:
        raise ConfigError(f"n_ctx={n_ctx} is too small for fine-tuning inputs (need at least {MIN_N_CTX})")


def classification_transform(text: list[int], n_ctx: int, sp: SpecialIds) -> tuple[list[list[int]], bool]:
    """``_start_ text _classify_``; the text keeps its first ``n_ctx - 2`` tokens."""
    _check_n_ctx(n_ctx)
    kept = text[: n_ctx - 2]
    return [[sp.start, *kept, sp.classify]], len(kept) < len(text)


def entailment_transform(
    premise: list[int], hypothesis: list[int], n_ctx: int, sp: SpecialIds
) -> tuple[list[list[int]], bool]:
    """``_start_ premise _delimiter_ hypothesis _classify_``."""
    _check_n_ctx(n_ctx)
    cap_a, cap_b = pair_caps(len(premise), len(hypothesis), n_ctx)
    a, b = premise[:cap_a], hypothesis[:cap_b]
    cut = len(a) < len(premise) or len(b) < len(hypothesis)
    return [[sp.start, *a, sp.delimiter, *b, sp.classify]], cut


def similarity_transform(
    text_a: list[int], text_b: list[int], n_ctx: int, sp: SpecialIds
) -> tuple[list[list[int]], bool]:
    """Both orderings, ``_start_ a _delimiter_ b _classify_`` and ``_start_ b _delimiter_ a _classify_``."""
    _check_n_ctx(n_ctx)
    cap_a, cap_b = pair_caps(len(text_a), len(text_b), n_ctx)
    a, b = text_a[:cap_a], text_b[:cap_b]
    cut = len(a) < len(text_a) or len(b) < len(text_b)
    return [[sp.start, *a, sp.delimiter, *b, sp.classify], [sp.start, *b, sp.delimiter, *a, sp.classify]], cut


def multiple_choice_transform(
    context: list[int],
    question: list[int] | None,
    answers: Sequence[list[int]],
    n_ctx: int,
    sp: SpecialIds,
) -> tuple[list[list[int]], bool]:
    """One sequence per answer: ``_start_ context [question] _delimiter_ answer_k _classify_``."""
    _check_n_ctx(n_ctx)
    if not answers:
        raise ValueError("multiple choice needs at least one answer")
    question = question or []
    full_ctx = len(context) + len(question)
    longest = max(len(a) for a in answers)
    cap_ctx, _ = pair_caps(full_ctx, longest, n_ctx)
    ctx = clip_side(context, cap_ctx, question)
    cut = len(ctx) < full_ctx
    sequences = []
    for answer in answers:
        _, cap_ans = pair_caps(len(ctx), len(answer), n_ctx)
        kept = answer[:cap_ans]
        cut = cut or len(kept) < len(answer)
        sequences.append([sp.start, *ctx, sp.delimiter, *kept, sp.classify])
    return sequences, cut


def encode(
    examples: Sequence[Example],
    transform: str,
    tokenizer: Any,
    n_ctx: int,
    chunk: int = 2048,
) -> list[Encoded]:
    """Tokenise examples (batched) and apply ``transform``; ``Encoded.truncated`` marks cut examples."""
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown input transform {transform!r}; expected one of {', '.join(TRANSFORMS)}")
    sp = SpecialIds.of(tokenizer)
    texts: list[str] = []
    for ex in examples:
        texts.append(ex.text_a)
        texts.append(ex.text_b or "")
        texts.extend(ex.choices)
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        ids.extend(tokenizer.encode_batch(texts[start : start + chunk]))
    out: list[Encoded] = []
    pos = 0
    for ex in examples:
        a, b = ids[pos], ids[pos + 1]
        answers = ids[pos + 2 : pos + 2 + len(ex.choices)]
        pos += 2 + len(ex.choices)
        if transform == "classification":
            seqs, cut = classification_transform(a, n_ctx, sp)
        elif transform == "entailment":
            seqs, cut = entailment_transform(a, b, n_ctx, sp)
        elif transform == "similarity":
            seqs, cut = similarity_transform(a, b, n_ctx, sp)
        else:
            seqs, cut = multiple_choice_transform(a, b if ex.text_b else None, answers, n_ctx, sp)
        arrays = [np.asarray(s, dtype=np.int32) for s in seqs]  # compact: RACE holds ~350k sequences
        out.append(Encoded(arrays, [len(s) - 1 for s in seqs], ex.label, ex.index, ex.group, cut))
    return out


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------
def collate(batch: Sequence[Encoded], regression: bool = False) -> dict[str, torch.Tensor]:
    """Pad encoded examples into the fine-tuning batch dict.

    ``input_ids`` [B, K, T] right-padded with 0; ``lm_targets`` [B, K, T] = ``input_ids`` shifted
    left by one, -100 at padding and at each sequence's last position; ``extract_pos`` [B, K];
    ``choice_mask`` [B, K] (False for padded candidates); ``labels`` [B] (long, -1 when missing;
    float, nan when missing, for regression); ``index`` [B]; ``group`` [B] when any example has one
    (-1 where missing).
    """
    B = len(batch)
    K = max(len(e.sequences) for e in batch)
    T = max(len(s) for e in batch for s in e.sequences)
    input_ids = torch.zeros(B, K, T, dtype=torch.long)
    lm_targets = torch.full((B, K, T), IGNORE_INDEX, dtype=torch.long)
    extract_pos = torch.zeros(B, K, dtype=torch.long)
    choice_mask = torch.zeros(B, K, dtype=torch.bool)
    for i, e in enumerate(batch):
        for k, seq in enumerate(e.sequences):
            n = len(seq)
            t = torch.as_tensor(np.asarray(seq), dtype=torch.long)
            input_ids[i, k, :n] = t
            lm_targets[i, k, : n - 1] = t[1:]
            extract_pos[i, k] = e.extract_pos[k]
            choice_mask[i, k] = True
    if regression:
        labels = torch.tensor([math.nan if e.label is None else float(e.label) for e in batch])
    else:
        labels = torch.tensor([-1 if e.label is None else int(e.label) for e in batch], dtype=torch.long)
    out = {
        "input_ids": input_ids,
        "lm_targets": lm_targets,
        "extract_pos": extract_pos,
        "choice_mask": choice_mask,
        "labels": labels,
        "index": torch.tensor([e.index for e in batch], dtype=torch.long),
    }
    if any(e.group is not None for e in batch):
        out["group"] = torch.tensor([-1 if e.group is None else e.group for e in batch], dtype=torch.long)
    return out


# ---------------------------------------------------------------------------------------------
# Reading files: bad rows and counts
# ---------------------------------------------------------------------------------------------
@dataclass
class ReadStats:
    """What happened while reading one split: nothing is dropped without being counted here."""

    rows: int = 0
    skipped: int = 0  # malformed rows skipped because data.skip_bad_rows is set
    excluded: dict[str, int] = field(default_factory=dict)  # rows left out by the dataset's own rule
    first_skip: str | None = None
    source: Path | None = None  # the file the split was read from, when one file holds it

    def counted_with_train(self) -> None:
        """Forget the skipped and excluded rows: a split drawn from the same file as train (polarity's
        fixed split, a validation split carved from train) reports them once, with train."""
        self.skipped, self.first_skip = 0, None
        self.excluded.clear()

    def describe(self) -> str:
        parts = [f"{self.rows} examples"]
        if self.skipped:
            parts.append(f"{self.skipped} malformed rows skipped (first: {self.first_skip})")
        for reason, n in self.excluded.items():
            parts.append(f"{n} excluded ({reason})")
        return ", ".join(parts)


class RowReader:
    """Collects examples of one split; turns a malformed row into a :class:`DataError` naming the file
    and line, or, with ``skip_bad_rows``, counts and skips it."""

    def __init__(self, skip_bad_rows: bool = False) -> None:
        self.skip_bad_rows = skip_bad_rows
        self.stats = ReadStats()

    def bad(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        message = f"{where}: {problem}"
        if not self.skip_bad_rows:
            raise DataError(
                f"{message}\n(set data.skip_bad_rows=true to skip malformed rows; they are counted and reported)"
            )
        self.stats.skipped += 1
        if self.stats.first_skip is None:
            self.stats.first_skip = message
        log.warning("skipping malformed row: %s", message)

    def exclude(self, reason: str) -> None:
        self.stats.excluded[reason] = self.stats.excluded.get(reason, 0) + 1


# The files the split being loaded has opened (set by TaskSpec.load), so that a split that yields no
# examples can name them rather than the dataset folder.
_FILES_READ: ContextVar[list[Path] | None] = ContextVar("gptkit_task_files_read", default=None)


def _reading(path: Path) -> None:
    """Note ``path`` as read by the split being loaded; refuse a UTF-16 file, which may decode as UTF-8."""
    from gptkit.data.sources import utf16_message

    files = _FILES_READ.get()
    if files is not None and path not in files:
        files.append(path)
    if (utf16 := utf16_message(path)) is not None:
        raise DataError(utf16)


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a DataError saying which file of which dataset is missing."""
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (the folder {path.parent} does not exist either)"
        raise DataError(f"missing {what} file {path}{hint}")
    _reading(path)
    return path


def nothing_read(root: Path | str, files: Sequence[Path], stats: ReadStats) -> str:
    """Why a split gave no examples, naming the file(s) it read (or ``root`` when none is known)."""
    if not files:
        return f"no examples were read from {root}"
    if len(files) > 1:
        shown = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
        return f"no examples were read from the {len(files)} files read under {root} ({shown})"
    path = files[0]
    if stats.skipped or stats.excluded:
        return f"no examples were read from {path} ({stats.describe()})"
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return f"no examples were read from {path}: the file is empty (0 bytes); download or extract it again"
    return (f"no examples were read from {path}: it holds no data rows (a header line or blank lines "
            "only); check that it is the complete file")


def not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    """The error for a file that is not UTF-8, naming the line of the first bad byte."""
    from gptkit.data.sources import not_utf8_message

    return DataError(f"{not_utf8_message(path, exc)}; expected the dataset's UTF-8 text file")


def holds_row(line: str) -> bool:
    """Whether a TSV line is a row: blank lines (nothing but spaces) hold none; a line with a tab
    does, even if all its cells are empty (it is then checked, and reported, like any other)."""
    return bool(line.strip()) or "\t" in line


GZIP_MAGIC = b"\x1f\x8b"


def gzipped(path: Path) -> bool:
    """Whether ``path`` is read through gzip (its name ends in ``.gz``); one that is not gzip data is a
    DataError."""
    if not path.name.lower().endswith(".gz"):
        return False
    with open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            raise DataError(f"{path}: not gzip-compressed data, though its name ends in .gz; decompress it "
                            "yourself or rename it without .gz")
    return True


def read_lines(path: Path, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) without the line ending (with it, given ``keep_ends``); accepts LF,
    CRLF and CR; drops a UTF-8 BOM; a ``.gz`` file is decompressed as it is read."""
    import gzip

    _reading(path)
    packed = gzipped(path)
    opened = gzip.open(path, "rt", encoding="utf-8-sig", newline="") if packed else \
        open(path, encoding="utf-8-sig", newline="")
    number = 0
    with opened as f:
        try:
            for number, line in enumerate(f, start=1):  # noqa: B007 (read after the loop on a decoding error)
                yield number, line if keep_ends else line.rstrip("\r\n")
        except UnicodeDecodeError as exc:
            if packed:
                raise DataError(f"{path}: not UTF-8 text once decompressed (after line {number}: {exc.reason}); "
                                "expected UTF-8 text") from None
            raise not_utf8(path, exc) from None
        except (OSError, EOFError) as exc:  # a damaged or truncated .gz
            raise DataError(f"{path}: the gzip data is damaged after line {number} ({exc}); fetch the file "
                            "again") from None


def read_tsv(
    path: Path,
    reader: RowReader,
    header: bool = True,
    n_columns: int | None = None,
    min_columns: int | None = None,
    delimiter: str = "\t",
) -> Iterator[tuple[int, dict[str, str] | list[str]]]:
    """Rows of a tab-separated file, split on tabs with no quote processing (GLUE texts contain
    unbalanced quotes). With ``header`` rows are dicts keyed by the header; every row must have as
    many fields as the header (or ``n_columns``), or at least ``min_columns`` where trailing
    optional columns may be left out (SNLI's .txt omits empty ``label2..label5``); a wrong row goes
    to ``reader.bad``. Lines that hold no row (:func:`holds_row`) are passed over. ``delimiter``
    splits fields of other delimited files read without quote processing."""
    names: list[str] | None = None
    kind = "tab-separated" if delimiter == "\t" else f"{delimiter!r}-separated"
    for number, line in read_lines(path):
        if not (line.strip() or delimiter in line):
            continue
        fields = line.split(delimiter)
        if header and names is None:
            names = fields
            continue
        expected = len(names) if names is not None else n_columns
        fewest = expected if min_columns is None else min_columns
        if expected is not None and not fewest <= len(fields) <= expected:
            cols = f" ({', '.join(names)})" if names else ""
            count = f"{expected}" if fewest == expected else f"{fewest} to {expected}"
            reader.bad(path, number, f"expected {count} {kind} columns{cols}, found {len(fields)}")
            continue
        yield number, (dict(zip(names, fields)) if names is not None else fields)
    if header and names is None:
        raise DataError(f"{path} is empty; expected a header line and rows")


def fixed_split(n: int, seed: int, eval_fraction: float = 0.1) -> dict[str, list[int]]:
    """The fixed split of a dataset that has none of its own (polarity, BBC): a permutation of its ``n``
    examples seeded by ``seed`` (the dataset's, not the run's) gives ``eval_fraction`` of them (at least
    one) to test, as many to dev, the rest to train; positions in read order."""
    n_eval = max(1, int(eval_fraction * n))
    perm = np.random.RandomState(seed).permutation(n).tolist()
    return {"test": perm[:n_eval], "dev": perm[n_eval : 2 * n_eval], "train": perm[2 * n_eval :]}


def take_split(examples: list[Example], split: str, reader: RowReader, indices: dict[str, list[int]]) -> list[Example]:
    """The examples of ``split`` from a whole file's ``examples``; its skipped and excluded rows are reported
    once, with train."""
    if split != "train":
        reader.stats.counted_with_train()
    return [examples[i] for i in indices[split]]


def parse_label(
    value: str, labels: Sequence[str], path: Path, line: int, reader: RowReader
) -> int | None:
    """Class id of ``value`` in ``labels``; a value outside the label set is a bad row (returns None)."""
    try:
        return labels.index(value.strip())
    except ValueError:
        reader.bad(path, line, f"label {value!r} is not one of {list(labels)}")
        return None


def check_texts(path: Path, line: int, reader: RowReader, **texts: str) -> bool:
    """False (and a bad row) if any named text is empty."""
    for name, text in texts.items():
        if not text or not text.strip():
            reader.bad(path, line, f"empty {name}")
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
class TaskMetrics(nn.Module):
    """A task's torchmetrics, over the whole split and, optionally, per group (RACE middle/high).

    ``update(preds, labels, group=None)``; ``compute()`` returns ``{"acc": ..., "acc_middle": ...}``;
    ``reset()``. Rows with a missing label (-1 or nan) are ignored.
    """

    def __init__(self, factory: Callable[[], MetricCollection], groups: Sequence[str] = ()) -> None:
        super().__init__()
        self.overall = factory()
        self.group_names = tuple(groups)
        self.groups = nn.ModuleList(factory() for _ in self.group_names)
        self._seen = [False] * len(self.group_names)

    @staticmethod
    def _labelled(labels: torch.Tensor) -> torch.Tensor:
        return ~torch.isnan(labels) if labels.is_floating_point() else labels >= 0

    def update(self, preds: torch.Tensor, labels: torch.Tensor, group: torch.Tensor | None = None) -> None:
        keep = self._labelled(labels)
        if not keep.any():
            return
        self.overall.update(preds[keep], labels[keep])
        if group is not None:
            for g, metrics in enumerate(self.groups):
                sel = keep & (group == g)
                if sel.any():
                    metrics.update(preds[sel], labels[sel])
                    self._seen[g] = True

    def compute(self) -> dict[str, torch.Tensor]:
        out = dict(self.overall.compute())
        for g, (name, metrics) in enumerate(zip(self.group_names, self.groups)):
            if self._seen[g]:
                out.update({f"{k}_{name}": v for k, v in metrics.compute().items()})
        return out

    def reset(self) -> None:
        self.overall.reset()
        for metrics in self.groups:
            metrics.reset()
        self._seen = [False] * len(self.group_names)


# ---------------------------------------------------------------------------------------------
# The task description
# ---------------------------------------------------------------------------------------------
ReadFn = Callable[[Path, str, RowReader, "str | None"], list[Example]]

# The three-way NLI labels, in the order of the released files (MNLI and SNLI share them).
NLI3: tuple[str, ...] = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class TaskSpec:
    """Everything gptkit needs to know about one task.

    ``read(root, split, reader, subset)`` returns the examples of ``split`` (one of ``train``,
    ``val_splits``, ``test_splits``) read from the official files under ``root``. ``transform`` is
    the paper's input transform; ``labels`` the label names (``None`` for regression, where the
    label is a float); ``metrics`` builds a fresh MetricCollection (see
    :mod:`gptkit.tasks.metrics`). ``prediction_files`` maps each test split to the file name of a
    prediction file (GLUE submission names for GLUE).
    ``split_names`` gives the metric suffix of each eval split of a task with several (MNLI).
    """

    name: str
    title: str
    transform: Transform
    read: ReadFn
    metrics: Callable[[], MetricCollection]
    labels: tuple[str, ...] | None
    val_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)
    prediction_files: dict[str, str] = field(default_factory=dict)
    split_names: dict[str, str] = field(default_factory=dict)  # metric-name suffix of extra eval splits
    subsets: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    glue: bool = False
    corpus: str | None = None  # a gptkit.data.corpora name fetched when data.root is unset
    description: str = ""
    label_names: bool = False  # prediction files give label names (NLI, your own tables), not class ids
    score_range: tuple[float, float] | None = None  # a regression score's range; predictions are clipped to it
    needs_root: bool = True  # the files are found under data.root (a table task names its own files)

    # -- head and loss ---------------------------------------------------------------------------
    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def head_kind(self) -> str:
        """The kind for :func:`gptkit.heads.build_head` (entailment is classification)."""
        return "classification" if self.transform == "entailment" else self.transform

    @property
    def n_outputs(self) -> int:
        if self.transform == "multiple_choice" or self.regression:
            return 1
        assert self.labels is not None
        return len(self.labels)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Task loss L2: cross-entropy over classes (or candidates), MSE for regression."""
        if self.regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class (or candidate) id, or the regression score."""
        if self.regression:
            return logits.squeeze(-1)
        return logits.argmax(dim=-1)

    def make_metrics(self) -> TaskMetrics:
        return TaskMetrics(self.metrics, self.groups)

    def metric_suffix(self, split: str) -> str:
        """Suffix for metric names of ``split`` when a task has several eval sets (MNLI:
        ``acc_matched``, ``acc_mismatched``); empty otherwise."""
        name = self.split_names.get(split)
        return f"_{name}" if name else ""

    # -- predictions -----------------------------------------------------------------------------
    def format_prediction(self, pred: float | int) -> str:
        if self.regression:
            score = float(pred)
            if self.score_range is not None:  # (STS-B scores lie in [0, 5])
                score = min(max(score, self.score_range[0]), self.score_range[1])
            return f"{score:.3f}"
        if self.label_names and self.labels is not None:
            return self.labels[int(pred)]
        return str(int(pred))

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the task: its name, transform and labels (a table task's labels may
        be inferred from its train file; evaluating the checkpoint checks that they still are the same)."""
        return {"name": self.name, "transform": self.transform,
                "labels": None if self.labels is None else list(self.labels)}

    def prediction_file(self, split: str) -> str:
        return self.prediction_files.get(split, f"{self.name}-{split}.tsv")

    def write_predictions(
        self, path: Path | str, index: Sequence[int], preds: Sequence[float | int], stats: ReadStats | None = None
    ) -> Path:
        """Write ``index<TAB>prediction`` lines with a header, sorted by index (GLUE submission format).

        Duplicated indices are a :class:`DataError` naming the test file (nothing is written). Given
        the split's ``stats`` (what :meth:`load` read), fewer predictions than the test file has rows
        (rows skipped with ``data.skip_bad_rows``) write the file and log a warning with the counts."""
        path = Path(path)
        index = [int(i) for i in index]
        if len(index) != len(preds):
            raise ValueError(f"{len(index)} indices for {len(preds)} predictions")
        source = stats.source if stats is not None else None
        where = f"the test file {source}" if source else f"the {self.name} test data"
        repeated = sorted(i for i, n in Counter(index).items() if n > 1)
        if repeated:
            shown = ", ".join(map(str, repeated[:5])) + (", ..." if len(repeated) > 5 else "")
            raise DataError(
                f"{where}: {len(repeated)} index value(s) used by more than one row ({shown}); a prediction "
                f"file needs one unique index per test row: fix the test file's index (id) column and rerun "
                f"`gptkit predict` ({path} was not written)"
            )
        rows = sorted(zip(index, preds), key=lambda r: r[0])
        atomic_write_text(path, "index\tprediction\n" + "".join(f"{i}\t{self.format_prediction(p)}\n" for i, p in rows))
        if stats is not None and stats.skipped:  # (rows a dataset leaves out by its own rule are not missing)
            log.warning(
                "%s is INCOMPLETE: %d predictions for the %d rows of %s (%d malformed rows skipped with "
                "data.skip_bad_rows); a submission needs one prediction per test row (`gptkit glue --out` "
                "refuses such a file): fix the bad rows and rerun `gptkit predict`",
                path, len(index), stats.rows + stats.skipped, where, stats.skipped,
            )
        return path

    # -- reading ---------------------------------------------------------------------------------
    def check_subset(self, subset: str | None) -> str | None:
        if subset is None:
            return self.subsets[0] if self.subsets else None
        if subset not in self.subsets:
            allowed = ", ".join(self.subsets) if self.subsets else "none (leave data.subset unset)"
            raise ConfigError(f"task {self.name!r} has no subset {subset!r}; allowed: {allowed}")
        return subset

    def load(
        self, root: Path | str, split: str, skip_bad_rows: bool = False, subset: str | None = None
    ) -> tuple[list[Example], ReadStats]:
        """Read one split; returns its examples and what was skipped or excluded."""
        known = ("train", *self.val_splits, *self.test_splits)
        if split not in known:
            raise ConfigError(f"task {self.name!r} has no split {split!r}; it has {', '.join(known)}")
        reader = RowReader(skip_bad_rows)
        files: list[Path] = []
        token = _FILES_READ.set(files)
        try:
            examples = self.read(Path(root).expanduser(), split, reader, self.check_subset(subset))
        except DataError as exc:
            # Name the task (data.name) and split in every data error.
            raise DataError(f"task {self.name}, {split} split: {exc}") from None
        finally:
            _FILES_READ.reset(token)
        reader.stats.rows = len(examples)
        if not examples:
            raise DataError(f"task {self.name}, {split} split: {nothing_read(root, files, reader.stats)}")
        return examples, reader.stats

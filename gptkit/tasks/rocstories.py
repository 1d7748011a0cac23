"""ROCStories / Story Cloze Test (Mostafazadeh et al., 2016), spring 2016 release.

Files (as distributed, CRLF or LF): ``cloze_test_val__spring2016 - cloze_test_ALL_val.csv`` and
``cloze_test_test__spring2016 - cloze_test_ALL_test.csv``; columns ``InputStoryid``,
``InputSentence1..4``, ``RandomFifthSentenceQuiz1``, ``RandomFifthSentenceQuiz2``,
``AnswerRightEnding`` (1 or 2). As in the released GPT-1 code, the context is the four sentences
joined by spaces, the two endings are the candidates, and the validation csv is split into train
and a 374-story held-out dev set exactly as ``sklearn.model_selection.train_test_split(...,
test_size=374, random_state=3535999445)`` does; the test csv is the test set.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from gptkit.errors import DataError
from gptkit.tasks.base import Example, RowReader, TaskSpec, check_texts, not_utf8, require_file
from gptkit.tasks.metrics import accuracy

log = logging.getLogger(__name__)

VAL_FILE = "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
TEST_FILE = "cloze_test_test__spring2016 - cloze_test_ALL_test.csv"
N_VALID = 374
SPLIT_SEED = 3535999445
N_FIELDS = 8


def train_test_split_indices(n: int, test_size: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices, identical to sklearn's ``train_test_split(range(n),
    test_size=test_size, random_state=random_state)`` (no stratify, shuffle on): its
    ``ShuffleSplit`` draws one ``RandomState(random_state).permutation(n)``; the first
    ``test_size`` entries are the test rows, the rest the train rows, in that order."""
    if not 0 < test_size < n:
        raise ValueError(f"test_size={test_size} must be between 1 and n-1={n - 1}")
    permutation = np.random.RandomState(random_state).permutation(n)
    return permutation[test_size:], permutation[:test_size]


def held_out_size(n: int) -> int:
    """374 as in the paper; a file too small for that (a sample) holds out a fifth instead."""
    if n > 2 * N_VALID:
        return N_VALID
    size = max(1, n // 5)
    log.warning("Story Cloze validation csv has only %d stories; holding out %d instead of %d", n, size, N_VALID)
    return size


def read_csv(path: Path, reader: RowReader) -> list[Example]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        try:
            return _read_csv(path, rows, reader)
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from None
        except csv.Error as exc:
            raise DataError(f"{path}:{rows.line_num}: not a readable csv ({exc}); expected the Story Cloze csv") from None


def _read_csv(path: Path, rows, reader: RowReader) -> list[Example]:
    examples: list[Example] = []
    header = next(rows, None)
    if header is None:
        reader.bad(path, 1, "empty file; expected a header and story rows")
        return []
    ordinal = 0
    for row in rows:
        line = rows.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line (e.g. a trailing newline) holds no row
        if not any(field.strip() for field in row):
            reader.bad(path, line, f"all {len(row)} fields are empty; expected a story (delete the line if it is left over)")
            continue
        if len(row) != N_FIELDS:
            reader.bad(path, line, f"expected {N_FIELDS} comma-separated fields ({', '.join(header)}), found {len(row)}")
            continue
        story_id, *sentences, end1, end2, answer = row
        texts = {f"InputSentence{i + 1}": s for i, s in enumerate(sentences)}
        if not check_texts(path, line, reader, **texts, RandomFifthSentenceQuiz1=end1, RandomFifthSentenceQuiz2=end2):
            continue
        if answer.strip() not in ("1", "2"):
            reader.bad(path, line, f"AnswerRightEnding {answer!r} is not 1 or 2")
            continue
        context = " ".join(s.strip() for s in sentences)
        examples.append(Example(context, None, (end1, end2), label=int(answer) - 1, index=ordinal))
        ordinal += 1
    return examples


def _folder(root: Path) -> Path:
    return root / "ROCStories" if (root / "ROCStories").is_dir() else root


def read_rocstories(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    if split == "test":
        return read_csv(require_file(_folder(root) / TEST_FILE, "Story Cloze test"), reader)
    examples = read_csv(require_file(_folder(root) / VAL_FILE, "Story Cloze validation"), reader)
    if len(examples) < 2:
        return examples if split == "train" else []
    train_idx, dev_idx = train_test_split_indices(len(examples), held_out_size(len(examples)), SPLIT_SEED)
    return [examples[i] for i in (train_idx if split == "train" else dev_idx)]


ROCSTORIES = TaskSpec(
    name="rocstories",
    title="ROCStories",
    transform="multiple_choice",
    read=read_rocstories,
    metrics=lambda: accuracy(2),
    labels=("1", "2"),
    description="Story Cloze Test: pick the right ending of a four-sentence story (accuracy)",
)

"""RACE (Lai et al., 2017): ``RACE/{train,dev,test}/{middle,high}/<n>.txt``, one JSON object per
article with parallel lists ``questions``, ``options`` (four per question) and ``answers``
(``A``-``D``). Each question becomes one multiple-choice example whose context is the article
followed by the question; ``data.subset`` picks ``all`` (default), ``middle`` or ``high``.
Accuracy is reported over the split and per subset (``acc_middle``, ``acc_high``).
"""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.errors import DataError
from gptkit.tasks.base import Example, RowReader, TaskSpec
from gptkit.tasks.metrics import accuracy

SUBSETS = ("all", "middle", "high")
GROUPS = ("middle", "high")
ANSWERS = "ABCD"


def _split_dir(root: Path, split: str) -> Path:
    base = root / "RACE" if (root / "RACE").is_dir() else root
    return base / split


def _file_key(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.name) if path.stem.isdigit() else (10**12, path.name)


def read_article(path: Path, reader: RowReader, group: int, first_index: int) -> list[Example]:
    """The questions of one RACE article file as examples."""
    try:
        record = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reader.bad(path, None, f"not a JSON file ({exc}); expected one RACE article object")
        return []
    if not isinstance(record, dict):
        reader.bad(path, None, "not a JSON object; expected keys article, questions, options, answers")
        return []
    missing = [k for k in ("article", "questions", "options", "answers") if k not in record]
    if missing:
        reader.bad(path, None, f"missing key(s) {', '.join(missing)}")
        return []
    article, questions, options, answers = (record[k] for k in ("article", "questions", "options", "answers"))
    if not (isinstance(questions, list) and isinstance(options, list) and isinstance(answers, list)):
        reader.bad(path, None, "questions, options and answers must be lists")
        return []
    if not len(questions) == len(options) == len(answers):
        reader.bad(
            path, None,
            f"{len(questions)} questions, {len(options)} option lists and {len(answers)} answers; expected equal counts",
        )
        return []
    if not isinstance(article, str) or not article.strip():
        reader.bad(path, None, "empty article")
        return []
    examples = []
    for q, (question, opts, answer) in enumerate(zip(questions, options, answers)):
        if not isinstance(opts, list) or len(opts) < 2 or not all(isinstance(o, str) and o.strip() for o in opts):
            reader.bad(path, None, f"question {q + 1}: expected a list of non-empty options, got {opts!r}")
            continue
        if answer not in ANSWERS[: len(opts)]:
            reader.bad(path, None, f"question {q + 1}: answer {answer!r} is not one of {list(ANSWERS[: len(opts)])}")
            continue
        examples.append(
            Example(
                article,
                str(question),
                choices=tuple(opts),
                label=ANSWERS.index(answer),
                index=first_index + len(examples),
                group=group,
            )
        )
    return examples


def read_race(root: Path, split: str, reader: RowReader, subset: str | None = "all") -> list[Example]:
    split_dir = _split_dir(root, split)
    if not split_dir.is_dir():
        raise DataError(f"missing RACE {split} folder {split_dir} (expected RACE/{split}/middle and RACE/{split}/high)")
    examples: list[Example] = []
    for group, name in enumerate(GROUPS):
        if subset not in ("all", name):
            continue
        folder = split_dir / name
        if not folder.is_dir():
            raise DataError(f"missing RACE folder {folder}")
        files = sorted((p for p in folder.iterdir() if p.suffix == ".txt"), key=_file_key)
        if not files:
            raise DataError(f"no RACE article files (*.txt) in {folder}")
        for path in files:
            examples.extend(read_article(path, reader, group, len(examples)))
    return examples


RACE = TaskSpec(
    name="race",
    title="RACE",
    transform="multiple_choice",
    read=read_race,
    metrics=lambda: accuracy(4),
    labels=tuple(ANSWERS),
    subsets=SUBSETS,
    groups=GROUPS,
    description="RACE reading comprehension, middle and high school exams (accuracy: middle, high, all)",
)

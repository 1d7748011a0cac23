"""COPA, Choice Of Plausible Alternatives (Roemmele et al., 2011), in either layout users download:

* SuperGLUE: ``COPA/{train,val,test}.jsonl`` with ``premise``, ``choice1``, ``choice2``,
  ``question`` (``cause``/``effect``), ``label`` (0/1; absent in test), ``idx``.
* The original XML: ``copa-dev.xml`` and ``copa-test.xml`` (also found under ``datasets/``),
  ``<item id asks-for most-plausible-alternative><p/><a1/><a2/></item>``. Train is the first 80%
  of the dev items and dev the last 20%, which for the 500 official dev items is SuperGLUE's
  400/100 split.

Multiple choice: the context is the premise followed by a question that spells out what is asked
("What was the cause of this?" or "What happened as a result?"), the two alternatives are the
candidates.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from gptkit.errors import DataError
from gptkit.tasks.base import Example, RowReader, TaskSpec, check_texts, read_lines, require_file
from gptkit.tasks.metrics import accuracy

QUESTIONS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}
JSONL = {"train": "train.jsonl", "dev": "val.jsonl", "test": "test.jsonl"}
TRAIN_FRACTION = 0.8


def _find(root: Path, name: str) -> Path | None:
    for folder in (root, root / "COPA", root / "datasets", root / "COPA-resources" / "datasets"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_jsonl(path: Path, reader: RowReader) -> list[Example]:
    examples = []
    for line, text in read_lines(path):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as exc:
            reader.bad(path, line, f"not a JSON object ({exc.msg}); expected one COPA item per line")
            continue
        if not isinstance(rec, dict) or any(k not in rec for k in ("premise", "choice1", "choice2", "question")):
            reader.bad(path, line, "expected a JSON object with premise, choice1, choice2, question")
            continue
        example = _example(path, line, reader, rec["premise"], rec["choice1"], rec["choice2"],
                           rec["question"], rec.get("label"), rec.get("idx", len(examples)), zero_based=True)
        if example is not None:
            examples.append(example)
    return examples


def _example(path, line, reader, premise, a1, a2, asks, label, index, zero_based) -> Example | None:
    if asks not in QUESTIONS:
        reader.bad(path, line, f"question {asks!r} is not 'cause' or 'effect'")
        return None
    if not check_texts(path, line, reader, premise=premise or "", choice1=a1 or "", choice2=a2 or ""):
        return None
    if label is not None:
        allowed = (0, 1) if zero_based else ("1", "2")
        if label not in allowed:
            reader.bad(path, line, f"label {label!r} is not one of {list(allowed)}")
            return None
        label = int(label) - (0 if zero_based else 1)
    try:
        index = int(index)
    except (TypeError, ValueError):
        reader.bad(path, line, f"id {index!r} is not an integer")
        return None
    return Example(premise.strip(), QUESTIONS[asks], (a1.strip(), a2.strip()), label=label, index=index)


def read_xml(path: Path, reader: RowReader) -> list[Example]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        reader.bad(path, line, f"not well-formed XML ({exc}); expected a <copa-corpus> file")
        return []
    if root.tag != "copa-corpus":
        raise DataError(f"{path}: root element is <{root.tag}>; expected <copa-corpus>")
    examples = []
    for item in root.iter("item"):
        where = f"item id={item.get('id')!r}"
        texts = {t: item.findtext(t) for t in ("p", "a1", "a2")}
        if any(v is None for v in texts.values()):
            reader.bad(path, None, f"{where}: expected <p>, <a1> and <a2>")
            continue
        example = _example(path, None, reader, texts["p"], texts["a1"], texts["a2"], item.get("asks-for"),
                           item.get("most-plausible-alternative"), item.get("id"), zero_based=False)
        if example is not None:
            examples.append(example)
    return examples


def read_copa(root: Path, split: str, reader: RowReader, subset: str | None = None) -> list[Example]:
    if (jsonl := _find(root, JSONL[split])) is not None:
        return read_jsonl(jsonl, reader)
    if split == "test" and (xml := _find(root, "copa-test.xml")) is not None:
        return read_xml(xml, reader)
    if split != "test" and (xml := _find(root, "copa-dev.xml")) is not None:
        items = read_xml(xml, reader)
        n_train = round(TRAIN_FRACTION * len(items))
        return items[:n_train] if split == "train" else items[n_train:]
    # Neither layout: name the SuperGLUE file, the one most users have.
    require_file(root / JSONL[split], f"COPA {split} (or copa-dev.xml / copa-test.xml)")
    return []


COPA = TaskSpec(
    name="copa",
    title="COPA",
    transform="multiple_choice",
    read=read_copa,
    metrics=lambda: accuracy(2),
    labels=("1", "2"),
    description="Choice Of Plausible Alternatives: the more plausible cause or effect (accuracy)",
)

"""Pretraining text sources: plain text, JSONL and CSV files, named directly, by glob, or by catalogue.

Every reader streams: text comes out in pieces of at most about ``PIECE_CHARS`` characters cut at
whitespace, so a file of any size (or a single enormous line) is read in bounded memory. Pieces
from one document concatenate back to it; BPE pre-tokenisation splits at whitespace anyway, so
encoding the pieces separately gives the same ids as encoding the whole document.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gptkit.errors import DataError

PIECE_CHARS = 1 << 12  # small pieces parallelise best: 64k-char pieces encode ~40% slower
SUFFIXES = {".txt": "txt", ".text": "txt", ".md": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Source:
    """One input file and how to read it."""

    path: Path
    fmt: str  # txt | jsonl | csv
    text_field: str = "text"

    def identity(self) -> dict:
        """What the token shards depend on: a changed size or modification time means rebuild."""
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "fmt": self.fmt, "text_field": self.text_field}


def resolve_sources(
    files: list[str], corpus: str | None, text_field: str, data_dir: str | os.PathLike
) -> list[Source]:
    """Expand globs and the catalogue corpus into an ordered list of sources, checking each exists."""
    sources: list[Source] = []
    if corpus:
        from gptkit.data.corpora import corpus_files, get_corpus

        entry = get_corpus(corpus)
        fmt = {"csv": "csv", "txt-dir": "txt"}.get(entry.fmt)
        if fmt is None:
            raise DataError(f"corpus '{corpus}' is a labelled set, not a pretraining corpus")
        sources += [Source(p, fmt, entry.text_field) for p in corpus_files(corpus, data_dir)]
    for pattern in files:
        expanded = os.path.expanduser(pattern)
        matches = sorted(glob.glob(expanded, recursive=True)) if glob.has_magic(expanded) else [expanded]
        if not matches:
            raise DataError(f"data.files pattern '{pattern}' matches no file")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                raise DataError(f"data.files entry {path} is a directory; name its files, e.g. '{path}/*.txt'")
            if not path.is_file():
                raise DataError(f"corpus file {path} does not exist (from data.files: '{pattern}')")
            fmt = SUFFIXES.get(path.suffix.lower(), "txt")
            sources.append(Source(path, fmt, text_field))
    if not sources:
        raise DataError("no pretraining text given: set data.corpus (e.g. news) or data.files (paths or globs)")
    return sources


def _pieces(text: str) -> Iterator[str]:
    """Cut a long string at whitespace into pieces of about PIECE_CHARS."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        cut = text.rfind(" ", start + PIECE_CHARS // 2, start + PIECE_CHARS)
        cut = start + PIECE_CHARS if cut == -1 else cut + 1
        yield text[start:cut]
        start = cut
    if start < len(text):
        yield text[start:]


def _read_txt(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        carry = ""
        while block := fh.read(PIECE_CHARS):
            block = carry + block
            cut = max(block.rfind(" "), block.rfind("\n"))
            if cut <= 0:
                carry = block if len(block) < 4 * PIECE_CHARS else ""
                if not carry:
                    yield block
                continue
            carry = block[cut + 1 :]
            yield block[: cut + 1]
        if carry:
            yield carry


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object with a string field '{field}' "
                    "(set data.text_field to the key that holds the text)"
                )
            yield from _pieces(record[field] + "\n")


def _read_csv(path: Path, field: str) -> Iterator[str]:
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, strict=True)
        try:
            if reader.fieldnames is None or field not in reader.fieldnames:
                raise DataError(
                    f"{path}: no column '{field}' (columns: {reader.fieldnames}); set data.text_field"
                )
            for row in reader:
                if row[field]:
                    yield from _pieces(row[field] + "\n")
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc}); check its quoting") from None


def read_source(source: Source) -> Iterator[str]:
    """Text pieces of one source, in order. Invalid UTF-8 is an error naming the file."""
    readers = {"txt": lambda: _read_txt(source.path), "jsonl": lambda: _read_jsonl(source.path, source.text_field),
               "csv": lambda: _read_csv(source.path, source.text_field)}
    try:
        yield from readers[source.fmt]()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source.path}: not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 "
            "or remove it from data.files"
        ) from None


def read_sources(sources: list[Source]) -> Iterator[str]:
    for source in sources:
        yield from read_source(source)

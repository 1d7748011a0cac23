"""Pretraining text sources: plain text, JSONL and CSV files, named directly, by glob, or by catalogue.

Every reader streams: text comes out in pieces of at most about ``PIECE_CHARS`` characters cut at
whitespace, so a file of any size (or a single enormous line) is read in bounded memory. Pieces
from one document concatenate back to it; BPE pre-tokenisation splits at whitespace anyway, so
encoding the pieces separately gives the same ids as encoding the whole document.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
    files: list[str], corpus: str | None, text_field: str, data_dir: str | os.PathLike | None = None
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


def utf8_error_at(path: Path | str) -> tuple[int, int, str] | None:
    """(line, byte offset, reason) of the first bytes in ``path`` that are not UTF-8, else None.

    Text-mode reading decodes in large blocks, so its UnicodeDecodeError cannot say which line is
    bad; this scans the file again, in bounded memory, counting lines the way Python's universal
    newlines split them (``\\n``, ``\\r\\n`` or ``\\r``), as every reader here does."""
    line, base, pending, after_cr = 1, 0, b"", False
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            data = pending + chunk
            bad: UnicodeDecodeError | None = None
            try:
                _, used = codecs.utf_8_decode(data, "strict", not chunk)
            except UnicodeDecodeError as exc:
                used, bad = exc.start, exc
            seg = data[:used]
            breaks = seg.count(b"\n") + seg.count(b"\r") - seg.count(b"\r\n")
            line += breaks - (1 if after_cr and seg.startswith(b"\n") else 0)
            after_cr = seg.endswith(b"\r") if seg else after_cr
            if bad is not None:
                return line, base + used, bad.reason
            if not chunk:
                return None
            base, pending = base + used, data[used:]


def utf16_message(path: Path | str, sample_bytes: int = 4096) -> str | None:
    """Why ``path`` looks like UTF-16 rather than UTF-8, with the command that converts it; else None.

    A UTF-16 file starts with a byte-order mark, or, without one, its ASCII characters leave a NUL in
    every other byte: such a file may even decode as UTF-8 (NUL is valid UTF-8) and then fail later
    with a confusing message (a CSV or TSV "has no column 'sentence'"), or be trained on as garbage."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(sample_bytes)
    except OSError:
        return None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        how, codec = "it starts with a UTF-16 byte-order mark", "UTF-16"
    else:
        pairs = len(head) // 2
        even, odd = head[0 : 2 * pairs : 2].count(0), head[1 : 2 * pairs : 2].count(0)
        if pairs < 2 or not (max(even, odd) >= 0.6 * pairs and min(even, odd) <= 0.05 * pairs):
            return None
        endian = "little" if odd > even else "big"
        how = f"{endian}-endian, no byte-order mark: every other byte is NUL"
        codec = "UTF-16LE" if odd > even else "UTF-16BE"
    src, tmp = shlex.quote(str(path)), shlex.quote(f"{path}.utf8")
    return (f"{path}:1: not UTF-8 text but UTF-16 ({how}); convert it in place, e.g. "
            f"`iconv -f {codec} -t UTF-8 {src} > {tmp} && mv {tmp} {src}`")


def not_utf8_message(path: Path | str, exc: UnicodeDecodeError) -> str:
    """``path:line: not UTF-8 text (byte N: reason)``, the line found by :func:`utf8_error_at`
    (or, for a UTF-16 file, :func:`utf16_message`)."""
    if (utf16 := utf16_message(path)) is not None:
        return utf16
    found = utf8_error_at(path)
    if found is None:  # the file changed under us: say what the decoder said
        return f"{path}: not UTF-8 text ({exc.reason})"
    line, offset, reason = found
    return f"{path}:{line}: not UTF-8 text (byte {offset}: {reason})"


@dataclass
class SourceStats:
    """Rows of one JSONL/CSV source and how many had an empty text (kept out of the corpus, counted
    and reported; a row without the text field at all is an error instead)."""

    path: str
    text_field: str
    rows: int = 0
    empty: int = 0
    first_empty_line: int | None = None

    def count(self, line: int, empty: bool) -> None:
        self.rows += 1
        if empty:
            self.empty += 1
            if self.first_empty_line is None:
                self.first_empty_line = line

    def as_dict(self) -> dict:
        return asdict(self)


def describe_empty_rows(entries: list[dict]) -> str | None:
    """One line on the rows skipped for an empty text (``SourceStats.as_dict()`` of each file with
    some), or None when there were none."""
    entries = [e for e in entries if e.get("empty")]
    if not entries:
        return None
    total = sum(e["empty"] for e in entries)
    files = "; ".join(
        f"{Path(e['path']).name}: {e['empty']:,} of {e['rows']:,} ({100 * e['empty'] / max(e['rows'], 1):.0f}%), "
        f"first at {e['path']}:{e['first_empty_line']}"
        for e in entries[:5]
    ) + (f"; and {len(entries) - 5} more file(s)" if len(entries) > 5 else "")
    return f"{total:,} row(s) with an empty text field skipped ({files})"


def _read_txt(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
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


def _read_jsonl(path: Path, field: str, stats: SourceStats) -> Iterator[str]:
    with open(path, encoding="utf-8-sig") as fh:  # -sig: a UTF-8 BOM at the start is not part of line 1
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            text = record.get(field, 0) if isinstance(record, dict) else 0
            if text is not None and not isinstance(text, str):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object with a string field '{field}' "
                    "(set data.text_field to the key that holds the text)"
                )
            stats.count(lineno, not text)  # null or "": an empty document, counted
            if text:
                yield from _pieces(text + "\n")


def _read_csv(path: Path, field: str, stats: SourceStats) -> Iterator[str]:
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: Excel writes a BOM before the header
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader, None)
            if header is None or field not in header:
                raise DataError(f"{path}: no column '{field}' (columns: {header}); set data.text_field")
            column = header.index(field)
            for row in reader:
                if not row or (len(row) == 1 < len(header) and not row[0].strip()):
                    continue  # a blank line holds no row
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: expected {len(header)} comma-separated fields "
                        f"({', '.join(header)}), found {len(row)}; quote a field that contains commas "
                        "or line breaks, and give every row every column"
                    )
                text = row[column]
                stats.count(reader.line_num, not text)  # an empty cell: an empty document, counted
                if text:
                    yield from _pieces(text + "\n")
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc}); check its quoting") from None


def read_source(source: Source, stats: SourceStats | None = None) -> Iterator[str]:
    """Text pieces of one source, in order. Invalid UTF-8 is an error naming the file and line.
    JSONL/CSV rows whose text is empty (or null) add nothing and are counted in ``stats``."""
    stats = stats if stats is not None else SourceStats(str(source.path), source.text_field)
    readers = {"txt": lambda: _read_txt(source.path),
               "jsonl": lambda: _read_jsonl(source.path, source.text_field, stats),
               "csv": lambda: _read_csv(source.path, source.text_field, stats)}
    if (utf16 := utf16_message(source.path)) is not None:  # it may decode as UTF-8, NULs and all
        raise DataError(f"{utf16} (or remove it from data.files)")
    try:
        yield from readers[source.fmt]()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{not_utf8_message(source.path, exc)}; convert it to UTF-8 or remove it from data.files"
        ) from None


def read_sources(sources: list[Source], stats: list[SourceStats] | None = None) -> Iterator[str]:
    """Text pieces of all sources, in order; with ``stats``, one :class:`SourceStats` per JSONL/CSV
    source read is appended to it."""
    for source in sources:
        one = SourceStats(str(source.path), source.text_field)
        if stats is not None and source.fmt != "txt":
            stats.append(one)
        yield from read_source(source, one)

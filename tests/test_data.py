import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gptkit.data import sources as src
from gptkit.data.pretrain import PretrainDataModule, TokenStream
from gptkit.data.shards import build_shards, load_shards
from gptkit.data.sources import Source, SourceStats, read_source, resolve_sources
from gptkit.errors import DataError
from gptkit.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    from conftest import NEWS

    return Tokenizer.train([NEWS.read_text()], vocab_size=500)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_pieces_reassemble_exactly(tmp_path, monkeypatch, news_text):
    monkeypatch.setattr(src, "PIECE_CHARS", 1000)
    path = write(tmp_path / "a.txt", news_text)
    pieces = list(read_source(Source(path, "txt")))
    assert len(pieces) > 100 and max(map(len, pieces)) <= 4000
    assert "".join(pieces) == news_text


def test_huge_line_without_spaces_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(src, "PIECE_CHARS", 100)
    path = write(tmp_path / "a.txt", "x" * 10_000)
    pieces = list(read_source(Source(path, "txt")))
    assert "".join(pieces) == "x" * 10_000 and max(map(len, pieces)) <= 400


def test_encoding_pieces_equals_encoding_whole(tmp_path, monkeypatch, tok, news_text):
    monkeypatch.setattr(src, "PIECE_CHARS", 500)
    path = write(tmp_path / "a.txt", news_text[:20000])
    pieces = list(read_source(Source(path, "txt")))
    assert sum(tok.encode_batch(pieces), []) == tok.encode(news_text[:20000])


def test_jsonl_and_csv_sources(tmp_path):
    j = write(tmp_path / "a.jsonl", '{"text": "hello world"}\n\n{"text": "second doc"}\n')
    assert "".join(read_source(Source(j, "jsonl"))) == "hello world\nsecond doc\n"
    c = write(tmp_path / "a.csv", 'id,body\n1,"a, quoted ""text"""\n2,plain\n')
    assert "".join(read_source(Source(c, "csv", "body"))) == 'a, quoted "text"\nplain\n'


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"text": "ok"}\n{broken\n', r"bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '{"body": "ok"}\n', r"bad.jsonl:1: expected a JSON object with a string field 'text'"),
        ("bad.csv", "a,b\n1,2\n", r"no column 'text'"),
    ],
)
def test_malformed_sources_name_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    fmt = src.SUFFIXES[path.suffix]
    with pytest.raises(DataError, match=message):
        list(read_source(Source(path, fmt)))


@pytest.mark.parametrize("name", ["a.csv", "a.txt", "a.jsonl"])
def test_utf16_source_without_bom_is_named(tmp_path, name):
    # it decodes as UTF-8 (NUL is valid): a CSV "had no column 'text'", a text file was trained on, NULs and all
    path = tmp_path / name
    path.write_bytes('id,text\n1,"{""text"": ""hello""}"\n'.encode("utf-16-le"))
    with pytest.raises(DataError, match=rf"{name}:1: not UTF-8 text but UTF-16 \(little-endian, no byte-order mark"):
        list(read_source(Source(path, src.SUFFIXES[path.suffix])))


def test_csv_empty_text_cells_are_counted_and_reported(tmp_path, tok, news_text, capsys):
    # 1,000 of 3,000 rows with an empty text cell: kept out of the corpus, but counted and reported
    words = news_text.replace('"', "").split()
    rows = [f'{i},"{" ".join(words[i % 500 : i % 500 + 8])}"' if i % 3 else f"{i}," for i in range(3000)]
    path = write(tmp_path / "a.csv", "id,text\n" + "\n".join(rows) + "\n")
    stats = SourceStats(str(path), "text")
    assert "" not in list(read_source(Source(path, "csv"), stats))
    assert (stats.rows, stats.empty, stats.first_empty_line) == (3000, 1000, 2)
    dm = PretrainDataModule([Source(path, "csv")], tok, tmp_path / "shards", n_ctx=32, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    expected = f"1,000 row(s) with an empty text field skipped (a.csv: 1,000 of 3,000 (33%), first at {path}:2)"
    assert expected in capsys.readouterr().err  # when tokenising
    assert expected in dm.summary()  # and on every run, also when the shards are reused
    assert json.loads((dm.shards.root / "meta.json").read_text())["empty_rows"][0]["empty"] == 1000


def test_jsonl_null_or_empty_text_is_counted(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"text": "one"}\n{"text": null}\n{"text": ""}\n{"text": "two"}\n')
    stats = SourceStats(str(path), "text")
    assert "".join(read_source(Source(path, "jsonl"), stats)) == "one\ntwo\n"
    assert (stats.rows, stats.empty, stats.first_empty_line) == (4, 2, 2)


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,text\n1,fine\n2\n", r"short\.csv:3: expected 2 comma-separated fields \(id, text\), found 1"),
        ("id,text\n1,fine\n2,a, b\n", r"short\.csv:3: expected 2 comma-separated fields \(id, text\), found 3"),
    ],
    ids=["missing-column", "extra-column"],
)
def test_csv_row_with_wrong_field_count_is_an_error(tmp_path, content, message):
    path = write(tmp_path / "short.csv", content)
    with pytest.raises(DataError, match=message):
        list(read_source(Source(path, "csv")))


def test_csv_blank_lines_are_not_rows(tmp_path):
    path = write(tmp_path / "a.csv", "id,text\n1,one\n\n   \n2,two\n")
    assert "".join(read_source(Source(path, "csv"))) == "one\ntwo\n"


@pytest.mark.parametrize("name, content", [
    ("a.csv", "text,id\nhello,1\n"), ("a.jsonl", '{"text": "hello"}\n'), ("a.txt", "hello\n"),
])
def test_utf8_bom_is_accepted(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    assert "".join(read_source(Source(path, src.SUFFIXES[path.suffix]))) == "hello\n"


@pytest.mark.parametrize("name, line", [("a.txt", "word {i}"), ("a.csv", "{i},word"), ("a.jsonl", '{{"text": "{i}"}}')])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_invalid_utf8_names_the_line(tmp_path, name, line, newline):
    header = {"a.csv": "id,text" + newline}.get(name, "")
    lines = [line.format(i=i) for i in range(5000)]
    lines[3998] = lines[3998].replace("word", "w\udcffrd").replace('"3998"', '"\udcff"')
    path = tmp_path / name
    path.write_bytes((header + newline.join(lines) + newline).encode("utf-8", "surrogateescape"))
    number = 3999 + bool(header)
    with pytest.raises(DataError, match=rf"{name}:{number}: not UTF-8 text \(byte \d+: invalid start byte\)"):
        list(read_source(Source(path, src.SUFFIXES[path.suffix])))


def test_invalid_utf8_is_an_error(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"good text \xff\xfe\x00 garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        list(read_source(Source(path, "txt")))


def test_resolve_sources_globs_and_missing(tmp_path):
    write(tmp_path / "b.txt", "b")
    write(tmp_path / "a.txt", "a")
    found = resolve_sources([str(tmp_path / "*.txt")], None, "text", tmp_path)
    assert [s.path.name for s in found] == ["a.txt", "b.txt"]
    with pytest.raises(DataError, match="does not exist"):
        resolve_sources([str(tmp_path / "nope.txt")], None, "text", tmp_path)
    with pytest.raises(DataError, match="matches no file"):
        resolve_sources([str(tmp_path / "*.md")], None, "text", tmp_path)
    with pytest.raises(DataError, match="no pretraining text"):
        resolve_sources([], None, "text", tmp_path)


def test_shards_build_reuse_and_rebuild(tmp_path, tok, news_text):
    path = write(tmp_path / "a.txt", news_text)
    sources = [Source(path, "txt")]
    shards = build_shards(sources, tok, tmp_path / "shards", shard_tokens=5000)
    assert len(shards.paths) > 3 and shards.dtype == np.uint16
    stream = TokenStream(shards)
    assert stream.slice(0, len(stream)).tolist() == tok.encode(news_text)
    assert stream.slice(4990, 5010).tolist() == tok.encode(news_text)[4990:5010]  # across a shard boundary
    again = build_shards(sources, tok, tmp_path / "shards", shard_tokens=5000)
    assert again.root == shards.root  # reused
    write(path, news_text + " more text")
    os.utime(path, ns=(1, 1))
    changed = build_shards([Source(path, "txt")], tok, tmp_path / "shards", shard_tokens=5000)
    assert changed.root != shards.root and changed.n_tokens > shards.n_tokens


def test_truncated_or_foreign_shards_are_refused(tmp_path, tok, news_text):
    path = write(tmp_path / "a.txt", news_text)
    shards = build_shards([Source(path, "txt")], tok, tmp_path / "shards")
    with pytest.raises(DataError, match="built with tokenizer"):
        load_shards(shards.root, "0000000000000000")
    data = shards.paths[0].read_bytes()
    shards.paths[0].write_bytes(data[:-10])
    with pytest.raises(DataError, match="damaged"):
        load_shards(shards.root, tok.fingerprint)
    shards.paths[0].write_bytes(data[:-2] + b"\x00\x00" if data[-2:] != b"\x00\x00" else data[:-2] + b"\x01\x00")
    with pytest.raises(DataError, match="checksum"):
        load_shards(shards.root, tok.fingerprint)


def test_empty_corpus_is_an_error_and_leaves_nothing(tmp_path, tok):
    path = write(tmp_path / "empty.txt", "")
    with pytest.raises(DataError, match="corpus is empty"):
        build_shards([Source(path, "txt")], tok, tmp_path / "shards")
    assert list((tmp_path / "shards").iterdir()) == []


def test_pretrain_datamodule_blocks_and_split(tmp_path, tok, news_text):
    path = write(tmp_path / "a.txt", news_text)
    dm = PretrainDataModule([Source(path, "txt")], tok, tmp_path / "shards", n_ctx=32, batch_size=4,
                            val_fraction=0.05)
    dm.prepare_data()
    dm.setup("fit")
    ids = tok.encode(news_text)
    n_val = int(len(ids) * 0.05)
    assert len(dm.train_set) == (len(ids) - n_val - 1) // 32
    block = dm.train_set[3]
    assert block.dtype == torch.int64 and block.tolist() == ids[96:129]
    assert dm.val_set[0].tolist() == ids[len(ids) - n_val : len(ids) - n_val + 33]
    x = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 33)
    meta = json.loads((dm.shards.root / "meta.json").read_text())
    assert meta["n_tokens"] == len(ids) and meta["tokenizer"] == tok.fingerprint


def test_context_longer_than_corpus(tmp_path, tok):
    path = write(tmp_path / "a.txt", "only a few words here")
    dm = PretrainDataModule([Source(path, "txt")], tok, tmp_path / "shards", n_ctx=512, batch_size=4)
    with pytest.raises(DataError, match="too few to fill one training and one validation block"):
        dm.setup("fit")

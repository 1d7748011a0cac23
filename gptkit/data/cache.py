"""Where gptkit keeps what it downloads and derives: one per-user cache, shared by every run.

Corpora (``corpora/``, ``downloads/``), trained tokenizers (``tokenizers/``) and token shards
(``shards/``) depend only on their inputs, which their folder names hash, so runs started from any
folder reuse them. Concurrent runs share the cache safely: a corpus is fetched under a file lock,
and tokenizers and shard sets are written under temporary names and renamed when complete.

The folder is, first found: the recipe's ``run.data_dir``; the ``GPTKIT_CACHE`` environment
variable; the platform's per-user cache folder plus ``gptkit`` (``$XDG_CACHE_HOME/gptkit``, by
default ``~/.cache/gptkit``, on Linux; ``~/Library/Caches/gptkit`` on macOS;
``%LOCALAPPDATA%\\gptkit`` on Windows).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gptkit.errors import ConfigError

ENV_VAR = "GPTKIT_CACHE"


def platform_cache_dir() -> Path:
    """The platform's per-user cache folder for gptkit, ignoring ``GPTKIT_CACHE`` and recipes."""
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password-database entry (some containers)
        raise ConfigError(
            f"cannot find a per-user cache folder (no home directory); set {ENV_VAR}=/some/folder "
            "or run.data_dir=/some/folder"
        ) from None
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else home / ".cache"  # the XDG spec ignores a relative value
    return base / "gptkit"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder for a run: ``data_dir`` (``run.data_dir``) when set, else ``$GPTKIT_CACHE``,
    else :func:`platform_cache_dir`. A relative ``data_dir`` is relative to the current folder."""
    if data_dir is not None and str(data_dir).strip():
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return platform_cache_dir()


def describe_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """Where the cache is and what chose it, for ``gptkit data list``."""
    path = resolve_data_dir(data_dir).absolute()
    if data_dir is not None and str(data_dir).strip():
        why = "from --data-dir"
    elif os.environ.get(ENV_VAR, "").strip():
        why = f"from {ENV_VAR}"
    else:
        why = f"the per-user default; set {ENV_VAR} or a recipe's run.data_dir to move it"
    return f"{path} ({why})"

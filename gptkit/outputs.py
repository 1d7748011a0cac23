"""Folders that a verb writes into (``gptkit export``, ``gptkit import``, ``gptkit glue --out``).

They are checked before anything is written, so a mistake in the output path never leaves a
half-written folder or replaces files that were already there. No heavy imports: the CLI uses
this before it loads torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gptkit.errors import GptkitError


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder to write into; refused when it, or a folder above it, is a file.

    ``what`` names the argument in the message, e.g. ``"--out"`` or ``"export's output folder"``.
    """
    out = Path(path).expanduser()
    for p in (out, *out.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():
            problem = "is an existing file, not a folder" if p == out else f"is not a usable folder: {p} is a file"
            raise GptkitError(f"{what} {path} {problem}; pass a new or empty folder (nothing was written)")
    return out


def refuse_non_empty(out: Path, what: str, writes: Iterable[str], overwrite_flag: str) -> None:
    """Refuse a folder that already holds anything, unless ``overwrite_flag`` was given."""
    if not out.is_dir():
        return
    present = [p.name for p in out.iterdir()]
    if present:
        raise GptkitError(
            f"{what} {out} is not empty (it holds {_listing(present)}); write into a new or empty "
            f"folder, or pass {overwrite_flag} to replace the files written there ({', '.join(writes)})"
        )


def make_folder(out: Path, what: str) -> Path:
    """Create ``out`` (and its parents), with a clear error when the file system refuses."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GptkitError(f"cannot create {what} {out} ({exc.strerror or exc}); pass another folder") from None
    return out


def refuse_foreign_files(out: Path, what: str, writes: Iterable[str], why: str) -> None:
    """Refuse a folder that holds entries other than ``writes`` (the files about to be written)."""
    if not out.is_dir():
        return
    foreign = {p.name for p in out.iterdir()} - set(writes)
    if foreign:
        raise GptkitError(
            f"{what} {out} already holds {_listing(foreign)}, which this command would not write ({why}); "
            f"delete {'it' if len(foreign) == 1 else 'them'}, or pass a new or empty folder (nothing was written)"
        )

"""What gptkit writes: folders that a verb writes into (``gptkit export``, ``gptkit import``,
``gptkit glue --out``), and files replaced all at once or not at all.

The folders are checked before anything is written, so a mistake in the output path never leaves a
half-written folder or replaces files that were already there; each file (checkpoints, tokenizers,
configs, results, predictions, exported models) is written to a temporary file beside it and renamed
over it, so a crash or a full disk leaves the previous file whole. No heavy imports: the CLI uses
this before it loads torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from gptkit.errors import ConfigError, GptkitError


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


def read_manifest(path: Path, key: str, unreadable: str) -> tuple[dict, object]:
    """A folder's JSON manifest (``sweep.json``, ``study.json``) and its ``key`` entry, the record of what
    made the folder; a file that cannot be read, is not JSON or lacks ``key`` is ``ConfigError(unreadable)``."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return manifest, manifest[key]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(unreadable) from None


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the file system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``path`` when the block ends, or leaves it untouched.

    The data go to a hidden temporary file beside ``path`` (``.NAME.tmp-HOST-PID``), are flushed to disk,
    and the file is renamed over ``path``; if the block raises, the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process, also among the nodes of a run that share a file system
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` as UTF-8 with ``\\n`` line ends, replacing ``path`` all at once."""
    atomic_write_bytes(path, text.encode("utf-8"))


# -- a run folder's layout (<run.dir>/<run.name>/) --------------------------------------------------
CHECKPOINTS_DIR = "checkpoints"  # last.ckpt and the best-step*.ckpt files of `gptkit fit`
RESULTS_DIR = "results"  # <verb>.json of `gptkit validate` / `gptkit test`
PREDICTIONS_DIR = "predictions"  # `gptkit predict`'s files, named as GLUE submissions expect
TENSORBOARD_DIR = "tensorboard"  # version_N: the curves of each fit


def checkpoint_run_folder(checkpoint: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint file sits in (the folder above its ``checkpoints/``), or None."""
    path = Path(checkpoint).expanduser().resolve()
    return path.parent.parent if path.parent.name == CHECKPOINTS_DIR else None


def write_results(folder: Path, verb: str, metrics: dict[str, float], checkpoint: str | os.PathLike | None,
                  step: int | None) -> Path:
    """``<run folder>/results/<verb>.json``: ``{"checkpoint", "step", "metrics"}``, the metrics and the
    checkpoint (and its update) they score."""
    path = folder / RESULTS_DIR / f"{verb}.json"
    record = {"checkpoint": str(Path(checkpoint).expanduser().resolve()) if checkpoint else None, "step": step,
              "metrics": dict(sorted(metrics.items()))}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_results(path: Path) -> tuple[str | None, object]:
    """(the checkpoint scored, the metrics as found) of a results file; files written before the
    checkpoint was recorded hold the metrics alone. Raises ValueError / OSError as ``json`` does."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(raw, dict) and isinstance(raw.get("metrics"), dict):
        scored = raw.get("checkpoint")
        return (scored if isinstance(scored, str) else None), raw["metrics"]
    return None, raw


@contextlib.contextmanager
def held_folder(folder: Path, what: str, hint: str = "wait for it") -> Iterator[None]:
    """Hold ``folder`` for one command at a time (an flock on its ``.lock`` file: a process that dies holds
    nothing); a second command is refused with a :class:`~gptkit.errors.ConfigError` naming ``what``."""
    import fcntl

    from gptkit.errors import ConfigError

    with open(folder / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{what} folder {folder} is in use by another `gptkit {what}` that has not ended; "
                              f"{hint}") from None
        except OSError:  # a file system without locks: each run folder is still held by its fit
            pass
        yield

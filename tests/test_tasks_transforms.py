"""The paper's input transforms, the truncation rule and the batch layout, on token ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from finetune_helpers import tiny_tokenizer

from gptkit.errors import ConfigError
from gptkit.tasks.base import (
    Example,
    SpecialIds,
    classification_transform,
    clip_side,
    collate,
    encode,
    entailment_transform,
    multiple_choice_transform,
    pair_caps,
    similarity_transform,
)

S, D, C = 1000, 1001, 1002
SP = SpecialIds(S, D, C)


def r(n: int, base: int = 0) -> list[int]:
    return list(range(base, base + n))


def test_classification_layout():
    (seq,), cut = classification_transform([5, 6, 7], 16, SP)
    assert seq == [S, 5, 6, 7, C] and not cut


def test_entailment_layout():
    (seq,), cut = entailment_transform([5, 6], [7, 8, 9], 16, SP)
    assert seq == [S, 5, 6, D, 7, 8, 9, C] and not cut


def test_similarity_both_orderings():
    seqs, cut = similarity_transform([5, 6], [7], 16, SP)
    assert seqs == [[S, 5, 6, D, 7, C], [S, 7, D, 5, 6, C]] and not cut


def test_multiple_choice_layout_with_question():
    seqs, cut = multiple_choice_transform([1, 2], [3], [[7], [8, 9]], 16, SP)
    assert seqs == [[S, 1, 2, 3, D, 7, C], [S, 1, 2, 3, D, 8, 9, C]] and not cut


def test_pair_caps_match_released_rule_when_both_sides_are_long():
    # Released ROCStories code: each side clipped to n_ctx // 2 - 2.
    assert pair_caps(1000, 1000, 512) == (254, 254)
    # A short side keeps everything and lends its room to the other side.
    assert pair_caps(10, 1000, 512) == (254, 498)
    for a in range(0, 40):
        for b in range(0, 40):
            ca, cb = pair_caps(a, b, 32)
            assert min(a, ca) + min(b, cb) + 3 <= 32
            if a + b <= 2 * (32 // 2 - 2):
                assert ca >= a and cb >= b  # nothing is cut when both fit


def test_truncation_is_counted_and_fits_n_ctx():
    (seq,), cut = classification_transform(r(50), 16, SP)
    assert len(seq) == 16 and cut and seq[-1] == C
    (seq,), cut = entailment_transform(r(50), r(50, 100), 16, SP)
    assert len(seq) <= 16 and cut
    assert seq == [S, *r(6), D, *r(6, 100), C]  # each side to 16 // 2 - 2 = 6


def test_multiple_choice_keeps_question_and_cuts_passage_end():
    seqs, cut = multiple_choice_transform(r(50), [90, 91], [[7], [8, 9]], 32, SP)
    assert cut
    for seq, answer in zip(seqs, ([7], [8, 9])):
        assert len(seq) <= 32
        d = seq.index(D)
        assert seq[d - 2 : d] == [90, 91]  # the question survives whole
        assert seq[1] == 0  # the passage keeps its beginning
        assert seq[d + 1 : -1] == answer
    assert seqs[0][: seqs[0].index(D)] == seqs[1][: seqs[1].index(D)]  # same context for all


def test_clip_side():
    assert clip_side([1, 2, 3], 5, [9]) == [1, 2, 3, 9]
    assert clip_side([1, 2, 3], 3, [9]) == [1, 2, 9]
    assert clip_side([1, 2, 3], 1, [9, 8]) == [9]


def test_tiny_n_ctx_rejected():
    with pytest.raises(ConfigError):
        classification_transform([1], 4, SP)


def test_encode_uses_tokenizer_ids():
    tok = tiny_tokenizer()
    ex = Example("a charming journey", "unflinchingly bleak", label=1, index=7)
    (enc,) = encode([ex], "entailment", tok, 64)
    a, b = tok.encode("a charming journey"), tok.encode("unflinchingly bleak")
    assert enc.sequences[0].tolist() == [tok.start_id, *a, tok.delimiter_id, *b, tok.classify_id]
    assert enc.extract_pos == [len(a) + len(b) + 2]
    assert (enc.label, enc.index, enc.truncated) == (1, 7, False)


def _enc(seqs, label, index=0, group=None):
    from gptkit.tasks.base import Encoded

    return Encoded([np.asarray(s, dtype=np.int32) for s in seqs], [len(s) - 1 for s in seqs], label, index, group)


def test_collate_layout():
    batch = collate([_enc([[S, 5, D, 6, C], [S, 7, D, 8, 9, C]], 1, 3), _enc([[S, 4, C]], None, 4, group=1)])
    assert batch["input_ids"].shape == (2, 2, 6)
    assert batch["input_ids"][0, 0].tolist() == [S, 5, D, 6, C, 0]
    assert batch["lm_targets"][0, 0].tolist() == [5, D, 6, C, -100, -100]
    assert batch["lm_targets"][0, 1].tolist() == [7, D, 8, 9, C, -100]
    assert batch["lm_targets"][1, 1].tolist() == [-100] * 6  # padded candidate
    assert batch["extract_pos"].tolist() == [[4, 5], [2, 0]]
    assert batch["choice_mask"].tolist() == [[True, True], [True, False]]
    assert batch["labels"].tolist() == [1, -1] and batch["labels"].dtype == torch.long
    assert batch["index"].tolist() == [3, 4]
    assert batch["group"].tolist() == [-1, 1]
    ids, pos = batch["input_ids"], batch["extract_pos"]
    assert (ids.gather(2, pos.unsqueeze(-1)).squeeze(-1)[batch["choice_mask"]] == C).all()


def test_collate_regression_labels():
    batch = collate([_enc([[S, C]], 3.8), _enc([[S, C]], None)], regression=True)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"][0].item() == pytest.approx(3.8) and math.isnan(batch["labels"][1].item())
    assert "group" not in batch

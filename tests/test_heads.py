"""Task heads on tiny configs: shapes, init, masking, shared dropout, swap invariance, losses."""

from __future__ import annotations

import pytest
import torch
from finetune_helpers import tiny_tokenizer

from gptkit.heads import (
    ClassificationHead,
    MultipleChoiceHead,
    SimilarityHead,
    build_head,
    gather_extract,
)
from gptkit.model import GPT, GPTConfig
from gptkit.tasks import get_task
from gptkit.tasks.base import Example, SpecialIds, collate, encode

C = 16


def test_build_head_kinds_and_shapes():
    x = torch.randn(3, 1, C)
    assert isinstance(build_head("entailment", C, 3), ClassificationHead)
    assert build_head("classification", C, 3)(x).shape == (3, 3)
    assert build_head("similarity", C, 1)(torch.randn(3, 2, C)).shape == (3, 1)
    assert build_head("multiple_choice", C, 1)(torch.randn(3, 5, C)).shape == (3, 5)
    with pytest.raises(ValueError):
        build_head("ranking", C, 1)


def test_head_init():
    torch.manual_seed(0)
    head = build_head("classification", 256, 64)
    assert head.linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (head.linear.bias == 0).all()


def test_multiple_choice_masks_padded_candidates():
    head = MultipleChoiceHead(C).eval()
    mask = torch.tensor([[True, True, False], [True, True, True]])
    scores = head(torch.randn(2, 3, C), mask)
    assert scores[0, 2] == float("-inf") and torch.isfinite(scores[1]).all()
    probs = scores.softmax(-1)
    assert probs[0, 2] == 0 and torch.allclose(probs.sum(-1), torch.ones(2))
    loss = get_task("race").loss(scores, torch.tensor([1, 2]))
    assert torch.isfinite(loss)


def test_multiple_choice_dropout_mask_shared_across_choices():
    head = MultipleChoiceHead(C, dropout=0.5).train()
    same = torch.randn(4, 1, C).expand(4, 3, C)  # identical candidates
    scores = head(same, torch.ones(4, 3, dtype=torch.bool))
    assert torch.allclose(scores, scores[:, :1].expand_as(scores))
    head.eval()
    assert torch.allclose(head(same), head.linear(same).squeeze(-1))  # no dropout in eval


def test_similarity_head_is_invariant_to_order():
    head = SimilarityHead(C, 2).eval()
    x = torch.randn(5, 2, C)
    assert torch.allclose(head(x), head(x.flip(1)))


def tiny_gpt(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab_size, n_ctx=64, n_layer=2, n_head=2, n_embd=C,
                    embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    return GPT(cfg).eval()


def logits_for(model, head, batch):
    B, K, T = batch["input_ids"].shape
    hidden = model(batch["input_ids"].view(B * K, T))
    return head(gather_extract(hidden, batch["extract_pos"]), batch["choice_mask"])


def test_similarity_through_backbone_is_swap_invariant():
    tok = tiny_tokenizer()
    model, head = tiny_gpt(tok.vocab_size), SimilarityHead(C, 1).eval()
    a, b = "A plane is taking off.", "An air plane is taking off."
    ab = collate(encode([Example(a, b, label=5.0)], "similarity", tok, 64), regression=True)
    ba = collate(encode([Example(b, a, label=5.0)], "similarity", tok, 64), regression=True)
    assert torch.allclose(logits_for(model, head, ab), logits_for(model, head, ba), atol=1e-6)


def test_padding_does_not_change_extract_state():
    """Right padding is invisible to causal attention: a batch-mate's length changes nothing."""
    tok = tiny_tokenizer()
    model, head = tiny_gpt(tok.vocab_size), ClassificationHead(C, 2).eval()
    short = Example("good film")
    alone = collate(encode([short], "classification", tok, 64))
    padded = collate(encode([short, Example("a very long and rather tedious film about nothing")], "classification", tok, 64))
    assert torch.allclose(logits_for(model, head, alone)[0], logits_for(model, head, padded)[0], atol=1e-6)


def test_task_losses_and_predictions():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1])
    sst2 = get_task("sst2")
    assert sst2.loss(logits, labels) == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert sst2.predict(logits).tolist() == [0, 1]
    stsb = get_task("stsb")
    reg = torch.tensor([[1.0], [4.0]])
    assert stsb.loss(reg, torch.tensor([2.0, 4.0])).item() == pytest.approx(0.5)
    assert stsb.predict(reg).tolist() == [1.0, 4.0]
    assert (stsb.head_kind, stsb.n_outputs) == ("similarity", 1)
    assert (get_task("mnli").head_kind, get_task("mnli").n_outputs) == ("classification", 3)
    assert (get_task("race").head_kind, get_task("race").n_outputs) == ("multiple_choice", 1)


def test_special_ids_from_tokenizer():
    tok = tiny_tokenizer()
    sp = SpecialIds.of(tok)
    assert len({sp.start, sp.delimiter, sp.classify}) == 3 and sp.classify == tok.vocab_size - 1

import math

import pytest
import torch
import torch.nn.functional as F

from gptkit.model import GPT, GPTConfig, lm_loss

TINY = GPTConfig(vocab_size=97, n_ctx=16, n_layer=2, n_head=2, n_embd=32)


def test_paper_size_parameter_count():
    # 116,534,784 released floats (params_shapes.json) + 3 special-token rows of 768.
    with torch.device("meta"):
        model = GPT(GPTConfig())
    assert model.num_parameters() == 116_534_784 + 3 * 768


def test_init_matches_paper():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=2000, n_ctx=64, n_layer=2, n_head=4, n_embd=128))
    w = model.blocks[0].mlp.c_fc.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert model.blocks[0].mlp.c_fc.bias.abs().sum() == 0
    assert torch.all(model.blocks[1].ln_2.weight == 1) and torch.all(model.blocks[1].ln_2.bias == 0)
    assert abs(model.tokens_embed.weight.std().item() - 0.02) < 0.002


def test_lm_head_is_tied_to_token_embedding():
    model = GPT(TINY).eval()
    h = torch.randn(1, 3, TINY.n_embd)
    assert torch.allclose(model.lm_logits(h), h @ model.tokens_embed.weight.T)
    assert not any("lm_head" in n for n, _ in model.named_parameters())


def test_block_is_post_layernorm_with_tanh_gelu():
    """Recompute one block by hand from the paper's equations."""
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    blk = model.blocks[0]
    x = torch.randn(2, 5, TINY.n_embd)
    B, T, C = x.shape
    q, k, v = blk.attn.c_attn(x).split(C, dim=2)
    heads = lambda t: t.view(B, T, TINY.n_head, C // TINY.n_head).transpose(1, 2)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(C // TINY.n_head)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    n = F.layer_norm(x + blk.attn.c_proj(a), (C,), blk.ln_1.weight, blk.ln_1.bias, 1e-5)
    m = blk.mlp.c_proj(0.5 * blk.mlp.c_fc(n) * (1 + torch.tanh(math.sqrt(2 / math.pi) * (blk.mlp.c_fc(n) + 0.044715 * blk.mlp.c_fc(n) ** 3))))
    expected = F.layer_norm(n + m, (C,), blk.ln_2.weight, blk.ln_2.bias, 1e-5)
    assert torch.allclose(blk(x), expected, atol=1e-5)


def test_attention_is_causal():
    model = GPT(TINY).eval()
    x = torch.randint(0, TINY.vocab_size, (1, 10))
    y = x.clone()
    y[0, 7:] = (y[0, 7:] + 1) % TINY.vocab_size
    assert torch.allclose(model(x)[:, :7], model(y)[:, :7], atol=1e-6)
    assert not torch.allclose(model(x)[:, 7:], model(y)[:, 7:])


def test_context_limit():
    with pytest.raises(ValueError, match="n_ctx"):
        GPT(TINY)(torch.zeros(1, TINY.n_ctx + 1, dtype=torch.long))


def test_lm_loss_masks_and_averages():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    x = torch.randint(0, TINY.vocab_size, (2, 8))
    h = model(x)
    targets = x.clone()
    full = F.cross_entropy(model.lm_logits(h).reshape(-1, TINY.vocab_size), targets.reshape(-1))
    assert torch.allclose(lm_loss(model, h, targets), full, atol=1e-6)
    targets[0, 4:] = -100  # sequence 0 has 4 real targets, sequence 1 has 8
    per = F.cross_entropy(model.lm_logits(h).transpose(1, 2), targets, reduction="none", ignore_index=-100)
    seq_means = torch.stack([per[0, :4].mean(), per[1].mean()])
    assert torch.allclose(lm_loss(model, h, targets, per_sequence=True), seq_means.mean(), atol=1e-6)
    assert torch.allclose(lm_loss(model, h, targets), per[targets != -100].mean(), atol=1e-6)


def test_resize_token_embeddings_keeps_rows():
    model = GPT(TINY)
    old = model.tokens_embed.weight.detach().clone()
    model.resize_token_embeddings(TINY.vocab_size + 3)
    assert model.tokens_embed.weight.shape[0] == TINY.vocab_size + 3
    assert torch.equal(model.tokens_embed.weight[: TINY.vocab_size], old)


def test_generate_is_seeded_and_extends():
    model = GPT(TINY).eval()
    idx = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 23) and torch.equal(a, b)

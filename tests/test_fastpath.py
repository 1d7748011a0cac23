"""The fast path (fused chunked LM loss, compile) must not change the numbers."""

import pytest
import torch

from gptkit.model import GPT, GPTConfig, lm_loss

CFG = GPTConfig(vocab_size=300, n_ctx=32, n_layer=2, n_head=2, n_embd=32)


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("per_sequence", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_lm_loss_matches_plain(per_sequence, chunk):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (4, 32))
    targets = x.roll(-1, 1)
    targets[0, 20:] = -100
    targets[:, -1] = -100
    plain = lm_loss(model, model(x), targets, per_sequence=per_sequence)
    g_plain = grads(model, plain)
    fused = lm_loss(model, model(x), targets, per_sequence=per_sequence, chunk_size=chunk)
    g_fused = grads(model, 3 * fused)  # an upstream gradient other than 1 is honoured
    assert torch.allclose(plain, fused, atol=1e-6)
    for name, g in g_plain.items():
        assert torch.allclose(3 * g, g_fused[name], atol=1e-6), name


def test_chunked_lm_loss_without_grad():
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.allclose(lm_loss(model, model(x), x, chunk_size=5), lm_loss(model, model(x), x), atol=1e-6)


def test_fast_and_plain_training_steps_agree():
    """A few AdamW steps with the fused loss (+ fused-free AdamW on CPU) track the plain path."""

    def train(chunk):
        torch.manual_seed(0)
        model = GPT(CFG).eval()  # no dropout, so both paths see the same function
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        data = torch.randint(0, CFG.vocab_size, (5, 4, 33), generator=torch.Generator().manual_seed(1))
        losses = []
        for block in data:
            loss = lm_loss(model, model(block[:, :-1]), block[:, 1:], chunk_size=chunk)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, model.tokens_embed.weight.detach()

    (a, wa), (b, wb) = train(None), train(16)
    assert a == pytest.approx(b, abs=1e-5)
    assert torch.allclose(wa, wb, atol=1e-5)


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_compiled_backbone_matches_eager():
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    eager = model(x)
    model.compile(backend="aot_eager")  # same graph capture as inductor, no C++ build on CI machines
    assert torch.allclose(model(x), eager, atol=1e-5)


def test_per_sequence_mean_ignores_sequences_without_targets():
    """Masking a sequence out (a padded answer candidate) equals leaving it out, in both loss paths."""
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (3, 16))
    targets = x.roll(-1, 1)
    targets[:, -1] = -100
    kept = lm_loss(model, model(x[:2]), targets[:2], per_sequence=True)
    masked = targets.clone()
    masked[2] = -100
    for chunk in (None, 5):
        assert torch.allclose(lm_loss(model, model(x), masked, per_sequence=True, chunk_size=chunk), kept, atol=1e-6)

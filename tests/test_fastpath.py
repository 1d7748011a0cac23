"""The fast path (fused chunked LM loss, fused AdamW, CPU dropout and attention, compile) must not
change the numbers."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fused_loss_matches_plain

from gptkit.fastpath import (
    _cross_entropy_and_grad,
    _cross_entropy_and_grad_inplace,
    causal_attention_with_dropout,
    dropout,
    lm_loss_chunk_rows,
)
from gptkit.model import GPT, GPTConfig, lm_loss
from gptkit.optim import fused_adamw_available

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
    """A few AdamW steps of the fast path (fused loss, fused AdamW) track the plain path."""
    cpu = torch.device("cpu")
    assert fused_adamw_available(cpu)

    def train(chunk):
        torch.manual_seed(0)
        model = GPT(CFG).eval()  # no dropout, so both paths see the same function
        fused = chunk is not None
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
        data = torch.randint(0, CFG.vocab_size, (5, 4, 33), generator=torch.Generator().manual_seed(1))
        losses = []
        for block in data:
            loss = lm_loss(model, model(block[:, :-1]), block[:, 1:], chunk_size=chunk)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, model.tokens_embed.weight.detach()

    (a, wa), (b, wb) = train(None), train(lm_loss_chunk_rows(cpu, CFG.vocab_size))
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


def test_chunked_lm_loss_under_cpu_autocast_and_changing_shapes():
    """bf16 products with float32 accumulation, and a reused logits block across shapes and dtypes."""
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    for rows, chunk, dtype in [(4, 64, torch.bfloat16), (2, 3, torch.float32), (4, 5, torch.bfloat16)]:
        x = torch.randint(0, CFG.vocab_size, (rows, 32))
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            hidden = model(x)
            plain = lm_loss(model, hidden, x.roll(-1, 1))
            g_plain = grads(model, plain)
            hidden = model(x)
            fused = lm_loss(model, hidden, x.roll(-1, 1), chunk_size=chunk)
            g_fused = grads(model, fused)
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-6
        assert fused.dtype == torch.float32
        assert torch.allclose(plain, fused, rtol=tol, atol=tol)
        for name, g in g_plain.items():
            assert g_fused[name].dtype == torch.float32
            assert torch.allclose(g, g_fused[name], rtol=tol, atol=tol * g.abs().max().item()), name


def test_cpu_dropout_has_the_right_distribution_and_gradient():
    p = 0.1
    x = torch.ones(1_000_000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, p)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=2e-3)  # 6 sigma is 1.8e-3
    assert torch.all(y[kept] == 1 / (1 - p))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * scaled mask)/dx is the scaled mask
    torch.manual_seed(0)
    assert torch.equal(dropout(x, p), y)  # reproducible from the seed
    assert dropout(x, p, training=False) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_compiled_dropout_is_inverted_dropout():
    """Inside a compiled graph dropout is ``F.dropout``: kept elements scaled by ``1 / (1 - p)``, and
    the gradient through the same mask."""
    torch._dynamo.reset()
    x = torch.randn(8, 300, requires_grad=True)
    out = torch.compile(lambda t: dropout(t, 0.25), fullgraph=True, backend="aot_eager")(x)
    out.sum().backward()
    kept = out != 0
    assert 0.6 < kept.float().mean().item() < 0.9
    assert torch.allclose(out[kept], x[kept] / 0.75) and torch.allclose(x.grad, kept / 0.75)
    torch._dynamo.reset()


def test_textbook_attention_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 16, 8).unbind(0)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(causal_attention_with_dropout(q, k, v, 0.0), sdpa, atol=1e-6)
    torch.manual_seed(1)
    dropped = causal_attention_with_dropout(q, k, v, 0.5)
    assert not torch.allclose(dropped, sdpa)
    # dropout acts on the attention weights: each output row is a rescaled subset of the values
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(torch.ones(16, 16).triu(1).bool(), -math.inf)
    torch.manual_seed(1)
    assert torch.allclose(dropped, dropout(scores.softmax(-1), 0.5) @ v, atol=1e-6)


def test_training_mode_on_cpu_uses_dropout_in_every_place():
    """Embedding, attention and residual dropout are live in training and off in eval."""
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    model.eval()
    reference = model(x)
    model.train()
    assert not torch.allclose(model(x), reference)
    for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
        only = GPT(GPTConfig(**{**CFG.to_dict(), "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0, name: 0.5}))
        only.load_state_dict(model.state_dict())
        assert not torch.allclose(only.train()(x), reference), name
        assert torch.allclose(only.eval()(x), reference, atol=1e-6), name


def test_cuda_and_in_place_loss_kernels_agree():
    """The kernel compiled on CUDA and the in-place one used elsewhere compute the same thing."""
    torch.manual_seed(0)
    logits = torch.randn(6, 70) * 4
    targets = torch.tensor([0, 5, 63, 1, 2, 3])
    weights = torch.tensor([0.5, 0.0, 1.0, 0.25, 1.0, 2.0])  # a zero-weight row contributes nothing
    loss, grad = _cross_entropy_and_grad(logits, targets, weights, n_valid=64)
    loss_inplace, grad_inplace = _cross_entropy_and_grad_inplace(logits.clone(), targets, weights, n_valid=64)
    reference = (F.cross_entropy(logits[:, :64], targets, reduction="none") * weights).sum()
    assert torch.allclose(loss, reference, atol=1e-5) and torch.allclose(loss_inplace, reference, atol=1e-5)
    assert torch.allclose(grad, grad_inplace, atol=1e-7)
    assert torch.all(grad_inplace[:, 64:] == 0) and torch.all(grad_inplace[1] == 0)


def test_loss_kernel_choice(monkeypatch):
    """CUDA takes Triton's kernel where Triton imports, else the eager in-place one, as every other device."""
    import gptkit.fastpath as fastpath

    triton_kernel = object()
    monkeypatch.setattr(fastpath, "_triton_kernel", lambda: triton_kernel)
    assert fastpath._ce_kernel(torch.device("cuda")) is triton_kernel
    assert fastpath._ce_kernel(torch.device("cpu")) is _cross_entropy_and_grad_inplace
    monkeypatch.setattr(fastpath, "_triton_kernel", lambda: None)
    assert fastpath._ce_kernel(torch.device("cuda")) is _cross_entropy_and_grad_inplace


@pytest.mark.parametrize("kernel", ["in_place", "compiled_reference"])
def test_fused_loss_with_fresh_logits_blocks(monkeypatch, kernel):
    """The CUDA path as far as a CPU runs it: a fresh logits block per chunk (no workspace), with the
    in-place kernel (CUDA without Triton) or the reference compiled by the same graph capture as on a
    GPU (``aot_eager``, so no C++ build is needed); tests/test_kernels.py runs Triton's kernel."""
    pytest.importorskip("torch._dynamo")
    if kernel == "compiled_reference":
        fn = torch.compile(_cross_entropy_and_grad, dynamic=True, backend="aot_eager")
    else:
        fn = _cross_entropy_and_grad_inplace
    assert_fused_loss_matches_plain(monkeypatch, fn)


def test_fused_loss_trains_after_an_inference_mode_call(monkeypatch):
    """The CPU logits block made under inference mode (validate, test) must not break training."""
    import gptkit.fastpath as fastpath

    monkeypatch.setattr(fastpath, "_workspaces", {})
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    with torch.inference_mode():
        evaluated = lm_loss(model, model(x), x, chunk_size=8)
    trained = lm_loss(model, model(x), x, chunk_size=8)
    trained.backward()
    assert torch.allclose(evaluated, trained.detach(), atol=1e-6)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_fused_loss_takes_an_fp16_loss_scale():
    """GradScaler's first scale (65536) is above fp16's range; the upstream gradient is applied in float32."""
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    reference = grads(model, lm_loss(model, model(x), x, chunk_size=8))
    with torch.autocast("cpu", dtype=torch.float16):  # fp16 products inside the fused loss
        loss = lm_loss(model, model(x), x, chunk_size=8)
    scaled = grads(model, 65536.0 * loss)
    for name, g in reference.items():
        assert torch.isfinite(scaled[name]).all(), name
        assert torch.allclose(scaled[name] / 65536.0, g, rtol=5e-2, atol=5e-2 * g.abs().max().item()), name


def test_fused_loss_gradients_survive_fp16():
    """16-mixed: with 2,048 rows each row weight is 1/2048 and ``w * softmax`` underflows fp16 unless
    the weights are rescaled first. Under a GradScaler-style loss scale the fused loss's gradients
    must be as close to float32 as the plain fp16 path's."""
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (64, 32))
    reference = grads(model, lm_loss(model, model(x), x.roll(-1, 1)))

    def fp16_grads(chunk):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = lm_loss(model, model(x), x.roll(-1, 1), chunk_size=chunk)
        return {name: g / 65536 for name, g in grads(model, 65536 * loss).items()}

    plain, fused = fp16_grads(None), fp16_grads(8192)
    for name, g in reference.items():
        plain_error, fused_error = (plain[name] - g).norm() / g.norm(), (fused[name] - g).norm() / g.norm()
        assert fused_error <= 1.5 * plain_error + 1e-4, (name, fused_error, plain_error)

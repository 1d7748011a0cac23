import math

import pytest
import torch

from gptkit.model import GPT, GPTConfig
from gptkit.optim import param_groups, schedule_factor


def test_decay_only_on_matrices_and_embeddings():
    model = GPT(GPTConfig(vocab_size=50, n_ctx=8, n_layer=1, n_head=2, n_embd=8))
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {
        "tokens_embed.weight", "positions_embed.weight", "blocks.0.attn.c_attn.weight",
        "blocks.0.attn.c_proj.weight", "blocks.0.mlp.c_fc.weight", "blocks.0.mlp.c_proj.weight"}
    assert all(n.endswith("bias") or ".ln_" in n for n in (names[id(p)] for p in no_decay["params"]))
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


def test_warmup_then_cosine_and_linear():
    assert schedule_factor(0, "cosine", 10, 110) == pytest.approx(0.1)
    assert schedule_factor(9, "cosine", 10, 110) == 1.0
    assert schedule_factor(60, "cosine", 10, 110) == pytest.approx(0.5)
    assert schedule_factor(110, "cosine", 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert schedule_factor(60, "linear", 10, 110) == pytest.approx(0.5)
    assert schedule_factor(500, "constant", 10, 110) == 1.0
    xs = [schedule_factor(s, "cosine", 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(xs, xs[1:]))
    assert math.isclose(schedule_factor(35, "cosine", 10, 110), 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_adamw_is_decoupled():
    """With zero gradient, AdamW shrinks weights by lr * wd exactly (decoupled), Adam+L2 would not."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 0.01))


def test_fused_adamw_is_left_off_with_a_grad_scaler_and_clipping():
    from gptkit.errors import GptkitError
    from gptkit.optim import choose_fused, fused_adamw_available

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_fused(None, cuda, grad_scaler=False, clipping=True) is True
    assert choose_fused(None, cuda, grad_scaler=True, clipping=False) is True
    assert choose_fused(None, cuda, grad_scaler=True, clipping=True) is False  # Lightning would refuse to clip
    assert choose_fused(None, cpu, grad_scaler=False, clipping=True) is fused_adamw_available(cpu)
    assert choose_fused(False, cuda, grad_scaler=False, clipping=False) is False
    with pytest.raises(GptkitError, match="optim.fused=true cannot be combined"):
        choose_fused(True, cuda, grad_scaler=True, clipping=True)

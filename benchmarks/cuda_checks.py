"""Correctness checks of the CUDA fast path (run on a GPU machine; prints one JSON line per check).

1. chunked fused LM loss vs plain loss under bf16 autocast: loss and gradient differences;
2. SDPA picks the flash kernel for GPT-1's shapes with attention dropout (forced, must not raise);
3. fused AdamW steps vs foreach AdamW steps: parameter differences after a few updates.

    python benchmarks/cuda_checks.py
"""

from __future__ import annotations

import json

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from gptkit.model import GPT, GPTConfig, lm_loss


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def check_chunked_loss(device: torch.device) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2)).to(device).eval()
    x = torch.randint(0, model.config.vocab_size, (8, 512), device=device)
    out = {}
    for name, chunk, bf16 in (("fp32", None, False), ("plain", None, True), ("chunked", 8192, True)):
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = lm_loss(model, model(x[:, :-1]), x[:, 1:], chunk_size=chunk)
        loss.backward()
        out[name] = (loss.item(), grads(model))
    ref = out["fp32"][1]

    def err(g):  # worst relative gradient error against the float32 reference, over parameters
        return max(((g[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-12)).item() for k in ref)

    e_plain, e_chunked = err(out["plain"][1]), err(out["chunked"][1])
    return {"check": "chunked_lm_loss_bf16", "fp32": out["fp32"][0], "plain_bf16": out["plain"][0],
            "chunked_bf16": out["chunked"][0], "max_rel_grad_err_plain_bf16": e_plain,
            "max_rel_grad_err_chunked_bf16": e_chunked, "ok": e_chunked <= 1.5 * e_plain + 1e-3}


def check_flash(device: torch.device) -> dict:
    q = torch.randn(8, 12, 512, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        y = torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.1, is_causal=True)
        y.sum().backward()
    return {"check": "sdpa_flash_with_dropout", "ok": True}


def check_fused_adamw(device: torch.device) -> dict:
    params = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_embd=256, n_head=4, vocab_size=1000, n_ctx=128)).to(device).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
        gen = torch.Generator(device=device).manual_seed(1)
        for _ in range(5):
            x = torch.randint(0, 1000, (4, 129), device=device, generator=gen)
            loss = lm_loss(model, model(x[:, :-1]), x[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
        params[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    diff = (params[True] - params[False]).abs().max().item()
    return {"check": "fused_vs_foreach_adamw", "max_abs_param_diff": diff, "ok": diff < 1e-4}


def main() -> None:
    device = torch.device("cuda")
    for check in (check_chunked_loss, check_flash, check_fused_adamw):
        try:
            print(json.dumps(check(device)), flush=True)
        except Exception as exc:  # report and go on: this is a diagnostic script
            print(json.dumps({"check": check.__name__, "ok": False, "error": repr(exc)[:500]}), flush=True)


if __name__ == "__main__":
    main()

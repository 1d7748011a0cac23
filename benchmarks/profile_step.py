"""Where a GPU training step of the 117M model spends its time (bare loop, bf16, compiled backbone).

Times variants of the step (attention dropout on/off, chunked vs full-logits loss, loss compiled with
the model) and prints the top CUDA kernels of the default variant from torch.profiler.

    python benchmarks/profile_step.py
"""

from __future__ import annotations

import time

import torch

from gptkit.model import GPT, GPTConfig, lm_loss
from gptkit.optim import param_groups


def run(name: str, attn_pdrop=0.1, chunk=8192, compile_loss=False, steps=10, profile=False) -> None:
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = GPT(GPTConfig(attn_pdrop=attn_pdrop)).cuda()
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=True)
    x = torch.randint(0, model.config.vocab_size, (64, 513), device="cuda")
    if compile_loss:
        fwd = torch.compile(lambda a, b: lm_loss(model, model(a), b, chunk_size=None))
    else:
        model.compile()

        def fwd(a, b):
            return lm_loss(model, model(a), b, chunk_size=chunk)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(4):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    print(f"{name:<40} {dt * 1000:7.1f} ms/step  {64 * 512 / dt:>10,.0f} tokens/s", flush=True)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


if __name__ == "__main__":
    run("default (dropout 0.1, chunked 8192)", profile=True)
    run("attention dropout 0", attn_pdrop=0.0)
    run("full logits, loss outside compile", chunk=None)
    run("full logits, loss compiled with model", compile_loss=True)

"""Where a GPU training step of the 117M model spends its time (bare loop, bf16, compiled backbone).

Times variants of the step at the paper's batch (64 x 512 tokens) and prints what the CUDA kernels
of each (or, with ``--profile-first``, of the first only) cost per step from torch.profiler: grouped
(matrix products, attention, the compiled fused kernels by kind, the optimizer, the rest), the idle
gap between kernels, and the top kernels by name.

    python benchmarks/profile_step.py                          # every variant
    python benchmarks/profile_step.py default sdpa-flash       # some of them
    python benchmarks/profile_step.py --device cpu --size tiny --steps 2   # the test suite's smoke run

On a CPU (``--device cpu``) the step runs eagerly (gptkit compiles on CUDA only) under CPU bf16
autocast, the profile groups CPU operators by their own time, and the variants that need CUDA
(``sdpa-flash``, ``sdpa-cudnn``: CUDA attention kernels; ``coordinate-descent``: tunes the compiled
step's Triton kernels) print a ``skipped`` line. ``--size tiny`` is a 2-layer, 64-wide model on
4 x 32 tokens: a check that the script runs, not a measurement.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import time
from dataclasses import dataclass, field

import torch

from gptkit.fastpath import lm_loss_chunk_rows
from gptkit.model import GPT, GPTConfig, lm_loss
from gptkit.optim import param_groups


@dataclass(frozen=True)
class Variant:
    config: dict = field(default_factory=dict)  # GPTConfig overrides
    inductor: dict = field(default_factory=dict)  # torch._inductor.config overrides
    sdpa: str | None = None  # SDPA backend; None for PyTorch's choice
    loss_chunk: int | None = None  # rows per chunk of the fused LM loss; None for gptkit's choice
    # dtype of the LayerNorm outputs, i.e. of the post-LN residual stream; None keeps autocast's float32
    layer_norm_out: torch.dtype | None = None


VARIANTS = {
    "default": Variant(),
    "coordinate-descent": Variant(inductor={"coordinate_descent_tuning": True}),
    "sdpa-flash": Variant(sdpa="flash"),
    "sdpa-cudnn": Variant(sdpa="cudnn"),
    "no-dropout": Variant(config={"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}),
    "no-attention-dropout": Variant(config={"attn_pdrop": 0.0}),
    # the fused loss in fewer, larger chunks: fewer float32 dW accumulations, more memory
    "loss-chunk-16384": Variant(loss_chunk=16384),
    "loss-chunk-32768": Variant(loss_chunk=32768),
    # LayerNorm outputs cast to bf16 (computed in float32 as before), so the residual stream that the
    # add + dropout + LayerNorm kernels read and write, and save for the backward pass, is bf16 where
    # autocast makes it float32: what that float32 traffic costs. It changes the numerics: not in gptkit.
    "bf16-residual": Variant(layer_norm_out=torch.bfloat16),
}
# what a variant needs beyond a CPU (it prints "skipped" without it)
NEEDS_CUDA = {"coordinate-descent": "needs CUDA and Triton: it tunes the compiled step's Triton kernels",
              "sdpa-flash": "needs CUDA: SDPA's flash kernel", "sdpa-cudnn": "needs CUDA: SDPA's cuDNN kernel"}
SIZES = {  # model and batch: GPTConfig overrides, (sequences, tokens per sequence)
    "paper": ({}, (64, 512)),
    "tiny": ({"n_layer": 2, "n_head": 2, "n_embd": 64, "n_ctx": 32, "vocab_size": 512}, (4, 32)),
}
GROUPS = [  # first match wins; CUDA kernel names, and (aten::...) CPU operators
    ("matrix products", r"gemm|nvjet|cutlass|cublas|sm90_xmma|ampere_|^aten::(mm|addmm|bmm)$"),
    ("attention", r"sdpa|flash|fmha|attention|cudnn"),
    ("add + dropout + layer norm", r"triton.*(layer_norm|native_dropout)"),
    ("gelu", r"triton.*gelu"),
    ("LM loss softmax/gradient", r"_ce_grad_kernel|triton.*(logsumexp|exp_)"),
    ("other compiled kernels", r"^triton"),
    ("optimizer", r"multi_tensor_apply|fused_adam"),
]


@contextlib.contextmanager
def sdpa_backend(name: str | None):
    if name is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[name]
    with sdpa_kernel(backend):
        yield


def group_of(kernel: str) -> str:
    return next((g for g, pattern in GROUPS if re.search(pattern, kernel)), "rest")


def cast_layer_norms(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Make every LayerNorm of ``model`` return ``dtype`` (a forward hook, traced by torch.compile)."""
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.register_forward_hook(lambda _module, _args, out: out.to(dtype))


CUDA = torch.device("cuda")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(name: str, steps: int = 10, profile: bool = False, device: torch.device = CUDA,
        size: str = "paper") -> None:
    variant = VARIANTS[name]
    cuda = device.type == "cuda"
    sizes, (batch, n_ctx) = SIZES[size]
    torch.manual_seed(0)
    torch._dynamo.reset()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = GPT(GPTConfig(**{**sizes, **variant.config})).to(device)
    if variant.layer_norm_out is not None:
        cast_layer_norms(model, variant.layer_norm_out)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=True)
    x = torch.randint(0, model.config.vocab_size, (batch, n_ctx + 1), device=device)
    chunk = variant.loss_chunk or lm_loss_chunk_rows(x.device, model.config.vocab_size)
    if cuda:  # as gptkit: compiled on CUDA, eager elsewhere
        model.compile()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = lm_loss(model, model(x[:, :-1]), x[:, 1:], chunk_size=chunk)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with torch._inductor.config.patch(variant.inductor), sdpa_backend(variant.sdpa):
        t0 = time.perf_counter()
        for _ in range(4):
            step()
        sync(device)
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        dt = (time.perf_counter() - t0) / steps
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:4.1f} GiB" if cuda else "-"
        print(f"{name:<30} {dt * 1000:7.1f} ms/step  {batch * n_ctx / dt:>10,.0f} tokens/s  "
              f"peak {peak}  (warm-up {warmup:.0f} s)", flush=True)
        if profile:
            report(step, dt, device)


def report(step, step_s: float, device: torch.device = CUDA, steps: int = 3) -> None:
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"  # elsewhere: CPU operators and their own (self) time
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        profiled_s = (time.perf_counter() - t0) / steps
    own = "self_device_time_total" if cuda else "self_cpu_time_total"
    kernels = [(e.key, getattr(e, own) / 1000 / steps, e.count // steps) for e in prof.key_averages()
               if getattr(e, own) > 0]
    groups: dict[str, float] = collections.Counter()
    for key, ms, _ in kernels:
        groups[group_of(key)] += ms
    busy = sum(groups.values())
    print(f"\nper step: {step_s * 1000:.1f} ms wall ({profiled_s * 1000:.1f} ms under the profiler), "
          f"{busy:.1f} ms of {'kernels' if cuda else 'operators'}, so {profiled_s * 1000 - busy:.1f} ms with no "
          f"{'kernel' if cuda else 'operator'} running")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<28} {ms:7.2f} ms")
    print(f"\ntop {'kernels' if cuda else 'operators'} (ms per step, launches per step):")
    for key, ms, n in sorted(kernels, key=lambda k: -k[1])[:25]:
        print(f"  {ms:7.2f} {n:4d}  {key[:110]}")
    print(flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="*", metavar="VARIANT", help=f"some of: {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--profile-first", action="store_true", help="profile the first variant only")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu: eager, the CUDA-only variants skipped")
    p.add_argument("--size", choices=SIZES, default="paper", help="paper: 117M on 64 x 512 (default); tiny: a smoke run")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant (after 4 warm-up steps)")
    args = p.parse_args()
    wanted = args.variants or list(VARIANTS)
    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        p.exit(1, f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}\n")
    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"on {device.type}: eager step (torch.compile is gptkit's CUDA default only), bf16 autocast, "
              f"{args.size} size", flush=True)
    profiled = False
    for variant in wanted:
        if device.type != "cuda" and variant in NEEDS_CUDA:
            print(f"{variant:<30} skipped: {NEEDS_CUDA[variant]}", flush=True)
            continue
        run(variant, args.steps, profile=not (profiled and args.profile_first), device=device, size=args.size)
        profiled = True


if __name__ == "__main__":
    main()

"""Where a GPU training step of the 117M model spends its time (bare loop, bf16, compiled backbone).

Times variants of the step at the paper's batch (64 x 512 tokens) and prints what the CUDA kernels
of each (or, with ``--profile-first``, of the first only) cost per step from torch.profiler: grouped
(matrix products, attention, the compiled fused kernels by kind, the optimizer, the rest), the idle
gap between kernels, and the top kernels by name.

    python benchmarks/profile_step.py                          # every variant
    python benchmarks/profile_step.py default sdpa-flash       # some of them
"""

from __future__ import annotations

import collections
import contextlib
import re
import sys
import time
from dataclasses import dataclass, field

import torch

import gptkit.model
from gptkit.model import GPT, GPTConfig, lm_loss, lm_loss_chunk_rows
from gptkit.optim import param_groups


@dataclass(frozen=True)
class Variant:
    config: dict = field(default_factory=dict)  # GPTConfig overrides
    inductor: dict = field(default_factory=dict)  # torch._inductor.config overrides
    sdpa: str | None = None  # SDPA backend; None for PyTorch's choice
    attributes: dict = field(default_factory=dict)  # gptkit.model attributes to set
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
    # dropout masks from the Triton kernel (four elements per Philox call) instead of torch.compile's
    # own dropout (one call per element)
    "mask-kernel": Variant(attributes={"_MASK_KERNEL_DEVICES": {"cuda"}}),
    # the fused loss in fewer, larger chunks: fewer float32 dW accumulations, more memory
    "loss-chunk-16384": Variant(loss_chunk=16384),
    "loss-chunk-32768": Variant(loss_chunk=32768),
    # recipes/pretrain.yaml's coordinate-descent tuning with the mask kernel
    "mask-kernel+coordinate-descent": Variant(inductor={"coordinate_descent_tuning": True},
                                              attributes={"_MASK_KERNEL_DEVICES": {"cuda"}}),
    # LayerNorm outputs cast to bf16 (computed in float32 as before), so the residual stream that the
    # add + dropout + LayerNorm kernels read and write, and save for the backward pass, is bf16 where
    # autocast makes it float32: what that float32 traffic costs. It changes the numerics: not in gptkit.
    "bf16-residual": Variant(layer_norm_out=torch.bfloat16),
    "bf16-residual+mask-kernel": Variant(layer_norm_out=torch.bfloat16, attributes={"_MASK_KERNEL_DEVICES": {"cuda"}}),
}
DEFAULT_ATTRIBUTES = {"_MASK_KERNEL_DEVICES": gptkit.model._MASK_KERNEL_DEVICES}
GROUPS = [  # first match wins
    ("matrix products", r"gemm|nvjet|cutlass|cublas|sm90_xmma|ampere_"),
    ("attention", r"sdpa|flash|fmha|attention|cudnn"),
    ("add + dropout + layer norm", r"triton.*(layer_norm|native_dropout)|_dropout_mask_kernel"),
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


def run(name: str, steps: int = 10, profile: bool = False) -> None:
    variant = VARIANTS[name]
    for attribute, value in {**DEFAULT_ATTRIBUTES, **variant.attributes}.items():
        setattr(gptkit.model, attribute, value)
    torch.manual_seed(0)
    torch._dynamo.reset()
    torch.cuda.reset_peak_memory_stats()
    model = GPT(GPTConfig(**variant.config)).cuda()
    if variant.layer_norm_out is not None:
        cast_layer_norms(model, variant.layer_norm_out)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=True)
    x = torch.randint(0, model.config.vocab_size, (64, 513), device="cuda")
    chunk = variant.loss_chunk or lm_loss_chunk_rows(x.device, model.config.vocab_size)
    model.compile()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_loss(model, model(x[:, :-1]), x[:, 1:], chunk_size=chunk)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with torch._inductor.config.patch(variant.inductor), sdpa_backend(variant.sdpa):
        t0 = time.perf_counter()
        for _ in range(4):
            step()
        torch.cuda.synchronize()
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        print(f"{name:<30} {dt * 1000:7.1f} ms/step  {64 * 512 / dt:>10,.0f} tokens/s  "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:4.1f} GiB  (warm-up {warmup:.0f} s)", flush=True)
        if profile:
            report(step, dt)


def report(step, step_s: float, steps: int = 3) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        profiled_s = (time.perf_counter() - t0) / steps
    kernels = [(e.key, e.self_device_time_total / 1000 / steps, e.count // steps) for e in prof.key_averages()
               if e.self_device_time_total > 0]
    groups: dict[str, float] = collections.Counter()
    for key, ms, _ in kernels:
        groups[group_of(key)] += ms
    busy = sum(groups.values())
    print(f"\nper step: {step_s * 1000:.1f} ms wall ({profiled_s * 1000:.1f} ms under the profiler), "
          f"{busy:.1f} ms of kernels, so {profiled_s * 1000 - busy:.1f} ms with no kernel running")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<28} {ms:7.2f} ms")
    print("\ntop kernels (ms per step, launches per step):")
    for key, ms, n in sorted(kernels, key=lambda k: -k[1])[:25]:
        print(f"  {ms:7.2f} {n:4d}  {key[:110]}")
    print(flush=True)


if __name__ == "__main__":
    profile_first = "--profile-first" in sys.argv
    wanted = [a for a in sys.argv[1:] if a != "--profile-first"] or list(VARIANTS)
    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    for i, variant in enumerate(wanted):
        run(variant, profile=i == 0 or not profile_first)

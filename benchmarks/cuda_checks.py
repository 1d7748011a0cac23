"""Correctness checks of the CUDA fast path (run on a GPU machine; prints one JSON line per check).

1. chunked fused LM loss vs plain loss under bf16 autocast: loss and gradient differences;
2. the Triton kernels (LM loss softmax/gradient, dropout mask): errors, keep rate, and their times;
3. SDPA picks the flash kernel for GPT-1's shapes with attention dropout (forced, must not raise);
4. fused AdamW steps vs foreach AdamW steps: parameter differences after a few updates;
5. a small in-process ``gptkit fit`` under ``torch.cuda.set_sync_debug_mode("warn")``: the steps
   whose metrics are not logged (and that save no checkpoint) must not make the host wait.

    python benchmarks/cuda_checks.py                       # all
    python benchmarks/cuda_checks.py host_syncs fused_adamw  # some
"""

from __future__ import annotations

import collections
import json
import tempfile
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from gptkit.model import GPT, GPTConfig, lm_loss

REPO = Path(__file__).resolve().parent.parent


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


def check_ce_kernel(device: torch.device) -> dict:
    """The fused loss's softmax/gradient step on one chunk (8192 x 40,512 bf16 logits, 40,481 valid):
    Triton's kernel and the compiled one against a float64 reference, and their times."""
    import triton.testing

    from gptkit.kernels import BLOCK, NUM_WARPS, cross_entropy_and_grad
    from gptkit.model import _cross_entropy_and_grad

    torch.manual_seed(0)
    rows, cols, n_valid = 8192, 40512, 40481
    logits = (torch.randn(rows, cols, device=device) * 4).to(torch.bfloat16)
    targets = torch.randint(0, n_valid, (rows,), device=device)
    weights = torch.rand(rows, device=device)
    weights[:100] = 0
    ref_loss, ref_grad = _cross_entropy_and_grad(logits.double(), targets, weights.double(), n_valid)
    compiled = torch.compile(_cross_entropy_and_grad, dynamic=True)
    out = {"check": "ce_kernel"}
    for name, fn in (("triton", lambda x: cross_entropy_and_grad(x, targets, weights, n_valid)),
                     ("compiled", lambda x: compiled(x, targets, weights, n_valid))):
        loss, grad = fn(logits.clone())
        out[f"{name}_loss_rel_err"] = abs(loss.item() - ref_loss.item()) / ref_loss.item()
        out[f"{name}_grad_rel_err"] = ((grad.double() - ref_grad).norm() / ref_grad.norm()).item()
        out[f"{name}_padding_grad_zero"] = bool((grad[:, n_valid:] == 0).all())
        work = logits.clone()
        out[f"{name}_ms"] = triton.testing.do_bench(lambda fn=fn, work=work: fn(work), return_mode="median")
    out["triton_config"] = {"BLOCK": BLOCK, "num_warps": NUM_WARPS}
    out["ok"] = (out["triton_grad_rel_err"] <= 1.5 * out["compiled_grad_rel_err"] + 1e-4
                 and out["triton_loss_rel_err"] < 1e-5 and out["triton_padding_grad_zero"])
    return out


def check_dropout_mask(device: torch.device) -> dict:
    """The Triton dropout-mask kernel at the paper's shapes: its keep rate, its time against
    ``torch.rand(...) >= p``, and the compiled post-LN step ``LN(x + dropout(h + b))`` (forward and
    backward, float32 residual, bf16 branch) with the kernel's mask against torch.compile's own dropout."""
    import triton.testing

    from gptkit import model as model_module
    from gptkit.kernels import dropout_mask

    p, shape = 0.1, (64, 512, 768)
    seed = torch.tensor(1234, device=device)
    mask = dropout_mask(seed, shape, p)
    keep = mask.float().mean().item()
    out = {"check": "dropout_mask", "keep_rate": keep, "expected": 1 - p,
           "kernel_ms": triton.testing.do_bench(lambda: dropout_mask(seed, shape, p), return_mode="median"),
           "torch_rand_ms": triton.testing.do_bench(lambda: torch.rand(shape, device=device) >= p,
                                                    return_mode="median")}
    x = torch.randn(shape, device=device, requires_grad=True)
    h = torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True)
    b = torch.zeros(shape[-1], device=device, dtype=torch.bfloat16, requires_grad=True)
    ln = torch.nn.LayerNorm(shape[-1], device=device)
    grad = torch.randn(shape, device=device)

    def step():
        y = ln(x + model_module.dropout(h + b, p))
        y.backward(grad)

    saved = model_module._MASK_KERNEL_DEVICES
    try:
        for name, devices in (("kernel", {"cuda"}), ("inductor", set())):
            model_module._MASK_KERNEL_DEVICES = devices
            torch._dynamo.reset()
            compiled = torch.compile(step)
            compiled()
            out[f"add_dropout_ln_fwd_bwd_{name}_ms"] = triton.testing.do_bench(compiled, return_mode="median")
    finally:
        model_module._MASK_KERNEL_DEVICES = saved
        torch._dynamo.reset()
    out["speedup"] = out["add_dropout_ln_fwd_bwd_inductor_ms"] / out["add_dropout_ln_fwd_bwd_kernel_ms"]
    out["ok"] = abs(keep - (1 - p)) < 5 * (p * (1 - p) / mask.numel()) ** 0.5
    return out


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


class SyncWarnings(pl.Callback):
    """Counts CUDA synchronisation warnings per training step (sync debug mode on during training)."""

    def __init__(self) -> None:
        self.per_step: dict = collections.Counter()
        self.sites: dict = collections.defaultdict(set)
        self.checkpoints: set[int] = set()
        self.validations: set[int] = set()

    def on_train_start(self, trainer, pl_module):
        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")
        if pl_module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")

    def _collect(self, step) -> None:
        for w in self._seen:
            if "synchroniz" in str(w.message):
                self.per_step[step] += 1
                self.sites[step].add(f"{Path(w.filename).name}:{w.lineno}")
        self._seen.clear()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._collect(trainer.global_step)  # what happened since the previous batch started

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.checkpoints.add(trainer.global_step)

    def on_validation_start(self, trainer, pl_module):
        self.validations.add(trainer.global_step)

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        self._collect(trainer.global_step)
        self._catch.__exit__(None, None, None)


def _count_syncs(recipe: str, overrides: list[str], steps: int = 24, every: int = 8) -> dict:
    from gptkit.builder import build, fit_or_stop
    from gptkit.config import load_config

    cfg = load_config(str(REPO / "recipes" / recipe), [
        f"trainer.max_steps={steps}", f"trainer.log_every_n_steps={every}", "trainer.val_check_interval=12",
        "trainer.limit_val_batches=2", "checkpoint.every_n_train_steps=null", "logging.progress=plain",
        "trainer.check_val_every_n_epoch=null", "trainer.devices=1", *overrides,
    ])
    c = build(cfg)
    c.datamodule.prepare_data()
    c.datamodule.setup("fit")
    spy = SyncWarnings()
    c.trainer.callbacks.append(spy)
    fit_or_stop(c, None)
    # step k's window runs from batch k's start to batch k+1's start; step 1 includes compilation
    busy = {k for k in range(1, steps + 1) if k % every == 0} | spy.checkpoints | spy.validations | {1, steps}
    # LearningRateMonitor logs at the start of the logging update's batch, so in the window before:
    # a host-to-device copy of each rate; any other wait there is unexpected
    expected = {k: {s for s in spy.sites[k] if s.startswith("lr_monitor.py:")} for k in range(steps) if (k + 1) % every == 0}
    quiet = {k: n for k, n in spy.per_step.items()
             if k not in busy and k >= 1 and spy.sites[k] - expected.get(k, set())}
    return {"recipe": recipe, "syncs_per_step": dict(sorted(spy.per_step.items())),
            "unexpected": {k: sorted(spy.sites[k]) for k in quiet}, "ok": not quiet}


def check_host_syncs(device: torch.device) -> dict:
    """Pretraining and RACE fine-tuning (real sample files) on the GPU under sync debug mode."""
    from gptkit.tokenizer import Tokenizer

    samples = REPO / "tests" / "fixtures" / "samples"
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"trainer.accelerator={device.type}", f"run.dir={tmp}/runs", f"run.data_dir={tmp}/data"]
        pretrain = _count_syncs("quickstart/pretrain.yaml", [
            "data.corpus=null", f"data.files=[{REPO / 'tests' / 'fixtures' / 'news_sample.txt'}]", *common])
        texts = [line for path in sorted((samples / "RACE").rglob("*.txt")) for line in path.read_text().splitlines()]
        Tokenizer.train(texts, vocab_size=1000, min_frequency=1).save(f"{tmp}/tok.json")
        race = _count_syncs("race.yaml", [
            f"data.root={samples}", f"tokenizer.path={tmp}/tok.json", "model.n_layer=4", "model.n_head=4",
            "model.n_embd=256", "data.batch_size=2", *common])
    return {"check": "no_host_sync_between_logging_steps", "pretrain": pretrain, "race": race,
            "ok": pretrain["ok"] and race["ok"]}


CHECKS = (check_chunked_loss, check_ce_kernel, check_dropout_mask, check_flash, check_fused_adamw, check_host_syncs)


def main() -> None:
    import sys

    device = torch.device("cuda")
    wanted = sys.argv[1:] or [c.__name__.removeprefix("check_") for c in CHECKS]
    unknown = set(wanted) - {c.__name__.removeprefix("check_") for c in CHECKS}
    if unknown:
        sys.exit(f"unknown check(s) {', '.join(sorted(unknown))}; choose from "
                 + ", ".join(c.__name__.removeprefix("check_") for c in CHECKS))
    for check in (c for c in CHECKS if c.__name__.removeprefix("check_") in wanted):
        try:
            print(json.dumps(check(device)), flush=True)
        except Exception as exc:  # report and go on: this is a diagnostic script
            print(json.dumps({"check": check.__name__, "ok": False, "error": repr(exc)[:500]}), flush=True)


if __name__ == "__main__":
    main()

"""Correctness checks of the CUDA fast path (run on a GPU machine; prints one JSON line per check).

1. chunked fused LM loss vs plain loss under bf16 autocast: loss and gradient differences;
2. the Triton kernel of the LM loss's softmax/gradient step: its error and its time;
3. SDPA picks the flash kernel for GPT-1's shapes with attention dropout (forced, must not raise);
4. fused AdamW steps vs foreach AdamW steps: parameter differences after a few updates;
5. a small in-process ``gptkit fit`` under ``torch.cuda.set_sync_debug_mode("warn")``: the steps
   whose metrics are not logged (and that save no checkpoint) must not make the host wait.

    python benchmarks/cuda_checks.py                       # all
    python benchmarks/cuda_checks.py host_syncs fused_adamw  # some
    python benchmarks/cuda_checks.py --device cpu --tiny   # the test suite's smoke run (seconds)

With ``--device cpu`` the checks that mean something on a CPU run there: 1 under CPU bf16 autocast
(the fused loss's eager in-place step instead of Triton's) and 4 (gptkit uses fused AdamW on a CPU
too; the reference is the plain for-loop AdamW). 2 and 3 print ``"skipped"`` with what they need
(CUDA and Triton, CUDA's flash kernel); 5 runs its two fits but counts nothing (sync debug mode is
CUDA's) and says so in ``"skipped"``. ``--tiny`` makes every shape small: a check that the script
runs, not of the numbers.
"""

from __future__ import annotations

import argparse
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


# --tiny's model (and batch): the smoke run's sizes, seconds on a CPU
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_ctx": 32, "vocab_size": 512}


def check_chunked_loss(device: torch.device, tiny: bool = False) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY) if tiny else GPTConfig(n_layer=2)).to(device).eval()
    x = torch.randint(0, model.config.vocab_size, (4, 33) if tiny else (8, 512), device=device)
    out = {}
    for name, chunk, bf16 in (("fp32", None, False), ("plain", None, True), ("chunked", 64 if tiny else 8192, True)):
        model.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
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


def check_ce_kernel(device: torch.device, tiny: bool = False) -> dict:
    """The fused loss's softmax/gradient step on one chunk (8192 x 40,512 bf16 logits, 40,481 valid):
    Triton's kernel and the compiled one against a float64 reference, and their times."""
    import triton.testing

    from gptkit.fastpath import _cross_entropy_and_grad
    from gptkit.kernels import BLOCK, NUM_WARPS, cross_entropy_and_grad

    torch.manual_seed(0)
    rows, cols, n_valid = (256, 576, 512) if tiny else (8192, 40512, 40481)
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


def check_flash(device: torch.device, tiny: bool = False) -> dict:
    q = torch.randn(*((2, 2, 32, 64) if tiny else (8, 12, 512, 64)), device=device, dtype=torch.bfloat16,
                    requires_grad=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        y = torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.1, is_causal=True)
        y.sum().backward()
    return {"check": "sdpa_flash_with_dropout", "ok": True}


def check_fused_adamw(device: torch.device, tiny: bool = False) -> dict:
    params = {}
    sizes = TINY if tiny else {"n_layer": 2, "n_embd": 256, "n_head": 4, "vocab_size": 1000, "n_ctx": 128}
    for fused in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**sizes)).to(device).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
        gen = torch.Generator(device=device).manual_seed(1)
        for _ in range(5):
            x = torch.randint(0, sizes["vocab_size"], (4, sizes["n_ctx"] + 1), device=device, generator=gen)
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


def _count_syncs(recipe: str, overrides: list[str], steps: int = 24, every: int = 8, val_every: int = 12) -> dict:
    from gptkit.builder import build
    from gptkit.config import load_config
    from gptkit.verbs import fit

    cfg = load_config(str(REPO / "recipes" / recipe), [
        f"trainer.max_steps={steps}", f"trainer.log_every_n_steps={every}", f"trainer.val_check_interval={val_every}",
        "trainer.limit_val_batches=2", "checkpoint.every_n_train_steps=null", "logging.progress=plain",
        "trainer.check_val_every_n_epoch=null", "trainer.devices=1", *overrides,
    ])
    spy = SyncWarnings()
    c = build(cfg, callbacks=[spy])
    fit(c)
    # step k's window runs from batch k's start to batch k+1's start; step 1 includes compilation
    busy = {k for k in range(1, steps + 1) if k % every == 0} | spy.checkpoints | spy.validations | {1, steps}
    # LearningRateMonitor logs at the start of the logging update's batch, so in the window before:
    # a host-to-device copy of each rate; any other wait there is unexpected
    expected = {k: {s for s in spy.sites[k] if s.startswith("lr_monitor.py:")} for k in range(steps) if (k + 1) % every == 0}
    quiet = {k: n for k, n in spy.per_step.items()
             if k not in busy and k >= 1 and spy.sites[k] - expected.get(k, set())}
    return {"recipe": recipe, "syncs_per_step": dict(sorted(spy.per_step.items())),
            "unexpected": {k: sorted(spy.sites[k]) for k in quiet}, "ok": not quiet}


def check_host_syncs(device: torch.device, tiny: bool = False) -> dict:
    """Pretraining and RACE fine-tuning (real sample files) on the GPU under sync debug mode."""
    from gptkit.tokenizer import Tokenizer

    samples = REPO / "tests" / "fixtures" / "samples"
    # --tiny: a few updates of a small model (the windows between logging steps still exist)
    steps = {"steps": 6, "every": 2, "val_every": 3} if tiny else {}
    model = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.n_ctx=64"] if tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"trainer.accelerator={device.type}", f"run.dir={tmp}/runs", f"run.data_dir={tmp}/data"]
        pretrain = _count_syncs("quickstart/pretrain.yaml", [
            "data.corpus=null", f"data.files=[{REPO / 'tests' / 'fixtures' / 'news_sample.txt'}]", *common,
            *model, *(["tokenizer.vocab_size=500", "data.batch_size=4"] if tiny else [])], **steps)
        texts = [line for path in sorted((samples / "RACE").rglob("*.txt")) for line in path.read_text().splitlines()]
        Tokenizer.train(texts, vocab_size=1000, min_frequency=1).save(f"{tmp}/tok.json")
        race = _count_syncs("race.yaml", [
            f"data.root={samples}", f"tokenizer.path={tmp}/tok.json", "model.n_layer=4", "model.n_head=4",
            "model.n_embd=256", "data.batch_size=2", *common, *model], **steps)
    out = {"check": "no_host_sync_between_logging_steps", "pretrain": pretrain, "race": race,
           "ok": pretrain["ok"] and race["ok"]}
    if device.type != "cuda":  # the fits ran (the check's code path), but there was nothing to count
        out["ok"] = None
        out["skipped"] = f"needs CUDA: torch.cuda.set_sync_debug_mode counts host waits on a GPU; the fits ran on {device.type}"
    return out


CHECKS = (check_chunked_loss, check_ce_kernel, check_flash, check_fused_adamw, check_host_syncs)
# what a check needs beyond a device (it prints "skipped" without it)
NEEDS_CUDA = {check_ce_kernel: "needs CUDA and Triton: it tests and times gptkit's Triton kernel",
              check_flash: "needs CUDA: SDPA's flash kernel runs on a GPU only"}


def main() -> None:
    import sys

    names = [c.__name__.removeprefix("check_") for c in CHECKS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checks", nargs="*", metavar="CHECK", help=f"some of: {', '.join(names)} (default: all)")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for the checks with a CPU meaning")
    p.add_argument("--tiny", action="store_true", help="small shapes everywhere: a smoke run, seconds on a CPU")
    args = p.parse_args()
    device = torch.device(args.device)
    wanted = args.checks or names
    unknown = set(wanted) - set(names)
    if unknown:
        sys.exit(f"unknown check(s) {', '.join(sorted(unknown))}; choose from " + ", ".join(names))
    for check in (c for c in CHECKS if c.__name__.removeprefix("check_") in wanted):
        if device.type != "cuda" and check in NEEDS_CUDA:
            print(json.dumps({"check": check.__name__.removeprefix("check_"), "skipped": NEEDS_CUDA[check]}), flush=True)
            continue
        try:
            print(json.dumps(check(device, args.tiny)), flush=True)
        except Exception as exc:  # report and go on: this is a diagnostic script
            print(json.dumps({"check": check.__name__, "ok": False, "error": repr(exc)[:500]}), flush=True)


if __name__ == "__main__":
    main()

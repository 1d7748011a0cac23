"""Training-step throughput: gptkit (through the real `gptkit fit` path) vs Hugging Face transformers.

Every contestant runs the full training step (forward, LM loss, backward, AdamW step) on the same
batch shape in one process, after warm-up steps, and is timed with the device synchronised:

* ``gptkit``: the module, Trainer and callbacks that ``gptkit fit`` builds (``builder.build_module`` +
  ``builder.build_trainer``), with the paper's dropout, AdamW with decoupled decay and the LR schedule;
  its defaults: on CUDA bf16-mixed, SDPA, fused AdamW, torch.compile, the chunked LM loss; on a CPU
  float32, the in-place chunked LM loss, fused AdamW, and the CPU dropout and attention paths.
* ``hf``: ``transformers.OpenAIGPTLMHeadModel`` with the same sizes in a plain PyTorch loop (no
  Lightning overhead), ``torch.optim.AdamW``; variants fp32, bf16 autocast, bf16 + torch.compile.

With ``--task race`` the step is a fine-tuning step of RACE's shape instead: batches of examples with
4 answer candidates of ``n_ctx`` tokens each, the multiple-choice head plus the auxiliary LM loss at
weight 0.5 (``gptkit fit`` with ``data.name=race``), against ``OpenAIGPTDoubleHeadsModel`` with
``mc_loss + 0.5 * lm_loss``. ``--batch-size`` then counts examples (default: 16 on CUDA, i.e. 64
sequences of 512 tokens, the pretraining batch's token count; 4 on CPU).

Prints tokens/s, MFU (against the device's dense peak from Lightning's table, or --peak-tflops),
peak memory, and each contestant's ratio to the best transformers variant.

    python benchmarks/train_step.py --device cpu                 # small config, float32
    python benchmarks/train_step.py --device cuda --size paper   # 117M, 64 x 512, bf16
    python benchmarks/train_step.py --device cuda --size paper --task race

The smoke run of the test suite (``tests/test_benchmarks.py``), seconds on a CPU::

    python benchmarks/train_step.py --device cpu --size tiny --steps 2 --warmup 1 --bare --run-dir /tmp/b
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

SIZES = {
    # name: (n_layer, n_head, n_embd, n_ctx, vocab, batch)
    "paper": (12, 12, 768, 512, 40481, 64),
    "small": (4, 4, 256, 128, 8003, 16),
    "tiny": (2, 2, 64, 32, 512, 4),  # the test suite's smoke run: checks that the script runs, times nothing
}
CHOICES = 4  # answer candidates per RACE example


def race_batch(vocab: int, examples: int, n_ctx: int, seed: int) -> dict:
    """A fine-tuning batch of the task batch contract (``gptkit.tasks.base.collate``), RACE-shaped."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (examples, CHOICES, n_ctx), generator=g)
    lm_targets = ids.roll(-1, dims=-1)
    lm_targets[..., -1] = -100
    return {
        "input_ids": ids, "lm_targets": lm_targets,
        "extract_pos": torch.full((examples, CHOICES), n_ctx - 1),
        "choice_mask": torch.ones(examples, CHOICES, dtype=torch.bool),
        "labels": torch.randint(0, CHOICES, (examples,), generator=g),
        "index": torch.arange(examples),
    }


def tokens_per_step(args, size) -> int:
    n_ctx, batch = size[3], size[5]
    return batch * n_ctx * (CHOICES if args.task == "race" else 1)


def peak_flops(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    from gptkit.devices import peak_flops as device_peak

    return device_peak(device, torch.bfloat16 if "bf16" in precision else torch.float32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


class _FakeTokenizer:
    def __init__(self, vocab: int) -> None:
        self.vocab_size, self.fingerprint = vocab, "benchmark"


def bench_gptkit(args, size, device) -> dict:
    """The real fit path on random token blocks held in memory."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from gptkit.builder import build_callbacks, build_module, build_trainer
    from gptkit.callbacks import measure_flops_per_token
    from gptkit.config import load_config
    from gptkit.console import quiet_libraries

    quiet_libraries()
    n_layer, n_head, n_embd, n_ctx, vocab, batch = size
    total = args.warmup + args.steps
    overrides = [
        f"model.n_layer={n_layer}", f"model.n_head={n_head}", f"model.n_embd={n_embd}", f"model.n_ctx={n_ctx}",
        f"data.batch_size={batch}", f"trainer.max_steps={total}", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0", "logging.progress=none", f"run.dir={args.run_dir}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", "trainer.devices=1",
        "optim.warmup_steps=10", "trainer.log_every_n_steps=1000000",
    ]
    if args.precision:
        overrides.append(f"trainer.precision={args.precision}")
    if args.no_compile:
        overrides.append("model.compile=false")
    overrides.append(f"model.compile_mode={args.compile_mode}")
    if args.compile_tuning:
        overrides.append("model.compile_tuning=true")
    if args.task == "race":
        overrides += ["data.name=race", "objective.lm_coef=0.5"]
    marks: dict[str, float] = {}

    class Timer(pl.Callback):
        """Synchronises only where the timed window starts and ends, so the host may run ahead."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx in (0, args.warmup):
                sync(device)
                marks[f"start{batch_idx}"] = time.perf_counter()
                if batch_idx == args.warmup:
                    reset_memory(device)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == total - 1:
                sync(device)
                marks["end"] = time.perf_counter()

    cfg = load_config(None, overrides)
    module = build_module(cfg, _FakeTokenizer(vocab), {"kind": "bpe"})
    rdir = Path(args.run_dir)
    timer = Timer()
    trainer = build_trainer(cfg, rdir, [*build_callbacks(cfg, rdir), timer])
    pin = device.type == "cuda"
    if args.task == "race":
        batches = [race_batch(vocab, batch, n_ctx, seed) for seed in range(total)]
        loader = DataLoader(batches, batch_size=None, shuffle=False, pin_memory=pin)
    else:
        data = torch.randint(0, vocab, (total * batch, n_ctx + 1), generator=torch.Generator().manual_seed(0))
        loader = DataLoader(data, batch_size=batch, shuffle=False, pin_memory=pin)

    t_start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    wall = time.perf_counter() - t_start
    steady = marks["end"] - marks[f"start{args.warmup}"]
    return {
        "name": "gptkit fit",
        "tokens_per_s": args.steps * tokens_per_step(args, size) / steady,
        "first_steps_s": round(marks[f"start{args.warmup}"] - marks["start0"], 2),  # includes torch.compile
        "fused_adamw": bool(trainer.optimizers[0].defaults.get("fused")),
        "wall_s": round(wall, 1),
        "flops_per_token": measure_flops_per_token(module.backbone.config),
        "peak_mem_gb": peak_memory_gb(device),
        "precision": str(trainer.precision),
    }


def bench_plain(args, size, device) -> dict:
    """gptkit's model and fused loss in a bare loop (no Lightning): what the Trainer costs on top."""
    from gptkit.fastpath import lm_loss_chunk_rows
    from gptkit.model import GPT, GPTConfig, lm_loss
    from gptkit.module import compile_arguments
    from gptkit.optim import fused_adamw_available, param_groups

    n_layer, n_head, n_embd, n_ctx, vocab, batch = size
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, n_ctx=n_ctx, n_layer=n_layer, n_head=n_head, n_embd=n_embd)).to(device)
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=fused_adamw_available(device))
    if cuda and not args.no_compile:
        model.compile(**compile_arguments(args.compile_mode, args.compile_tuning))
    x = torch.randint(0, vocab, (batch, n_ctx + 1), device=device)
    chunk = lm_loss_chunk_rows(device, vocab)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = lm_loss(model, model(x[:, :-1]), x[:, 1:], chunk_size=chunk)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time_loop(args, device, step, "gptkit model, bare loop", batch * n_ctx)


def _time_loop(args, device, step, name: str, tokens_per_step: int) -> dict:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    first = time.perf_counter() - t0
    reset_memory(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    steady = time.perf_counter() - t0
    result = {"name": name, "tokens_per_s": args.steps * tokens_per_step / steady, "first_steps_s": round(first, 2),
              "peak_mem_gb": peak_memory_gb(device)}
    reset_memory(device)
    return result


def bench_hf(args, size, device, autocast: bool, compile_: bool) -> dict:
    import transformers

    n_layer, n_head, n_embd, n_ctx, vocab, batch = size
    config = transformers.OpenAIGPTConfig(vocab_size=vocab, n_positions=n_ctx, n_embd=n_embd, n_layer=n_layer,
                                          n_head=n_head)
    torch.manual_seed(0)
    race = args.task == "race"
    head = transformers.OpenAIGPTDoubleHeadsModel if race else transformers.OpenAIGPTLMHeadModel
    model = head(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    step_model = torch.compile(model) if compile_ else model
    dtype = torch.bfloat16 if autocast else torch.float32
    if race:
        b = {k: v.to(device) for k, v in race_batch(vocab, batch, n_ctx, 0).items()}

        def loss_fn():
            out = step_model(input_ids=b["input_ids"], mc_token_ids=b["extract_pos"], labels=b["input_ids"],
                             mc_labels=b["labels"])
            return out.mc_loss + 0.5 * out.loss
    else:
        x = torch.randint(0, vocab, (batch, n_ctx), device=device)

        def loss_fn():
            return step_model(input_ids=x, labels=x).loss

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    name = "transformers " + ("bf16" if autocast else "fp32") + (" + compile" if compile_ else "")
    return _time_loop(args, device, step, name, tokens_per_step(args, size))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=SIZES, default=None, help="default: paper on CUDA, small on CPU")
    p.add_argument("--task", choices=["lm", "race"], default="lm",
                   help="lm: a pretraining step; race: a RACE-shaped fine-tuning step (4 candidates per example)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences (lm) or examples (race)")
    p.add_argument("--vocab-size", type=int, default=None, help="override the size's vocabulary (40481: GPT-1's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", default=None, help="gptkit trainer.precision (default: its own default)")
    p.add_argument("--no-compile", action="store_true", help="gptkit without torch.compile")
    p.add_argument("--compile-mode", default="default",
                   help="gptkit's torch.compile mode (model.compile_mode), e.g. max-autotune-no-cudagraphs")
    p.add_argument("--compile-tuning", action="store_true",
                   help="gptkit with inductor's coordinate-descent tuning (model.compile_tuning, as recipes/pretrain.yaml)")
    p.add_argument("--hf", default=None, help="comma list of: fp32,bf16,bf16-compile, or none (default: fp32 on CPU, all on CUDA)")
    p.add_argument("--bare", action="store_true", help="also time gptkit's model in a bare loop (no Lightning)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak for MFU (default: Lightning's table)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--run-dir", default="/tmp/gptkit-bench",
                   help="gptkit's run folder (run.dir; its last.ckpt is overwritten each run)")
    args = p.parse_args()

    if args.bare and args.task == "race":
        p.error("--bare times the pretraining loss only; leave it out with --task race")
    device = torch.device(args.device)
    size = list(SIZES[args.size or ("paper" if device.type == "cuda" else "small")])
    if args.task == "race":
        size[-1] = 16 if device.type == "cuda" else 4
    if args.batch_size:
        size[-1] = args.batch_size
    if args.vocab_size:
        size[4] = args.vocab_size
    size = tuple(size)
    hf_variants = (args.hf or ("fp32,bf16,bf16-compile" if device.type == "cuda" else "fp32")).split(",")
    hf_variants = [v for v in hf_variants if v != "none"]
    unknown = set(hf_variants) - {"fp32", "bf16", "bf16-compile"}
    if unknown:
        p.error(f"--hf: unknown variant(s) {', '.join(sorted(unknown))}; use fp32, bf16, bf16-compile or none")

    results = [bench_gptkit(args, size, device)]
    flops_per_token = results[0]["flops_per_token"]
    if args.bare:
        results.append(bench_plain(args, size, device))
    for v in hf_variants:
        results.append(bench_hf(args, size, device, autocast=v.startswith("bf16"), compile_=v.endswith("compile")))

    precision = results[0]["precision"]
    peak = peak_flops(device, precision, args.peak_tflops)
    hf = [r["tokens_per_s"] for r in results if r["name"].startswith("transformers")]
    best_hf = max(hf) if hf else None
    info = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "task": args.task,
        "compile_mode": None if args.no_compile or device.type != "cuda" else args.compile_mode,
        "compile_tuning": args.compile_tuning,
        "size": dict(zip(["n_layer", "n_head", "n_embd", "n_ctx", "vocab", "batch"], size)),
        "peak_tflops": peak / 1e12 if peak else None,
    }
    try:
        import pytorch_lightning
        import transformers

        info["lightning"], info["transformers"] = pytorch_lightning.__version__, transformers.__version__
    except ImportError:
        pass
    print(json.dumps(info))
    print(f"{'contestant':<28}{'tokens/s':>12}{'MFU':>8}{'peak GB':>9}{'x best HF':>11}{'warm-up s':>11}")
    for r in results:
        r["mfu"] = flops_per_token * r["tokens_per_s"] / peak if peak else None
        r["ratio_vs_best_hf"] = r["tokens_per_s"] / best_hf if best_hf else None
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] else "-"
        ratio = f"{r['ratio_vs_best_hf']:.2f}" if r["ratio_vs_best_hf"] else "-"
        print(f"{r['name']:<28}{r['tokens_per_s']:>12,.0f}{mfu:>8}{mem:>9}{ratio:>11}{r['first_steps_s']:>11}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"info": info, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()

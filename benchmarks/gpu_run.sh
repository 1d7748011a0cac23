#!/usr/bin/env bash
# One prepared GPU session: the training-step benchmarks (pretraining and a
# RACE-shaped fine-tuning step), optional profile, correctness checks, other compile modes, a real `gptkit fit`.
# Usage (on a CUDA machine, repo root): bash benchmarks/gpu_run.sh OUTDIR
# DRY_RUN=1 prints each command line it would run (with the same variables) and runs none: anywhere.
# Packages missing there (omegaconf) can be carried as wheels in .whl/ (see docs/performance.md).
set -u
OUT=${1:-/tmp/gptkit-gpu}
Q=$(printf %q "$OUT")  # OUT quoted for the command lines below
# step 'COMMAND LINE': run it (eval), or with DRY_RUN=1 print it
step() {
  if [ -n "${DRY_RUN:-}" ]; then printf '+ %s\n' "$1"; else eval "$1"; fi
}
step "mkdir -p $Q"
if ls .whl/*.whl >/dev/null 2>&1; then
  step "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl"
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
step "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader"
step "python3 -c \"import torch, pytorch_lightning as pl, transformers, tokenizers; print('torch', torch.__version__, 'lightning', pl.__version__, 'transformers', transformers.__version__)\""
# transformers fp32 and bf16 eager were measured before (docs/performance.md); HF=fp32,bf16,bf16-compile for all
[ -n "${SKIP_BENCH:-}" ] || step "python3 benchmarks/train_step.py --device cuda --size paper --steps ${STEPS:-20} --warmup 8 \
--hf ${HF:-bf16-compile} --bare ${BENCH_ARGS:-} --json $Q/train_step.json 2>&1 | grep -v -i warn | tee $Q/train_step.txt"
[ -n "${SKIP_RACE:-}" ] || step "python3 benchmarks/train_step.py --device cuda --size paper --task race --hf ${HF:-bf16-compile} \
--steps ${STEPS:-20} --warmup 8 --json $Q/train_step_race.json 2>&1 | grep -v -i warn | tee $Q/train_step_race.txt"
# optional: where the bare step's time goes, and variants of it, e.g. PROFILE="default coordinate-descent"
[ -z "${PROFILE:-}" ] || step "python3 benchmarks/profile_step.py $PROFILE 2>&1 | grep -v -i warn | tee $Q/profile.txt"
# CHECKS="chunked_loss flash" for some; SKIP_CHECKS=1 for none (each variable below splits the session)
[ -n "${SKIP_CHECKS:-}" ] || step "python3 benchmarks/cuda_checks.py ${CHECKS:-} 2>&1 | tee $Q/cuda_checks.jsonl"
# optional: gptkit fit alone under other torch.compile modes, e.g. MODES=max-autotune-no-cudagraphs (compiles for minutes)
for mode in ${MODES:-}; do
  step "python3 benchmarks/train_step.py --device cuda --size paper --steps ${STEPS:-20} --warmup 8 --hf none \
--compile-mode $mode --json $Q/train_step_$mode.json 2>&1 | grep -v -i warn | tee $Q/train_step_$mode.txt"
done
[ -n "${SKIP_FIT:-}" ] || step "python3 -m gptkit.cli fit recipes/quickstart/pretrain.yaml data.corpus=null \
data.files=[tests/fixtures/news_sample.txt] trainer.max_steps=120 trainer.val_check_interval=60 trainer.log_every_n_steps=20 \
run.dir=/tmp/r run.data_dir=/tmp/d run.overwrite=true logging.progress=plain 2>&1 | grep -v -i warn | tail -12 | tee $Q/fit.txt"

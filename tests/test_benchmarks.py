"""Smoke runs of every script in ``benchmarks/``: each runs once on tiny CPU settings and must finish
and print its table or summary. Nothing here checks a speed or a number.

The scripts are started in subprocesses (this checkout on ``PYTHONPATH``, a tmp folder as the current
folder, ``TMPDIR`` and ``GPTKIT_CACHE``, inputs built from ``tests/fixtures``; no network). Most of a
run is importing torch, Lightning and transformers, so the runs this session selected start together
on first use, two at a time, and each test waits for its own.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import NEWS, REPO

BENCH = REPO / "benchmarks"
TINY_STEPS = ["--device", "cpu", "--size", "tiny", "--steps", "2", "--warmup", "1"]
# each script's smoke command: the arguments after ``python benchmarks/`` (paths relative to the tmp folder)
SMOKE = {
    "train_step_lm": ["train_step.py", *TINY_STEPS, "--bare", "--run-dir", "run", "--json", "lm.json"],
    # (a run folder of its own: the two train_step runs go at the same time)
    "train_step_race": ["train_step.py", *TINY_STEPS, "--task", "race", "--run-dir", "run-race", "--json", "race.json"],
    "data_prep": ["data_prep.py", "--files", "tiny.txt", "--vocab-size", "300"],
    "tokenizer_agreement": ["tokenizer_agreement.py", "tiny.csv", "--dev", "3", "--show", "3"],
    "cuda_checks": ["cuda_checks.py", "--device", "cpu", "--tiny"],
    "profile_step": ["profile_step.py", "--device", "cpu", "--size", "tiny", "--steps", "2"],
}


def write_inputs(folder: Path) -> None:
    """A few news articles as a text file and as a CSV with a ``text`` column."""
    articles = [a for a in NEWS.read_text().split("\n\n") if a.strip()][:6]
    (folder / "tiny.txt").write_text("\n\n".join(articles))
    with open(folder / "tiny.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, ["title", "text"])
        writer.writeheader()
        writer.writerows({"title": f"article {i}", "text": a[:1500]} for i, a in enumerate(articles))


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "GPTKIT_CACHE": str(cwd / "cache"), "TMPDIR": str(cwd / "tmp")}
    return subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def smoke(request, tmp_path_factory):
    """``smoke(name)``: the finished run of ``SMOKE[name]`` and its folder. The runs of every selected
    test of this module (``test_<name>``) start on first use, two at a time (the CI machine's cores)."""
    folder = tmp_path_factory.mktemp("benchmarks")
    (folder / "tmp").mkdir()
    write_inputs(folder)
    selected = [item.originalname.removeprefix("test_") for item in request.session.items
                if item.module is request.module]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(run_script, SMOKE[name], folder) for name in SMOKE if name in selected}

        def result(name: str) -> tuple[subprocess.CompletedProcess, Path]:
            out = runs[name].result()
            assert out.returncode == 0, f"benchmarks/{SMOKE[name][0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            return out, folder

        yield result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_train_step_lm(smoke):
    out, folder = smoke("train_step_lm")
    assert "contestant" in out.stdout and "tokens/s" in out.stdout and "x best HF" in out.stdout
    info = json_lines(out.stdout)[0]
    assert info["task"] == "lm" and info["size"]["n_layer"] == 2
    saved = json.loads((folder / "lm.json").read_text())
    names = [r["name"] for r in saved["results"]]
    assert names == ["gptkit fit", "gptkit model, bare loop", "transformers fp32"]
    assert all(name in out.stdout for name in names)
    assert (folder / "run" / "checkpoints" / "last.ckpt").is_file()  # --run-dir, not /tmp/gptkit-bench


@pytest.mark.slow
def test_train_step_race(smoke):
    out, folder = smoke("train_step_race")
    assert "contestant" in out.stdout and "gptkit fit" in out.stdout and "transformers fp32" in out.stdout
    saved = json.loads((folder / "race.json").read_text())
    assert saved["info"]["task"] == "race"
    assert [r["name"] for r in saved["results"]] == ["gptkit fit", "transformers fp32"]


def test_data_prep(smoke):
    out, folder = smoke("data_prep")
    result = json.loads(out.stdout)
    assert {"corpus_mb", "direct_encode_mb_per_s", "build_shards_mb_per_s", "ratio", "peak_rss_mb_1x",
            "peak_rss_mb_4x", "build_4x_mb_per_s"} <= result.keys()
    assert result["same_token_count"] is True  # the shards hold what tokenizers' batch encoder gives
    assert not list((folder / "tmp").glob("gptkit-dataprep-*"))  # its working copies are removed


@pytest.mark.slow
def test_tokenizer_agreement(smoke):
    out, _ = smoke("tokenizer_agreement")
    assert out.stdout.startswith("6 articles")
    for row in ("| pipeline | chars/s | tokens/s |", "| exact (ftfy + spaCy + BPE) |", "| fast, encode_batch |",
                "articles 3..5 (held out)", "| sentences of held-out articles |",
                "most frequent held-out disagreements (exact -> fast)"):
        assert row in out.stdout


@pytest.mark.slow
def test_cuda_checks(smoke):
    out, _ = smoke("cuda_checks")
    lines = {line["check"]: line for line in json_lines(out.stdout)}
    assert set(lines) == {"chunked_lm_loss_bf16", "ce_kernel", "flash", "fused_vs_foreach_adamw",
                          "no_host_sync_between_logging_steps"}
    assert not [line for line in lines.values() if "error" in line]
    # run on the CPU: the fused loss under CPU bf16 autocast, fused AdamW
    assert {"max_rel_grad_err_chunked_bf16", "ok"} <= lines["chunked_lm_loss_bf16"].keys()
    assert {"max_abs_param_diff", "ok"} <= lines["fused_vs_foreach_adamw"].keys()
    # said, not silent: what needs CUDA (or Triton)
    for name in ("ce_kernel", "flash", "no_host_sync_between_logging_steps"):
        assert lines[name]["skipped"].startswith("needs CUDA")
    assert {"pretrain", "race"} <= lines["no_host_sync_between_logging_steps"].keys()  # its two fits ran


@pytest.mark.slow
def test_profile_step(smoke):
    out, _ = smoke("profile_step")
    timed = re.findall(r"^(\S+) +[\d.]+ ms/step", out.stdout, re.MULTILINE)
    skipped = re.findall(r"^(\S+) +skipped: needs CUDA", out.stdout, re.MULTILINE)
    assert sorted(skipped) == ["coordinate-descent", "sdpa-cudnn", "sdpa-flash"]
    assert "default" in timed and "bf16-residual" in timed and len(timed) + len(skipped) == 9
    assert "top operators (ms per step, launches per step)" in out.stdout
    assert "matrix products" in out.stdout


def test_gpu_run_dry_run(tmp_path):
    script = BENCH / "gpu_run.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    out = tmp_path / "out dir"
    env = {**os.environ, "DRY_RUN": "1", "PROFILE": "default no-dropout", "MODES": "max-autotune-no-cudagraphs",
           "CHECKS": "ce_kernel flash"}
    run = subprocess.run(["bash", str(script), str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not out.exists()  # printed, not run
    lines = [line.removeprefix("+ ") for line in run.stdout.splitlines()]
    assert all(line in run.stdout for line in ("+ nvidia-smi", "+ python3 -m gptkit.cli fit"))
    calls = [line for line in lines if line.startswith("python3 benchmarks/")]
    assert [c.split()[1] for c in calls] == [
        "benchmarks/train_step.py", "benchmarks/train_step.py", "benchmarks/profile_step.py",
        "benchmarks/cuda_checks.py", "benchmarks/train_step.py"]
    assert "--task race" in calls[1] and "profile_step.py default no-dropout" in calls[2]
    assert "cuda_checks.py ce_kernel flash" in calls[3] and "--compile-mode max-autotune-no-cudagraphs" in calls[4]
    # every option it passes is one the script defines
    for call in calls:
        path, *args = call.split("|")[0].split()[1:]
        source = (REPO / path).read_text()
        assert [a for a in args if a.startswith("--") and f'"{a}"' not in source] == [], call


def test_gpu_run_runs_its_command_lines(tmp_path):
    """Outside a dry run the same lines run (through stand-ins for python3 and nvidia-smi that print
    their arguments), with an output folder whose name has a space."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("python3", "nvidia-smi"):
        (stubs / name).write_text('#!/bin/sh\necho "$(basename "$0") argc=$#" "$@"\n')
        (stubs / name).chmod(0o755)
    out = tmp_path / "out dir"
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "PROFILE": "default"}
    env.pop("DRY_RUN", None)
    run = subprocess.run(["bash", str(BENCH / "gpu_run.sh"), str(out)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "cuda_checks.jsonl", "fit.txt", "profile.txt", "train_step.txt", "train_step_race.txt"]
    step = (out / "train_step.txt").read_text()
    assert step.startswith("python3 argc=14 benchmarks/train_step.py --device cuda --size paper")
    assert f"--json {out}/train_step.json" in step  # one argument, space and all

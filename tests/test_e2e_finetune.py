"""End to end: the real `gptkit fit`, `test`, `predict` and `glue` on real GLUE sample files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, folder_snapshot, run_cli
from finetune_helpers import GLUE, SAMPLES, tiny_tokenizer

pytestmark = pytest.mark.slow  # real `gptkit fit/test/predict/glue` runs in subprocesses

TINY_FT = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.n_ctx=64", "data.batch_size=8",
           "logging.progress=plain", "logging.throughput=false", "trainer.accelerator=cpu", "trainer.devices=1",
           "optim.lr=1e-3", "trainer.log_every_n_steps=2"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e_ft")
    tiny_tokenizer().save(cwd / "tok.json")
    args = [str(REPO / "recipes" / "sst2.yaml"), f"data.root={GLUE}", "tokenizer.path=tok.json", *TINY_FT,
            "trainer.max_epochs=1"]
    out = run_cli("fit", *args, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd, args, out


def test_fit_reports_data_and_validates(finetuned):
    cwd, _, out = finetuned
    assert "task sst2 (SST-2)" in out.stderr and "train: 50 examples" in out.stderr
    assert "val/acc" in out.stderr
    ckpts = sorted(p.name for p in (cwd / "runs" / "sst2" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(c.startswith("best-") and "val_acc" in c for c in ckpts)
    # last.ckpt is written after the epoch's best checkpoint, so it knows it (and a resume keeps it as best)
    last = torch.load(cwd / "runs" / "sst2" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    best = next(state for key, state in last["callbacks"].items() if key.startswith("BestCheckpoint"))
    assert Path(best["best_model_path"]).name == next(c for c in ckpts if c.startswith("best-"))
    assert "mode: null" in (cwd / "runs" / "sst2" / "config.yaml").read_text()  # reusable with another monitor


def test_resuming_the_finished_run_trains_and_writes_nothing(finetuned):
    cwd, args, _ = finetuned
    folder = cwd / "runs" / "sst2"
    before = folder_snapshot(folder)
    again = run_cli("fit", *args, "ckpt_path=last", "objective.lm_coef=0", cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stderr and "before its first validation" not in again.stderr
    assert folder_snapshot(folder) == before


def test_test_predict_and_glue(finetuned):
    cwd, args, _ = finetuned
    tested = run_cli("test", *args, "ckpt_path=best", cwd=cwd)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/acc" in tested.stdout and "dev set" in tested.stderr  # GLUE test labels are private
    results = json.loads((cwd / "runs" / "sst2" / "results" / "test.json").read_text())
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0
    best = next((cwd / "runs" / "sst2" / "checkpoints").glob("best-*.ckpt"))
    assert results["checkpoint"] == str(best.resolve())  # what the metrics score
    assert results["step"] == torch.load(best, weights_only=True, mmap=True)["global_step"]
    predicted = run_cli("predict", *args, "ckpt_path=best", cwd=cwd)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = (cwd / "runs" / "sst2" / "predictions" / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 51
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(50)]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    glue = run_cli("glue", "runs/sst2", "--out", "submission", cwd=cwd)
    assert glue.returncode == 0, glue.stderr
    assert "GLUE" in glue.stdout and "partial" in glue.stdout
    assert (cwd / "submission" / "SST-2.tsv").is_file()
    exported = run_cli("export", "runs/sst2/checkpoints/last.ckpt", "--to", "hf", "hf-sst2", cwd=cwd)
    assert exported.returncode == 0, exported.stderr
    assert "the backbone and its tied LM head only: the sst2 task head is not exported" in exported.stdout
    # evaluations print their metrics and write results/, without adding TensorBoard versions to the run
    assert sorted(p.name for p in (cwd / "runs" / "sst2" / "tensorboard").iterdir()) == ["version_0"]


def test_a_fit_that_ends_before_its_first_validation_says_so(finetuned):
    cwd, args, _ = finetuned
    out = run_cli("fit", *args, "trainer.max_steps=2", "run.name=short", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "could not find the monitored key" not in out.stderr  # Lightning's advice does not apply
    assert "training ended before its first validation, so no best checkpoint (val/acc) was kept" in out.stderr
    assert sorted(p.name for p in (cwd / "runs" / "short" / "checkpoints").iterdir()) == ["last.ckpt"]


def test_multiple_choice_from_a_checkpoint_with_n_transfer(finetuned):
    cwd, args, _ = finetuned
    race = [str(REPO / "recipes" / "race.yaml"), f"data.root={SAMPLES}", *TINY_FT, "trainer.max_epochs=1",
            "init.checkpoint=runs/sst2/checkpoints/last.ckpt", "init.n_transfer=1", "data.subset=all"]
    out = run_cli("fit", *race, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(embeddings + 1 blocks); 1 of the model's 2 blocks (model.n_layer) start from random weights" in out.stderr
    assert "truncated to n_ctx=64" in out.stderr
    assert "val/acc_middle" in out.stderr and "val/acc_high" in out.stderr


def test_bad_task_data_is_one_clear_error(tmp_path):
    tiny_tokenizer().save(tmp_path / "tok.json")
    out = run_cli("fit", str(REPO / "recipes" / "sst2.yaml"), f"data.root={tmp_path}", "tokenizer.path=tok.json",
                  *TINY_FT, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "missing GLUE SST-2 train file" in out.stderr
    out = run_cli("fit", str(REPO / "recipes" / "mrpc.yaml"), f"data.root={GLUE}", "tokenizer.path=tok.json",
                  "checkpoint.monitor=val/mcc", *TINY_FT, cwd=tmp_path)
    assert out.returncode == 2 and "checkpoint.monitor=val/mcc is not a metric that task mrpc logs; choose one of val/acc, val/f1, val/loss, train/loss, train/task_loss" in out.stderr

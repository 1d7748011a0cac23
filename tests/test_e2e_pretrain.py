"""End to end: the real `gptkit fit` on real news text, then `gptkit generate`, resume and evaluate."""

import json
import re

import pytest
import torch
from conftest import NEWS, QUICK, TINY, folder_snapshot, run_cli
from fit_helpers import scalars

pytestmark = pytest.mark.slow  # every test here builds on a real `gptkit fit` in a subprocess

ARGS = [QUICK, "data.corpus=null", f"data.files=[{NEWS}]", *TINY, "model.n_embd=64", "model.n_ctx=64",
        "tokenizer.vocab_size=1000", "data.batch_size=16", "optim.lr=1e-3", "optim.warmup_steps=10",
        "trainer.max_steps=80", "trainer.val_check_interval=40", "trainer.log_every_n_steps=10",
        "trainer.limit_val_batches=null", "run.name=e2e"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e")
    out = run_cli("fit", *ARGS, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd, out


def test_fit_learns_real_text(trained):
    cwd, out = trained
    run_dir = cwd / "runs" / "e2e"
    train = scalars(run_dir, "train/loss")
    val = scalars(run_dir, "val/loss")
    assert len(train) >= 6 and len(val) == 2
    assert train[-1][1] < train[0][1] - 0.5  # loss goes down on real text
    assert val[1][1] < val[0][1]
    assert scalars(run_dir, "val/ppl")
    assert any(tag for tag in ("lr-AdamW/pg1",) if scalars(run_dir, tag))
    assert (run_dir / "config.yaml").is_file() and "n_embd: 64" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "tokenised" in out.stderr and "step 80/80" in out.stderr  # plain progress lines off a terminal
    # throughput: logged at every logging step, over each interval (FLOPs of all its batches, not one)
    tokens, flops = scalars(run_dir, "train/device/items_per_sec"), scalars(run_dir, "train/device/flops_per_sec")
    assert [s for s, _ in tokens] == [9, 19, 29, 39, 49, 59, 69, 79] == [s for s, _ in flops]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    n_params = sum(v.numel() for k, v in state.items() if "positions_embed" not in k)
    for (_, t), (_, f) in zip(tokens, flops):
        assert t > 0 and 6 * n_params < f / t < 9 * n_params
    assert len(scalars(run_dir, "train/first_update_s")) == 1 and "first update: " in out.stderr
    # the closing line: updates, wall time, the best and the final val/loss, the checkpoints
    assert re.search(r"done: 80 updates in \S+; best val/loss [\d.]+ \(update (40|80)\), final [\d.]+; "
                     r"last checkpoint \S+last\.ckpt, best \S+\.ckpt", out.stderr), out.stderr[-1500:]


def test_generate_from_checkpoint(trained):
    cwd, _ = trained
    out = run_cli("generate", "runs/e2e/checkpoints/last.ckpt", "--prompt", "The president said",
                  "--max-new-tokens", "12", "--num-samples", "2", cwd=cwd)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("the president said") for line in lines)
    assert all(len(line.split()) > 5 for line in lines)


def test_refuses_to_overwrite_then_resumes_and_validates(trained):
    cwd, _ = trained
    again = run_cli("fit", *ARGS, cwd=cwd)
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr
    resumed = run_cli("fit", *ARGS, "trainer.max_steps=90", "ckpt_path=last", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step 90/90" in resumed.stderr
    assert "done: 10 updates (80 to 90) in " in resumed.stderr
    # the cosine schedule now runs to 90: at update 80 its rate is no longer 0, and the run says so
    assert "resuming at update 80: the learning rate goes from 0 (the checkpoint's) to" in resumed.stderr
    # the resumed run's curves continue in the run's TensorBoard version
    assert [p.name for p in (cwd / "runs" / "e2e" / "tensorboard").iterdir()] == ["version_0"]
    folder = cwd / "runs" / "e2e"
    before = folder_snapshot(folder)
    idle = run_cli("fit", *ARGS, "trainer.max_steps=90", "optim.lr=5e-4", "ckpt_path=last", cwd=cwd)
    assert idle.returncode == 0 and "nothing to train: " in idle.stderr and "is at update 90" in idle.stderr
    assert folder_snapshot(folder) == before
    val = run_cli("validate", *ARGS, "ckpt_path=last", cwd=cwd)
    assert val.returncode == 0, val.stderr[-2000:]
    assert "val/loss" in val.stdout and "val/ppl" in val.stdout


def test_tokenizer_checkpoint_mismatch_is_refused(trained, tmp_path):
    cwd, _ = trained
    other = run_cli("fit", *ARGS, "tokenizer.vocab_size=700", "ckpt_path=last", cwd=cwd)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "was trained with tokenizer" in other.stderr


def test_evaluating_takes_the_checkpoints_tokenizer(trained):
    """`validate ckpt_path=last` evaluates with the tokenizer the run trained with, whatever tokenizer.* says."""
    cwd, _ = trained
    val = run_cli("validate", *ARGS, "tokenizer.vocab_size=700", "ckpt_path=last", cwd=cwd)
    assert val.returncode == 0, val.stderr[-2000:]
    assert "validation at step" not in val.stderr  # (the step of a fit; the CLI prints the metrics)
    lines = val.stdout.splitlines()  # nothing but one name<TAB>value line per metric
    assert {line.split("\t")[0] for line in lines} >= {"val/loss", "val/ppl"}
    assert all(len(line.split("\t")) == 2 and float(line.split("\t")[1]) > 0 for line in lines), val.stdout


def test_validating_an_init_checkpoint_writes_into_its_run_folder(trained):
    cwd, _ = trained
    last = cwd / "runs" / "e2e" / "checkpoints" / "last.ckpt"
    val = run_cli("validate", *ARGS, "run.name=other", f"init.checkpoint={last}", cwd=cwd)
    assert val.returncode == 0, val.stderr[-2000:]
    record = json.loads((cwd / "runs" / "e2e" / "results" / "validate.json").read_text())
    assert record["checkpoint"] == str(last.resolve())
    assert record["step"] == torch.load(last, weights_only=True, mmap=True)["global_step"]
    assert not (cwd / "runs" / "other").exists()


@pytest.mark.parametrize("verb", ["export", "generate"])
def test_a_missing_checkpoint_names_the_ones_there(trained, verb):
    cwd, _ = trained
    out = run_cli(verb, "runs/e2e/checkpoints/best.ckpt", *(["--to", "hf", "out-hf"] if verb == "export" else []),
                  cwd=cwd)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "best.ckpt does not exist; runs/e2e/checkpoints holds " in out.stderr and "last.ckpt" in out.stderr

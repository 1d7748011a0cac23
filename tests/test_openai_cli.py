"""The released-model round trip through the real command line: import, fit from it, export, load in transformers."""

import tarfile
from pathlib import Path

import pytest
import torch
from conftest import NEWS, REPO, run_cli

transformers = pytest.importorskip("transformers")
FIXTURE = Path(__file__).parent / "fixtures" / "openai_transformer" / "transformer_small.tar.gz"


@pytest.mark.slow
def test_import_fit_export_roundtrip(tmp_path):
    with tarfile.open(FIXTURE) as tf:
        tf.extractall(tmp_path / "release", filter="data")
    release = next(p.parent for p in (tmp_path / "release").rglob("params_shapes.json"))
    out = run_cli("import", "openai-gpt", "--from", str(release), "--out", "ckpt/gpt1", "--n-head", "2",
                  "--fast-tokenizer", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ckpt" / "gpt1" / "model.safetensors").is_file()

    fit = run_cli(
        "fit", str(REPO / "recipes" / "quickstart" / "pretrain.yaml"), "data.corpus=null", f"data.files=[{NEWS}]",
        "init.checkpoint=ckpt/gpt1", "model.n_layer=2", "model.n_embd=10", "model.n_head=2", "model.n_ctx=50",
        "model.n_inner=40", "data.batch_size=4", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "trainer.limit_val_batches=2", "logging.progress=plain", "run.name=from-release", cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "initialised" in fit.stderr

    exp = run_cli("export", "runs/from-release/checkpoints/last.ckpt", "--to", "hf", "hf-out", cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "hf-out").eval()
    from gptkit.generate import load_for_generation

    model, tokenizer = load_for_generation(str(tmp_path / "runs/from-release/checkpoints/last.ckpt"))
    x = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(x).logits - model.lm_logits(model(x))).abs().max().item() < 1e-4
    assert tokenizer.vocab_size == model.config.vocab_size


@pytest.mark.slow
def test_import_errors_are_clear(tmp_path):
    out = run_cli("import", "openai-gpt", "--from", "nowhere", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nowhere" in out.stderr
    out = run_cli("export", "missing.ckpt", "--to", "hf", "x", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "missing.ckpt" in out.stderr

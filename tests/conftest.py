from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
NEWS = FIXTURES / "news_sample.txt"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The tests' own per-user cache (``GPTKIT_CACHE``, also for the CLI runs they start), never the
    user's ``~/.cache/gptkit``; one per session, so a corpus is fetched at most once."""
    before = os.environ.get("GPTKIT_CACHE")
    os.environ["GPTKIT_CACHE"] = str(tmp_path_factory.mktemp("gptkit-cache"))
    yield
    if before is None:
        os.environ.pop("GPTKIT_CACHE", None)
    else:
        os.environ["GPTKIT_CACHE"] = before


@pytest.fixture
def news_text() -> str:
    return NEWS.read_text()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small real-text corpus (the first 7,000 characters of the news sample) in its own folder."""
    root = tmp_path_factory.mktemp("corpus")
    path = root / "news.txt"
    path.write_text(NEWS.read_text()[:7000])
    return root, path


def folder_snapshot(folder: Path, skip: tuple[str, ...] = ("tensorboard",)) -> dict[str, str]:
    """Every file under ``folder`` (but those under a ``skip`` folder) and a hash of its bytes: equal
    snapshots before and after a command mean it changed nothing there."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not set(skip) & set(p.relative_to(folder).parts)}


def run_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``gptkit`` command line in a subprocess."""
    # this checkout's gptkit, whatever copy is pip-installed
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gptkit.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=full_env,
    )


QUICK = str(REPO / "recipes" / "quickstart" / "pretrain.yaml")  # the quickstart pretraining recipe

TINY = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.n_ctx=32", "tokenizer.vocab_size=500",
    "data.batch_size=8", "logging.progress=plain", "trainer.accelerator=cpu", "trainer.devices=1",
]

# A smaller model than TINY that fits one update and one validation batch, quietly: for in-process
# ``gptkit.cli.main`` runs that only need a fit to start (bad-input and shard-integrity tests).
ONE_STEP = [
    "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=16", "tokenizer.vocab_size=300",
    "data.batch_size=2", "trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.accelerator=cpu",
    "trainer.devices=1", "logging.progress=none", "logging.throughput=false", "trainer.num_sanity_val_steps=0",
]


def assert_fused_loss_matches_plain(monkeypatch, kernel, device: str = "cpu") -> None:
    """The fused LM loss with ``kernel`` as its softmax/gradient step and a fresh logits block per
    chunk (no workspace: the CUDA path) gives the plain loss's value and every gradient."""
    import torch

    import gptkit.fastpath as fastpath
    from gptkit.model import GPT, GPTConfig, lm_loss

    monkeypatch.setattr(fastpath, "_ce_kernel", lambda dev: kernel)
    monkeypatch.setattr(fastpath, "_workspace", lambda numel, dtype, dev: None)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, n_ctx=32, n_layer=2, n_head=2, n_embd=32)).eval().to(device)
    x = torch.randint(0, 300, (3, 32), device=device)
    targets = x.roll(-1, 1)
    targets[:, -1] = -100

    def loss_and_grads(chunk):
        model.zero_grad()
        loss = lm_loss(model, model(x), targets, per_sequence=True, chunk_size=chunk)
        loss.backward()
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, g_plain = loss_and_grads(None)
    for chunk in (7, 8192):
        fused, g_fused = loss_and_grads(chunk)
        assert torch.allclose(plain, fused, atol=1e-6)
        for name, g in g_plain.items():
            assert torch.allclose(g, g_fused[name], atol=1e-6), name

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
NEWS = FIXTURES / "news_sample.txt"


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


def run_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``gptkit`` command line in a subprocess."""
    # this checkout's gptkit, whatever copy is pip-installed
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gptkit.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=full_env,
    )


TINY = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.n_ctx=32", "tokenizer.vocab_size=500",
    "data.batch_size=8", "logging.progress=plain", "trainer.accelerator=cpu", "trainer.devices=1",
]

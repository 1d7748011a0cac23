"""gptkit uses Lightning's public API, but in ``gptkit/lightning_internals.py``; and what that module works
around is still there in the installed Lightning (else the workaround can go)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lightning_fabric
import pytest
import pytorch_lightning as pl

GPTKIT = Path(__file__).parent.parent / "gptkit"
ALLOWED = {"lightning_internals.py"}  # the one module that may
LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric", "lightning")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(trees) -> set[str]:
    """Every name a set of modules defines itself: functions, classes, assignments, attributes of self."""
    own = set()
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                own.add(n.id)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                own.add(n.attr)
            elif isinstance(n, ast.arg):
                own.add(n.arg)
    return own


def _lightning_private_names() -> set[str]:
    names = set()
    for package in (pl, lightning_fabric):
        for path in Path(package.__file__).parent.rglob("*.py"):
            for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(n, ast.Attribute) and _private(n.attr):
                    names.add(n.attr)
                elif isinstance(n, (ast.FunctionDef, ast.ClassDef)) and _private(n.name):
                    names.add(n.name)
    return names


def private_lightning_uses(sources: dict[str, str], lightning_names: set[str]) -> list[str]:
    """``file:line expr`` for each use of a private Lightning name: an attribute Lightning defines that
    these modules do not, or a private name (or module) imported from Lightning."""
    trees = {name: ast.parse(text) for name, text in sources.items()}
    own = _defined_names(trees.values())
    uses = []
    for name, tree in trees.items():
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and _private(n.attr) and n.attr in lightning_names and n.attr not in own:
                uses.append(f"{name}:{n.lineno} {ast.unparse(n)}")
            elif isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in LIGHTNING_PACKAGES:
                if any(_private(p) for p in n.module.split(".")) or any(_private(a.name) for a in n.names):
                    uses.append(f"{name}:{n.lineno} from {n.module} import {', '.join(a.name for a in n.names)}")
    return uses


@pytest.fixture(scope="module")
def lightning_names() -> set[str]:
    return _lightning_private_names()


def test_only_the_internals_module_touches_lightnings_private_names(lightning_names):
    sources = {str(p.relative_to(GPTKIT)): p.read_text(encoding="utf-8") for p in sorted(GPTKIT.rglob("*.py"))}
    uses = private_lightning_uses(sources, lightning_names)
    outside = [u for u in uses if u.split(":")[0] not in ALLOWED]
    assert not outside, "private Lightning names outside gptkit/lightning_internals.py:\n" + "\n".join(outside)
    inside = [u for u in uses if u.split(":")[0] in ALLOWED]
    assert len(inside) < 10, inside  # few, each explained in its module


def test_the_check_catches_a_private_use(lightning_names):
    snippet = ("from pytorch_lightning.callbacks.throughput_monitor import _plugin_to_compute_dtype\n"
               "def f(trainer):\n    return trainer._signal_connector\n")
    uses = private_lightning_uses({"callbacks.py": snippet}, lightning_names)
    assert sorted(uses) == ["callbacks.py:1 from pytorch_lightning.callbacks.throughput_monitor import "
                            "_plugin_to_compute_dtype", "callbacks.py:3 trainer._signal_connector"]


def test_the_sigterm_broadcast_is_still_lightnings():
    """skip_sigterm_broadcast drops the per-update broadcast of Lightning's training loop under DDP; if
    Lightning no longer makes it (or renames it), the workaround and its private access can go."""
    from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop

    from gptkit.lightning_internals import skip_sigterm_broadcast

    assert "self._broadcast_sigterm_tensor()" in inspect.getsource(_TrainingEpochLoop.advance)
    assert ".item()" in inspect.getsource(_TrainingEpochLoop._broadcast_sigterm_tensor)  # the host sync
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    skip_sigterm_broadcast(trainer)
    assert trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor() is None

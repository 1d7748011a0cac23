"""gptkit: pretrain and fine-tune GPT-1 style transformers with PyTorch Lightning.

The package is laid out as the data flows: a recipe is read and validated (``config``), ``builder``
makes the tokenizer, DataModule, LightningModule, callbacks and Trainer, and ``verbs`` runs them
(``fit``, ``validate``, ``test``, ``predict``); the ``cli`` only parses arguments and calls a verb.

From Python::

    from gptkit import load_config, run
    metrics = run("fit", load_config("recipes/rte.yaml", ["init.n_transfer=6"]))

Heavy imports (torch, Lightning) happen when one of these names is first used, not here, so
``gptkit --help`` is fast.
"""

__version__ = "0.1.0"

_API = {
    "load_config": "gptkit.config",
    "run": "gptkit.verbs",
    "predict": "gptkit.verbs",
    "build": "gptkit.builder",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'gptkit' has no attribute {name!r}")

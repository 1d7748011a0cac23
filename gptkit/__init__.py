"""gptkit: pretrain and fine-tune GPT-1 style transformers with PyTorch Lightning.

The package is laid out as the data flows: a recipe (``config``) is validated, then ``builder``
makes the tokenizer, DataModule, LightningModule, callbacks and Trainer, and the ``cli`` calls fit.
Heavy imports (torch, Lightning) happen in those modules, not here, so ``gptkit --help`` is fast.
"""

__version__ = "0.1.0"

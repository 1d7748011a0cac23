"""Released GPT-1 compatibility: the original tokenizer, weight import and export (issue #4).

* :func:`load_openai_tokenizer` / :class:`OpenAIGPTTokenizer`: the exact 2018 text pipeline
  (ftfy + spaCy + BPE, the ``openai`` extra) or its fast ``tokenizers`` approximation.
* :func:`import_numpy`, :func:`import_hf`, :func:`import_hub`, :func:`export_hf`: weight mapping.
* :func:`run_import`, :func:`run_export`: what ``gptkit import openai-gpt`` and ``gptkit export`` do.
"""

from gptkit.openai_gpt.commands import run_export, run_import
from gptkit.openai_gpt.convert import ImportedModel, export_hf, import_hf, import_hub, import_numpy
from gptkit.openai_gpt.tokenizer import OpenAIGPTTokenizer, load_openai_tokenizer

__all__ = [
    "ImportedModel",
    "OpenAIGPTTokenizer",
    "export_hf",
    "import_hf",
    "import_hub",
    "import_numpy",
    "load_openai_tokenizer",
    "run_export",
    "run_import",
]

"""``gptkit import openai-gpt`` and ``gptkit export``: the functions the CLI calls."""

from __future__ import annotations

from pathlib import Path

from gptkit.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    CheckpointInfo,
    load_backbone,
    save_pretrained,
)
from gptkit.errors import CheckpointError, GptkitError
from gptkit.openai_gpt.convert import (
    ImportedModel,
    check_state,
    import_hf,
    import_hub,
    import_numpy,
    write_hf,
)
from gptkit.openai_gpt.tokenizer import build_fast_backend, pipeline_fingerprint
from gptkit.outputs import make_folder, output_folder, refuse_non_empty
from gptkit.tokenizer import Tokenizer

TOKENIZER_KIND = "openai-gpt"
PRETRAINED_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE)  # what a pretrained-model folder holds
HF_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE, "tokenizer_config.json", "vocab.json", "merges.txt",
            "special_tokens_map.json")  # what `gptkit export --to hf` writes (vocab.json ... for BPE models)


def check_out_dir(out_dir: str, what: str, writes: tuple[str, ...], overwrite: bool) -> Path:
    """The output folder, checked before anything is read or written: not a file, and empty unless
    ``overwrite`` (which replaces the files in ``writes`` and leaves everything else there)."""
    out = output_folder(out_dir, what)
    if not overwrite:
        refuse_non_empty(out, what, writes, "--overwrite")
    return out


def load_source(source: str, n_head: int | None = None, seed: int = 0) -> ImportedModel:
    """Pick the importer for ``source``: ``"hub"``, a released numpy folder or a Hugging Face folder."""
    path = Path(source).expanduser()
    if n_head is not None and (source == "hub" or path.is_dir() and not (path / "params_shapes.json").is_file()):
        raise CheckpointError("--n-head is for released numpy folders, which do not record the head count; a "
                              "Hugging Face folder's config.json has it: drop --n-head")
    if source == "hub":
        return import_hub(seed=seed)
    if not path.is_dir():
        raise CheckpointError(f"--from {source}: no such folder (give a model folder, or 'hub')")
    if (path / "params_shapes.json").is_file():
        return import_numpy(path, n_head=n_head, seed=seed)
    if (path / "config.json").is_file():
        return import_hf(path, seed=seed)
    raise CheckpointError(
        f"{path} is neither a released GPT-1 folder (params_shapes.json + params_*.npy) nor a "
        "Hugging Face openai-gpt folder (config.json + model.safetensors or pytorch_model.bin)"
    )


def run_import(
    source: str,
    out_dir: str,
    fast_tokenizer: bool = False,
    n_head: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Import released GPT-1 weights into a gptkit pretrained-model folder and print a summary.

    Args:
        source: ``"hub"`` (download ``openai-community/openai-gpt``; needs huggingface_hub and a
            connection), a ``finetune-transformer-lm/model`` folder (``params_shapes.json`` +
            ``params_*.npy``), or a Hugging Face openai-gpt folder (``config.json`` +
            ``model.safetensors`` or ``pytorch_model.bin``).
        out_dir: the folder to write (``model.safetensors``, ``config.json``, ``tokenizer.json``);
            use it as ``init.checkpoint`` in a recipe.
        fast_tokenizer: record that this model should be fed by the fast ``tokenizers`` pipeline
            instead of the exact released one (ftfy + spaCy, the ``openai`` extra). Both use the same
            ``tokenizer.json``; ``config.json["tokenizer"]["exact"]`` holds the choice.
        n_head: attention heads, only for released numpy folders whose width is not a multiple of
            64 (the files do not record it).
        seed: seed of the N(0, 0.02) rows appended for ``_start_``, ``_delimiter_``, ``_classify_``.
        overwrite: write into ``out_dir`` even if it is not empty (its three files are replaced);
            otherwise a non-empty ``out_dir`` is refused before anything is read or written.

    Returns the output folder. Raises :class:`~gptkit.errors.GptkitError` for user errors.
    """
    out = check_out_dir(out_dir, "--out", PRETRAINED_FILES, overwrite)
    model = load_source(source, n_head=n_head, seed=seed)
    fast = Tokenizer(build_fast_backend(model.encoder, model.merges))
    if fast.vocab_size != model.config.vocab_size:
        raise CheckpointError(
            f"{model.source}: the tokenizer has {fast.vocab_size} tokens but the embedding {model.config.vocab_size} rows"
        )
    extra = {
        "tokenizer": {
            "kind": TOKENIZER_KIND,
            "exact": not fast_tokenizer,
            "fingerprint": pipeline_fingerprint(fast, exact=not fast_tokenizer),
        },
        "source": model.source,
    }
    out = save_pretrained(make_folder(out, "--out"), model.state_dict, model.config,
                          fast.backend.to_str(pretty=True), extra)
    cfg = model.config
    n_params = sum(v.numel() for v in model.state_dict.values())
    print(
        f"imported {model.source} -> {out}: {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, "
        f"context {cfg.n_ctx}, vocabulary {cfg.vocab_size}, {n_params / 1e6:.1f}M parameters, "
        f"{'fast' if fast_tokenizer else 'exact'} tokenizer" + "".join(f"; {n}" for n in model.notes)
    )
    return out


def run_export(ckpt: str, to: str, out_dir: str, overwrite: bool = False) -> Path:
    """Export a gptkit backbone and print a summary.

    Args:
        ckpt: a Lightning ``.ckpt`` written by gptkit, or a pretrained-model folder.
        to: ``"hf"`` for a folder that ``transformers.OpenAIGPTLMHeadModel.from_pretrained`` loads
            (safetensors, task heads dropped), or ``"gptkit"`` for a pretrained-model folder usable
            as ``init.checkpoint``.
        out_dir: the folder to write; refused when it is not empty (a run folder, an earlier export),
            unless ``overwrite``.
        overwrite: write into a non-empty ``out_dir``, replacing the files an export writes there
            (other files stay).
    """
    if to not in ("hf", "gptkit"):
        raise GptkitError(f"--to {to!r}: expected 'hf' or 'gptkit'")
    out = check_out_dir(out_dir, "output folder", HF_FILES if to == "hf" else PRETRAINED_FILES, overwrite)
    state, config, tok_path = load_backbone(ckpt)
    check_state(state, config, ckpt)
    make_folder(out, "output folder")
    if to == "hf":
        out = write_hf(state, config, tok_path, out)
    else:
        tok_json = Path(tok_path).read_text(encoding="utf-8") if tok_path else None
        out = save_pretrained(out, state, config, tok_json, {"source": str(ckpt)})
    task = CheckpointInfo.read(ckpt).task
    print(
        f"exported {ckpt} -> {out} ({'transformers OpenAIGPTLMHeadModel' if to == 'hf' else 'gptkit folder'}; "
        f"{config.n_layer} layer{'s' * (config.n_layer != 1)}, width {config.n_embd}, vocabulary {config.vocab_size})"
        + (f"; the backbone and its tied LM head only: the {task} task head is not exported" if task else "")
    )
    return out

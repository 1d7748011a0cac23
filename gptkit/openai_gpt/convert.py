"""Weight import from the released GPT-1 files and Hugging Face, and export to Hugging Face.

Pure functions: each reads files and returns tensors (or writes one folder), raising
:class:`~gptkit.errors.CheckpointError` for anything the user can fix. Nothing is unpickled:
numpy arrays load with ``allow_pickle=False``, ``.bin`` files with ``torch.load(weights_only=True)``.

Layouts (``i`` = block index)::

    gptkit                         released numpy (params_*.npy)       Hugging Face (Conv1D, [in, out])
    tokens_embed.weight            index 1 [vocab, C]                  [transformer.]tokens_embed.weight
    positions_embed.weight         index 0 [n_ctx, C]                  [transformer.]positions_embed.weight
    blocks.i.attn.c_attn.weight    attn/c_attn/w [1, C, 3C] (.T)       [transformer.]h.i.attn.c_attn.weight (.T)
    blocks.i.ln_1.weight / bias    ln_1/g, ln_1/b                      h.i.ln_1.weight / bias
    ... c_proj, mlp.c_fc, mlp.c_proj, ln_2 alike

The released vocabulary has 40,478 tokens; imports append the three fine-tuning tokens as rows
drawn from N(0, 0.02), as the released fine-tuning code does.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gptkit.checkpoint import load_backbone
from gptkit.errors import CheckpointError, GptkitError
from gptkit.model import GPTConfig
from gptkit.openai_gpt.text import read_vocab
from gptkit.outputs import atomic_write_bytes, atomic_write_text
from gptkit.tokenizer import SPECIAL_TOKENS

HUB_REPO = "openai-community/openai-gpt"
_HEAD_DIM = 64  # GPT-1's head width; n_head is not recorded in the released files
# Per-block arrays of the released numpy files, in order, and the gptkit names they become.
_NUMPY_BLOCK = [
    ("attn/c_attn/w", "attn.c_attn.weight"),
    ("attn/c_attn/b", "attn.c_attn.bias"),
    ("attn/c_proj/w", "attn.c_proj.weight"),
    ("attn/c_proj/b", "attn.c_proj.bias"),
    ("ln_1/g", "ln_1.weight"),
    ("ln_1/b", "ln_1.bias"),
    ("mlp/c_fc/w", "mlp.c_fc.weight"),
    ("mlp/c_fc/b", "mlp.c_fc.bias"),
    ("mlp/c_proj/w", "mlp.c_proj.weight"),
    ("mlp/c_proj/b", "mlp.c_proj.bias"),
    ("ln_2/g", "ln_2.weight"),
    ("ln_2/b", "ln_2.bias"),
]
_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# Buffers (causal masks, position ids) and task heads that HF checkpoints may carry besides parameters.
_HF_IGNORED = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|position_ids)$|^multiple_choice_head\.")


def _is_linear_weight(name: str) -> bool:
    """``blocks.{i}.attn.c_attn.weight`` and the like: stored [out, in] here, [in, out] elsewhere."""
    m = re.fullmatch(r"blocks\.\d+\.(.+)\.weight", name)
    return m is not None and m.group(1) in _LINEARS


@dataclass
class ImportedModel:
    """Backbone weights (gptkit names, special-token rows included), config and BPE vocabulary."""

    state_dict: dict[str, torch.Tensor]
    config: GPTConfig
    encoder: dict[str, int]
    merges: list[tuple[str, str]]
    source: str
    notes: list[str] = field(default_factory=list)


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every gptkit backbone parameter and its shape for ``config``."""
    C, W = config.n_embd, config.mlp_width
    shapes: dict[str, tuple[int, ...]] = {
        "tokens_embed.weight": (config.vocab_size, C),
        "positions_embed.weight": (config.n_ctx, C),
    }
    per_block = {
        "attn.c_attn.weight": (3 * C, C),
        "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C),
        "attn.c_proj.bias": (C,),
        "ln_1.weight": (C,),
        "ln_1.bias": (C,),
        "mlp.c_fc.weight": (W, C),
        "mlp.c_fc.bias": (W,),
        "mlp.c_proj.weight": (C, W),
        "mlp.c_proj.bias": (C,),
        "ln_2.weight": (C,),
        "ln_2.bias": (C,),
    }
    for i in range(config.n_layer):
        shapes.update({f"blocks.{i}.{k}": v for k, v in per_block.items()})
    return shapes


def check_state(state: dict[str, torch.Tensor], config: GPTConfig, origin: str) -> None:
    """Raise a CheckpointError naming the first missing, unexpected or wrongly shaped tensor."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in state]
    if missing:
        raise CheckpointError(f"{origin}: tensor {missing[0]} is missing ({len(missing)} missing in all)")
    extra = [k for k in state if k not in want]
    if extra:
        raise CheckpointError(f"{origin}: unexpected tensor {extra[0]} for a {config.n_layer}-layer model")
    for name, shape in want.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(
                f"{origin}: tensor {name} has shape {list(state[name].shape)}, expected {list(shape)} "
                f"(n_layer={config.n_layer}, n_embd={config.n_embd}, vocab={config.vocab_size}, n_ctx={config.n_ctx})"
            )


def _default_n_head(n_embd: int, n_head: int | None) -> int:
    if n_head is not None:
        return n_head
    if n_embd % _HEAD_DIM:
        raise CheckpointError(
            f"cannot infer the number of heads for width {n_embd} (GPT-1 uses 64-wide heads); pass --n-head"
        )
    return n_embd // _HEAD_DIM


def _append_special_rows(
    state: dict[str, torch.Tensor], config: GPTConfig, seed: int
) -> tuple[dict[str, torch.Tensor], GPTConfig]:
    """Add the rows of _start_, _delimiter_, _classify_ to the embedding, N(0, init_std)."""
    emb = state["tokens_embed.weight"]
    gen = torch.Generator().manual_seed(seed)
    new = torch.randn(len(SPECIAL_TOKENS), emb.size(1), generator=gen, dtype=torch.float32) * config.init_std
    state = {**state, "tokens_embed.weight": torch.cat([emb, new.to(emb.dtype)])}
    config = GPTConfig(**{**config.to_dict(), "vocab_size": emb.size(0) + len(SPECIAL_TOKENS)})
    return state, config


def _finish(
    state: dict[str, torch.Tensor],
    config: GPTConfig,
    encoder: dict[str, int],
    merges: list[tuple[str, str]],
    source: str,
    seed: int,
    vocab: str = "released vocabulary (packaged)",
) -> ImportedModel:
    """Check shapes, reconcile the embedding with the vocabulary and append the special-token rows."""
    check_state(state, config, source)
    base = max(encoder.values()) + 1
    rows = config.vocab_size
    notes = []
    if rows == base:
        state, config = _append_special_rows(state, config, seed)
        notes.append(f"appended {len(SPECIAL_TOKENS)} special-token rows (ids {base}..{base + 2})")
    elif rows != base + len(SPECIAL_TOKENS):
        raise CheckpointError(
            f"{source}: tensor tokens_embed.weight has {rows} rows but the BPE vocabulary ({vocab}) has {base} "
            f"tokens (expected {base} or {base + len(SPECIAL_TOKENS)} with the special tokens); put the model's own "
            "encoder_bpe*.json + vocab*.bpe (or vocab.json + merges.txt) beside its weights"
        )
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    return ImportedModel(state, config, encoder, merges, source, notes)


def _folder_vocab(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]], str]:
    """The BPE files inside a model folder (released or HF naming), else the packaged release."""
    for enc_glob, merge_glob in (("encoder_bpe*.json", "vocab*.bpe"), ("vocab.json", "merges.txt")):
        encs, mrgs = sorted(directory.glob(enc_glob)), sorted(directory.glob(merge_glob))
        if encs and mrgs:
            encoder, merges = read_vocab(encs[0], mrgs[0])
            return encoder, merges, f"{encs[0].name} + {mrgs[0].name}"
    encoder, merges = read_vocab()
    return encoder, merges, "released vocabulary (packaged)"


# -- released numpy files ----------------------------------------------------------------------


def import_numpy(directory: str | os.PathLike, n_head: int | None = None, seed: int = 0) -> ImportedModel:
    """Import ``finetune-transformer-lm/model``: ``params_shapes.json`` + ``params_0.npy`` ... ``params_N.npy``.

    Sizes come from the shapes (n_ctx, width, layers, vocabulary, MLP width); the head count is not
    recorded, so ``n_head`` defaults to ``width // 64`` (12 for the released model).
    """
    directory = Path(directory).expanduser()
    shapes_file = directory / "params_shapes.json"
    if not shapes_file.is_file():
        raise CheckpointError(f"{directory} has no params_shapes.json (not a released GPT-1 model folder)")
    shapes = [tuple(s) for s in json.loads(shapes_file.read_text())]
    files = sorted(directory.glob("params_*.npy"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not files:
        raise CheckpointError(f"{directory} has params_shapes.json but no params_*.npy files")
    if (len(shapes) - 2) % len(_NUMPY_BLOCK) or len(shapes) < 2 + len(_NUMPY_BLOCK):
        raise CheckpointError(
            f"{shapes_file}: {len(shapes)} shapes is not 2 embeddings + {len(_NUMPY_BLOCK)} per layer"
        )
    parts = []
    for f in files:
        try:
            parts.append(np.load(f, allow_pickle=False).astype(np.float32, copy=False).ravel())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{f} is not a readable numpy array ({exc})") from None
    flat = np.concatenate(parts)
    sizes = [math.prod(s) for s in shapes]
    if flat.size != sum(sizes):
        raise CheckpointError(
            f"{directory}: the params_*.npy files hold {flat.size} floats but params_shapes.json "
            f"describes {sum(sizes)} (missing or extra params files?)"
        )
    offsets = np.cumsum([0] + sizes)
    arrays = [flat[offsets[i] : offsets[i + 1]].reshape(s) for i, s in enumerate(shapes)]

    n_layer = (len(shapes) - 2) // len(_NUMPY_BLOCK)
    n_ctx, n_embd = arrays[0].shape
    mlp_width = arrays[2 + 6].shape[-1]  # layer 0 mlp/c_fc/w [.., C, W]
    heads = _default_n_head(n_embd, n_head)
    if heads < 1 or n_embd % heads:
        divisors = [h for h in range(1, n_embd + 1) if n_embd % h == 0]
        raise CheckpointError(
            f"{directory}: n_head={heads} does not divide the model width {n_embd}; pass --n-head with one of "
            f"{', '.join(map(str, divisors[:12]))}{' ...' if len(divisors) > 12 else ''}"
        )
    config = GPTConfig(
        vocab_size=arrays[1].shape[0],
        n_ctx=n_ctx,
        n_layer=n_layer,
        n_head=heads,
        n_embd=n_embd,
        n_inner=None if mlp_width == 4 * n_embd else mlp_width,
    )
    state = {
        "positions_embed.weight": torch.from_numpy(arrays[0].copy()),
        "tokens_embed.weight": torch.from_numpy(arrays[1].copy()),
    }
    for i in range(n_layer):
        for j, (np_name, name) in enumerate(_NUMPY_BLOCK):
            a = arrays[2 + i * len(_NUMPY_BLOCK) + j]
            if np_name.endswith("/w"):
                if a.ndim == 3 and a.shape[0] == 1:  # the release's 1x1 convolution [1, in, out]
                    a = a[0]
                if a.ndim != 2:
                    raise CheckpointError(f"{shapes_file}: layer {i} {np_name} has shape {list(a.shape)}")
                a = a.T  # [in, out] -> Linear [out, in]
            state[f"blocks.{i}.{name}"] = torch.from_numpy(np.ascontiguousarray(a))
    encoder, merges, vocab = _folder_vocab(directory)
    return _finish(state, config, encoder, merges, str(directory), seed, vocab)


# -- Hugging Face ------------------------------------------------------------------------------


def _read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    st, binf = directory / "model.safetensors", directory / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as exc:
            raise CheckpointError(f"{st} is not a readable safetensors file ({exc})") from None
    if binf.is_file():
        try:
            return torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{binf} cannot be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "gptkit only reads plain tensor state dicts"
            ) from None
    raise CheckpointError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def import_hf(directory: str | os.PathLike, seed: int = 0) -> ImportedModel:
    """Import a Hugging Face ``openai-gpt`` folder (``config.json`` + safetensors or ``pytorch_model.bin``).

    Accepts ``transformer.``-prefixed keys (``OpenAIGPTLMHeadModel``) and bare keys (``OpenAIGPTModel``,
    the hub's layout); causal-mask buffers are skipped, a tied ``lm_head.weight`` must equal the embedding.
    """
    directory = Path(directory).expanduser()
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{directory} has no config.json (not a Hugging Face model folder)")
    hf = json.loads(cfg_file.read_text())
    if hf.get("model_type") not in (None, "openai-gpt"):
        raise CheckpointError(f"{cfg_file}: model_type is {hf.get('model_type')!r}, expected 'openai-gpt'")
    afn = hf.get("afn", "gelu")
    if afn != "gelu":  # transformers' OpenAIGPT maps "gelu" to the tanh approximation, as gptkit uses
        raise CheckpointError(f"{cfg_file}: activation {afn!r} is not GPT-1's tanh GELU ('gelu')")
    raw = _read_hf_weights(directory)
    lm_head = raw.pop("lm_head.weight", None)
    hf_state = {}
    for key, value in raw.items():
        bare = key[len("transformer.") :] if key.startswith("transformer.") else key
        if not _HF_IGNORED.search(bare):
            hf_state[bare] = value
    n_embd, n_layer, heads = hf.get("n_embd", 768), hf.get("n_layer", 12), hf.get("n_head", 12)
    shape_error = f"{cfg_file}: n_embd={n_embd!r}, n_layer={n_layer!r}, n_head={heads!r} is not a valid model shape"
    if not all(isinstance(v, int) and v > 0 for v in (n_embd, n_layer, heads)):
        raise CheckpointError(f"{shape_error} (they must be positive integers)")
    try:
        config = GPTConfig(
            vocab_size=hf_state["tokens_embed.weight"].shape[0] if "tokens_embed.weight" in hf_state else 0,
            n_ctx=hf.get("n_positions", 512),
            n_layer=n_layer,
            n_head=heads,
            n_embd=n_embd,
            embd_pdrop=hf.get("embd_pdrop", 0.1),
            attn_pdrop=hf.get("attn_pdrop", 0.1),
            resid_pdrop=hf.get("resid_pdrop", 0.1),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            init_std=hf.get("initializer_range", 0.02),
        )
    except (ValueError, TypeError) as exc:  # GPTConfig's own checks, e.g. n_embd not divisible by n_head
        raise CheckpointError(f"{shape_error} ({exc})") from None
    state = {}
    for key, value in hf_state.items():
        name = re.sub(r"^h\.(\d+)\.", r"blocks.\1.", key)
        if _is_linear_weight(name) and value.ndim == 2:
            value = value.t()  # Conv1D [in, out] -> Linear [out, in]
        state[name] = value
    if (
        lm_head is not None
        and "tokens_embed.weight" in state
        and not torch.equal(lm_head, state["tokens_embed.weight"])
    ):
        raise CheckpointError(
            f"{directory}: lm_head.weight differs from the token embedding (GPT-1 ties them)"
        )
    encoder, merges, vocab = _folder_vocab(directory)
    return _finish(state, config, encoder, merges, str(directory), seed, vocab)


def import_hub(repo_id: str = HUB_REPO, seed: int = 0) -> ImportedModel:
    """Download ``openai-community/openai-gpt`` (needs ``huggingface_hub`` and a connection) and import it."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise GptkitError(
            "importing from the hub needs huggingface_hub (`pip install huggingface_hub`); or download "
            f"{repo_id} yourself and pass its folder to --from"
        ) from None
    try:
        path = snapshot_download(
            repo_id, allow_patterns=["config.json", "model.safetensors", "vocab.json", "merges.txt"]
        )
    except Exception as exc:
        raise GptkitError(
            f"could not download {repo_id} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check the connection, or pass a local folder"
        ) from None
    model = import_hf(path, seed=seed)
    model.source = f"hf://{repo_id}"
    return model


# -- export --------------------------------------------------------------------------------------


def to_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """gptkit backbone names -> ``OpenAIGPTLMHeadModel`` keys (``transformer.`` prefix, Conv1D layout)."""
    out = {}
    for name, value in state.items():
        key = re.sub(r"^blocks\.(\d+)\.", r"h.\1.", name)
        if _is_linear_weight(name):
            value = value.t()
        out["transformer." + key] = value.detach().to(torch.float32).contiguous()
    return out


def hf_config(config: GPTConfig) -> dict:
    """``config.json`` for transformers' ``OpenAIGPTLMHeadModel`` describing a gptkit backbone."""
    if config.mlp_width != 4 * config.n_embd:
        raise CheckpointError(
            f"transformers' OpenAIGPT fixes the MLP width to 4 * n_embd; this model has n_inner={config.n_inner}"
        )
    return {
        "architectures": ["OpenAIGPTLMHeadModel"],
        "model_type": "openai-gpt",
        "vocab_size": config.vocab_size,
        "n_positions": config.n_ctx,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "afn": "gelu",  # OpenAIGPT's ACT_FNS["gelu"] is gelu_new, the tanh approximation
        "resid_pdrop": config.resid_pdrop,
        "embd_pdrop": config.embd_pdrop,
        "attn_pdrop": config.attn_pdrop,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def export_hf(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a folder that ``transformers.OpenAIGPTLMHeadModel.from_pretrained`` loads.

    ``source`` is a Lightning ``.ckpt`` written by gptkit or a pretrained-model folder. The folder gets
    ``config.json``, ``model.safetensors`` (the LM head is tied, so not stored) and, when the source
    carries its tokenizer, ``tokenizer.json`` plus ``vocab.json``/``merges.txt``.
    """
    state, config, tok_path = load_backbone(source)
    check_state(state, config, str(source))
    return write_hf(state, config, tok_path, out_dir)


def write_hf(
    state: dict[str, torch.Tensor],
    config: GPTConfig,
    tok_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
) -> Path:
    """Write backbone weights (gptkit names) as a transformers ``OpenAIGPTLMHeadModel`` folder."""
    from safetensors.torch import save

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = hf_config(config)  # before writing anything: it rejects models transformers cannot hold
    atomic_write_bytes(out / "model.safetensors", save(to_hf_state(state), metadata={"format": "pt"}))
    atomic_write_text(out / "config.json", json.dumps(hf_cfg, indent=2) + "\n")
    if tok_path is not None:
        _export_tokenizer(Path(tok_path), out)
    return out


def _export_tokenizer(tok_path: Path, out: Path) -> None:
    from tokenizers import Tokenizer as _Backend

    from gptkit.openai_gpt.tokenizer import vocab_from_backend

    backend = _Backend.from_file(str(tok_path))
    atomic_write_text(out / "tokenizer.json", backend.to_str(pretty=True))
    # AutoTokenizer then loads tokenizer.json as it is; for model_type openai-gpt it would otherwise
    # rebuild transformers' own openai-gpt pipeline from vocab.json/merges.txt, which treats
    # accented characters differently
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>",
              "additional_special_tokens": list(SPECIAL_TOKENS)}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=2))
    try:
        encoder, merges = vocab_from_backend(backend)
    except GptkitError:
        return  # not a </w> BPE model: tokenizer.json alone
    atomic_write_text(out / "vocab.json", json.dumps(encoder, ensure_ascii=False))
    atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"unk_token": "<unk>", "additional_special_tokens": list(SPECIAL_TOKENS)}
    atomic_write_text(out / "special_tokens_map.json", json.dumps(special, indent=2))

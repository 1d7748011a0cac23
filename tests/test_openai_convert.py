"""Weight import/export against transformers' OpenAIGPTLMHeadModel (float32 parity on CPU)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptkit.checkpoint import load_backbone, save_pretrained  # noqa: E402
from gptkit.errors import CheckpointError, GptkitError  # noqa: E402
from gptkit.model import GPT, GPTConfig  # noqa: E402
from gptkit.openai_gpt import export_hf, import_hf, import_hub, import_numpy, run_export, run_import  # noqa: E402
from gptkit.openai_gpt.tokenizer import OpenAIGPTTokenizer  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "openai_transformer" / "transformer_small.tar.gz"
VOCAB = 40478  # the released BPE vocabulary; imports add 3 special tokens
# The issue asks for 1e-4; float32 on CPU reaches ~5e-7, and 1e-5 still separates the tanh GELU
# GPT-1 uses from the exact (erf) one, which differs by ~8e-5 on these tiny models.
TOL = 1e-5


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (LayerNorm gains and biases too), so every mapping error shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def hf_tiny(vocab: int = VOCAB) -> transformers.OpenAIGPTLMHeadModel:
    cfg = transformers.OpenAIGPTConfig(vocab_size=vocab, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    model = transformers.OpenAIGPTLMHeadModel(cfg).eval()
    randomize_(model.transformer)
    return model


def ids(vocab: int, T: int = 16, B: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def gptkit_logits(state: dict, config: GPTConfig, x: torch.Tensor) -> torch.Tensor:
    model = GPT(config).eval()
    model.load_state_dict(state)
    return model.lm_logits(model(x))


@torch.no_grad()
def hf_logits(model, x: torch.Tensor) -> torch.Tensor:
    return model(x).logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("layout", ["prefixed-safetensors", "bare-bin"])
def test_import_hf_parity(tmp_path, layout):
    hf = hf_tiny()
    if layout == "prefixed-safetensors":
        hf.save_pretrained(tmp_path)  # transformer.* keys, model.safetensors
        assert (tmp_path / "model.safetensors").is_file()
    else:  # the hub's layout: OpenAIGPTModel keys without prefix, with the causal-mask buffers
        hf.config.save_pretrained(tmp_path)
        bare = {
            k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"
        }
        bare.update({f"h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 16, 16)) for i in range(2)})
        torch.save(bare, tmp_path / "pytorch_model.bin")
    imported = import_hf(tmp_path)
    cfg = imported.config
    assert (cfg.vocab_size, cfg.n_ctx, cfg.n_layer, cfg.n_head, cfg.n_embd) == (VOCAB + 3, 16, 2, 4, 32)
    special = imported.state_dict["tokens_embed.weight"][VOCAB:]
    assert special.shape == (3, 32) and 0.005 < special.std().item() < 0.05  # N(0, 0.02) rows
    x = ids(VOCAB)
    ours = gptkit_logits(imported.state_dict, cfg, x)
    diff = max_diff(ours[..., :VOCAB], hf_logits(hf, x))
    print(f"import {layout}: max |logit diff| = {diff:.2e}")
    assert diff < TOL


def export_source(tmp_path: Path) -> tuple[GPT, Path]:
    config = GPTConfig(vocab_size=VOCAB + 3, n_ctx=16, n_layer=2, n_head=4, n_embd=32)
    model = GPT(config).eval()
    randomize_(model, seed=3)
    tok = OpenAIGPTTokenizer(fast=True)
    folder = save_pretrained(tmp_path / "gptkit", model.state_dict(), config, tok.backend.to_str())
    return model, folder


def test_export_hf_parity(tmp_path):
    model, folder = export_source(tmp_path)
    out = export_hf(folder, tmp_path / "hf")
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(out).eval()
    assert hf.config.vocab_size == VOCAB + 3 and hf.config.afn == "gelu"
    x = ids(VOCAB + 3)
    with torch.no_grad():
        diff = max_diff(model.lm_logits(model(x)), hf_logits(hf, x))
    print(f"export: max |logit diff| = {diff:.2e}")
    assert diff < TOL
    # The comparison is sharp enough to see the wrong GELU: transformers' ACT2FN["gelu"] is erf-based.
    for block in hf.transformer.h:
        block.mlp.act = transformers.activations.GELUActivation()
    assert max_diff(model.lm_logits(model(x)), hf_logits(hf, x)) > TOL
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.convert_tokens_to_ids(["very</w>", "_classify_"]) == [963, 40480]
    ours = OpenAIGPTTokenizer(fast=True)
    for text in ("a very good café, naïve Zoë said", "don't stop"):  # accents included
        assert hf_tok.encode(text, add_special_tokens=False) == ours.encode(text), text


def test_export_from_lightning_ckpt(tmp_path, capsys):
    model, _ = export_source(tmp_path)
    ckpt = tmp_path / "best.ckpt"
    state = {"backbone." + k: v for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros(1, 32)  # task heads are not part of the export
    torch.save({"state_dict": state, "hyper_parameters": {"model": model.config.to_dict()}}, ckpt)
    out = run_export(str(ckpt), "hf", str(tmp_path / "hf"))
    assert "exported" in capsys.readouterr().out
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(out).eval()
    x = ids(VOCAB + 3, seed=5)
    with torch.no_grad():
        assert max_diff(model.lm_logits(model(x)), hf_logits(hf, x)) < TOL
    with pytest.raises(GptkitError, match="--to"):
        run_export(str(ckpt), "onnx", str(tmp_path / "x"))


def test_round_trip_through_hf_is_exact(tmp_path):
    _, folder = export_source(tmp_path)
    back = import_hf(export_hf(folder, tmp_path / "hf"))
    original, _, _ = load_backbone(folder)
    assert back.config.vocab_size == VOCAB + 3  # special rows already there: none appended
    assert all(torch.equal(original[k], back.state_dict[k]) for k in original)


# -- the released numpy layout, with a real 2-layer checkpoint -------------------------------------


@pytest.fixture
def numpy_dir(tmp_path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "model"


def hf_from_numpy(directory: Path, n_head: int) -> transformers.OpenAIGPTLMHeadModel:
    """Build the HF model straight from the numpy stream: HF's Conv1D keeps the release's [in, out]."""
    shapes = json.loads((directory / "params_shapes.json").read_text())
    flat = np.concatenate([np.load(directory / f"params_{i}.npy") for i in range(2)])
    arrays = np.split(flat, np.cumsum([int(np.prod(s)) for s in shapes])[:-1])
    arrays = [torch.from_numpy(a.reshape(s).copy()) for a, s in zip(arrays, shapes)]
    n_ctx, n_embd = shapes[0]
    n_layer = (len(shapes) - 2) // 12
    cfg = transformers.OpenAIGPTConfig(
        vocab_size=shapes[1][0], n_positions=n_ctx, n_embd=n_embd, n_layer=n_layer, n_head=n_head
    )
    names = ["attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
             "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
             "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"]  # fmt: skip
    state = {"positions_embed.weight": arrays[0], "tokens_embed.weight": arrays[1]}
    for i in range(n_layer):
        for j, name in enumerate(names):
            state[f"h.{i}.{name}"] = (
                arrays[2 + 12 * i + j].reshape(-1, arrays[2 + 12 * i + j].shape[-1]).squeeze(0)
            )
    model = transformers.OpenAIGPTLMHeadModel(cfg).eval()
    model.transformer.load_state_dict(state, strict=True)
    return model


def test_import_numpy_fixture_tensors(numpy_dir):
    """Every imported tensor equals the test's own conversion (Linear weights are the transpose)."""
    imported = import_numpy(numpy_dir, n_head=2)
    hf_state = hf_from_numpy(numpy_dir, n_head=2).transformer.state_dict()
    for name, value in imported.state_dict.items():
        key = name.replace("blocks.", "h.")
        expected = hf_state[key].T if value.ndim == 2 and "embed" not in name else hf_state[key]
        if name == "tokens_embed.weight":
            value = value[:50]  # the 3 appended special-token rows are new
        assert torch.equal(value, expected), name


def test_import_numpy_fixture_parity(numpy_dir):
    imported = import_numpy(numpy_dir, n_head=2)
    cfg = imported.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_ctx, cfg.vocab_size, cfg.mlp_width) == (2, 10, 50, 53, 40)
    hf = hf_from_numpy(numpy_dir, n_head=2)
    x = ids(50, T=50)
    diff = max_diff(gptkit_logits(imported.state_dict, cfg, x)[..., :50], hf_logits(hf, x))
    print(f"numpy fixture: max |logit diff| = {diff:.2e}")
    assert diff < TOL


def test_run_import_then_export_numpy_fixture(numpy_dir, tmp_path, capsys):
    out = run_import(str(numpy_dir), str(tmp_path / "imported"), n_head=2)
    assert "2 layers, width 10, 2 heads, context 50, vocabulary 53" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["tokenizer"]["kind"] == "openai-gpt" and meta["tokenizer"]["exact"] is True
    state, config, tok_path = load_backbone(out)
    assert tok_path is not None and OpenAIGPTTokenizer.from_file(tok_path, fast=True).vocab_size == 53
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(run_export(str(out), "hf", str(tmp_path / "hf")))
    x = ids(53, T=50)
    assert max_diff(gptkit_logits(state, config, x), hf_logits(hf.eval(), x)) < TOL


def test_numpy_heads_must_be_given_for_odd_widths(numpy_dir):
    with pytest.raises(CheckpointError, match="number of heads for width 10 .* pass --n-head"):
        import_numpy(numpy_dir)


def test_n_head_is_refused_for_a_hugging_face_folder(tmp_path):
    from gptkit.openai_gpt.commands import load_source

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="a Hugging Face folder's config.json has it: drop --n-head"):
        load_source(str(tmp_path), n_head=3)


def test_numpy_without_its_vocabulary_names_the_vocabulary_used(numpy_dir):
    for name in ("encoder_bpe.json", "vocab.bpe"):
        (numpy_dir / name).unlink()
    with pytest.raises(CheckpointError, match=r"has 50 rows but the BPE vocabulary \(released vocabulary \(packaged\)\) "
                                              r"has 40478 tokens .* put the model's own encoder_bpe"):
        import_numpy(numpy_dir, n_head=2)


def test_numpy_missing_file_is_reported(numpy_dir):
    (numpy_dir / "params_1.npy").unlink()
    with pytest.raises(CheckpointError, match="1830 floats but params_shapes.json describes 3660"):
        import_numpy(numpy_dir, n_head=2)


# -- user errors and safety -----------------------------------------------------------------------


def test_shape_mismatch_names_the_tensor(tmp_path):
    hf = hf_tiny()
    hf.config.save_pretrained(tmp_path)
    state = dict(hf.state_dict())
    state["transformer.h.1.mlp.c_fc.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"blocks\.1\.mlp\.c_fc\.bias has shape \[7\], expected \[128\]"
    ):
        import_hf(tmp_path)


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    hf_tiny().config.save_pretrained(tmp_path)
    torch.save({"tokens_embed.weight": NotATensor()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        import_hf(tmp_path)


def test_hub_errors_are_user_errors(monkeypatch):
    import sys

    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(GptkitError, match="could not download openai-community/openai-gpt"):
        import_hub()
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(GptkitError, match="needs huggingface_hub"):
        run_import("hub", "unused")


def test_unknown_source_folder(tmp_path):
    with pytest.raises(CheckpointError, match="neither a released GPT-1 folder"):
        run_import(str(tmp_path), str(tmp_path / "out"))

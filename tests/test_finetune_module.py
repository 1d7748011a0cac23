"""The fine-tuning path of GPTModule on tiny configs: the combined objective, metrics, init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import ROOTS, tiny_tokenizer

from gptkit.checkpoint import load_pretrained
from gptkit.data.finetune import FinetuneDataModule
from gptkit.model import lm_loss
from gptkit.module import GPTModule
from gptkit.tasks.base import Encoded, collate

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "n_ctx": 64, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "resid_pdrop": 0.0}
OPTIM = {"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "schedule": "linear",
         "warmup_steps": 1, "warmup_ratio": None, "fused": False}


def module(task: str | None, lm_coef: float = 0.5, n_layer: int = 2) -> GPTModule:
    torch.manual_seed(0)
    model = {**TINY, "n_layer": n_layer, "vocab_size": tiny_tokenizer().vocab_size}
    return GPTModule(model, OPTIM, {"lm_coef": lm_coef}, task=task, head_dropout=0.0).eval()


def batch(task: str, split: str = "dev") -> dict:
    dm = FinetuneDataModule(task, ROOTS[task], tiny_tokenizer(), 64, batch_size=4, eval_batch_size=4)
    dm.setup("fit")
    return next(iter(dm._loader(split)))


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb", "race"])
def test_lm_coef_zero_is_exactly_the_task_loss(task):
    b = batch(task)
    m0, m5 = module(task, 0.0), module(task, 0.5)
    total, task_loss, logits = m0._task_step(b)
    assert torch.equal(total, task_loss)
    assert torch.equal(task_loss, m0.task.loss(logits, b["labels"]))
    total5, task_loss5, _ = m5._task_step(b)
    assert torch.allclose(task_loss5, task_loss)  # same weights (same seed), same task loss
    assert total5 > task_loss5


def test_aux_lm_loss_per_sequence_mean_over_real_candidates():
    m = module("race", 1.0)
    rng = np.random.default_rng(0)
    vocab = tiny_tokenizer().vocab_size
    seqs = [[rng.integers(0, vocab, n).astype(np.int32) for n in lengths] for lengths in ([5, 9], [7, 4, 6])]
    enc = [Encoded(s, [len(x) - 1 for x in s], 0, i) for i, s in enumerate(seqs)]
    b = collate(enc)
    assert b["choice_mask"].tolist() == [[True, True, False], [True, True, True]]
    total, task_loss, _ = m._task_step(b)
    per_seq = []
    for s in (x for example in seqs for x in example):
        t = torch.as_tensor(s, dtype=torch.long)[None]
        per_seq.append(lm_loss(m.backbone, m.backbone(t[:, :-1]), t[:, 1:]))
    expected = torch.stack(per_seq).mean()  # 5 real sequences; the padded candidate is left out
    assert torch.allclose(total - task_loss, expected, atol=1e-5)


def test_eval_metrics_logged_per_split_and_group():
    m = module("race")
    b = batch("race")
    _, _, logits = m._task_step(b)
    m.task_metrics_update("val", 0, logits, b)
    out = m.task_metrics["val_0"].compute()
    assert {"acc", "acc_middle"} <= set(out)
    mnli = module("mnli")
    assert set(mnli.task_metrics) == {"val_0", "val_1", "test_0", "test_1"}


def test_predict_step_returns_index_and_prediction():
    m = module("stsb")
    dm = FinetuneDataModule("stsb", ROOTS["stsb"], tiny_tokenizer(), 64, batch_size=4)
    dm.setup("predict")
    b = next(iter(dm.predict_dataloader()))
    out = m.predict_step(b, 0)
    assert out["index"].tolist() == [0, 1, 2, 3] and out["pred"].shape == (4,)


def test_init_transfers_embeddings_and_first_k_blocks():
    pre = module(None, n_layer=2)
    state = {k: v.clone() for k, v in pre.backbone.state_dict().items()}
    state["tokens_embed.weight"] = state["tokens_embed.weight"][:-3]  # pretrained without special tokens
    torch.manual_seed(1)
    ft = GPTModule({**TINY, "vocab_size": tiny_tokenizer().vocab_size}, OPTIM, task="sst2")
    fresh_block1 = ft.backbone.blocks[1].attn.c_attn.weight.clone()
    fresh_special = ft.backbone.tokens_embed.weight[-3:].clone()
    keys = load_pretrained(ft.backbone, state, n_transfer=1)
    assert "blocks.0.attn.c_attn.weight" in keys and not any(k.startswith("blocks.1.") for k in keys)
    assert torch.equal(ft.backbone.blocks[0].attn.c_attn.weight, pre.backbone.blocks[0].attn.c_attn.weight)
    assert torch.equal(ft.backbone.blocks[1].attn.c_attn.weight, fresh_block1)  # not transferred
    assert torch.equal(ft.backbone.tokens_embed.weight[:-3], state["tokens_embed.weight"])
    assert torch.equal(ft.backbone.tokens_embed.weight[-3:], fresh_special)  # new rows keep N(0, 0.02)
    assert torch.equal(ft.backbone.positions_embed.weight, pre.backbone.positions_embed.weight)


def test_mnli_fit_logs_matched_and_mismatched(tmp_path):
    """In-process build + Trainer: two validation sets, metric names with their suffixes."""
    from finetune_helpers import GLUE

    from gptkit.builder import build
    from gptkit.config import load_config
    from gptkit.errors import ConfigError
    from gptkit.verbs import run

    tiny_tokenizer().save(tmp_path / "tok.json")
    cfg = load_config(str(Path(__file__).parent.parent / "recipes" / "mnli.yaml"), [
        f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path}",
        "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=2",
        "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.devices=1", "logging.progress=none",
        "logging.throughput=false",
    ])
    metrics = run("fit", cfg)
    assert {"val/acc_matched", "val/acc_mismatched", "val/loss", "train/task_loss"} <= set(metrics)
    assert any("val_acc_matched" in p.name for p in (tmp_path / "mnli" / "checkpoints").iterdir())
    # Two test sets -> two GLUE submission files with label names.
    from omegaconf import OmegaConf

    from gptkit.verbs import predict

    # Evaluating the run needs only the recipe, the data and the run: tokenizer and sizes come from the
    # checkpoint (the recipe's defaults are the paper's 12 x 768).
    plain = [f"data.root={GLUE}", f"run.dir={tmp_path}", "trainer.accelerator=cpu", "trainer.devices=1",
             "logging.progress=none"]
    recipe = str(Path(__file__).parent.parent / "recipes" / "mnli.yaml")
    tested = run("test", load_config(recipe, [*plain, "ckpt_path=best"]))
    assert {"test/acc_matched", "test/acc_mismatched"} <= set(tested)
    with pytest.raises(ConfigError, match="needs a checkpoint of the run: add ckpt_path=best"):
        run("validate", load_config(recipe, plain))
    # a new fine-tuning run from this one takes its width and depth from init.checkpoint
    last = tmp_path / "mnli" / "checkpoints" / "last.ckpt"
    c = build(load_config(str(Path(__file__).parent.parent / "recipes" / "rte.yaml"),
                          [f"data.root={GLUE}", f"run.dir={tmp_path}", f"init.checkpoint={last}"]))
    assert (c.module.backbone.config.n_layer, c.module.backbone.config.n_embd, c.module.backbone.config.n_head) == (1, 16, 2)
    [folder] = [cb for cb in c.trainer.callbacks if type(cb).__name__ == "RunFolder"]  # written when training starts
    assert c.cfg.model.n_embd == 16 and "n_embd: 16" in folder.config_yaml
    cfg = OmegaConf.merge(load_config(recipe, plain), {"ckpt_path": "last"})
    paths = predict(cfg)
    assert [p.name for p in paths] == ["MNLI-m.tsv", "MNLI-mm.tsv"]
    for p in paths:
        lines = p.read_text().splitlines()
        assert lines[0] == "index\tprediction" and lines[1].split("\t")[1] in ("entailment", "neutral", "contradiction")
    two = OmegaConf.merge(cfg, {"trainer": {"strategy": "ddp", "devices": 2}})
    with pytest.raises(ConfigError, match="`gptkit predict` writes its files from one process"):
        predict(two)  # refused before any process is started

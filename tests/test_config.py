import os
from pathlib import Path

import pytest

from gptkit.config import load_config, to_yaml
from gptkit.errors import ConfigError

# (study files, recipes/study/*.yaml with a top-level `arms:`, are read by gptkit study: tests/test_study.py)
RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").rglob("*.yaml")
                 if not (p.parent.name == "study" and "\narms:" in p.read_text()))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_recipe_validates(recipe):
    cfg = load_config(recipe)
    assert cfg.run.name
    if cfg.data.name != "pretrain":
        from gptkit.tasks import task_of

        assert task_of(cfg.data) is not None  # a registered task, or a table described by the recipe


def test_paper_pretraining_recipe_has_paper_settings():
    cfg = load_config(Path(__file__).parent.parent / "recipes" / "pretrain.yaml")
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.n_ctx) == (12, 768, 12, 512)
    assert cfg.data.batch_size == 64 and cfg.optim.lr == 2.5e-4 and cfg.optim.warmup_steps == 2000
    assert cfg.optim.schedule == "cosine" and cfg.optim.weight_decay == 0.01
    assert cfg.tokenizer.vocab_size == 40478 and cfg.model.embd_pdrop == 0.1


def test_base_extension_and_overrides(tmp_path):
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "b.yaml").write_text("model:\n  n_layer: 3\n  n_embd: 64\n  n_head: 4\noptim:\n  lr: 0.1\n")
    (tmp_path / "r.yaml").write_text("base: _base/b.yaml\nmodel:\n  n_layer: 5\n")
    cfg = load_config(tmp_path / "r.yaml", ["optim.lr=0.5", "data.files=[a.txt,b.txt]"])
    assert cfg.model.n_layer == 5 and cfg.model.n_embd == 64 and cfg.optim.lr == 0.5
    assert list(cfg.data.files) == ["a.txt", "b.txt"]
    assert "n_layer: 5" in to_yaml(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_step=5"], "unknown key 'trainer.max_step'.*did you mean 'trainer.max_steps'"),
        (["modle.n_layer=2"], "unknown key 'modle'.*did you mean 'model'"),
        (["model.n_layer=two"], "invalid value for 'model.n_layer'"),
        (["optim.schedule=cosin"], "'optim.schedule' is 'cosin'; choose one of"),
        (["model.n_embd=30", "model.n_head=4"], "divisible"),
        (["data.batch_size=0"], "must be positive"),
        (["trainer.max_steps"], "not of the form key=value"),
        (["tokenizer.kind=sentencepiece"], "choose one of bpe"),
        (["model.compile_mode=fast"], "'model.compile_mode' is 'fast'; choose one of default, max-autotune"),
        (["optim.lr=-1"], r"'optim.lr' must be positive, got -1.0"),
        (["optim.lr=0"], r"'optim.lr' must be positive, got 0.0"),
        (["optim.eps=0"], r"'optim.eps' must be positive, got 0.0"),
        (["optim.weight_decay=-0.1"], r"'optim.weight_decay' must be >= 0, got -0.1"),
        (["optim.betas=[0.9,1.0]"], r"optim.betas must hold two numbers, each in \[0, 1\), got \[0.9, 1.0\]"),
        (["optim.betas=[-0.1,0.999]"], r"optim.betas must hold two numbers, each in \[0, 1\)"),
        (["optim.betas=[0.9]"], r"optim.betas must hold two numbers"),
        (["optim.warmup_steps=-5"], r"'optim.warmup_steps' must be >= 0, got -5"),
        (["optim.warmup_ratio=2"], r"'optim.warmup_ratio' must be in \[0, 1\] \(or null\), got 2.0"),
        (["model.embd_pdrop=1.5"], r"'model.embd_pdrop' must be in \[0, 1\), got 1.5"),
        (["model.attn_pdrop=-0.1"], r"'model.attn_pdrop' must be in \[0, 1\), got -0.1"),
        (["model.resid_pdrop=1"], r"'model.resid_pdrop' must be in \[0, 1\), got 1.0"),
        (["model.clf_pdrop=2"], r"'model.clf_pdrop' must be in \[0, 1\), got 2.0"),
        (["data.num_workers=-1"], r"'data.num_workers' must be >= 0, got -1"),
        (["data.eval_batch_size=0"], r"'data.eval_batch_size' must be >= 1 \(or null\), got 0"),
        (["data.batch_size=-3"], r"'data.batch_size' must be positive, got -3"),
        (["checkpoint.save_top_k=-2"], r"'checkpoint.save_top_k' must be -1 \(keep all\) or >= 0, got -2"),
        (["objective.lm_coef=-1"], r"'objective.lm_coef' must be >= 0, got -1.0"),
        (["trainer.gradient_clip_val=-1"], r"'trainer.gradient_clip_val' must be >= 0 \(or null\), got -1.0"),
        (["run.name=../../etc"], r"run.name '../../etc' must be a plain folder name"),
        (["run.name=a/b"], r"run.name 'a/b' must be a plain folder name"),
        (["run.name=a\\b"], r"run.name 'a\\\\b' must be a plain folder name"),
        (["run.name=.."], r"run.name '..' must be a plain folder name"),
        (["run.name=."], r"run.name '.' must be a plain folder name"),
        (["run.name=''"], r"run.name '' must be a plain folder name \(not empty"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides", [
    ["optim.warmup_ratio=0", "optim.warmup_ratio=1", "optim.warmup_steps=0", "optim.weight_decay=0"],
    ["optim.betas=[0,0.999]", "objective.lm_coef=0", "trainer.gradient_clip_val=0", "data.num_workers=0"],
    ["model.embd_pdrop=0", "model.attn_pdrop=0", "model.resid_pdrop=0", "model.clf_pdrop=0.99"],
    ["checkpoint.save_top_k=-1", "data.eval_batch_size=1"], ["checkpoint.save_top_k=0"],
    ["run.name=my-run.2"],
])
def test_range_bounds_are_accepted(overrides):
    load_config(None, overrides)


@pytest.mark.parametrize("monitor", ["val/acc", "val_loss", "acc"])
def test_pretraining_refuses_a_monitor_it_never_logs(tmp_path, monitor):
    from gptkit.builder import build

    cfg = load_config(None, [f"run.dir={tmp_path}", f"checkpoint.monitor={monitor}"])  # a base recipe may set it
    with pytest.raises(ConfigError, match=rf"checkpoint.monitor={monitor} is not a metric that pretraining "
                                          r"\(data.name=pretrain\) logs; choose one of val/loss, val/ppl, train/loss"):
        build(cfg)  # before any data is read: there is none here


@pytest.mark.parametrize("monitor", ["val/loss", "val/ppl", "train/loss"])
def test_pretraining_monitors(monitor):
    from gptkit.monitor import check_monitor

    check_monitor(load_config(None, [f"checkpoint.monitor={monitor}"]))


@pytest.mark.parametrize(("recipe", "overrides", "expected"), [
    (None, [], "min"),  # pretraining: val/loss
    (None, ["checkpoint.monitor=val/ppl", "checkpoint.mode=min"], "min"),
    ("sst2.yaml", [], "max"),  # val/acc
    ("cola.yaml", [], "max"),  # val/mcc
    ("mnli.yaml", [], "max"),  # val/acc_matched
    ("stsb.yaml", [], "max"),  # val/pearson
    ("sst2.yaml", ["checkpoint.monitor=val/loss"], "min"),  # the base recipe's task monitor, replaced
    ("sst2.yaml", ["checkpoint.monitor=train/task_loss"], "min"),
])
def test_best_checkpoints_follow_the_monitor(tmp_path, recipe, overrides, expected):
    from gptkit.builder import build_callbacks
    from gptkit.checkpointing import BestCheckpoint

    recipes = Path(__file__).parent.parent / "recipes"
    cfg = load_config(recipe and recipes / recipe, overrides)
    assert next(cb for cb in build_callbacks(cfg, tmp_path) if isinstance(cb, BestCheckpoint)).mode == expected


@pytest.mark.parametrize(("recipe", "overrides", "worst"), [
    (None, ["checkpoint.mode=max"], "highest val/loss"),
    (None, ["checkpoint.monitor=train/loss", "checkpoint.mode=max"], "highest train/loss"),
    ("sst2.yaml", ["checkpoint.monitor=train/task_loss", "checkpoint.mode=max"], "highest train/task_loss"),
    ("sst2.yaml", ["checkpoint.mode=min"], "lowest val/acc"),  # known from the task's metric
    ("cola.yaml", ["checkpoint.mode=min"], "lowest val/mcc"),
    ("stsb.yaml", ["checkpoint.mode=min"], "lowest val/pearson"),
])
def test_a_mode_that_keeps_the_worst_checkpoints_is_refused(recipe, overrides, worst):
    from gptkit.monitor import check_monitor

    with pytest.raises(ConfigError, match=rf"would keep the checkpoints with the {worst}, the worst ones; "
                                          r"set checkpoint.mode=(min|max), or leave it null"):
        cfg = load_config(recipe and Path(__file__).parent.parent / "recipes" / recipe, overrides)
        check_monitor(cfg)


def test_a_registered_tasks_metric_sets_the_mode():
    """A task whose metric improves downwards (torchmetrics' higher_is_better=False) gets mode min, and
    an explicit mode=min is accepted for it."""
    from types import SimpleNamespace

    from torchmetrics import MeanSquaredError
    from torchmetrics.regression import PearsonCorrCoef

    from gptkit.monitor import task_metric_mode

    task = SimpleNamespace(metrics=lambda: {"mse": MeanSquaredError(), "pearson": PearsonCorrCoef()})
    assert task_metric_mode(task, "val/mse") == "min" and task_metric_mode(task, "val/mse_matched") == "min"
    assert task_metric_mode(task, "val/pearson") == "max"  # torchmetrics leaves correlations unsaid


def test_unsupported_strategy_and_huge_numbers():
    with pytest.raises(ConfigError, match=r"trainer.strategy=ddp_spawn is not supported .* use trainer.strategy=ddp"):
        load_config(None, ["trainer.strategy=ddp_spawn"])
    with pytest.raises(ConfigError, match=r"a number in command line is too large"):
        load_config(None, ["optim.lr=" + "1" * 400])


def test_bad_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "folder").mkdir()
    (tmp_path / "child.yaml").write_text("base: folder\n")
    with pytest.raises(ConfigError, match=r"folder \(extended by .*child.yaml\) is a directory, not a recipe file"):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "target.yaml").write_text("model:\n  _target_: os.system\n")
    with pytest.raises(ConfigError, match="unknown key 'model._target_'"):
        load_config(tmp_path / "target.yaml")


def test_config_is_read_only():
    cfg = load_config(None)
    from omegaconf.errors import ReadonlyConfigError

    with pytest.raises(ReadonlyConfigError):
        cfg.model.n_layer = 3


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model.compile=true"], "default"),
    (["model.compile=true", "model.compile_mode=max-autotune-no-cudagraphs"], "max-autotune-no-cudagraphs"),
    (["model.compile=false", "model.compile_mode=max-autotune"], None),  # the mode applies only when compiling
    (["model.compile=true", "model.compile_tuning=true"], {"coordinate_descent_tuning": True}),
    (["model.compile=true", "model.compile_tuning=true", "model.compile_mode=reduce-overhead"],
     {"triton.cudagraphs": True, "coordinate_descent_tuning": True}),
])
def test_compile_mode_reaches_torch_compile(monkeypatch, overrides, expected):
    from gptkit.builder import build_module
    from gptkit.model import GPT

    calls = []
    monkeypatch.setattr(GPT, "compile", lambda self, **kwargs: calls.append(kwargs))
    cfg = load_config(None, ["model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.n_ctx=16", *overrides])
    tokenizer = type("Tok", (), {"vocab_size": 50})()
    module = build_module(cfg, tokenizer, {"kind": "bpe"})
    module.configure_model()
    module.configure_model()  # Lightning may call it again (e.g. after a restart): compiled once
    if isinstance(expected, dict):  # with tuning: the mode's inductor options plus coordinate descent
        assert calls == [{"options": expected}]
    else:
        assert calls == ([] if expected is None else [{"mode": expected}])


def best_file(folder: Path, name: str, when: int, record: bool = True) -> None:
    """A ``best-*.ckpt`` as BestCheckpoint writes it: the monitor and score it was kept for, recorded in
    the callback's saved state (parsed here from its name); ``record=False``: a file without one."""
    import re

    import torch

    path = folder / name
    if record:
        monitor, score = re.search(r"-(val_[a-z]+)(-?[\d.]+|nan)(?:-v\d+)?\.ckpt$", name).groups()
        state = {"monitor": monitor.replace("_", "/", 1), "current_score": torch.tensor(float(score))}
        torch.save({"callbacks": {"BestCheckpoint{...}": state}}, path)
    else:
        path.write_bytes(b"")
    os.utime(path, (1e9 + when, 1e9 + when))


def test_ckpt_path_best_names_what_is_missing(tmp_path):
    from gptkit.checkpoint import resolve_ckpt_path
    from gptkit.errors import CheckpointError

    cfg = load_config(None, [f"run.dir={tmp_path}", "run.name=r", "ckpt_path=best"])
    with pytest.raises(CheckpointError, match=r"run 'r' has no best checkpoint in .*checkpoints \(one is saved at each"):
        resolve_ckpt_path(cfg, tmp_path / "r")
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    for i, name in enumerate(("best-step4-val_loss3.1000.ckpt", "best-step8-val_loss2.9000.ckpt")):
        best_file(tmp_path / "r" / "checkpoints", name, i)
    assert resolve_ckpt_path(cfg, tmp_path / "r").endswith("best-step8-val_loss2.9000.ckpt")
    last = load_config(None, [f"run.dir={tmp_path}", "run.name=r", "ckpt_path=last"])
    with pytest.raises(CheckpointError, match=r"last.ckpt does not exist; it has best-step8-val_loss2.9000.ckpt: "
                                              r"use ckpt_path=best"):
        resolve_ckpt_path(last, tmp_path / "r")


def test_ckpt_path_best_falls_back_to_the_monitor_the_run_recorded(tmp_path, capsys):
    """A fine-tuning run trained with checkpoint.monitor=val/loss, evaluated without that override: the
    files record their val/loss scores, and the rules of gptkit.monitor say which way it improves."""
    from gptkit.checkpoint import resolve_ckpt_path

    folder = tmp_path / "r" / "checkpoints"
    folder.mkdir(parents=True)
    names = ["best-step1-val_loss1.0000.ckpt", "best-step2-val_loss3.0000.ckpt"]
    for i, name in enumerate(names):
        best_file(folder, name, i, record=False)
    cfg = load_config(Path(__file__).parent.parent / "recipes" / "sst2.yaml",
                      [f"run.dir={tmp_path}", "run.name=r", "ckpt_path=best"])  # monitors val/acc
    assert resolve_ckpt_path(cfg, tmp_path / "r").endswith("best-step2-val_loss3.0000.ckpt")  # no record: the newest
    assert "no best checkpoint in" in capsys.readouterr().err  # ... and said
    for i, name in enumerate(names):
        best_file(folder, name, i)
    assert resolve_ckpt_path(cfg, tmp_path / "r").endswith("best-step1-val_loss1.0000.ckpt")


@pytest.mark.parametrize(("monitor", "names", "best"), [
    # save_top_k > 1 keeps several: the best score wins, not the newest file
    ("val/loss", ["best-step100-val_loss1.2000.ckpt", "best-step200-val_loss1.9000.ckpt"], "best-step100"),
    # equal scores (and Lightning's -v1 for a repeated name): the earliest, which Lightning keeps as best
    ("val/loss", ["best-step1-val_loss1.2000.ckpt", "best-step2-val_loss1.2000-v1.ckpt"], "best-step1"),
    ("val/pearson", ["best-step1-val_pearson0.3000.ckpt", "best-step2-val_pearson-0.5000.ckpt"], "best-step1"),
    ("val/pearson", ["best-step1-val_pearson-0.7000.ckpt", "best-step2-val_pearson-0.5000.ckpt"], "best-step2"),
    ("val/loss", ["best-step1-val_loss2.0000.ckpt", "best-step2-val_lossnan.ckpt"], "best-step1"),
    # the monitor was changed: no file carries its score, and no file says what it was kept for: the newest
    ("val/acc", ["best-step1-val_loss1.0000.ckpt", "best-step2-val_loss3.0000.ckpt"], "best-step2"),
])
def test_ckpt_path_best_is_the_best_score(tmp_path, monitor, names, best):
    from gptkit.checkpoint import resolve_ckpt_path

    folder = tmp_path / "r" / "checkpoints"
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        best_file(folder, name, i, record=monitor != "val/acc")
    cfg = load_config(None, [f"run.dir={tmp_path}", "run.name=r", "ckpt_path=best", f"checkpoint.monitor={monitor}"])
    assert best in Path(resolve_ckpt_path(cfg, tmp_path / "r")).name


def test_a_single_data_file_needs_no_brackets(tmp_path):
    assert list(load_config(None, ["data.files=my.txt"]).data.files) == ["my.txt"]
    (tmp_path / "r.yaml").write_text("data:\n  files: corpus/*.txt\n")
    assert list(load_config(tmp_path / "r.yaml").data.files) == ["corpus/*.txt"]


@pytest.mark.parametrize("monitor", ["acc", "train/acc", "val/mcc"])
def test_a_task_refuses_a_monitor_it_never_logs(monitor):
    from gptkit.monitor import check_monitor

    cfg = load_config(Path(__file__).parent.parent / "recipes" / "sst2.yaml", [f"checkpoint.monitor={monitor}"])
    with pytest.raises(ConfigError, match=rf"checkpoint.monitor={monitor} is not a metric that task sst2 logs; "
                                          r"choose one of val/acc, val/loss, train/loss, train/task_loss"):
        check_monitor(cfg)

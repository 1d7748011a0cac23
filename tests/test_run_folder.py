"""A run folder is only changed by a fit that starts training: a fit that fails on its data, its
settings or its checkpoint leaves an earlier run whole. Checkpoints of another task, or files that
are not gptkit checkpoints, are refused with one message."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import folder_snapshot
from finetune_helpers import GLUE, tiny_tokenizer

from gptkit.builder import build
from gptkit.checkpoint import load_backbone, load_ckpt
from gptkit.config import load_config
from gptkit.errors import CheckpointError, DataError
from gptkit.tokenizer import Tokenizer
from gptkit.verbs import run

RECIPES = Path(__file__).parent.parent / "recipes"


def args(root: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}", f"tokenizer.path={root.parent / 'tok.json'}", f"run.dir={root.parent / 'runs'}",
        "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=4",
        "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
        "trainer.accelerator=cpu", "trainer.devices=1", "logging.progress=none", "logging.throughput=false", *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SST-2 run (its own copy of the GLUE samples, so a test may spoil the data)."""
    base = tmp_path_factory.mktemp("runs")
    shutil.copytree(GLUE, base / "glue")
    tiny_tokenizer().save(base / "tok.json")
    run("fit", load_config(str(RECIPES / "sst2.yaml"), args(base / "glue")))
    return base


@pytest.fixture
def work(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "w")
    return tmp_path / "w"


def test_overwrite_replaces_the_earlier_run_only_once_training_starts(work):
    folder = work / "runs" / "sst2"
    (folder / "checkpoints" / "best-step99-val_acc0.1234.ckpt").write_bytes(b"earlier run")
    for made in ("results/validate.json", "predictions/SST-2.tsv"):  # what the earlier checkpoints made
        (folder / made).parent.mkdir(exist_ok=True)
        (folder / made).write_text("earlier run")
    before = folder_snapshot(folder)
    train = work / "glue" / "SST-2" / "train.tsv"
    good = train.read_text()
    train.write_text(good.replace("\t1\n", "\tpositive\n", 1))  # a bad label: the new run fails on its data
    with pytest.raises(DataError, match="label 'positive'"):
        run("fit", load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", "run.overwrite=true",
                                                                  "trainer.max_steps=6")))
    assert folder_snapshot(folder) == before  # checkpoints, config.yaml and tokenizer.json untouched

    train.write_text(good)
    assert [v.name for v in (folder / "tensorboard").iterdir()] == ["version_0"]
    run("fit", load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", "run.overwrite=true", "trainer.max_steps=6")))
    assert not (folder / "checkpoints" / "best-step99-val_acc0.1234.ckpt").exists()
    assert not (folder / "results").exists() and not (folder / "predictions").exists()
    [version] = (folder / "tensorboard").iterdir()  # the new run's curves only
    assert version.name == "version_1" and any(version.glob("events.out.tfevents.*"))
    assert "max_steps: 6" in (folder / "config.yaml").read_text()


def test_nothing_is_written_by_build_alone(trained, tmp_path):
    c = build(load_config(str(RECIPES / "cola.yaml"), args(trained / "glue", f"run.dir={tmp_path}")))
    assert not (tmp_path / "cola").exists()
    [folder] = [cb for cb in c.trainer.callbacks if type(cb).__name__ == "RunFolder"]
    assert "name: cola" in folder.config_yaml


@pytest.mark.parametrize("verb", ["fit", "validate"])
def test_a_checkpoint_of_another_task_is_refused(work, verb):
    last = work / "runs" / "sst2" / "checkpoints" / "last.ckpt"
    before = folder_snapshot(work / "runs")
    cfg = load_config(str(RECIPES / "cola.yaml"), args(work / "glue", "run.name=sst2", f"ckpt_path={last}"))
    with pytest.raises(CheckpointError, match=r"is from sst2 fine-tuning but the recipe is for cola fine-tuning; "
                                              r"use the sst2 recipe \(data.name=sst2\)"):
        run(verb, cfg)
    assert folder_snapshot(work / "runs") == before


def test_a_pretraining_checkpoint_as_ckpt_path_points_to_init_checkpoint(work):
    ckpt = load_ckpt(work / "runs" / "sst2" / "checkpoints" / "last.ckpt")
    ckpt["hyper_parameters"]["task"] = None
    torch.save(ckpt, work / "pre.ckpt")
    cfg = load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", f"ckpt_path={work / 'pre.ckpt'}"))
    with pytest.raises(CheckpointError, match=r"is from pretraining but the recipe is for sst2 fine-tuning; .*"
                                              r"init.checkpoint=.*pre.ckpt instead of ckpt_path"):
        run("fit", cfg)


def test_a_checkpoint_that_does_not_fit_is_one_error_and_config_yaml_stays(work):
    folder = work / "runs" / "sst2"
    ckpt = load_ckpt(folder / "checkpoints" / "last.ckpt")
    del ckpt["state_dict"]["backbone.blocks.0.ln_1.bias"]
    torch.save(ckpt, folder / "checkpoints" / "cut.ckpt")
    config = (folder / "config.yaml").read_text()
    cfg = load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", f"ckpt_path={folder / 'checkpoints' / 'cut.ckpt'}",
                                                      "trainer.max_steps=8"))
    with pytest.raises(CheckpointError, match=r"cut.ckpt does not fit the model of this recipe \(Missing key"):
        run("fit", cfg)
    assert (folder / "config.yaml").read_text() == config


@pytest.mark.parametrize(("content", "message"), [
    ({"weights": torch.zeros(2)}, r"was not written by `gptkit fit`"),
    ([1, 2, 3], r"holds a list, not a Lightning checkpoint"),
])
def test_files_that_are_not_gptkit_checkpoints(work, content, message):
    torch.save(content, work / "other.ckpt")
    with pytest.raises(CheckpointError, match=message):
        run("validate", load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", f"ckpt_path={work / 'other.ckpt'}")))


def test_init_checkpoint_must_be_a_gptkit_checkpoint(work):
    torch.save({"tokens_embed.weight": torch.zeros(3, 2)}, work / "state.pt")
    with pytest.raises(CheckpointError, match=r"init.checkpoint .*state.pt was not written by gptkit"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"init.checkpoint={work / 'state.pt'}")))
    (work / "hf").mkdir()
    (work / "hf" / "config.json").write_text(json.dumps({"n_embd": 16, "model_type": "openai-gpt"}))
    with pytest.raises(CheckpointError, match=r"not written by gptkit .* `gptkit import openai-gpt --from"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"init.checkpoint={work / 'hf'}")))


def test_an_incomplete_init_checkpoint_is_refused(work):
    ckpt = load_ckpt(work / "runs" / "sst2" / "checkpoints" / "last.ckpt")
    del ckpt["state_dict"]["backbone.blocks.0.attn.c_attn.weight"]
    torch.save(ckpt, work / "cut.ckpt")
    with pytest.raises(CheckpointError, match=r"init.checkpoint .*cut.ckpt: the checkpoint lacks 1 backbone "
                                              r"tensor\(s\) that it should transfer \(blocks.0.attn.c_attn.weight\)"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"init.checkpoint={work / 'cut.ckpt'}")))


def test_more_paths_that_are_not_what_they_should_be(work):
    from gptkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`gptkit test` needs a fine-tuning recipe"):
        run("test", load_config(str(RECIPES / "quickstart" / "pretrain.yaml"), [f"run.dir={work / 'runs'}"]))
    with pytest.raises(DataError, match=r"tokenizer.path .* is a directory; give the tokenizer.json file"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"tokenizer.path={work}")))
    with pytest.raises(CheckpointError, match=r"for a run folder, give its checkpoint \(.*last.ckpt\)"):
        load_backbone(work / "runs" / "sst2")
    (work / "runs" / "sst2" / "checkpoints" / "last.ckpt").unlink()  # only best-*.ckpt left
    with pytest.raises(ConfigError, match=r"Resume it with ckpt_path=best"):
        build(load_config(str(RECIPES / "sst2.yaml"), args(work / "glue")))


def test_resuming_another_runs_checkpoint_into_a_folder_with_checkpoints_is_refused(work):
    from gptkit.errors import ConfigError

    shutil.copy(work / "runs" / "sst2" / "checkpoints" / "last.ckpt", work / "elsewhere.ckpt")
    with pytest.raises(ConfigError, match=r"already holds checkpoints from an earlier run"):
        build(load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", f"ckpt_path={work / 'elsewhere.ckpt'}")))


def test_task_names_compare_as_the_registry_knows_them(work):
    last = work / "runs" / "sst2" / "checkpoints" / "last.ckpt"
    metrics = run("validate", load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", "data.name=SST2",
                                                                          f"ckpt_path={last}")))
    assert "val/acc" in metrics


def test_ckpt_path_auto_on_a_first_start_still_initialises_from_init_checkpoint(work, capsys):
    last = work / "runs" / "sst2" / "checkpoints" / "last.ckpt"
    c = build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"init.checkpoint={last}", "ckpt_path=auto")))
    state = load_ckpt(last)["state_dict"]
    assert torch.equal(c.module.backbone.blocks[0].attn.c_attn.weight, state["backbone.blocks.0.attn.c_attn.weight"])


def test_pretraining_data_keys_in_a_fine_tuning_recipe_are_refused(work):
    from gptkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.files is read by pretraining \(data.name=pretrain\) and your own "
                                          r"tables \(data.name=table\); task cola reads its files from data.root"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", "data.files=[a.txt]")))


def test_a_transformers_folder_is_not_a_pretrained_model_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 16, "n_layer": 1, "model_type": "openai-gpt"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"not a gptkit pretrained-model folder: .* `gptkit import openai-gpt"):
        load_backbone(tmp_path)


def test_init_checkpoint_mismatches_are_refused(work):
    last = work / "runs" / "sst2" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"init.n_transfer=5 but init.checkpoint .* has 1 blocks"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"init.checkpoint={last}",
                                                           "init.n_transfer=5", "model.n_layer=6")))
    bigger = Tokenizer.train((GLUE / "SST-2" / "train.tsv").read_text().splitlines() * 3, vocab_size=600,
                             min_frequency=1)
    bigger.save(work / "bigger.json")
    with pytest.raises(CheckpointError, match=r"has a 40\d-token vocabulary but the tokenizer has \d+; use the "
                                              r"tokenizer the checkpoint was trained with"):
        build(load_config(str(RECIPES / "cola.yaml"), args(work / "glue", f"init.checkpoint={last}",
                                                           f"tokenizer.path={work / 'bigger.json'}")))


def test_a_fit_holds_its_run_folder(work, tmp_path):
    """A second fit into a run folder whose fit has not ended is refused (a sweep started twice would mix
    their checkpoints); the hold ends with the fit, and a fit that fails before writing leaves no folder."""
    from gptkit.errors import ConfigError
    from gptkit.runfolder import run_folder_lock

    folder = work / "runs" / "sst2"
    before = folder_snapshot(folder)
    cfg = load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", "ckpt_path=last", "trainer.max_steps=6"))
    with run_folder_lock(folder):  # another fit of this run, still training
        with pytest.raises(ConfigError, match=r"run folder .*sst2 is in use by another `gptkit fit` that has not ended"):
            run("fit", cfg)
        assert folder_snapshot(folder) == before
    run("fit", cfg)  # once it has ended: resumes
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 6

    fresh = tmp_path / "typo" / "runs" / "new"
    with pytest.raises(RuntimeError, match="failed"), run_folder_lock(fresh):
        raise RuntimeError("failed")
    assert not (tmp_path / "typo").exists()  # nor the run.dir it would have made


def test_an_evaluation_writes_into_the_run_folder_of_its_checkpoint(work, capsys):
    """`validate` / `test` of a checkpoint given by path put their results beside it, whatever run.name
    the recipe has (a sweep scoring many runs' checkpoints with one recipe would overwrite one file)."""
    last = work / "runs" / "sst2" / "checkpoints" / "last.ckpt"
    metrics = run("validate", load_config(str(RECIPES / "sst2.yaml"), args(work / "glue", "run.name=elsewhere",
                                                                           f"ckpt_path={last}")))
    written = work / "runs" / "sst2" / "results" / "validate.json"
    assert f"validate results -> {written}" in capsys.readouterr().err
    record = json.loads(written.read_text())
    assert record == {"checkpoint": str(last.resolve()), "step": 4, "metrics": metrics}
    assert not (work / "runs" / "elsewhere").exists()


def test_a_file_system_without_locks_only_warns(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    from gptkit.runfolder import run_folder_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with run_folder_lock(tmp_path / "run"):
        pass
    assert "warning: cannot lock run folder" in capsys.readouterr().err

"""Exact resume: a run stopped at update k and resumed gives the same per-update losses as one that never stopped.

Runs in-process on a small slice of real news text (about 11 batches per epoch, so the runs cross
epoch boundaries and stop mid-epoch), with dropout on, validation and periodic checkpoints.
"""

import os
import shutil

import pytest
import torch
from conftest import REPO, folder_snapshot
from fit_helpers import N_STEPS, Record, fit, tiny_args

from gptkit.data.sampler import ResumableDataLoader, ResumableSampler
from gptkit.reliability import Preempted


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    root, path = corpus
    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)  # nothing may be written outside run.dir and run.data_dir
    try:
        record = Record()
        c = fit(tiny_args(path, root, "baseline"), record)
    finally:
        os.chdir(old)
    assert list(cwd.iterdir()) == []
    assert len(c.datamodule.train_dataloader()) < 15  # the runs cross epoch boundaries
    return record


@pytest.mark.parametrize("how, stop_at, resumed_from, extra", [
    ("sigterm", 13, 13, []),  # graceful: last.ckpt written at the stop, mid-epoch
    ("sigint", 24, 24, []),   # Ctrl-C, likewise
    ("crash", 19, 16, []),    # the process dies: resume from the periodic checkpoint of update 16
    # no periodic checkpoints: last.ckpt is written at each validation (every 5 updates)
    ("crash", 13, 10, ["checkpoint.every_n_train_steps=null"]),
])
def test_resumed_run_matches_uninterrupted_run(corpus, baseline, how, stop_at, resumed_from, extra):
    root, path = corpus
    args = tiny_args(path, root, f"stop-{how}-{stop_at}", *extra)
    first = Record(stop_at, how)
    if how == "crash":
        with pytest.raises(RuntimeError, match="simulated"):
            fit(args, first)
    else:
        with pytest.raises(Preempted, match=f"after update {stop_at}; saved .*last.ckpt; resume with ckpt_path=last"):
            fit(args, first)
    ckpt = root / "runs" / f"stop-{how}-{stop_at}" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == resumed_from

    second = Record()
    fit([*args, "ckpt_path=last"], second)
    assert min(second.losses) == resumed_from + 1 and max(second.losses) == N_STEPS
    for step in range(1, stop_at + 1):
        assert first.losses[step] == pytest.approx(baseline.losses[step], rel=1e-6, abs=1e-7)
    for step in range(resumed_from + 1, N_STEPS + 1):
        assert second.losses[step] == pytest.approx(baseline.losses[step], rel=1e-5, abs=1e-6), step
        assert second.lrs[step] == pytest.approx(baseline.lrs[step], rel=1e-9)


def test_resuming_with_other_optimizer_settings_takes_them(corpus, baseline, capsys):
    """The advice after a non-finite loss is to resume with a lower optim.lr: Lightning restores the
    checkpoint's optimizer and schedule over the recipe's, so gptkit sets the recipe's back (and says so)."""
    root, path = corpus
    args = tiny_args(path, root, "lower-lr")
    with pytest.raises(Preempted):
        fit(args, Record(13, "sigterm"))
    second = Record()
    fit([*args, "optim.lr=1.5e-3", "optim.eps=1e-6", "objective.nonfinite=skip", "model.resid_pdrop=0.05",
         "ckpt_path=last"], second)  # the baseline's: 3e-3, 1e-8, stop, 0.1
    err = capsys.readouterr().err
    assert ("resuming with optim.lr=0.0015 (the checkpoint's: 0.003), optim.eps=1e-06 (the checkpoint's: 1e-08), "
            "objective.nonfinite=skip (the checkpoint's: stop), model.resid_pdrop=0.05 (the checkpoint's: 0.1)") in err
    assert "resuming at update 13: the learning rate goes from" in err
    for step in range(14, N_STEPS + 1):
        assert second.lrs[step] == pytest.approx(baseline.lrs[step] / 2, rel=1e-9), step
    assert "lr: 0.0015" in (root / "runs" / "lower-lr" / "config.yaml").read_text()  # what took effect


def test_resuming_a_finished_run_writes_nothing(corpus, baseline, tmp_path):
    """`ckpt_path=last` (or auto) on a run that has reached trainer.max_steps trains nothing, and leaves
    its checkpoints and config.yaml as they are, even with other settings on the command line."""
    root, path = corpus
    folder = tmp_path / "runs" / "finished"
    shutil.copytree(root / "runs" / "baseline", folder)
    before = folder_snapshot(folder)
    record = Record()
    fit([*tiny_args(path, root, "finished"), f"run.dir={tmp_path / 'runs'}", "optim.lr=1e-3", "objective.lm_coef=0",
         "ckpt_path=last"], record)
    assert record.losses == {}
    assert folder_snapshot(folder) == before


def test_sampler_splits_between_processes_like_one_process():
    data = list(range(37))
    one = ResumableSampler(data, seed=3, num_replicas=1, rank=0)
    two = [ResumableSampler(data, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    # a global batch of 8 on one process == the union of two per-process batches of 4
    first = [list(one)[:8], sorted(list(two[0])[:4] + list(two[1])[:4])]
    assert sorted(first[0]) == first[1]
    one.set_epoch(1)
    assert list(one) != list(ResumableSampler(data, seed=3))  # a new order each epoch
    val = [ResumableSampler(data, shuffle=False, num_replicas=2, rank=r, pad=False) for r in (0, 1)]
    assert sorted(list(val[0]) + list(val[1])) == data  # evaluation: every example exactly once


def test_loader_state_counts_handed_out_batches_even_with_workers():
    data = torch.arange(50)
    loader = ResumableDataLoader(data, ResumableSampler(data, seed=1), batch_size=4, num_workers=2)
    it = iter(loader)
    seen = [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert state["position"] == 12 and state["epoch"] == 0  # workers prefetch, but 3 batches were handed out
    rest = list(it)
    again = ResumableDataLoader(data, ResumableSampler(data, seed=999), batch_size=4)
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == [b.tolist() for b in rest]
    assert torch.cat(seen + rest).sort().values.tolist() == list(range(50))
    assert loader.state_dict() == {**state, "position": 50}
    assert len(list(loader)) == 13 and loader.state_dict()["epoch"] == 1  # the next epoch, in a new order


@pytest.mark.parametrize("group", [False, True])
def test_fine_tuning_resumes_exactly(tmp_path, group):
    """Fine-tuning data modules use the same resumable order (plain or length-grouped batches)."""
    from finetune_helpers import GLUE, tiny_tokenizer

    tiny_tokenizer().save(tmp_path / "tok.json")
    args = [f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path}", "model.n_layer=1",
            "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=4", "trainer.max_steps=16",
            "trainer.limit_val_batches=2", "trainer.val_check_interval=4", "trainer.check_val_every_n_epoch=null",
            "checkpoint.every_n_train_steps=4", f"data.group_by_length={group}",
            "trainer.accelerator=cpu", "trainer.devices=1", "logging.progress=none", "logging.throughput=false"]
    recipe = str(REPO / "recipes" / "stsb.yaml")

    def fit_task(extra, record):
        return fit([*args, *extra], record, recipe)

    baseline = Record()
    c = fit_task(["run.name=baseline"], baseline)
    assert len(c.datamodule.train_dataloader()) < 16  # the run crosses an epoch boundary
    with pytest.raises(RuntimeError, match="simulated"):
        fit_task(["run.name=stopped"], Record(10, "crash"))
    resumed = Record()
    fit_task(["run.name=stopped", "ckpt_path=last"], resumed)
    assert sorted(resumed.losses) == list(range(9, 17))  # from the periodic checkpoint of update 8
    for step in resumed.losses:
        assert resumed.losses[step] == pytest.approx(baseline.losses[step], rel=1e-5, abs=1e-6), step


def test_resuming_a_run_saved_with_one_checkpoint_callback(corpus, monkeypatch):
    """Runs saved before last.ckpt got its own callback resume into last.ckpt (not last-v1.ckpt) and
    keep their best score and files."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from gptkit import builder
    from gptkit.checkpointing import BestCheckpoint, LastCheckpoint

    root, path = corpus
    args = [*tiny_args(path, root, "upgrade"), "trainer.max_steps=10"]
    new_callbacks = builder.build_callbacks

    def old_callbacks(cfg, rdir, verb="fit", run_folder=None, tokenizer=None):  # the single checkpoint callback of before
        callbacks = new_callbacks(cfg, rdir, verb, run_folder, tokenizer)
        old = ModelCheckpoint(dirpath=rdir / "checkpoints", filename="best-step{step}-val_loss{val/loss:.4f}",
                              monitor="val/loss", mode="min", save_top_k=1, save_last=True,
                              auto_insert_metric_name=False, every_n_train_steps=cfg.checkpoint.every_n_train_steps)
        return [old, *(cb for cb in callbacks if not isinstance(cb, (BestCheckpoint, LastCheckpoint)))]

    monkeypatch.setattr(builder, "build_callbacks", old_callbacks)
    fit(args, Record())
    monkeypatch.setattr(builder, "build_callbacks", new_callbacks)
    c = fit([*tiny_args(path, root, "upgrade"), "trainer.max_steps=20", "ckpt_path=last"], Record())
    folder = root / "runs" / "upgrade" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert "last.ckpt" in names and not any(n.startswith("last-v") for n in names), names
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 20
    assert len([n for n in names if n.startswith("best")]) == 1, names  # save_top_k=1 still holds
    assert c.trainer.checkpoint_callback.best_model_score is not None

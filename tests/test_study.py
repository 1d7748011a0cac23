"""`gptkit study` and data.train_examples: the seeded subsample (the same for every arm with a seed,
nested across sizes, recorded in the config, counted in the summary), the study file's checks (one
clear message each), the same trial budget for every arm, and the small setting end to end (table,
CSV and plots written; a rerun trains nothing)."""

from __future__ import annotations

import csv
import functools
import re

import pytest
import yaml
from conftest import REPO
from finetune_helpers import SAMPLES, tiny_tokenizer

import gptkit.verbs as verbs
from gptkit.cli import main
from gptkit.config import load_config, to_yaml
from gptkit.data.finetune import FinetuneDataModule, subsample_indices
from gptkit.errors import ConfigError, DataError
from gptkit.study import FINETUNED, plan, read_study, tfidf_grid

STUDY = REPO / "recipes" / "study" / "pretraining-helps.yaml"
FINETUNE = str(REPO / "recipes" / "study" / "polarity.yaml")


# -- data.train_examples ----------------------------------------------------------------------------
def test_the_subsample_is_seeded_nested_and_checked():
    a = subsample_indices(1000, 100, seed=1)
    assert a == subsample_indices(1000, 100, seed=1) and a == sorted(a) and len(set(a)) == 100
    assert a != subsample_indices(1000, 100, seed=2)
    assert set(subsample_indices(1000, 10, seed=1)) <= set(a)  # a smaller size keeps a subset of the larger's
    assert subsample_indices(5, None, seed=1) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"data.train_examples=6 is more than the 5 training examples"):
        subsample_indices(5, 6, seed=1)


def test_the_datamodule_trains_on_the_subsample_and_says_so():
    def train(n, seed):
        dm = FinetuneDataModule("polarity", SAMPLES / "movie_reviews", tiny_tokenizer(), 64, seed=seed,
                                train_examples=n)
        dm.setup("fit")
        return dm

    dm = train(25, 3)
    assert len(dm.splits["train"].examples) == 25 and len(dm.splits["dev"].examples) == 29  # dev untouched
    assert re.search(r"train: 239 examples, .*; 25 drawn with seed 3 \(data.train_examples\)", dm.summary())
    assert [e.index for e in dm.splits["train"].examples] == [e.index for e in train(25, 3).splits["train"].examples]
    assert len(train(None, 3).splits["train"].examples) == 239
    with pytest.raises(DataError, match="movie-review polarity: data.train_examples=500 is more than the 239"):
        train(500, 3)


def test_the_key_is_recorded_and_range_checked():
    cfg = load_config(FINETUNE, ["data.train_examples=100", "run.seed=2"])
    assert "train_examples: 100" in to_yaml(cfg) and cfg.run.seed == 2  # (config.yaml of every run)
    with pytest.raises(ConfigError, match=r"'data.train_examples' must be >= 1 \(or null\), got 0"):
        load_config(FINETUNE, ["data.train_examples=0"])
    with pytest.raises(ConfigError, match="data.train_examples subsamples a fine-tuning task's training split"):
        load_config(str(REPO / "recipes" / "quickstart" / "pretrain.yaml"), ["data.train_examples=10"])


# -- the study file ---------------------------------------------------------------------------------
SHIPPED = sorted(p for p in STUDY.parent.glob("*.yaml") if "\narms:" in p.read_text())


@functools.cache
def planned(path, small):
    """A shipped study file read and planned (every run's config built: about 0.15 s a config)."""
    study = read_study(path, small=small)
    return study, *plan(study)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_fine_tuned_arm_gets_the_same_trials(path):
    for small in (False, True):  # every run's config of the default and the small setting builds
        study, pre_cfg, groups = planned(path, small)
        assert {g.arm.kind for g in groups} == set(FINETUNED) and pre_cfg.data.name == "pretrain"
        for size in study.sizes:
            grids = {str(g.grid) for g in groups if g.size == size}
            assert len(grids) == 1, grids  # one grid per size, whatever the arm or dataset
        assert len(tfidf_grid(study.trials(study.sizes[0]))) == study.trials(study.sizes[0])
        assert study.targets.get("dataset") in study.datasets


def test_the_default_study_and_its_longer_pretraining_variant():
    default, _, groups = planned(STUDY, False)
    assert default.trials(100) == 3 and default.sizes == [100, 1000] and default.seeds == [1, 2, 3]
    assert {g.prefix for g in groups} >= {"polarity-scratch-n100", "bbc-pretrained-n100", "polarity-transfer-2-n1000"}
    # longer-pretraining.yaml changes the pretraining's length and nothing else of what it shares
    _, base_cfg, _ = planned(STUDY, False)
    _, long_cfg, long_groups = planned(STUDY.parent / "longer-pretraining.yaml", False)
    assert (base_cfg.trainer.max_steps, long_cfg.trainer.max_steps) == (1200, 4000)
    assert base_cfg.model == long_cfg.model and base_cfg.data == long_cfg.data and base_cfg.optim == long_cfg.optim
    same = {g.prefix: g for g in groups}
    for g in long_groups:  # the same fine-tuning runs, but for the study folder they live in
        assert g.grid == same[g.prefix].grid
        assert [o for o in g.base if "runs/study-" not in o] == [o for o in same[g.prefix].base if "runs/study-" not in o]


@pytest.mark.parametrize("edit, message", [
    ("name: x y", "name must be a plain name"),
    ("arms: {a: {kind: scratchy}}", "arms.a: kind must be one of scratch, pretrained, zeroshot, untrained, tfidf"),
    ("arms: {a: {kind: scratch, overrides: [run.seed=3]}}", "arms.a.overrides: run.seed is set by the study"),
    ("arms: {a: {kind: scratch, sizes: [50]}}", "arms.a.sizes: 50 is not one of the study's sizes"),
    ("sizes: [0]", "sizes: 0 is not a labelled-set size"),
    ("seeds: [1, 1]", "seeds must be a non-empty list of distinct integers"),
    ("tune: {optim.lr: []}", "tune.optim.lr: each value list must be non-empty"),
    ("tune: {optim.lrr: [1, 2]}", "tune.optim.lrr=1: unknown key 'optim.lrr'"),
    ("colour: red", "unknown key 'colour'"),
    ("datasets: {polarity: {recipe: nothere.yaml}}", "nothere.yaml does not exist"),
])
def test_a_bad_study_file_is_one_clear_message(tmp_path, edit, message):
    data = yaml.safe_load(STUDY.read_text())
    for section in ("pretrain",):
        data[section]["recipe"] = str(STUDY.parent / data[section]["recipe"])
    for spec in data["datasets"].values():
        spec["recipe"] = str(STUDY.parent / spec["recipe"])
    data.update(yaml.safe_load(edit))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        plan(read_study(tmp_path / "s.yaml"))


def test_the_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert main(["study", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study file") and "does not exist" in err and "Traceback" not in err
    (tmp_path / "s.yaml").write_text(STUDY.read_text().split("\n# --small")[0].replace("\nsmall:", "\nx:"))
    assert main(["study", str(tmp_path / "s.yaml"), "--small"]) == 2
    assert "--small needs a 'small:' section" in capsys.readouterr().err


# -- the small setting, end to end ------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "small"
    assert main(["study", str(STUDY), "--small", "--out", str(out), "--publish", str(out.parent / "docs")]) == 0
    return out


@pytest.mark.slow
def test_the_small_study_writes_its_table_csv_and_plots(small):
    page = (small / "study.md").read_text()
    assert page.startswith("# Study: pretraining-helps (small setting)")
    assert "| scratch | scratch | " in page and "| tfidf | tfidf | " in page and "(n=2)" in page
    assert "gptkit study " in page and "- hardware: " in page and "- versions: gptkit " in page
    assert "## The issue's targets" in page and ("**met**" in page or "**missed**" in page)
    for png in ("accuracy-vs-examples-polarity.png", "accuracy-vs-examples-bbc.png", "accuracy-vs-blocks-polarity.png",
                "zeroshot-over-pretraining.png"):
        assert (small / png).read_bytes()[:4] == b"\x89PNG", png
        assert (small.parent / "docs" / png).is_file()
    assert (small.parent / "docs" / "results.md").read_text() == page
    rows = list(csv.DictReader((small / "study.csv").open()))
    finetuned = [r for r in rows if r["kind"] in FINETUNED]
    assert finetuned and all(r["test_acc"] for r in finetuned)
    assert {r["seed"] for r in finetuned} == {"1", "2"}
    # each (dataset, arm, size) ran one chosen setting for both seeds
    for key in {(r["dataset"], r["arm"], r["size"]) for r in finetuned}:
        assert len({r["chosen"] for r in finetuned if (r["dataset"], r["arm"], r["size"]) == key}) == 1


@pytest.mark.slow
def test_a_rerun_trains_nothing(small, monkeypatch):
    fits = []
    real = verbs.run
    monkeypatch.setattr(verbs, "run", lambda verb, cfg, callbacks=(): fits.append((verb, cfg.run.name))
                        or real(verb, cfg, callbacks))
    before = (small / "study.csv").read_text()
    assert main(["study", str(STUDY), "--small", "--out", str(small)]) == 0
    assert fits == []
    assert (small / "study.csv").read_text() == before
    import torch

    threads = torch.get_num_threads()  # each run of the command records its torch threads on the page
    assert f"over the 2 run(s) of it that made this folder (torch threads of each: {threads}, {threads})" in \
        (small / "study.md").read_text()


@pytest.mark.slow
def test_another_study_in_the_folder_is_refused(small, capsys):
    assert main(["study", str(STUDY), "--out", str(small)]) == 2  # the default setting, the small one's folder
    assert "holds a study made with other settings" in capsys.readouterr().err


def test_the_page_says_how_much_of_each_dataset_the_pretraining_text_holds():
    from types import SimpleNamespace

    from gptkit.study import Report

    overlap = {"shingle": 8, "flag": 0.5, "corpus": "news", "datasets": {
        "polarity": {"examples": 10568, "flagged": 1, "largest_share": 0.5},
        "bbc": {"examples": 2125, "flagged": 0, "largest_share": 0.01}}}
    lines = "\n".join(Report._overlap_lines(SimpleNamespace(overlap=overlap)))
    assert "| polarity | 10,568 | 1 | 50.0% |" in lines and "| bbc | 2,125 | 0 | 1.0% |" in lines
    assert "**Contained in the pretraining text: polarity 1 of 10,568 examples (0.01%).**" in lines
    overlap["datasets"]["polarity"]["flagged"] = 0
    assert "Contained in" not in "\n".join(Report._overlap_lines(SimpleNamespace(overlap=overlap)))


def test_a_study_folder_with_a_broken_manifest_is_refused(tmp_path):
    from gptkit.study import _read_manifest

    study = read_study(STUDY)
    study.folder = tmp_path
    for text in ("{not json", '{"invocations": []}', "[1, 2]"):  # not JSON; no identity; not a mapping
        (tmp_path / "study.json").write_text(text)
        with pytest.raises(ConfigError, match=f"study folder {tmp_path} holds a study.json that is not a study's; "
                                              r"pass a new folder with --out \(nothing was run\)"):
            _read_manifest(study)

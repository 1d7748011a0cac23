"""Every task reads its real sample files (official layouts, in tests/fixtures/samples) and its
DataModule yields the exact token layout of the paper's input transform."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from finetune_helpers import ROOTS, SAMPLES, tiny_tokenizer

from gptkit.data.finetune import FinetuneDataModule
from gptkit.tasks import TASKS, get_task

N_CTX = 128


def datamodule(name: str, root=None, **kw) -> FinetuneDataModule:
    return FinetuneDataModule(name, root or ROOTS[name], tiny_tokenizer(), N_CTX, batch_size=4, **kw)


def check_layout(task, batch, tok) -> None:
    """Special tokens sit exactly where the paper's transform puts them."""
    ids, pos, mask = batch["input_ids"], batch["extract_pos"], batch["choice_mask"]
    B, K, T = ids.shape
    assert T <= N_CTX
    expected_k = {"classification": 1, "entailment": 1, "similarity": 2}.get(task.transform)
    if expected_k:
        assert K == expected_k and mask.all()
    for b in range(B):
        for k in range(K):
            if not mask[b, k]:
                assert (ids[b, k] == 0).all()
                continue
            seq = ids[b, k, : pos[b, k] + 1].tolist()
            assert seq[0] == tok.start_id and seq[-1] == tok.classify_id
            assert (ids[b, k, pos[b, k] + 1 :] == 0).all()  # right padding
            assert tok.classify_id not in seq[:-1] and tok.start_id not in seq[1:]
            n_delim = seq.count(tok.delimiter_id)
            assert n_delim == (0 if task.transform == "classification" else 1)
            targets = batch["lm_targets"][b, k]
            assert targets[: len(seq) - 1].tolist() == seq[1:]
            assert (targets[len(seq) - 1 :] == -100).all()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_reads_its_samples_with_exact_layout(name):
    task = get_task(name)
    dm = datamodule(name)
    dm.setup("fit")
    tok = tiny_tokenizer()
    for loader in [dm.train_dataloader(), *_as_list(dm.val_dataloader())]:
        batch = next(iter(loader))
        check_layout(task, batch, tok)
        labels = batch["labels"]
        if task.regression:
            assert labels.dtype == torch.float32 and not torch.isnan(labels).any()
        else:
            assert labels.dtype == torch.long and (labels >= 0).all()
    dm.setup("predict")
    for loader in _as_list(dm.predict_dataloader()):
        check_layout(task, next(iter(loader)), tok)
    assert name in dm.summary()


def _as_list(x):
    return x if isinstance(x, list) else [x]


def test_text_is_placed_verbatim_sst2():
    tok = tiny_tokenizer()
    dm = datamodule("sst2")
    dm.setup("fit")
    first = dm.splits["train"].examples[0]
    text = tok.encode("hide new secretions from the parental units ")
    assert first.sequences[0].tolist() == [tok.start_id, *text, tok.classify_id]


def test_similarity_orderings_mrpc():
    tok = tiny_tokenizer()
    dm = datamodule("mrpc")
    dm.setup("fit")
    ex = dm.splits["train"].examples[0]
    a = tok.encode('Amrozi accused his brother, whom he called "the witness", of deliberately distorting his evidence.')
    b = tok.encode('Referring to him as only "the witness", Amrozi accused his brother of deliberately distorting his evidence.')
    s, d, c = tok.start_id, tok.delimiter_id, tok.classify_id
    assert ex.sequences[0].tolist() == [s, *a, d, *b, c]
    assert ex.sequences[1].tolist() == [s, *b, d, *a, c]
    assert ex.label == 1


def test_glue_quirks():
    # CoLA train/dev have no header; the first row is data.
    ex, _ = get_task("cola").load(ROOTS["cola"], "train")
    assert ex[0].text_a.startswith("Our friends won't buy this analysis") and ex[0].label == 1 and len(ex) == 50
    # MRPC starts with a BOM; its dev row 1 has an unbalanced quote that must stay in the text.
    ex, _ = get_task("mrpc").load(ROOTS["mrpc"], "dev")
    assert ex[0].text_b.startswith('"The foodservice pie business') and len(ex) == 50
    # STS-B scores are floats; test has no score column.
    ex, _ = get_task("stsb").load(ROOTS["stsb"], "train")
    assert ex[1].label == pytest.approx(3.8)
    ex, _ = get_task("stsb").load(ROOTS["stsb"], "test")
    assert ex[0].label is None and ex[0].index == 0
    # QQP uses its id column as the index.
    ex, _ = get_task("qqp").load(ROOTS["qqp"], "train")
    assert [e.index for e in ex] == [133273, 402555, 360472] and [e.label for e in ex] == [0, 1, 0]
    # MNLI: 12/16/10 columns in train/dev/test; labels by name.
    ex, _ = get_task("mnli").load(ROOTS["mnli"], "dev_mismatched")
    assert ex[0].text_a.startswith("Your contribution helped make it possible")
    ex, _ = get_task("qnli").load(ROOTS["qnli"], "dev")
    assert [e.label for e in ex] == [0, 1]


def test_mnli_has_matched_and_mismatched_loaders():
    dm = datamodule("mnli")
    dm.setup("fit")
    assert len(dm.val_dataloader()) == 2
    dm.setup("test")
    assert dm.test_split_names == ("dev_matched", "dev_mismatched")  # test labels are private
    assert len(dm.predict_dataloader()) == 2
    assert get_task("mnli").metric_suffix("dev_mismatched") == "_mismatched"


def test_snli_gold_dash_rows_excluded_and_counted():
    ex, stats = get_task("snli").load(ROOTS["snli"], "dev")
    assert len(ex) == 69 and sum(stats.excluded.values()) == 1
    ex, stats = get_task("snli").load(ROOTS["snli"], "test")
    assert len(ex) == 48 and sum(stats.excluded.values()) == 2
    assert "2 excluded" in stats.describe()
    # train comes from the .txt variant (no train .jsonl in the sample), label2..5 absent
    ex, _ = get_task("snli").load(ROOTS["snli"], "train")
    assert [e.label for e in ex] == [1, 2, 0]
    assert ex[0].text_a == "A person on a horse jumps over a broken down airplane."


def test_race_subsets_groups_and_layout():
    tok = tiny_tokenizer()
    ex_all, _ = get_task("race").load(ROOTS["race"], "dev")
    ex_mid, _ = get_task("race").load(ROOTS["race"], "dev", subset="middle")
    ex_high, _ = get_task("race").load(ROOTS["race"], "dev", subset="high")
    assert len(ex_all) == len(ex_mid) + len(ex_high)
    assert {e.group for e in ex_mid} == {0} and {e.group for e in ex_high} == {1}
    first = ex_mid[0]  # dev/middle/13.txt, question 1
    assert len(first.choices) == 4 and first.label in range(4)
    dm = datamodule("race")
    dm.setup("fit")
    enc = dm.splits["dev"].examples[0]
    q = tok.encode(first.text_b)
    for seq, answer in zip(enc.sequences, first.choices):
        seq = seq.tolist()
        d = seq.index(tok.delimiter_id)
        assert seq[d - len(q) : d] == q  # the question ends the context, even when the article is cut
        assert seq[d + 1 : -1] == tok.encode(answer)
    assert dm.splits["train"].truncated > 0  # articles exceed n_ctx=128
    assert "truncated" in dm.summary()
    batch = next(iter(dm.val_dataloader()))
    assert batch["group"].tolist() == [0, 0, 0, 0]
    with pytest.raises(Exception, match="subset"):
        get_task("race").load(ROOTS["race"], "dev", subset="college")


def test_rocstories_split_is_sklearns(monkeypatch):
    from gptkit.tasks import rocstories

    # sklearn.model_selection.train_test_split(range(1871), test_size=374, random_state=3535999445)
    # gives these (recorded from scikit-learn 1.9.1); the test below re-checks live if installed.
    train, dev = rocstories.train_test_split_indices(1871, 374, 3535999445)
    assert dev[:8].tolist() == [1058, 198, 1174, 806, 127, 918, 152, 898]
    assert dev[-5:].tolist() == [120, 753, 1844, 1865, 1502]
    assert train[:5].tolist() == [187, 1591, 1646, 169, 1870] and train[-5:].tolist() == [159, 609, 1838, 26, 1820]
    assert len(train) == 1497 and len(dev) == 374


def test_rocstories_split_against_sklearn():
    model_selection = pytest.importorskip("sklearn.model_selection")
    from gptkit.tasks.rocstories import train_test_split_indices

    for n, k in [(1871, 374), (50, 10), (400, 374)]:
        tr, te = model_selection.train_test_split(list(range(n)), test_size=k, random_state=3535999445)
        a, b = train_test_split_indices(n, k, 3535999445)
        assert a.tolist() == tr and b.tolist() == te


def test_rocstories_reads_crlf_and_lf_alike():
    crlf, _ = get_task("rocstories").load(SAMPLES / "ROCStories", "test")
    lf, _ = get_task("rocstories").load(ROOTS["rocstories"], "test")
    assert len(crlf) == 5 and crlf == lf[:5]
    train, _ = get_task("rocstories").load(ROOTS["rocstories"], "train")
    dev, _ = get_task("rocstories").load(ROOTS["rocstories"], "dev")
    assert len(train) == 40 and len(dev) == 10 and not {e.index for e in train} & {e.index for e in dev}
    ex = lf[0]
    assert ex.text_a.startswith("My friends all love to go to the club to dance. They think")
    assert ex.choices[1] == "The next weekend, I was asked to please stay home." and ex.label == 1


def test_copa_jsonl_and_xml(tmp_path):
    ex, _ = get_task("copa").load(ROOTS["copa"], "train")
    assert ex[0].text_a == "My body cast a shadow over the grass." and ex[0].text_b == "What was the cause of this?"
    assert ex[0].choices == ("The sun was rising.", "The grass was cut.") and ex[0].label == 0
    test, _ = get_task("copa").load(ROOTS["copa"], "test")
    assert test[0].label is None and test[0].text_b == "What was the cause of this?"
    # The XML schema of the original release (a Balanced-COPA excerpt in that schema).
    xml = SAMPLES / "Balanced-COPA" / "balacopa-dev-all.xml"
    shutil.copy(xml, tmp_path / "copa-dev.xml")
    shutil.copy(xml, tmp_path / "copa-test.xml")
    train, _ = get_task("copa").load(tmp_path, "train")
    dev, _ = get_task("copa").load(tmp_path, "dev")
    assert len(train) == 40 and len(dev) == 10
    # item 1 of the XML is SuperGLUE train idx 0: the same example (ids differ: 1-based in XML)
    assert (train[0].text_a, train[0].choices, train[0].label, train[0].index) == (ex[0].text_a, ex[0].choices, 0, 1)
    assert train[1].text_b == "What was the cause of this?" and dev[-1].index == 1025
    dm = datamodule("copa", root=tmp_path)
    dm.setup("test")
    assert dm.test_split_names == ("test",)  # the XML test file is labelled


def test_polarity_zero_scores_excluded_and_split_fixed():
    tr, stats = get_task("polarity").load(ROOTS["polarity"], "train")
    dev, _ = get_task("polarity").load(ROOTS["polarity"], "dev")
    test, _ = get_task("polarity").load(ROOTS["polarity"], "test")
    assert stats.excluded and sum(stats.excluded.values()) == 3
    assert len(tr) + len(dev) + len(test) == 297
    assert not {e.index for e in tr} & {e.index for e in test}
    # The file itself may also be given.
    again, _ = get_task("polarity").load(ROOTS["polarity"] / "movieReviewSnippets_GroundTruth.txt", "dev")
    assert again == dev


def test_stsb_batches_carry_float_scores():
    dm = datamodule("stsb")
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"].dtype == torch.float32 and batch["input_ids"].shape[1] == 2
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert all(math.isnan(v) for v in batch["labels"].tolist())


def batches_of(sampler, batch_size):
    order = list(sampler)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_length_grouped_batches_cover_every_example_once():
    from gptkit.data.finetune import LengthGroupedSampler

    lengths = [int(x) for x in torch.randint(3, 60, (203,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, chunk_batches=4)
    epoch0 = batches_of(sampler, 8)
    assert len(epoch0) == 26 and len(sampler) == 203
    assert sorted(i for b in epoch0 for i in b) == list(range(203))
    assert batches_of(sampler, 8) == epoch0  # deterministic for a seed and epoch
    sampler.set_epoch(1)
    assert batches_of(sampler, 8) != epoch0
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epoch0) / len(epoch0)
    assert spread < 20  # similar lengths in a batch (random batches spread ~50)
    dm = FinetuneDataModule("sst2", ROOTS["sst2"], tiny_tokenizer(), N_CTX, batch_size=4, group_by_length=True)
    dm.setup("fit")
    check_layout(get_task("sst2"), next(iter(dm.train_dataloader())), tiny_tokenizer())


@pytest.mark.parametrize("n_examples", [203, 16, 3, 1])
def test_length_grouped_batches_split_between_processes(n_examples):
    """Under DDP each process takes its share of the same global batches: equal numbers of batches,
    every example at least once (the last global batch padded with repeats), similar lengths."""
    from gptkit.data.finetune import LengthGroupedSampler

    lengths = [int(x) for x in torch.randint(3, 60, (n_examples,), generator=torch.Generator().manual_seed(0))]
    ranks = [batches_of(LengthGroupedSampler(lengths, 4, seed=3, chunk_batches=4, num_replicas=3, rank=r), 4)
             for r in range(3)]
    assert len({len(batches) for batches in ranks}) == 1
    assert len({len(LengthGroupedSampler(lengths, 4, 3, num_replicas=3, rank=r)) for r in range(3)}) == 1
    seen = [i for batches in ranks for b in batches for i in b]
    assert set(seen) == set(range(n_examples)) and len(seen) - n_examples < 3
    for step in zip(*ranks):  # update k on every process: one global batch of similar lengths
        global_batch = [lengths[i] for b in step for i in b]
        assert len(set(map(len, step[:-1]))) <= 1
        if n_examples == 203 and step != list(zip(*ranks))[-1]:  # the last holds the leftover examples
            assert max(global_batch) - min(global_batch) < 30


@pytest.mark.parametrize(("setting", "expected"), [(None, False), ("true", True), ("false", False)])
@pytest.mark.parametrize("group", [False, True])
def test_fine_tuning_loaders_follow_data_pin_memory(setting, expected, group):
    """data.pin_memory reaches every fine-tuning loader (null: on only when training on CUDA)."""
    from gptkit.builder import build_datamodule
    from gptkit.config import load_config

    overrides = ["data.name=mnli", f"data.root={ROOTS['mnli']}", "trainer.accelerator=cpu",
                 f"data.group_by_length={str(group).lower()}"]
    if setting is not None:
        overrides.append(f"data.pin_memory={setting}")
    dm = build_datamodule(load_config(None, overrides), tiny_tokenizer(), None)
    dm.setup("fit")
    loaders = [dm.train_dataloader(), *dm.val_dataloader()]
    assert [loader.pin_memory for loader in loaders] == [expected] * 3


def test_length_grouped_order_restarts_its_epoch_when_processes_change(capsys):
    from gptkit.data.finetune import LengthGroupedSampler

    lengths = list(range(40))
    two = LengthGroupedSampler(lengths, 4, seed=3, num_replicas=2, rank=0)
    two.position = 8
    state = two.state_dict()
    same = LengthGroupedSampler(lengths, 4, seed=3, num_replicas=2, rank=0)
    same.load_state_dict(state)
    assert same.position == 8
    one = LengthGroupedSampler(lengths, 4, seed=3)
    one.load_state_dict(state)  # another global batch: another order, so the epoch starts again
    assert one.position == 0 and "epoch 0 restarts from its beginning" in capsys.readouterr().err

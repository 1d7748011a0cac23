"""Bad input: the error names the file and line (or file) and what was expected; with
``skip_bad_rows`` the row is skipped and counted instead. Nothing is dropped silently."""

from __future__ import annotations

import shutil

import pytest
from finetune_helpers import GLUE, SAMPLES, tiny_tokenizer

from gptkit.data.finetune import FinetuneDataModule
from gptkit.errors import ConfigError, DataError
from gptkit.tasks import get_task


def copy_glue(tmp_path, folder):
    dst = tmp_path / folder
    shutil.copytree(GLUE / folder, dst)
    return dst


def edit_line(path, number, fn):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = fn(lines[number - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def test_missing_split_file(tmp_path):
    root = copy_glue(tmp_path, "RTE")
    (root / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"missing GLUE RTE dev file .*dev\.tsv"):
        get_task("rte").load(root, "dev")


def test_missing_root_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist either"):
        get_task("sst2").load(tmp_path / "nowhere", "train")


def test_wrong_column_count_names_file_and_line(tmp_path):
    root = copy_glue(tmp_path, "SST-2")
    edit_line(root / "train.tsv", 4, lambda line: line.replace("\t", " "))
    with pytest.raises(DataError, match=r"train\.tsv:4: expected 2 tab-separated columns \(sentence, label\), found 1"):
        get_task("sst2").load(root, "train")
    examples, stats = get_task("sst2").load(root, "train", skip_bad_rows=True)
    assert len(examples) == 49 and stats.skipped == 1 and "train.tsv:4" in stats.describe()


def test_label_outside_label_set(tmp_path):
    root = copy_glue(tmp_path, "RTE")
    edit_line(root / "dev.tsv", 3, lambda line: line.rsplit("\t", 1)[0] + "\tmaybe")
    with pytest.raises(DataError, match=r"dev\.tsv:3: label 'maybe' is not one of \['entailment', 'not_entailment'\]"):
        get_task("rte").load(root, "dev")


def test_empty_text(tmp_path):
    root = copy_glue(tmp_path, "CoLA")
    edit_line(root / "train.tsv", 2, lambda line: "\t".join(line.split("\t")[:3] + ["  "]))
    with pytest.raises(DataError, match=r"train\.tsv:2: empty sentence"):
        get_task("cola").load(root, "train")


def test_stsb_score_out_of_range(tmp_path):
    root = copy_glue(tmp_path, "STS-B")
    edit_line(root / "dev.tsv", 2, lambda line: line.rsplit("\t", 1)[0] + "\t7.5")
    with pytest.raises(DataError, match=r"dev\.tsv:2: similarity score '7.5' is not a number in \[0, 5\]"):
        get_task("stsb").load(root, "dev")


def test_race_file_not_json(tmp_path):
    shutil.copytree(SAMPLES / "RACE", tmp_path / "RACE")
    bad = tmp_path / "RACE" / "dev" / "high" / "80.txt"
    bad.write_text("<html>not json</html>", encoding="utf-8")
    with pytest.raises(DataError, match=r"80\.txt: not a JSON file"):
        get_task("race").load(tmp_path, "dev")
    ex, stats = get_task("race").load(tmp_path, "dev", skip_bad_rows=True)
    assert stats.skipped == 1 and len(ex) > 0


def test_snli_bad_json_line(tmp_path):
    shutil.copytree(SAMPLES / "snli_1.0", tmp_path / "snli_1.0")
    path = tmp_path / "snli_1.0" / "snli_1.0_dev.jsonl"
    edit_line(path, 5, lambda line: line[:40])
    with pytest.raises(DataError, match=r"snli_1\.0_dev\.jsonl:5: not a JSON object"):
        get_task("snli").load(tmp_path, "dev")


def test_rocstories_bad_answer(tmp_path):
    src = SAMPLES / "ROCStories" / "lf_normalized_50rows"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "cloze_test_test__spring2016 - cloze_test_ALL_test.csv"
    edit_line(path, 3, lambda line: line[:-1] + "3")
    with pytest.raises(DataError, match=r"ALL_test\.csv:3: AnswerRightEnding '3' is not 1 or 2"):
        get_task("rocstories").load(tmp_path, "test")


def copy_rocstories(tmp_path):
    for f in (SAMPLES / "ROCStories" / "lf_normalized_50rows").iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "cloze_test_test__spring2016 - cloze_test_ALL_test.csv"


def test_rocstories_row_of_empty_cells_is_a_bad_row(tmp_path):
    path = copy_rocstories(tmp_path)
    edit_line(path, 3, lambda line: ",,,,,,,")
    with pytest.raises(DataError, match=r"ALL_test\.csv:3: all 8 fields are empty"):
        get_task("rocstories").load(tmp_path, "test")
    examples, stats = get_task("rocstories").load(tmp_path, "test", skip_bad_rows=True)
    assert stats.skipped == 1 and "ALL_test.csv:3" in stats.describe()


def test_tsv_row_of_empty_cells_is_a_bad_row(tmp_path):
    root = copy_glue(tmp_path, "SST-2")
    edit_line(root / "train.tsv", 5, lambda line: "\t")
    with pytest.raises(DataError, match=r"train\.tsv:5: empty sentence"):
        get_task("sst2").load(root, "train")
    edit_line(root / "train.tsv", 5, lambda line: "   ")  # a blank line holds no row
    assert len(get_task("sst2").load(root, "train")[0]) == 49


@pytest.mark.parametrize("task", ["sst2", "rocstories"])
def test_invalid_utf8_names_its_line(tmp_path, task):
    if task == "sst2":
        root, path, split = copy_glue(tmp_path, "SST-2"), tmp_path / "SST-2" / "train.tsv", "train"
    else:
        root, path, split = tmp_path, copy_rocstories(tmp_path), "test"
    data = path.read_bytes().split(b"\n")
    data[39] = data[39][:5] + b"\xff" + data[39][5:]
    path.write_bytes(b"\n".join(data))
    with pytest.raises(DataError, match=rf"{path.name}:40: not UTF-8 text \(byte \d+: invalid start byte\)"):
        get_task(task).load(root, split)


def test_copa_malformed_xml(tmp_path):
    (tmp_path / "copa-test.xml").write_text("<copa-corpus><item id='1'>", encoding="utf-8")
    with pytest.raises(DataError, match=r"copa-test\.xml:1: not well-formed XML"):
        get_task("copa").load(tmp_path, "test")


def test_unknown_subset_and_task():
    with pytest.raises(ConfigError, match="has no subset"):
        FinetuneDataModule("sst2", GLUE, tiny_tokenizer(), 64, subset="middle")
    with pytest.raises(ConfigError, match="Did you mean 'sst2'"):
        FinetuneDataModule("sst-2", GLUE, tiny_tokenizer(), 64)


def test_skip_counts_reach_the_summary(tmp_path):
    root = copy_glue(tmp_path, "SST-2")
    edit_line(root / "dev.tsv", 2, lambda line: line.rsplit("\t", 1)[0] + "\t7")
    dm = FinetuneDataModule("sst2", root, tiny_tokenizer(), 64, skip_bad_rows=True)
    dm.setup("fit")
    assert "1 malformed rows skipped" in dm.summary()


def test_empty_jsonl_names_the_file(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError, match=r"copa, train split: no examples were read from \S*/train\.jsonl: the file is empty"):
        get_task("copa").load(tmp_path, "train")
    (tmp_path / "train.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match=r"from \S*/train\.jsonl: it holds no data rows"):
        get_task("copa").load(tmp_path, "train")


def test_header_only_tsv_names_the_file(tmp_path):
    root = copy_glue(tmp_path, "SST-2")
    (root / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match=r"no examples were read from \S*/SST-2/train\.tsv: it holds no data rows"):
        get_task("sst2").load(root, "train")


def test_all_rows_skipped_names_the_file_and_the_count(tmp_path):
    root = copy_glue(tmp_path, "SST-2")
    (root / "train.tsv").write_text("sentence\tlabel\ngood\tmaybe\nbad\t\n")
    with pytest.raises(DataError, match=r"from \S*/train\.tsv \(0 examples, 2 malformed rows skipped \(first: \S*train\.tsv:2"):
        get_task("sst2").load(root, "train", skip_bad_rows=True)


@pytest.mark.parametrize(("encoding", "how"), [
    ("utf-16-le", r"UTF-16 \(little-endian, no byte-order mark: every other byte is NUL\); convert it in place, "
                  r"e\.g\. `iconv -f UTF-16LE -t UTF-8 \S*train\.tsv > \S*train\.tsv\.utf8 && mv"),
    ("utf-16-be", r"UTF-16 \(big-endian, no byte-order mark"),
    ("utf-16", r"UTF-16 \(it starts with a UTF-16 byte-order mark\); convert it in place, e\.g\. `iconv -f UTF-16 "),
])
def test_utf16_file_is_named_as_such(tmp_path, encoding, how):
    # ASCII text in UTF-16 without a BOM decodes as UTF-8 (NUL is valid): it used to be reported as
    # "no column 'sentence'"
    root = copy_glue(tmp_path, "SST-2")
    text = "sentence\tlabel\nit is good\t1\nit is bad\t0\n"
    (root / "train.tsv").write_bytes(text.encode(encoding))
    with pytest.raises(DataError, match=rf"sst2, train split: \S*train\.tsv:1: not UTF-8 text but {how}"):
        get_task("sst2").load(root, "train")


def test_utf16_csv_of_a_task_that_opens_its_own_files(tmp_path):
    path = copy_rocstories(tmp_path)
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16-le"))
    with pytest.raises(DataError, match=r"ALL_test\.csv:1: not UTF-8 text but UTF-16 \(little-endian"):
        get_task("rocstories").load(tmp_path, "test")

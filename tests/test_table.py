"""Your own labelled files (data.name=table): every format and transform on real sample rows (the GLUE,
RACE fixtures rewritten by the test into each format), bad input, a validation split carved from train,
and the end-to-end `gptkit fit` + `test` + `predict` on a user-style TSV."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from conftest import run_cli
from finetune_helpers import GLUE, SAMPLES, tiny_tokenizer

from gptkit.config import load_config
from gptkit.errors import ConfigError, DataError
from gptkit.tasks import get_task, task_of
from gptkit.tasks.base import collate, encode

NAMES = ("negative", "positive")


def sst2_rows() -> list[tuple[str, str]]:
    """(sentence, label name) of the SST-2 sample's training rows."""
    lines = (GLUE / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(s, NAMES[int(label)]) for s, label in (line.split("\t") for line in lines)]


def expected_sst2() -> list[tuple[str, int]]:
    examples, _ = get_task("sst2").load(GLUE, "train")
    return [(e.text_a, e.label) for e in examples]


def table(tmp_path: Path, *overrides: str, transform: str = "classification", **files: str):
    """The task of a table recipe whose files (split=name under tmp_path) and keys are given."""
    args = ["data.name=table", f"data.transform={transform}", f"data.root={tmp_path}",
            *(f"data.files.{split}={name}" for split, name in files.items()), *overrides]
    return task_of(load_config(None, args).data)


def review_task(tmp_path: Path, *overrides: str, **files: str):
    files = files or {"train": "train.tsv"}
    return table(tmp_path, "data.columns.text=review", "data.columns.label=sentiment", *overrides, **files)


def write_tsv(path: Path, header: list[str], rows, newline="\n") -> Path:
    path.write_text(newline.join("\t".join(map(str, r)) for r in [header, *rows]) + newline, encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------
def _write_reviews(tmp_path: Path, fmt: str) -> str:
    rows = sst2_rows()
    records = [{"review": s, "sentiment": label} for s, label in rows]
    if fmt in ("csv", "csv.gz"):
        write_csv(tmp_path / f"train.{fmt}", ["review", "sentiment"], rows)
    elif fmt == "tsv":
        write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], rows, newline="\r\n")
    elif fmt == "tsv.gz":
        with gzip.open(tmp_path / "train.tsv.gz", "wt", encoding="utf-8") as f:
            f.write("review\tsentiment\n" + "".join(f"{s}\t{label}\n" for s, label in rows))
    elif fmt in ("jsonl", "jsonl.gz"):
        write_jsonl(tmp_path / f"train.{fmt}", records)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), tmp_path / "train.parquet")
    elif fmt == "hf":
        import datasets

        datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "reviews_ds"))
        return "reviews_ds"
    elif fmt == "hf-dict":  # a DatasetDict: its train split, and a class-label column read as names
        import datasets

        features = datasets.Features({"review": datasets.Value("string"),
                                      "sentiment": datasets.ClassLabel(names=list(NAMES))})
        ds = datasets.Dataset.from_list([{"review": s, "sentiment": NAMES.index(label)} for s, label in rows],
                                        features=features)
        datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "reviews_dict"))
        return "reviews_dict"
    return f"train.{fmt}"


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "tsv", "tsv.gz", "jsonl", "jsonl.gz", "parquet", "hf", "hf-dict"])
def test_each_format_reads_the_same_examples_as_the_builtin_reader(tmp_path, fmt):
    name = _write_reviews(tmp_path, fmt)
    task = review_task(tmp_path, "data.labels=[negative, positive]", train=name)
    examples, stats = task.load(tmp_path, "train")
    assert [(e.text_a, e.label) for e in examples] == expected_sst2()
    assert stats.rows == len(examples) == 50 and stats.skipped == 0


def test_csv_quoting_keeps_delimiters_quotes_and_line_breaks_inside_a_field(tmp_path):
    rows = [('a "quoted", comma', "positive"), ("two\nlines", "negative"), ("plain", "positive")]
    write_csv(tmp_path / "train.csv", ["review", "sentiment"], rows)
    examples, _ = review_task(tmp_path, train="train.csv").load(tmp_path, "train")
    assert [e.text_a for e in examples] == ['a "quoted", comma', "two\nlines", "plain"]
    # the TSV default reads quotes as text (GLUE's files hold unbalanced ones); data.quoting=csv is the other way
    write_tsv(tmp_path / "q.tsv", ["review", "sentiment"], [['"quoted"', "positive"], ['"never closed', "negative"]])
    plain, _ = review_task(tmp_path, train="q.tsv").load(tmp_path, "train")
    assert [e.text_a for e in plain] == ['"quoted"', '"never closed']
    quoted, stats = review_task(tmp_path, "data.quoting=csv", "data.labels=[negative, positive]",
                                train="q.tsv").load(tmp_path, "train", skip_bad_rows=True)
    assert [e.text_a for e in quoted] == ["quoted"] and stats.skipped == 1  # an unclosed quote: a malformed CSV row


def test_delimiter_and_headerless_files(tmp_path):
    (tmp_path / "train.txt").write_text("good film;positive\nbad film;negative\n", encoding="utf-8")
    task = review_task(tmp_path, "data.format=csv", "data.delimiter=;", "data.header=[review, sentiment]",
                       train="train.txt")
    examples, _ = task.load(tmp_path, "train")
    assert [(e.text_a, e.label) for e in examples] == [("good film", 1), ("bad film", 0)]


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------
def glue_records(folder: str) -> list[dict]:
    lines = (GLUE / folder / "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_entailment_from_jsonl_equals_rte(tmp_path):
    write_jsonl(tmp_path / "rte.jsonl", [{"p": r["sentence1"], "h": r["sentence2"], "y": r["label"]}
                                         for r in glue_records("RTE")])
    task = table(tmp_path, "data.columns={premise: p, hypothesis: h, label: y}",
                 "data.labels=[entailment, not_entailment]", transform="entailment", train="rte.jsonl")
    examples, _ = task.load(tmp_path, "train")
    builtin, _ = get_task("rte").load(GLUE, "train")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [(e.text_a, e.text_b, e.label) for e in builtin]
    assert task.transform == "entailment" and task.n_outputs == 2


def test_similarity_regression_from_parquet_equals_stsb(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"s1": r["sentence1"], "s2": r["sentence2"], "score": float(r["score"])} for r in glue_records("STS-B")]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "sts.parquet")
    task = table(tmp_path, "data.columns={a: s1, b: s2, label: score}", "data.labels=null",
                 transform="similarity", train="sts.parquet")
    assert task.regression and set(task.metrics()) == {"pearson", "spearman"}
    examples, _ = task.load(tmp_path, "train")
    builtin, _ = get_task("stsb").load(GLUE, "train")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [(e.text_a, e.text_b, e.label) for e in builtin]
    assert task.format_prediction(7.25) == "7.250"  # no range of its own: not clipped to STS-B's [0, 5]


def test_similarity_classes_from_csv_with_f1(tmp_path):
    rows = [(r["#1 String"], r["#2 String"], r["Quality"]) for r in glue_records("MRPC")]
    write_csv(tmp_path / "mrpc.csv", ["first", "second", "paraphrase"], rows)
    task = table(tmp_path, "data.columns={a: first, b: second, label: paraphrase}", "data.metrics=[acc, f1]",
                 transform="similarity", train="mrpc.csv")
    assert task.labels == ("0", "1") and set(task.metrics()) == {"acc", "f1"}  # inferred, sorted as numbers
    examples, _ = task.load(tmp_path, "train")
    builtin, _ = get_task("mrpc").load(GLUE, "train")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [(e.text_a, e.text_b, e.label) for e in builtin]


def race_records() -> list[dict]:
    out = []
    for path in sorted((SAMPLES / "RACE" / "train").rglob("*.txt")):
        d = json.loads(path.read_text(encoding="utf-8"))
        for q, options, answer in zip(d["questions"], d["options"], d["answers"]):
            out.append({"article": d["article"], "question": q, "options": options, "answer": answer})
    return out


def test_multiple_choice_with_a_list_column_and_named_answers(tmp_path):
    records = race_records()
    write_jsonl(tmp_path / "race.jsonl", records)
    task = table(tmp_path, "data.columns={context: article, question: question, choices: options, label: answer}",
                 "data.labels=[A, B, C, D]", transform="multiple_choice", train="race.jsonl")
    examples, _ = task.load(tmp_path, "train")
    assert [(e.text_a, e.text_b, e.choices, e.label) for e in examples] == [
        (r["article"], r["question"], tuple(r["options"]), "ABCD".index(r["answer"])) for r in records]
    assert task.n_outputs == 1 and not task.regression


def test_multiple_choice_with_a_variable_number_of_answers(tmp_path):
    records = race_records()[:6]
    rows = []
    for k, r in enumerate(records):  # every other row loses its last wrong answer: 3 or 4 answers
        options, right = list(r["options"]), "ABCD".index(r["answer"])
        if k % 2 and right != 3:
            options[3] = ""
        rows.append((r["article"][:200], *options, right))
    write_csv(tmp_path / "mc.csv", ["story", "o1", "o2", "o3", "o4", "right"], rows)
    task = table(tmp_path, "data.columns={context: story, choices: [o1, o2, o3, o4], label: right}",
                 transform="multiple_choice", train="mc.csv")
    examples, _ = task.load(tmp_path, "train")
    assert [len(e.choices) for e in examples] == [4 if not k % 2 or not row[4] == "" else 3
                                                  for k, row in enumerate(rows)]
    assert any(len(e.choices) == 3 for e in examples) and [e.label for e in examples] == [r[-1] for r in rows]
    batch = collate(encode(examples, "multiple_choice", tiny_tokenizer(), 64))
    assert batch["choice_mask"].sum(1).tolist() == [len(e.choices) for e in examples]
    # the label may also be the right answer's text
    texts = [(r[0], *r[1:5], r[1 + r[-1]]) for r in rows]
    write_csv(tmp_path / "mc_text.csv", ["story", "o1", "o2", "o3", "o4", "right"], texts)
    by_text, _ = table(tmp_path, "data.columns={context: story, choices: [o1, o2, o3, o4], label: right}",
                       transform="multiple_choice", train="mc_text.csv").load(tmp_path, "train")
    assert [e.label for e in by_text] == [e.label for e in examples]


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
def test_validation_carved_from_train_by_a_seeded_fraction(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], sst2_rows())
    task = review_task(tmp_path, "data.val_from_train=0.2")
    train, _ = task.load(tmp_path, "train")
    val, _ = task.load(tmp_path, "validation")
    assert len(val) == 10 and len(train) == 40
    assert sorted(e.index for e in train + val) == list(range(50))
    again, _ = review_task(tmp_path, "data.val_from_train=0.2").load(tmp_path, "validation")
    other, _ = review_task(tmp_path, "data.val_from_train=0.2", "data.split_seed=7").load(tmp_path, "validation")
    assert [e.index for e in again] == [e.index for e in val] != [e.index for e in other]
    from gptkit.config import to_yaml  # the recipe saved with the run records the fraction and the seed

    saved = to_yaml(load_config(None, ["data.name=table", "data.val_from_train=0.2"]))
    assert "val_from_train: 0.2" in saved and "split_seed: 0" in saved


def test_missing_validation_and_test_files_are_explained(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], sst2_rows())
    task = review_task(tmp_path)
    with pytest.raises(ConfigError, match="no validation file: add data.files.validation=PATH, or set data.val_from_train"):
        task.load(tmp_path, "validation")
    with pytest.raises(ConfigError, match="no test file: add data.files.test=PATH"):
        task.load(tmp_path, "test")


def test_a_test_file_without_labels_is_read_for_predictions(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], sst2_rows())
    write_tsv(tmp_path / "test.tsv", ["id", "review"], [(7, "a fine film"), (9, "dull")])
    examples, _ = review_task(tmp_path, "data.columns.id=id", train="train.tsv", test="test.tsv").load(tmp_path, "test")
    assert [(e.index, e.text_a, e.label) for e in examples] == [(7, "a fine film", None), (9, "dull", None)]


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------
def test_inferred_labels_are_reported_with_missing_and_single_classes(tmp_path, capsys):
    rows = [("good", "pos"), ("bad", "neg"), ("fine", "pos"), ("meh", "mixed")]
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], rows)
    write_tsv(tmp_path / "dev.tsv", ["review", "sentiment"], [("great", "pos"), ("awful", "neg")])
    task = review_task(tmp_path, train="train.tsv", validation="dev.tsv")
    assert task.labels == ("mixed", "neg", "pos")
    task.load(tmp_path, "validation")
    err = capsys.readouterr().err
    assert "data.labels inferred from" in err and "mixed (1), neg (1), pos (2)" in err
    assert "2 class(es)" in err and "have a single example: mixed, neg" in err
    assert "1 of the 3 labels have no validation example: mixed" in err


def test_fractional_label_values_suggest_a_regression(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], [("a", "0.5"), ("b", "1.25"), ("c", "1")])
    with pytest.raises(DataError, match="some fractional.*set data.labels=null"):
        review_task(tmp_path)


# ---------------------------------------------------------------------------------------------
# Bad input: one message each, with the file and line; or skipped and counted
# ---------------------------------------------------------------------------------------------
def load_train(tmp_path, *overrides, name="train.tsv", skip=False):
    task = review_task(tmp_path, "data.labels=[negative, positive]", *overrides, train=name)
    return task.load(tmp_path, "train", skip_bad_rows=skip)


def test_a_missing_column_names_the_columns_the_file_has(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["sentence", "label"], [("good", "positive")])
    with pytest.raises(DataError, match=r"train\.tsv: no column 'review'; the file has columns 'sentence', 'label'"):
        load_train(tmp_path)


def test_a_csv_read_as_tsv_says_so(tmp_path):
    write_csv(tmp_path / "train.tsv", ["review", "sentiment"], [("good", "positive")])
    with pytest.raises(DataError, match="its header is one column holding delimiters: set data.format"):
        load_train(tmp_path)


@pytest.mark.parametrize("rows, message", [
    ([("good", "positive"), ("bad", "meh")], r"train\.tsv:3: label 'meh' is not one of \['negative', 'positive'\]"),
    ([("good", "positive"), ("  ", "negative")], r"train\.tsv:3: empty review"),
    ([("good", "positive"), ("bad", "negative", "extra")],
     r"train\.tsv:3: expected 2 tab-separated columns \(review, sentiment\), found 3"),
    ([("good", "")], r"train\.tsv:2: empty label \(column 'sentiment'\)"),
])
def test_bad_rows_name_file_and_line_or_are_skipped_and_counted(tmp_path, rows, message):
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], [*rows, ("fine", "positive")])
    with pytest.raises(DataError, match=f"(?s)task table, train split: .*{message}.*data.skip_bad_rows=true"):
        load_train(tmp_path)
    examples, stats = load_train(tmp_path, skip=True)
    assert stats.skipped == 1 and len(examples) == len(rows)
    assert "1 malformed rows skipped" in stats.describe()


def test_a_csv_row_with_the_wrong_number_of_fields(tmp_path):
    (tmp_path / "train.csv").write_text('review,sentiment\ngood,positive\n"bad, so bad",negative,x\n',
                                        encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv:3: expected 2 columns \(review, sentiment\), found 3"):
        load_train(tmp_path, name="train.csv")


def test_an_encoding_error_names_the_line(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"review\tsentiment\ngood\tpositive\nbad \xff\tnegative\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: not UTF-8 text"):
        load_train(tmp_path)
    with gzip.open(tmp_path / "train.tsv.gz", "wb") as f:
        f.write(b"review\tsentiment\ngood\tpositive\nbad \xff\tnegative\n")
    with pytest.raises(DataError, match=r"train\.tsv\.gz: not UTF-8 text once decompressed"):
        load_train(tmp_path, name="train.tsv.gz")


@pytest.mark.parametrize("name, content, message", [
    ("train.parquet", b"review,sentiment\ngood,positive\n", r"train\.parquet: not a readable Parquet file"),
    ("train.tsv.gz", b"review\tsentiment\ngood\tpositive\n", r"train\.tsv\.gz: not gzip-compressed data"),
    ("train.jsonl", b'{"review": "good", "sentiment": "positive"}\nreview,sentiment\n',
     r"train\.jsonl:2: not a JSON object"),
    ("train.csv", b'review,sentiment\n"good,positive\n', r"train\.csv:2: not a well-formed CSV row"),
])
def test_a_file_that_is_not_the_format_its_name_says(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_train(tmp_path, name=name)


def test_a_folder_that_is_not_a_saved_dataset(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"ds: not a dataset folder written by datasets' save_to_disk"):
        load_train(tmp_path, name="ds")


def test_an_unknown_extension_asks_for_data_format(tmp_path):
    (tmp_path / "train.txt").write_text("review\tsentiment\ngood\tpositive\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cannot tell the format of .*train\.txt.*\(\.txt\); set data\.format"):
        load_train(tmp_path, name="train.txt")
    examples, _ = load_train(tmp_path, "data.format=tsv", name="train.txt")
    assert examples[0].text_a == "good"


@pytest.mark.parametrize("overrides, message", [
    (["data.columns.text=review", "data.columns.label=y", "data.columns.premise=p"],
     "data.columns.premise is not a role of transform classification"),
    (["data.columns.label=y"], "data.columns has no 'text'"),
    (["data.columns={text: r, label: y}", "data.labels=positive"], "data.labels is 'positive'; give two or more"),
    (["data.columns={text: r, label: y}", "data.labels=[a, b]", "data.metrics=[pearson]"],
     "data.metrics: 'pearson' is not a metric for classes"),
    (["data.columns={text: r, label: y}", "data.labels=[a, a]"], "data.labels repeats a label"),
    (["data.columns={text: r, label: y}", "data.val_from_train=0.1", "data.files.validation=dev.tsv"],
     "drop one of them"),
])
def test_recipe_mistakes(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        table(tmp_path, *overrides, train="train.tsv")


def test_table_keys_and_files_on_other_tasks_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.columns is read by data.name=table .* task sst2 has its own"):
        task_of(load_config(None, ["data.name=sst2", "data.columns={text: a}"]).data)
    with pytest.raises(ConfigError, match="data.name=table needs data.transform"):
        task_of(load_config(None, ["data.name=table", "data.files.train=x.csv"]).data)
    with pytest.raises(ConfigError, match="data.transform' is 'regression'"):
        load_config(None, ["data.transform=regression"])
    with pytest.raises(ConfigError, match="data.delimiter must be one character"):
        load_config(None, ["data.delimiter=;;"])
    # a mapping of files replaces the base recipe's list, and the other way round
    (tmp_path / "base.yaml").write_text("data: {files: [a.txt]}\n", encoding="utf-8")
    cfg = load_config(tmp_path / "base.yaml", ["data.files.train=t.csv"])
    assert dict(cfg.data.files) == {"train": "t.csv"}
    (tmp_path / "table.yaml").write_text("data: {files: {train: t.csv}}\n", encoding="utf-8")
    assert list(load_config(tmp_path / "table.yaml", ["data.files=[b.txt]"]).data.files) == ["b.txt"]


# ---------------------------------------------------------------------------------------------
# End to end, through the command line
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fit_test_and_predict_on_a_user_tsv(tmp_path):
    rows = sst2_rows()
    write_tsv(tmp_path / "train.tsv", ["review", "sentiment"], rows[:40])
    write_tsv(tmp_path / "dev.tsv", ["review", "sentiment"], rows[40:])
    write_tsv(tmp_path / "test.tsv", ["review", "sentiment"], rows[40:])
    tiny_tokenizer().save(tmp_path / "tok.json")
    (tmp_path / "reviews.yaml").write_text(
        "base: " + str(Path(__file__).parents[1] / "recipes" / "_base" / "finetune.yaml") + "\n"
        "run: {name: reviews}\n"
        "data:\n  name: table\n  files: {train: train.tsv, validation: dev.tsv, test: test.tsv}\n"
        "  transform: classification\n  columns: {text: review, label: sentiment}\n", encoding="utf-8")
    tiny = ["tokenizer.path=tok.json", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=48",
            "data.batch_size=8", "logging.progress=plain", "logging.throughput=false", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.max_epochs=1"]
    fitted = run_cli("fit", "reviews.yaml", *tiny, cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    assert "data.labels inferred from train.tsv: negative (21), positive (19)" in fitted.stderr
    assert "train: 40 examples" in fitted.stderr and "validation: 10 examples" in fitted.stderr
    tested = run_cli("test", "reviews.yaml", *tiny, "ckpt_path=best", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/acc\t" in tested.stdout
    results = json.loads((tmp_path / "runs" / "reviews" / "results" / "test.json").read_text())
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0
    predicted = run_cli("predict", "reviews.yaml", *tiny, "ckpt_path=best", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = (tmp_path / "runs" / "reviews" / "predictions" / "table-test.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert {line.split("\t")[1] for line in lines[1:]} <= set(NAMES)  # the file's own label names
    swapped = run_cli("test", "reviews.yaml", *tiny, "ckpt_path=best", "data.labels=[positive, negative]", cwd=tmp_path)
    assert swapped.returncode == 2 and "Traceback" not in swapped.stderr
    assert "trained with labels ['negative', 'positive'] but this recipe's data gives ['positive', 'negative']" \
        in swapped.stderr

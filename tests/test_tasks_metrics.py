"""Task metrics (torchmetrics), prediction files in GLUE submission format, the GLUE score."""

from __future__ import annotations

import pytest
import torch

from gptkit.errors import DataError
from gptkit.tasks import get_task, glue_score
from gptkit.tasks.glue import GLUE_SCORE_METRICS, glue_submission_files


def test_metric_names_per_task():
    expected = {
        "sst2": {"acc"}, "cola": {"mcc", "acc"}, "mrpc": {"acc", "f1"}, "qqp": {"acc", "f1"},
        "stsb": {"pearson", "spearman"}, "mnli": {"acc"}, "race": {"acc"},
    }
    for name, keys in expected.items():
        task = get_task(name)
        m = task.make_metrics()
        if task.regression:
            m.update(torch.tensor([1.0, 2.0, 3.5]), torch.tensor([1.0, 2.5, 3.0]))
        else:
            m.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
        assert set(m.compute()) >= keys


def test_race_reports_middle_high_and_all():
    m = get_task("race").make_metrics()
    m.update(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 0]), group=torch.tensor([0, 0, 1, 1]))
    out = {k: v.item() for k, v in m.compute().items()}
    assert out == pytest.approx({"acc": 0.5, "acc_middle": 1.0, "acc_high": 0.0})
    m.reset()
    m.update(torch.tensor([0]), torch.tensor([0]), group=torch.tensor([1]))
    assert set(m.compute()) == {"acc", "acc_high"}


def test_unlabelled_rows_ignored():
    m = get_task("sst2").make_metrics()
    m.update(torch.tensor([1, 0]), torch.tensor([1, -1]))
    assert m.compute()["acc"].item() == 1.0


def test_cola_matthews_and_mrpc_f1_values():
    m = get_task("cola").make_metrics()
    m.update(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
    assert m.compute()["mcc"].item() == pytest.approx(0.5773, abs=1e-3)
    m = get_task("mrpc").make_metrics()
    m.update(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0]))
    assert m.compute()["f1"].item() == pytest.approx(0.5)


def test_glue_prediction_files(tmp_path):
    mnli = get_task("mnli")
    assert mnli.prediction_file("test_matched") == "MNLI-m.tsv"
    assert mnli.prediction_file("test_mismatched") == "MNLI-mm.tsv"
    path = mnli.write_predictions(tmp_path / "MNLI-m.tsv", [2, 0, 1], [2, 0, 1])
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tneutral\n2\tcontradiction\n"
    sst2 = get_task("sst2")
    assert sst2.prediction_file("test") == "SST-2.tsv"
    assert sst2.write_predictions(tmp_path / "SST-2.tsv", [0, 1], [1, 0]).read_text() == "index\tprediction\n0\t1\n1\t0\n"
    stsb = get_task("stsb")
    text = stsb.write_predictions(tmp_path / "STS-B.tsv", [0, 1], [5.7, 2.25]).read_text()
    assert text == "index\tprediction\n0\t5.000\n1\t2.250\n"
    assert get_task("rte").format_prediction(1) == "not_entailment"
    files = glue_submission_files()
    assert "AX" not in " ".join(files.values()) and files["mnli"] == "MNLI-m.tsv, MNLI-mm.tsv"


def test_glue_score():
    results = {
        "cola": {"val/mcc": 0.454}, "sst2": {"val/acc": 0.913}, "mrpc": {"val/f1": 0.823, "val/acc": 0.77},
        "stsb": {"pearson": 0.82, "spearman": 0.80}, "qqp": {"f1": 0.703, "acc": 0.88},
        "mnli": {"acc_matched": 0.821, "acc_mismatched": 0.814}, "qnli": {"acc": 0.881},
        "rte": {"acc": 0.56}, "wnli": {"acc": 0.651},
    }
    score = glue_score(results)
    assert not score.missing and set(score.tasks) == set(GLUE_SCORE_METRICS)
    assert score.tasks["mrpc"] == pytest.approx(79.65)
    assert score.tasks["mnli"] == pytest.approx(81.75)
    assert score.score == pytest.approx(sum(score.tasks.values()) / 9)
    partial = glue_score({"sst2": {"acc": 0.9}})
    assert partial.score == pytest.approx(90.0) and "cola" in partial.missing and "partial" in partial.table()
    with pytest.raises(DataError, match="lack f1"):
        glue_score({"mrpc": {"acc": 0.7}})
    with pytest.raises(DataError, match="not GLUE tasks"):
        glue_score({"race": {"acc": 0.6}})


def _fake_run(folder, task, metrics, predictions=()):
    import json

    (folder / "results").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"data:\n  name: {task}\n")
    (folder / "results" / "test.json").write_text(json.dumps(metrics))
    if predictions:
        (folder / "predictions").mkdir()
        for name in predictions:
            (folder / "predictions" / name).write_text("index\tprediction\n0\t1\n")
    return folder


def test_glue_report_collects_scores_and_submission(tmp_path):
    from gptkit.tasks.glue import glue_report

    runs = [
        _fake_run(tmp_path / "sst2", "sst2", {"test/acc": 0.9, "test/loss": 0.3}, ["SST-2.tsv"]),
        _fake_run(tmp_path / "mnli", "mnli", {"test/acc_matched": 0.8, "test/acc_mismatched": 0.7}, ["MNLI-m.tsv"]),
    ]
    score, notes = glue_report(runs, tmp_path / "submission")
    assert score.tasks == pytest.approx({"sst2": 90.0, "mnli": 75.0})
    assert sorted(p.name for p in (tmp_path / "submission").iterdir()) == ["MNLI-m.tsv", "SST-2.tsv", "glue_score.txt"]
    missing = [n for n in notes if "cannot check" not in n]  # fake runs have no data.root to count test rows
    assert len(missing) == 1 and "MNLI-mm.tsv" in missing[0]
    with pytest.raises(DataError, match="not a gptkit run folder"):
        glue_report([tmp_path / "nothing"])


def test_glue_reads_results_with_their_checkpoint_and_notes_a_foreign_one(tmp_path, capsys):
    from gptkit.tasks.glue import read_run_results

    own = tmp_path / "sst2" / "checkpoints" / "best-step9-val_acc0.9000.ckpt"
    run = _fake_run(tmp_path / "sst2", "sst2", {"checkpoint": str(own), "step": 9, "metrics": {"test/acc": 0.9}})
    assert read_run_results(run) == ("sst2", {"test/acc": 0.9})
    assert "note:" not in capsys.readouterr().err
    other = _fake_run(tmp_path / "cola", "cola", {"checkpoint": "/elsewhere/m.ckpt", "step": 3,
                                                  "metrics": {"test/mcc": 0.4}})
    assert read_run_results(other) == ("cola", {"test/mcc": 0.4})
    assert "scores /elsewhere/m.ckpt, a checkpoint from outside run folder" in capsys.readouterr().err

"""`gptkit glue` and prediction files: damaged run folders, unusable metrics, incomplete or
duplicated predictions are one clear error (or a loud warning), never a traceback or a silent file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gptkit.cli import main
from gptkit.errors import DataError
from gptkit.tasks import get_task


def _one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _run(folder: Path, config: str, metrics: str = '{"test/acc": 0.5}', predictions: str | None = None) -> Path:
    (folder / "results").mkdir(parents=True)
    (folder / "config.yaml").write_text(config)
    (folder / "results" / "test.json").write_text(metrics)
    if predictions is not None:
        (folder / "predictions").mkdir()
        (folder / "predictions" / "SST-2.tsv").write_text(predictions)
    return folder


def _sst2_data(root: Path, rows: list[str]) -> Path:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    (folder / "test.tsv").write_text("index\tsentence\n" + "".join(r + "\n" for r in rows))
    return folder / "test.tsv"


# -- 1. a damaged config.yaml -------------------------------------------------------------------
@pytest.mark.parametrize("config", [":: [", "{}", "data: 5", "[1, 2]", "data:\n  name: 5\n", "data:\n  root: x\n", ""])
def test_damaged_run_config_is_one_error(capsys, tmp_path, config):
    run = _run(tmp_path / "run", config)
    assert main(["glue", str(run)]) == 2
    _one_line_error(capsys.readouterr().err, str(run / "config.yaml"), "gptkit fit", "data.name")


# -- 2. a results file without a usable score ----------------------------------------------------
@pytest.mark.parametrize(
    ("metrics", "needle"),
    [
        ('{"val/acc": NaN}', "'val/acc' is nan"),
        ('{"test/acc": Infinity, "test/loss": 0.1}', "'test/acc' is inf"),
        ('{"test/loss": 0.1}', "no sst2 metric 'acc'"),
        ('{"test/acc": "high"}', "'test/acc' is 'high', not a number"),
        ('{"test/acc": null}', "'test/acc' is None, not a number"),
        ('[0.5]', "not a JSON object"),
    ],
)
def test_unusable_metric_is_one_error(capsys, tmp_path, metrics, needle):
    run = _run(tmp_path / "run", "data:\n  name: sst2\n", metrics)
    assert main(["glue", str(run)]) == 2
    captured = capsys.readouterr()
    assert "GLUE" not in captured.out
    _one_line_error(captured.err, str(run / "results" / "test.json"), needle)


def test_nan_loss_beside_a_finite_score_is_fine(capsys, tmp_path):
    run = _run(tmp_path / "run", "data:\n  name: sst2\n", '{"test/acc": 0.9, "test/loss": NaN}')
    assert main(["glue", str(run)]) == 0
    assert "90.0" in capsys.readouterr().out


# -- 3. prediction files: duplicated and missing rows ---------------------------------------------
def test_duplicated_test_index_is_an_error_naming_the_test_file(tmp_path):
    sst2 = get_task("sst2")
    test = _sst2_data(tmp_path / "glue", ["0\ta", "1\tb", "2\tc", "3\td", "3\te"])
    examples, stats = sst2.load(tmp_path / "glue", "test")
    out = tmp_path / "predictions" / "SST-2.tsv"
    with pytest.raises(DataError, match=f"{test}: 1 index value.*3.*was not written"):
        sst2.write_predictions(out, [e.index for e in examples], [1] * len(examples), stats)
    assert not out.exists()


def test_skipped_test_rows_write_the_file_with_a_warning(tmp_path, caplog):
    sst2 = get_task("sst2")
    _sst2_data(tmp_path / "glue", ["0\ta", "1\t ", "2\tc", "x\td"])
    examples, stats = sst2.load(tmp_path / "glue", "test", skip_bad_rows=True)
    assert len(examples) == 2 and stats.skipped == 2
    out = tmp_path / "predictions" / "SST-2.tsv"
    with caplog.at_level(logging.WARNING, logger="gptkit.tasks.base"):
        sst2.write_predictions(out, [e.index for e in examples], [1, 0], stats)
    assert out.read_text() == "index\tprediction\n0\t1\n2\t0\n"
    warned = [r.getMessage() for r in caplog.records if "INCOMPLETE" in r.getMessage()]
    assert len(warned) == 1 and "2 predictions for the 4 rows" in warned[0] and "2 malformed rows" in warned[0]


def test_complete_predictions_do_not_warn(tmp_path, caplog):
    sst2 = get_task("sst2")
    _sst2_data(tmp_path / "glue", ["0\ta", "1\tb"])
    examples, stats = sst2.load(tmp_path / "glue", "test")
    with caplog.at_level(logging.WARNING, logger="gptkit.tasks.base"):
        sst2.write_predictions(tmp_path / "p" / "SST-2.tsv", [e.index for e in examples], [1, 0], stats)
    assert not [r for r in caplog.records if "INCOMPLETE" in r.getMessage()]


def test_glue_out_refuses_an_incomplete_prediction_file(capsys, tmp_path):
    test = _sst2_data(tmp_path / "glue", ["0\ta", "1\tb", "2\tc"])
    config = f"data:\n  name: sst2\n  root: {tmp_path / 'glue'}\n"
    run = _run(tmp_path / "run", config, predictions="index\tprediction\n0\t1\n2\t0\n")
    sub = tmp_path / "submission"
    assert main(["glue", str(run), "--out", str(sub)]) == 2
    _one_line_error(capsys.readouterr().err, str(run / "predictions" / "SST-2.tsv"), "2 predictions", f"{test} has 3 rows")
    assert not (sub / "SST-2.tsv").exists()
    (run / "predictions" / "SST-2.tsv").write_text("index\tprediction\n0\t1\n1\t1\n2\t0\n")
    assert main(["glue", str(run), "--out", str(sub)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert (sub / "SST-2.tsv").is_file()


def test_glue_out_refuses_repeated_prediction_indices(capsys, tmp_path):
    run = _run(tmp_path / "run", "data:\n  name: sst2\n", predictions="index\tprediction\n3\t1\n3\t0\n")
    assert main(["glue", str(run), "--out", str(tmp_path / "sub")]) == 2
    _one_line_error(capsys.readouterr().err, "SST-2.tsv repeats index 3")


def test_glue_out_notes_when_the_test_set_cannot_be_counted(capsys, tmp_path):
    run = _run(tmp_path / "run", f"data:\n  name: sst2\n  root: {tmp_path / 'gone'}\n",
               predictions="index\tprediction\n0\t1\n")
    assert main(["glue", str(run), "--out", str(tmp_path / "sub")]) == 0
    assert "cannot check" in capsys.readouterr().err


def test_rows_a_dataset_excludes_by_its_own_rule_are_not_missing(tmp_path, caplog):
    """SNLI drops gold label '-' by design: its prediction file is complete, no warning."""
    from gptkit.tasks.base import ReadStats

    sst2 = get_task("sst2")
    stats = ReadStats(rows=2, excluded={"no gold label": 3})
    with caplog.at_level(logging.WARNING, logger="gptkit.tasks.base"):
        sst2.write_predictions(tmp_path / "p.tsv", [0, 1], [1, 0], stats)
    assert not [r for r in caplog.records if "INCOMPLETE" in r.getMessage()]

"""The nine GLUE tasks, read from the folders that ``download_glue_data.py`` writes
(``glue_data/SST-2/train.tsv`` ...), plus the GLUE score and submission files.

Files are tab-separated and read without quote processing: MNLI, QQP and MRPC texts contain
unbalanced ``"``. CoLA's train/dev files have no header (source, label, original label, sentence).
GLUE test files carry no labels; :func:`gptkit.data.finetune.FinetuneDataModule` scores the dev set
for ``gptkit test`` and writes test predictions for ``gptkit predict``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from gptkit.console import log
from gptkit.errors import DataError
from gptkit.outputs import (
    PREDICTIONS_DIR,
    RESULTS_DIR,
    atomic_write_bytes,
    atomic_write_text,
    checkpoint_run_folder,
    read_results,
)
from gptkit.tasks.base import NLI3, Example, RowReader, TaskSpec, require_file
from gptkit.tasks.metrics import accuracy, accuracy_f1, correlations, matthews
from gptkit.tasks.table import Table, TableFormat, read_rows

NLI2 = ("entailment", "not_entailment")
BINARY = ("0", "1")


@dataclass(frozen=True)
class GlueLayout:
    """Where one GLUE task keeps its files, and how its rows are laid out (a :class:`Table` of
    tab-separated rows read without quote processing)."""

    folder: str
    files: Mapping[str, str]  # split -> file name
    table: Table
    headerless: tuple[str, ...] = ()  # splits whose file has no header (CoLA train/dev): table.fmt.header names them


def _task_dir(root: Path, folder: str) -> Path:
    """Accept the task folder itself or the ``glue_data`` folder above it."""
    if (root / folder).is_dir():
        return root / folder
    return root


def _read_glue(layout: GlueLayout):
    headed = replace(layout.table, fmt=replace(layout.table.fmt, header=None))

    def read(root: Path, split: str, reader: RowReader, subset: str | None) -> list[Example]:
        path = require_file(_task_dir(root, layout.folder) / layout.files[split], f"GLUE {layout.folder} {split}")
        reader.stats.source = path
        table = layout.table if split in layout.headerless else headed
        return table.examples(path, read_rows(path, table.fmt, reader), reader, label_optional=split.startswith("test"))

    return read


def _layout(folder: str, transform: str, columns: dict[str, str], labels: tuple[str, ...] | None,
            files: dict[str, str] | None = None, header: tuple[str, ...] | None = None,
            headerless: tuple[str, ...] = ()) -> GlueLayout:
    columns = {"id": "index", **columns}  # the id column of the test files (row number where absent)
    table = Table(transform, columns, labels, TableFormat("tsv", quoting="none", header=header),
                  score_range=(0.0, 5.0) if labels is None else None)
    return GlueLayout(folder, files or _files(), table, headerless)


def _files(*, mnli: bool = False) -> dict[str, str]:
    if mnli:
        return {
            "train": "train.tsv",
            "dev_matched": "dev_matched.tsv",
            "dev_mismatched": "dev_mismatched.tsv",
            "test_matched": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
        }
    return {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


LAYOUTS: dict[str, GlueLayout] = {}  # task name -> its files (glue --out counts test rows with it)


def _glue_task(name: str, layout: GlueLayout, metrics, description: str, **extra) -> TaskSpec:
    extra.setdefault("prediction_files", {"test": f"{layout.folder}.tsv"})
    LAYOUTS[name] = layout
    labels = layout.table.labels
    return TaskSpec(
        name=name,
        title=layout.folder,
        transform=layout.table.transform,  # type: ignore[arg-type]
        read=_read_glue(layout),
        metrics=metrics,
        labels=labels,
        glue=True,
        label_names=labels is not None and not labels[0].isdigit(),  # GLUE wants names for the NLI tasks
        score_range=layout.table.score_range,
        description=description,
        **extra,
    )


COLA = _glue_task(
    "cola",
    _layout("CoLA", "classification", {"text": "sentence", "label": "label"}, BINARY,
            header=("source", "label", "original_label", "sentence"), headerless=("train", "dev")),
    matthews, "Corpus of Linguistic Acceptability: is the sentence grammatical? (Matthews corr.)",
)
SST2 = _glue_task(
    "sst2",
    _layout("SST-2", "classification", {"text": "sentence", "label": "label"}, BINARY),
    lambda: accuracy(2), "Stanford Sentiment Treebank, binary sentence polarity (accuracy)",
)
MRPC = _glue_task(
    "mrpc",
    _layout("MRPC", "similarity", {"a": "#1 String", "b": "#2 String", "label": "Quality"}, BINARY),
    accuracy_f1, "Microsoft Research Paraphrase Corpus (F1 and accuracy)",
)
STSB = _glue_task(
    "stsb",
    _layout("STS-B", "similarity", {"a": "sentence1", "b": "sentence2", "label": "score"}, None),
    correlations, "Semantic Textual Similarity Benchmark, a 0-5 score (Pearson and Spearman)",
)
QQP = _glue_task(
    "qqp",
    _layout("QQP", "similarity", {"a": "question1", "b": "question2", "label": "is_duplicate", "id": "id"}, BINARY),
    accuracy_f1, "Quora Question Pairs: duplicates? (F1 and accuracy)",
)
MNLI = _glue_task(
    "mnli",
    _layout("MNLI", "entailment", {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}, NLI3,
            files=_files(mnli=True)),
    lambda: accuracy(3), "MultiNLI, matched and mismatched dev/test sets (accuracy)",
    val_splits=("dev_matched", "dev_mismatched"),
    test_splits=("test_matched", "test_mismatched"),
    split_names={"dev_matched": "matched", "dev_mismatched": "mismatched",
                 "test_matched": "matched", "test_mismatched": "mismatched"},
    prediction_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
)
QNLI = _glue_task(
    "qnli",
    _layout("QNLI", "entailment", {"premise": "question", "hypothesis": "sentence", "label": "label"}, NLI2),
    lambda: accuracy(2), "Question NLI: does the sentence answer the question? (accuracy)",
)
RTE = _glue_task(
    "rte",
    _layout("RTE", "entailment", {"premise": "sentence1", "hypothesis": "sentence2", "label": "label"}, NLI2),
    lambda: accuracy(2), "Recognising Textual Entailment (accuracy)",
)
WNLI = _glue_task(
    "wnli",
    _layout("WNLI", "entailment", {"premise": "sentence1", "hypothesis": "sentence2", "label": "label"}, BINARY),
    lambda: accuracy(2), "Winograd NLI (accuracy)",
)

GLUE_TASKS: tuple[TaskSpec, ...] = (COLA, SST2, MRPC, STSB, QQP, MNLI, QNLI, RTE, WNLI)

# GLUE's score for each task: the unweighted mean of these metrics (validation names as logged).
GLUE_SCORE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("acc",),
    "mrpc": ("f1", "acc"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "acc"),
    "mnli": ("acc_matched", "acc_mismatched"),
    "qnli": ("acc",),
    "rte": ("acc",),
    "wnli": ("acc",),
}


@dataclass
class GlueScore:
    """The GLUE average (0-100) over the tasks present, each task's score, and the tasks missing."""

    score: float | None
    tasks: dict[str, float]
    missing: list[str]

    def table(self) -> str:
        lines = [f"{'task':<6} {'score':>6}"]
        for name in GLUE_SCORE_METRICS:
            value = f"{self.tasks[name]:6.1f}" if name in self.tasks else "     -"
            lines.append(f"{name:<6} {value}")
        avg = "-" if self.score is None else f"{self.score:.1f}"
        note = f" (partial: missing {', '.join(self.missing)})" if self.missing else ""
        lines.append(f"{'GLUE':<6} {avg:>6}{note}")
        return "\n".join(lines)


def _strip(key: str) -> str:
    for prefix in ("val/", "test/"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def glue_score(results: Mapping[str, Mapping[str, float]]) -> GlueScore:
    """The GLUE score from per-task validation metrics.

    ``results`` maps a task name (``cola``, ``sst2``, ...) to its metrics in [0, 1], e.g.
    ``{"mrpc": {"val/f1": 0.82, "val/acc": 0.77}}`` (``val/``/``test/`` prefixes are ignored).
    Each task scores the mean of its GLUE metrics (MRPC/QQP: F1 and accuracy; STS-B: Pearson and
    Spearman; MNLI: matched and mismatched accuracy); the GLUE score is the mean over the nine
    tasks, times 100. With tasks missing the average is over those present and ``missing`` says so.
    """
    unknown = sorted(set(results) - set(GLUE_SCORE_METRICS))
    if unknown:
        raise DataError(f"not GLUE tasks: {', '.join(unknown)}; GLUE has {', '.join(GLUE_SCORE_METRICS)}")
    scores: dict[str, float] = {}
    for name, wanted in GLUE_SCORE_METRICS.items():
        if name not in results:
            continue
        metrics = {_strip(k): float(v) for k, v in results[name].items()}
        absent = [m for m in wanted if m not in metrics]
        if absent:
            raise DataError(f"{name} results lack {', '.join(absent)} (have {', '.join(sorted(metrics))})")
        scores[name] = 100.0 * sum(metrics[m] for m in wanted) / len(wanted)
    missing = [n for n in GLUE_SCORE_METRICS if n not in scores]
    score = sum(scores.values()) / len(scores) if scores else None
    return GlueScore(score, scores, missing)


def glue_submission_files() -> dict[str, str]:
    """Task name -> submission file names (AX, the diagnostic set, is not produced)."""
    return {t.name: ", ".join(t.prediction_file(s) for s in t.test_splits) for t in GLUE_TASKS}


def copy_predictions(sources: Mapping[str, Path], out_dir: Path) -> list[Path]:
    """Copy prediction files named in ``sources`` (GLUE file name -> path) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, src in sources.items():
        if not Path(src).is_file():
            raise DataError(f"missing prediction file {src} (run `gptkit predict` for that task first)")
        dst = out_dir / name
        atomic_write_bytes(dst, Path(src).read_bytes())
        written.append(dst)
    return written


def _run_task(run_dir: Path) -> tuple[str, dict]:
    """(task name, the saved config as a dict) of a run folder; a damaged config.yaml is a DataError."""
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise DataError(f"{run_dir} is not a gptkit run folder (no config.yaml)")
    expected = "expected a run folder written by `gptkit fit`, whose config.yaml has data.name (e.g. sst2)"
    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"{config} cannot be read as YAML ({detail}); {expected}") from None
    data = loaded.get("data") if isinstance(loaded, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name.strip():
        found = "no data.name" if name is None else f"data.name {name!r}"
        raise DataError(f"{config} has {found}; {expected}")
    return name.strip(), loaded


def _metric_value(path: Path, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: metric {key!r} is {value!r}, not a number; rerun `gptkit validate` for this run")
    return float(value)


def read_run_results(run_dir: Path) -> tuple[str, dict[str, float]]:
    """(task name, dev-set metrics) of one fine-tuning run folder.

    The task comes from the run's saved ``config.yaml``; the metrics from ``results/validate.json``
    or, failing that, ``results/test.json`` (for GLUE, ``gptkit test`` scores the dev set). A GLUE
    metric that is missing, not a number, or not finite (nan, inf) is a :class:`DataError` naming the
    file and metric: such a run has no score to report.
    """
    run_dir = Path(run_dir).expanduser()
    task, _ = _run_task(run_dir)
    return task, _run_metrics(run_dir, task)


def _run_metrics(run_dir: Path, task: str) -> dict[str, float]:
    """The metrics of :func:`read_run_results`, for a run of ``task``."""
    for verb in ("validate", "test"):
        path = run_dir / RESULTS_DIR / f"{verb}.json"
        if path.is_file():
            try:
                scored, raw = read_results(path)
            except (ValueError, OSError) as exc:
                raise DataError(f"{path} is not a JSON object of metric values ({exc})") from None
            if scored and checkpoint_run_folder(scored) != run_dir.resolve():
                log(f"note: {path} scores {scored}, a checkpoint from outside run folder {run_dir}")
            if not isinstance(raw, dict):
                raise DataError(f"{path} is not a JSON object of metric values (found {type(raw).__name__})")
            metrics = {k: _metric_value(path, k, v) for k, v in raw.items()}
            stripped = {_strip(k): (k, v) for k, v in metrics.items()}
            for wanted in GLUE_SCORE_METRICS.get(task, ()):
                if wanted not in stripped:
                    have = ", ".join(sorted(metrics)) or "nothing"
                    raise DataError(f"{path} has no {task} metric {wanted!r} (val/{wanted} or test/{wanted}; it has "
                                    f"{have}); rerun `gptkit validate` for this run")
                key, value = stripped[wanted]
                if not math.isfinite(value):
                    raise DataError(f"{path}: metric {key!r} is {value}, so the run has no {task} score (did "
                                    f"training diverge?); fix the run, rerun `gptkit validate`, or leave it out")
            return metrics
    raise DataError(
        f"{run_dir} has no results/validate.json or results/test.json; run "
        f"`gptkit validate <recipe> run.name={run_dir.name} ckpt_path=best` first"
    )


def _first_fields(path: Path) -> list[str]:
    """The first field of each row of a headed TSV file (the index of a prediction or test file)."""
    from gptkit.tasks.base import holds_row, read_lines

    return [line.split("\t", 1)[0] for _, line in read_lines(path) if holds_row(line)][1:]


def check_submission_file(path: Path, task: str, split: str, config: dict) -> str | None:
    """Refuse (DataError) a prediction file with repeated indices or a row count other than the test
    file's; return a note when the test file cannot be found to count (the check is then skipped)."""
    ids = _first_fields(path)
    repeated = sorted({i for i, n in Counter(ids).items() if n > 1})
    if repeated:
        raise DataError(f"{path} repeats index {', '.join(repeated[:5])}; rerun `gptkit predict` for {task}")
    layout = LAYOUTS.get(task)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    root = data.get("root")
    if layout is None or not root:
        return f"cannot check that {path} covers the whole {task} test set: its run config has no data.root"
    test = _task_dir(Path(str(root)).expanduser(), layout.folder) / layout.files[split]
    if not test.is_file():
        return f"cannot check that {path} covers the whole {task} test set: no test file {test}"
    n_test = len(_first_fields(test))
    if len(ids) != n_test:
        raise DataError(
            f"{path} has {len(ids)} predictions but the test file {test} has {n_test} rows; GLUE rejects "
            f"incomplete submissions (was `gptkit predict` run with data.skip_bad_rows=true?): fix the test "
            f"file's bad rows and rerun `gptkit predict` for {task} (nothing was written to the submission folder)"
        )
    return None


def glue_report(run_dirs: list[Path], out_dir: Path | None = None) -> tuple[GlueScore, list[str]]:
    """The GLUE score of fine-tuning runs (one folder per task) and, with ``out_dir``, a submission
    folder with each task's test predictions under its GLUE file name (``SST-2.tsv``,
    ``MNLI-m.tsv`` ...; the diagnostic AX is not produced). Returns the score and notes on
    prediction files that are missing.

    The submission folder holds these runs' predictions and ``glue_score.txt``, nothing else: one that
    holds other files (say a task left from an earlier submission) is refused before anything is written.
    """
    from gptkit.outputs import refuse_foreign_files
    from gptkit.tasks import get_task

    results: dict[str, dict[str, float]] = {}
    folders: dict[str, Path] = {}
    configs: dict[str, dict] = {}
    for run_dir in run_dirs:
        folder = Path(run_dir).expanduser()
        name, config = _run_task(folder)
        if name in results:
            raise DataError(f"two runs for task {name}: {folders[name]} and {run_dir}; pass one per task")
        results[name], folders[name], configs[name] = _run_metrics(folder, name), folder, config
    score = glue_score(results)
    notes: list[str] = []
    if out_dir is not None:
        sources = {}
        for name, folder in folders.items():
            task = get_task(name)
            for split in task.test_splits:
                file = task.prediction_file(split)
                path = folder / PREDICTIONS_DIR / file
                if path.is_file():
                    note = check_submission_file(path, name, split, configs[name])
                    if note:
                        notes.append(note)
                    sources[file] = path
                else:
                    notes.append(f"no {file} in {folder / PREDICTIONS_DIR} (run `gptkit predict` for {name})")
        refuse_foreign_files(Path(out_dir).expanduser(), "--out", {*sources, "glue_score.txt"},
                             "left from an earlier submission? a submission holds only these runs' predictions")
        copy_predictions(sources, Path(out_dir).expanduser())
        atomic_write_text(Path(out_dir).expanduser() / "glue_score.txt", score.table() + "\n")
    return score, notes

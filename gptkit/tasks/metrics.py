"""The metric sets tasks choose from, each a factory returning a fresh torchmetrics
``MetricCollection`` (a :class:`gptkit.tasks.base.TaskSpec` holds the factory; its names are the
logged metric names, ``val/acc``, ``val/f1`` ...)::

    accuracy(n)     acc                most tasks (SST-2, MNLI, SNLI, RACE, ROCStories, ...)
    accuracy_f1()   acc, f1            binary with a positive class (MRPC, QQP)
    matthews()      mcc, acc           binary, unbalanced (CoLA)
    correlations()  pearson, spearman  a regression score (STS-B)

A table task (``data.name=table``) names its metrics in the recipe (``data.metrics: [acc, f1]``):
:func:`named` builds them from :data:`CLASSIFICATION_METRICS` or :data:`REGRESSION_METRICS`.
"""

from __future__ import annotations

import warnings

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef


def accuracy(n_classes: int) -> MetricCollection:
    return MetricCollection({"acc": MulticlassAccuracy(num_classes=n_classes, average="micro")})


def accuracy_f1() -> MetricCollection:
    return MetricCollection(
        {"acc": MulticlassAccuracy(num_classes=2, average="micro"), "f1": BinaryF1Score()}
    )


def matthews() -> MetricCollection:
    return MetricCollection(
        {"mcc": BinaryMatthewsCorrCoef(), "acc": MulticlassAccuracy(num_classes=2, average="micro")}
    )


def correlations() -> MetricCollection:
    with warnings.catch_warnings():  # Spearman keeps all scores; fine at STS-B's 1,500 dev pairs
        warnings.filterwarnings("ignore", message=".*will save all targets and predictions.*")
        return MetricCollection({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})


# The metrics a recipe may name: what each measures, for the error that lists them.
CLASSIFICATION_METRICS = {
    "acc": "accuracy",
    "f1": "F1 of the second label (binary), macro-averaged F1 (more classes)",
    "mcc": "Matthews correlation",
}
REGRESSION_METRICS = {"pearson": "Pearson correlation", "spearman": "Spearman rank correlation"}


def named(names: tuple[str, ...], n_classes: int | None) -> MetricCollection:
    """The metrics ``names`` (keys of :data:`CLASSIFICATION_METRICS`, over ``n_classes`` classes, or of
    :data:`REGRESSION_METRICS` when ``n_classes`` is None); the caller has checked the names."""
    if n_classes is None:
        scores = correlations()
        return MetricCollection({n: scores[n] for n in names})
    binary = n_classes == 2
    make = {
        "acc": lambda: MulticlassAccuracy(num_classes=n_classes, average="micro"),
        "f1": lambda: BinaryF1Score() if binary else MulticlassF1Score(num_classes=n_classes, average="macro"),
        "mcc": lambda: BinaryMatthewsCorrCoef() if binary else MulticlassMatthewsCorrCoef(num_classes=n_classes),
    }
    return MetricCollection({n: make[n]() for n in names})


__all__ = ["CLASSIFICATION_METRICS", "REGRESSION_METRICS", "accuracy", "accuracy_f1", "correlations", "matthews",
           "named"]

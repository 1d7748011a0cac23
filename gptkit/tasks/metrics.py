"""The metric sets tasks choose from, each a factory returning a fresh torchmetrics
``MetricCollection`` (a :class:`gptkit.tasks.base.TaskSpec` holds the factory; its names are the
logged metric names, ``val/acc``, ``val/f1`` ...)::

    accuracy(n)     acc                most tasks (SST-2, MNLI, SNLI, RACE, ROCStories, ...)
    accuracy_f1()   acc, f1            binary with a positive class (MRPC, QQP)
    matthews()      mcc, acc           binary, unbalanced (CoLA)
    correlations()  pearson, spearman  a regression score (STS-B)
"""

from __future__ import annotations

import warnings

from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryMatthewsCorrCoef, MulticlassAccuracy
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


__all__ = ["accuracy", "accuracy_f1", "correlations", "matthews"]

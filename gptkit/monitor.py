"""``checkpoint.monitor`` and ``checkpoint.mode``: which metrics a run logs, and which way each improves.

The one place these rules live: the recipe check when it is loaded (:func:`check_mode` on names
alone), the run's check once its task is known (:func:`check_monitor`), the best-checkpoint callback
(:func:`checkpoint_mode`) and ``ckpt_path=best`` (:func:`metric_mode`). Torch-free at import: the
task registry is imported only when a task's metrics are asked about.
"""

from __future__ import annotations

from omegaconf import DictConfig

from gptkit.errors import ConfigError

# What pretraining logs.
PRETRAIN_MONITORS = ("val/loss", "val/ppl", "train/loss")


def name_mode(monitor: str) -> str | None:
    """``min`` for a loss or perplexity (``val/loss``, ``train/task_loss``, ``val/ppl``); None where the
    name alone does not say: a task metric's direction is its torchmetrics ``higher_is_better``."""
    words = monitor.rsplit("/", 1)[-1].split("_")
    return "min" if {"loss", "ppl"} & set(words) else None


def task_metric_mode(task, monitor: str) -> str | None:
    """``max`` or ``min`` for the task metric ``monitor`` names (``val/acc``, ``val/acc_matched``,
    ``val/acc_high``...), as its torchmetrics ``higher_is_better`` says; None if it does not say."""
    name = monitor.split("/", 1)[-1]
    metrics = task.metrics()
    key = name if name in metrics else next((k for k in metrics if name.startswith(k + "_")), None)
    better = None if key is None else metrics[key].higher_is_better
    if better is None and key is not None and "corrcoef" in type(metrics[key]).__name__.lower():
        better = True  # torchmetrics leaves correlations unsaid
    return None if better is None else "max" if better else "min"


def metric_mode(monitor: str, task) -> str | None:
    """The direction ``monitor`` improves in for a run of ``task`` (a TaskSpec; None: pretraining)."""
    best = name_mode(monitor)
    if best is None and task is not None:
        best = task_metric_mode(task, monitor)
    return best


def check_mode(monitor: str, mode: str | None, best: str | None) -> None:
    """Refuse a ``checkpoint.mode`` that would keep the worst checkpoints of ``monitor`` (which improves
    towards ``best``, when that is known)."""
    if mode is not None and best is not None and mode != best:
        raise ConfigError(f"checkpoint.mode={mode} would keep the checkpoints with the "
                          f"{'highest' if mode == 'max' else 'lowest'} {monitor}, the worst ones; set "
                          f"checkpoint.mode={best}, or leave it null (it follows the monitor)")


def run_task(cfg: DictConfig) -> str | None:
    """The name of the fine-tuning task a recipe runs (None: pretraining)."""
    return None if cfg.data.name == "pretrain" else cfg.data.name


def run_spec(cfg: DictConfig):
    """The :class:`~gptkit.tasks.base.TaskSpec` a recipe runs (None: pretraining)."""
    if run_task(cfg) is None:
        return None
    from gptkit.tasks import task_of

    return task_of(cfg.data)


def checkpoint_mode(cfg: DictConfig) -> str:
    """``checkpoint.mode``; when null, the direction the monitor improves in: ``min`` for a loss or
    perplexity, else the task metric's (torchmetrics' ``higher_is_better``), else ``max``. A mode that
    would keep the worst checkpoints is refused."""
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    best = metric_mode(monitor, run_spec(cfg))
    check_mode(monitor, mode, best)
    return mode or best or "max"


def logged_metrics(cfg: DictConfig) -> list[str]:
    """Every metric the run logs that ``checkpoint.monitor`` can name."""
    task = run_spec(cfg)
    if task is None:
        return list(PRETRAIN_MONITORS)
    names = {"loss"}
    for split in task.val_splits:
        names |= {f"{k}{task.metric_suffix(split)}" for k in task.metrics().keys()}
        names |= {f"{k}_{g}{task.metric_suffix(split)}" for k in task.metrics().keys() for g in task.groups}
    return [f"val/{n}" for n in sorted(names)] + ["train/loss", "train/task_loss"]


def check_monitor(cfg: DictConfig) -> None:
    """Refuse a ``checkpoint.monitor`` the run never logs (it would leave no best checkpoint), and a mode
    that would keep the worst checkpoints. Called when a run is built, not when its recipe is loaded: a
    base recipe (``_base/finetune.yaml``) may set a task's monitor before a recipe extending it sets
    ``data.name``."""
    logged = logged_metrics(cfg)
    if cfg.checkpoint.monitor not in logged:
        task = run_spec(cfg)
        who = "pretraining (data.name=pretrain)" if task is None else f"task {task.name}"
        raise ConfigError(f"checkpoint.monitor={cfg.checkpoint.monitor} is not a metric that {who} logs; "
                          f"choose one of {', '.join(logged)}")
    checkpoint_mode(cfg)

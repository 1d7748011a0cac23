"""Fine-tuning tasks: one small module per dataset family, each describing a :class:`TaskSpec`.

``get_task("sst2")`` returns a task; ``TASKS`` lists them all; :func:`task_of` gives the task of a
recipe's ``data`` section, including ``data.name=table``: your own files read by
:mod:`gptkit.tasks.table` with the columns the recipe names. Adding a task with a new file layout or
transform means writing a module with a reader and a ``TaskSpec`` and registering it here (and a
recipe); a new table needs only a recipe.
"""

from __future__ import annotations

import difflib

from gptkit.errors import ConfigError
from gptkit.tasks.base import Example, TaskSpec
from gptkit.tasks.bbc import BBC
from gptkit.tasks.copa import COPA
from gptkit.tasks.glue import GLUE_TASKS, glue_score
from gptkit.tasks.polarity import POLARITY
from gptkit.tasks.race import RACE
from gptkit.tasks.rocstories import ROCSTORIES
from gptkit.tasks.scitail import SCITAIL
from gptkit.tasks.snli import SNLI

TASKS: dict[str, TaskSpec] = {}


def register_task(task: TaskSpec) -> TaskSpec:
    """Add ``task`` to the registry under ``task.name`` (names are unique)."""
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; a ConfigError with the closest names if there is none."""
    key = name.strip().lower()
    if key in TASKS:
        return TASKS[key]
    close = difflib.get_close_matches(key, TASKS, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(TASKS))}")


TABLE = "table"  # data.name of a recipe's own table (gptkit.tasks.table)
# The data.* keys only a table task reads, with their defaults.
TABLE_KEYS = {"transform": None, "columns": None, "labels": "infer", "metrics": None, "format": None,
              "delimiter": None, "quoting": None, "header": None, "val_from_train": None}


def task_of(data) -> TaskSpec | None:
    """The task of a recipe's ``data`` section (None: pretraining): a registered task by ``data.name``,
    or, for ``data.name=table``, the table its ``data.*`` keys describe."""
    name = str(data.name).strip().lower()
    if name == "pretrain":
        return None
    if name == TABLE:
        from gptkit.tasks.table import table_task

        return table_task(data)
    task = get_task(name)
    stray = [k for k, default in TABLE_KEYS.items() if data.get(k, default) != default]
    if stray:
        raise ConfigError(f"data.{stray[0]} is read by data.name=table (your own files) only; task {task.name} has "
                          f"its own file layout: drop data.{stray[0]}")
    return task


def canonical_name(name: str | None) -> str | None:
    """A task name as the registry knows it (``SST2`` is ``sst2``); other names as they are."""
    if name is None:
        return None
    key = name.strip().lower()
    return TASKS[key].name if key in TASKS else key


for _task in (*GLUE_TASKS, SNLI, SCITAIL, RACE, ROCSTORIES, COPA, POLARITY, BBC):
    register_task(_task)

__all__ = ["TABLE", "TASKS", "Example", "TaskSpec", "canonical_name", "get_task", "glue_score", "register_task",
           "task_of"]

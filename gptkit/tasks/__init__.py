"""Fine-tuning tasks: one small module per dataset family, each describing a :class:`TaskSpec`.

``get_task("sst2")`` returns a task; ``TASKS`` lists them all. Adding a task means writing a
module with a reader and a ``TaskSpec`` and registering it here (and a recipe).
"""

from __future__ import annotations

import difflib

from gptkit.errors import ConfigError
from gptkit.tasks.base import Example, TaskSpec
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


for _task in (*GLUE_TASKS, SNLI, SCITAIL, RACE, ROCSTORIES, COPA, POLARITY):
    register_task(_task)

__all__ = ["TASKS", "Example", "TaskSpec", "get_task", "glue_score", "register_task"]

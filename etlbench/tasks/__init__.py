"""Face tasks, in :data:`etlbench.registry.TASKS` (the built-ins are declared in :mod:`etlbench.plugins`)."""

from etlbench.registry import TASKS
from etlbench.tasks.base import LabelError, Task, TaskHead


def create_task(name: str) -> Task:
    """A fresh instance of a registered task (``Unknown tasks`` error lists close matches)."""
    return TASKS.get(name)()


__all__ = ["TASKS", "LabelError", "Task", "TaskHead", "create_task"]

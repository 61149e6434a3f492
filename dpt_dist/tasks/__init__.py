"""Task router: one module per task family, one registry."""
from . import superglue  # noqa: F401  (registers the tasks)
from .registry import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]

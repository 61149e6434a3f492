"""Task router: one module per task family, one registry."""

from . import glue, mbpp, mrqa, others, superglue  # noqa: F401  (each registers its tasks)
from .registry import TASKS, Task, get_task, load_splits
from .sources import DataError

__all__ = ["TASKS", "DataError", "Task", "get_task", "load_splits"]

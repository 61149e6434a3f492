"""A task names its loader, its text-to-text formatter, its metrics and its decoding budget.

Loaders return HF `datasets.Dataset`s with at least `source` and `target` string columns, one
per split (train / validation / test). Tasks know nothing about models or DeepSpeed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import datasets

TASKS: dict[str, "Task"] = {}


@dataclass
class Task:
    name: str
    load: Callable  # (TaskConfig) -> dict[str, datasets.Dataset]
    metrics: Callable  # (predictions: list[str], examples: datasets.Dataset) -> dict[str, float]
    labels: list[str] | None = None  # closed label set, if the task has one
    max_new_tokens: int = 8
    description: str = ""
    metric_names: list[str] = field(default_factory=list)  # first one selects the best checkpoint


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def halve_validation(validation: datasets.Dataset, seed: int = 42) -> tuple[datasets.Dataset, datasets.Dataset]:
    """DePT protocol for small sets: shuffle the official validation set (seed 42) and halve it
    into validation (first n//2) and test (the rest): CB 56 -> 28/28, RTE 277 -> 138/139."""
    shuffled = validation.shuffle(seed=seed)
    half = len(shuffled) // 2
    return shuffled.select(range(half)), shuffled.select(range(half, len(shuffled)))


def check_split(ds: datasets.Dataset, where: str) -> datasets.Dataset:
    if len(ds) == 0:
        raise ValueError(f"{where}: the split is empty")
    return ds

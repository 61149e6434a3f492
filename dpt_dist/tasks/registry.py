"""A task names its reader, its text-to-text formatter, its split protocol, its metrics and its
decoding budget. `load_splits` turns any task into train / validation / test datasets with
`source` and `target` string columns, an `id` column (the example's own id in the original
dataset, see `example_id`) and the extras its metrics need. Tasks know nothing about models
or DeepSpeed.

Split protocols (REFERENCE §3, the DePT/ADePT protocol; `split_mode: official` instead reports
on the official validation set, as the DPT paper does):
  halve  small sets: the official validation set, permuted with torch.randperm(seed 42), is
         halved into validation (first n // 2) and test (the rest); train is the full train set
  carve  large sets: 1,000 training examples (the first of the same permutation of train)
         become validation, the rest train; the official validation set becomes test
  mnli   validation_mismatched -> validation, validation_matched -> test
  own    the dataset's own train / validation / test (PAWS)
  fixed  the reader returns train / validation / test itself, for either split mode (MBPP's
         task_id ranges)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import datasets
import torch

from .sources import DataError, RawSplit, code_signature, text_field

TASKS: dict[str, Task] = {}
PROTOCOLS = ("halve", "carve", "mnli", "own", "fixed")


@dataclass
class Task:
    name: str
    family: str  # glue | superglue | mrqa | other | code
    description: str
    read: Callable  # (TaskConfig) -> {official split name: RawSplit}
    format: Callable  # (raw row) -> {"source", "target", extras...}; ValueError on a bad row
    metrics: Callable | None  # (predictions, formatted examples) -> {name: value in percent}
    metric_names: list[str]  # the first one selects the best checkpoint
    protocol: str = "halve"
    labels: list[str] | None = None  # the closed set of target strings, if the task has one
    max_source_length: int = 256
    max_target_length: int = 16
    max_new_tokens: int = 8
    expand_train: Callable | None = None  # (formatted train rows) -> training rows (ReCoRD: one per answer)
    fit_source: Callable | None = None  # (batch, tokenizer, max_len) -> sources (MRQA: keep the answer)
    hub: str = ""  # the hub dataset used when no local data is configured
    budget_includes_prompt: bool = False  # max_source_length counts the soft prompt too (MBPP: 325 - m)
    truncate_source_left: bool = False  # keep the end of an over-long source (MBPP: the asserts)
    sampling: dict | None = None  # generation settings of the protocol (None: greedy)
    postprocess: Callable = str.strip  # raw generated text -> prediction
    score: Callable | None = None  # (samples per example, examples, allow_code_execution=) -> (metrics, rows)
    executes_code: bool = False  # scoring runs generated code: needs the explicit opt-in
    id_key: str | Callable = "idx"  # the raw row's id field, or (raw row, position) -> id: see `example_id`

    def __post_init__(self):
        assert self.protocol in PROTOCOLS, self.protocol


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """By name; `glue-<name>` / `superglue-<name>` also work where the family matches."""
    if name not in TASKS and "-" in name:
        family, short = name.split("-", 1)
        if short in TASKS and TASKS[short].family == family:
            return TASKS[short]
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# ---- labels ----------------------------------------------------------------------------------
def label_index(value, names: list[str], aliases: dict[str, int] | None = None) -> int:
    """The class index of a label stored as an int, a digit string, a bool or a class name."""
    text = "" if value is None else str(value).strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    lowered = {n.lower(): i for i, n in enumerate(names)}
    lowered.update({k.lower(): v for k, v in (aliases or {}).items()})
    if text.lower() in lowered:
        return lowered[text.lower()]
    shown = ", ".join(names) if len(names) <= 6 else f"{len(names)} classes"
    raise ValueError(
        f"label {value!r} is not in the label set ({shown})" if value is not None else "missing field 'label'"
    )


BOOL_ALIASES = {"false": 0, "true": 1}
BINARY = ["0", "1"]


def prefixed_classification(fields: list[tuple[str, str]], classes: list[str], aliases: dict | None = None):
    """The common formatter: `prefix1: text1 prefix2: text2 ...` -> the class index as a string."""

    def fmt(row):
        source = " ".join(f"{prefix}: {text_field(row, key)}" for prefix, key in fields)
        return {"source": source, "target": str(label_index(row.get("label"), classes, aliases))}

    return fmt


# ---- example ids ------------------------------------------------------------------------------
def example_id(row: dict, position: int, key: str | Callable = "idx") -> int | str:
    """The example's own id in the original dataset, written with its predictions so official
    scorers can match them: the raw row's `key` field (readers yield it with the hub's name and
    type, e.g. SuperGLUE / GLUE `idx`, MRQA `qid`, MBPP `task_id`, PAWS `id`), or `key(row,
    position)` where the id has to be built (MultiRC, ReCoRD, WinoGrande). A row without one
    gets `position`, its 0-based position in its official split (readers yield one raw row per
    data row, in file order), which is what the hub's GLUE `idx` holds. Ids are ints or
    strings, one type per task, so predictions serialise to JSON."""
    value = key(row, position) if callable(key) else row.get(key)
    if value is None:
        value = position
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"example id {value!r} is not an integer or a string")
    return value


# ---- formatting and splitting ----------------------------------------------------------------
def _format_row(row: dict, idx: int, *, formatter, id_key, origin: str, local: bool, code: str) -> dict:
    # `code` (the formatting code's digest) is unused: it keys datasets' cache of the formatted rows
    try:
        return {**formatter(row), "id": example_id(row, idx, id_key)}
    except (ValueError, KeyError, TypeError) as err:
        where = f"line {row['_line']}" if local and "_line" in row else f"row {idx}"
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise DataError(f"{origin}: {where}: {detail}") from None


def format_split(task: Task, raw: RawSplit) -> datasets.Dataset:
    if len(raw.rows) == 0:
        raise DataError(f"{raw.origin}: the split is empty")
    return raw.rows.map(
        _format_row,
        with_indices=True,
        remove_columns=raw.rows.column_names,
        desc=f"format {task.name}",
        fn_kwargs={
            "formatter": task.format,
            "id_key": task.id_key,
            "origin": raw.origin,
            "local": raw.local,
            "code": code_signature(task.format),
        },
    )


def permutation(n: int, seed: int) -> list[int]:
    """The reference code's shuffle: torch.randperm with a seeded generator."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def halve(ds: datasets.Dataset, seed: int = 42) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Small sets: CB 56 -> 28/28, RTE 277 -> 138/139."""
    order = permutation(len(ds), seed)
    half = len(ds) // 2
    return ds.select(order[:half]), ds.select(order[half:])


def carve(ds: datasets.Dataset, size: int, seed: int = 42) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Large sets: (train without the carved examples, `size` carved examples for validation)."""
    order = permutation(len(ds), seed)
    return ds.select(order[size:]), ds.select(order[:size])


def load_splits(task: Task, config) -> dict[str, datasets.Dataset]:
    """{train, validation, test} for the configured split mode, formatted, none empty. The
    protocols select whole rows, so every example keeps its `id`: the halves of `halve` have
    disjoint ids, as have `carve`'s train and validation. (`carve`'s test is the official
    validation file, whose ids can coincide with the training file's, e.g. GLUE row positions.)"""
    raw = task.read(config)
    origins = {name: r.origin for name, r in raw.items()}
    fmt = {name: format_split(task, r) for name, r in raw.items()}
    official = config.split_mode == "official"
    seed = config.split_seed
    if task.protocol == "fixed":
        splits, where = fmt, origins
    elif task.protocol == "own":
        splits = {"train": fmt["train"], "validation": fmt["validation"], "test": fmt.get("test", fmt["validation"])}
        if official:
            splits["test"] = fmt["validation"]
        where = {
            "train": origins["train"],
            "validation": origins["validation"],
            "test": origins.get("test", origins["validation"]),
        }
    elif task.protocol == "mnli":
        test = fmt["validation_matched"]
        splits = {"train": fmt["train"], "validation": test if official else fmt["validation_mismatched"], "test": test}
        where = {
            "train": origins["train"],
            "validation": origins["validation_matched" if official else "validation_mismatched"],
            "test": origins["validation_matched"],
        }
    elif official:
        splits = {"train": fmt["train"], "validation": fmt["validation"], "test": fmt["validation"]}
        where = {"train": origins["train"], "validation": origins["validation"], "test": origins["validation"]}
    elif task.protocol == "halve":
        validation, test = halve(fmt["validation"], seed)
        splits = {"train": fmt["train"], "validation": validation, "test": test}
        where = {
            "train": origins["train"],
            "validation": f"first half of {origins['validation']}",
            "test": f"second half of {origins['validation']}",
        }
    else:  # carve
        size = config.validation_size
        if len(fmt["train"]) <= size:
            raise DataError(
                f"{origins['train']}: {len(fmt['train'])} training rows, but the split protocol moves "
                f"task.validation_size={size} of them to validation and would leave none to train on"
            )
        train, validation = carve(fmt["train"], size, seed)
        splits = {"train": train, "validation": validation, "test": fmt["validation"]}
        where = {
            "train": origins["train"],
            "validation": f"{size} rows carved from {origins['train']}",
            "test": origins["validation"],
        }
    if task.expand_train is not None:
        splits["train"] = task.expand_train(splits["train"])
    for name, ds in splits.items():
        if len(ds) == 0:
            raise DataError(f"{where[name]}: the {name} split is empty")
    return splits

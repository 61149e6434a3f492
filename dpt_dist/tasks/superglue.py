"""SuperGLUE tasks in the DePT/ADePT text-to-text format (targets are label strings)."""
from __future__ import annotations

from pathlib import Path

import datasets

from .metrics import classification_metrics
from .registry import Task, check_split, halve_validation, register

CB_LABELS = ["entailment", "contradiction", "neutral"]


def _load_superglue(config, hub_name: str, local_dir: str) -> dict[str, datasets.Dataset]:
    """Official train/validation from a local directory of the jsonl files, or from the hub."""
    if config.data_dir:
        root = Path(config.data_dir)
        files = {"train": root / "train.jsonl", "validation": root / "val.jsonl"}
        for split, path in files.items():
            if not path.is_file():
                raise FileNotFoundError(f"task {config.name}: {path} not found (expected the SuperGLUE {local_dir} jsonl files)")
        raw = datasets.load_dataset("json", data_files={k: str(v) for k, v in files.items()})
    else:
        raw = datasets.load_dataset("super_glue", hub_name)
    return {"train": raw["train"], "validation": raw["validation"]}


def _split(config, raw: dict[str, datasets.Dataset]) -> dict[str, datasets.Dataset]:
    if config.split_mode == "official":
        splits = {"train": raw["train"], "validation": raw["validation"], "test": raw["validation"]}
    else:
        validation, test = halve_validation(raw["validation"])
        splits = {"train": raw["train"], "validation": validation, "test": test}
    return {k: check_split(v, f"task {config.name}, split {k}") for k, v in splits.items()}


def _label_text(label, labels: list[str], where: str) -> str:
    if isinstance(label, bool):
        label = int(label)
    if isinstance(label, int) and 0 <= label < len(labels):
        return labels[label]
    if isinstance(label, str) and label in labels:
        return label
    raise ValueError(f"{where}: label {label!r} is not one of {labels}")


def _load_cb(config):
    raw = _load_superglue(config, "cb", "CB")

    def fmt(row, idx):
        for key in ("premise", "hypothesis", "label"):
            if row.get(key) is None:
                raise ValueError(f"task cb: row {idx} has no {key!r} field")
        return {
            "source": f"premise: {row['premise']} hypothesis: {row['hypothesis']}",
            "target": _label_text(row["label"], CB_LABELS, f"task cb: row {idx}"),
        }

    raw = {k: v.map(fmt, with_indices=True, remove_columns=v.column_names) for k, v in raw.items()}
    return _split(config, raw)


def _cb_metrics(predictions, examples):
    return classification_metrics(predictions, list(examples["target"]), CB_LABELS, macro_f1=True)


register(Task(
    name="cb", load=_load_cb, metrics=_cb_metrics, labels=CB_LABELS, max_new_tokens=8,
    description="SuperGLUE CommitmentBank (accuracy, macro-F1)", metric_names=["accuracy", "macro_f1"],
))

"""GLUE: mnli, qqp, qnli, sst2, stsb, mrpc, rte, cola.

Local data: `task.data_dir` is one task's directory of the GLUE download (train.tsv, dev.tsv;
MNLI dev_matched.tsv and dev_mismatched.tsv), read without quote processing like the GLUE
tools. Hub: nyu-mll/glue. Targets are the class index as a string ("0", "1", ...), as in the
DePT/ADePT reference code; the index order is the hub dataset's.

Example ids (`id`): the hub's `idx`, which is the row's 0-based position among the data rows of
the official file. Local files with an `index` column (MNLI, QNLI, RTE, STS-B) carry exactly
that number, so it is read from the file, and it survives in subsets of the official files (the
LM-BFF k-shot samples in data/glue); files without one (CoLA, SST-2, MRPC) get the data-row
position. QQP's `id` column is Quora's question-pair id, not the row position the hub's `idx`
holds, so QQP files get the position as well.
"""

from __future__ import annotations

from pathlib import Path

from . import metrics as M
from .registry import BOOL_ALIASES, Task, prefixed_classification, register
from .sources import DataError, find_file, from_file, from_hub, iter_tsv, text_field, use_local

HUB = "nyu-mll/glue"

# file columns -> hub columns; CoLA's train/dev files have no header line
COLUMNS = {
    "cola": (["source", "label", "original_label", "sentence"], {"sentence": "sentence", "label": "label"}),
    "sst2": (None, {"sentence": "sentence", "label": "label"}),
    "mrpc": (None, {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
    "qqp": (None, {"question1": "question1", "question2": "question2", "label": "is_duplicate"}),
    "stsb": (None, {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}),
    "mnli": (None, {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}),
    "qnli": (None, {"question": "question", "sentence": "sentence", "label": "label"}),
    "rte": (None, {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
}
FILES = {
    "train": ["train.tsv"],
    "validation": ["dev.tsv"],
    "validation_matched": ["dev_matched.tsv"],
    "validation_mismatched": ["dev_mismatched.tsv"],
}


def glue_rows(path: Path, task: str):
    fixed, mapping = COLUMNS[task]
    for line_no, row in iter_tsv(path, columns=fixed):
        missing = [col for col in mapping.values() if col not in row]
        if missing:
            raise DataError(f"{path}: line {line_no}: no column {missing[0]!r} (columns: {sorted(row)})")
        index = row.get("index")
        if index is not None and not index.strip().isdigit():
            raise DataError(f"{path}: line {line_no}: index {index!r} is not a row number")
        yield {
            "_line": line_no,
            "idx": int(index) if index is not None else None,
            **{key: row[col] for key, col in mapping.items()},
        }


def _reader(task: str, splits: list[str]):
    def read(config):
        if use_local(config):
            return {s: from_file(glue_rows, find_file(config, s, FILES[s]), task=task) for s in splits}
        return {s: from_hub(HUB, task, s) for s in splits}

    return read


def stsb_target(score) -> str:
    """Round to the nearest 0.2 (the reference computes round((x*5)/5, 1), which rounds to 0.1)."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise ValueError(f"label {score!r} is not a similarity score") from None
    if not 0.0 <= value <= 5.0:
        raise ValueError(f"label {score!r} is outside the score range [0, 5]")
    return f"{round(value * 5) / 5:.1f}"


def _format_stsb(row):
    return {
        "source": f"sentence1: {text_field(row, 'sentence1')} sentence2: {text_field(row, 'sentence2')}",
        "target": stsb_target(row.get("label")),
    }


def _stsb_metrics(predictions, examples):
    return M.correlations(predictions, list(examples["target"]))


TRAIN_VAL = ["train", "validation"]


def _classification(name, description, fields, classes, metric_names, protocol, aliases=None):
    labels = [str(i) for i in range(len(classes))]
    register(
        Task(
            name=name,
            family="glue",
            description=description,
            read=_reader(
                name, TRAIN_VAL if name != "mnli" else ["train", "validation_matched", "validation_mismatched"]
            ),
            format=prefixed_classification(fields, classes, aliases),
            metrics=M.classification(metric_names, labels),
            metric_names=metric_names,
            protocol=protocol,
            labels=labels,
            hub=f"{HUB}/{name}",
        )
    )


_classification(
    "mnli",
    "MultiNLI, 3-way entailment (accuracy; mismatched = validation, matched = test)",
    [("premise", "premise"), ("hypothesis", "hypothesis")],
    ["entailment", "neutral", "contradiction"],
    ["accuracy"],
    "mnli",
)
_classification(
    "qqp",
    "Quora Question Pairs, duplicate or not (F1, accuracy)",
    [("question1", "question1"), ("question2", "question2")],
    ["not_duplicate", "duplicate"],
    ["f1", "accuracy"],
    "carve",
)
_classification(
    "qnli",
    "Question NLI: does the sentence answer the question (accuracy)",
    [("question", "question"), ("sentence", "sentence")],
    ["entailment", "not_entailment"],
    ["accuracy"],
    "carve",
)
_classification(
    "sst2",
    "Stanford Sentiment Treebank, binary (accuracy)",
    [("sentence", "sentence")],
    ["negative", "positive"],
    ["accuracy"],
    "carve",
)
_classification(
    "mrpc",
    "Microsoft Research Paraphrase Corpus (F1, accuracy)",
    [("sentence1", "sentence1"), ("sentence2", "sentence2")],
    ["not_equivalent", "equivalent"],
    ["f1", "accuracy"],
    "halve",
)
_classification(
    "rte",
    "Recognizing Textual Entailment, GLUE files (accuracy)",
    [("sentence1", "sentence1"), ("sentence2", "sentence2")],
    ["entailment", "not_entailment"],
    ["accuracy"],
    "halve",
)
_classification(
    "cola",
    "Corpus of Linguistic Acceptability (Matthews correlation)",
    [("sentence", "sentence")],
    ["unacceptable", "acceptable"],
    ["matthews"],
    "halve",
    BOOL_ALIASES,
)

register(
    Task(
        name="stsb",
        family="glue",
        description="Semantic Textual Similarity, score rounded to 0.2 (Pearson, Spearman)",
        read=_reader("stsb", TRAIN_VAL),
        format=_format_stsb,
        metrics=_stsb_metrics,
        metric_names=["pearson", "spearman"],
        protocol="halve",
        labels=[f"{i / 5:.1f}" for i in range(26)],
        hub=f"{HUB}/stsb",
    )
)

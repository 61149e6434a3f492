"""winogrande, yelp_polarity, scitail, paws.

Local files (in `task.data_dir`, or one by one in `task.files`):
  winogrande     train_<size>.jsonl (size = task.subset, default xl) and dev.jsonl, with the
                 answers in the rows or in the `<name>-labels.lst` files beside them
  yelp_polarity  train.csv and test.csv of yelp_review_polarity_csv (no header: label 1/2, text)
  scitail        SciTail tsv_format: scitail_1.0_train.tsv, scitail_1.0_dev.tsv (premise, hypothesis, label)
  paws           PAWS-Wiki labeled_final train.tsv, dev.tsv, test.tsv (id, sentence1, sentence2, label)
Example ids (`id`): WinoGrande's `qID` (strings; hub rows, which have none, get their row
position as a string), PAWS's `id` (an int, as on the hub); Yelp and SciTail have no ids, so
the 0-based row position in the official split file.
Fix to the reference code: WinoGrande shows option1 AND option2 (the reference prints option1
in both slots, so the model cannot see the second candidate).
"""

from __future__ import annotations

from pathlib import Path

from . import metrics as M
from .registry import BINARY, Task, label_index, register
from .sources import (
    DataError,
    as_label_text,
    find_file,
    from_file,
    from_hub,
    iter_jsonl,
    iter_tsv,
    text_field,
    use_local,
)


# ---- WinoGrande --------------------------------------------------------------------------------
def winogrande_rows(path: Path):
    labels_file = path.with_name(f"{path.stem}-labels.lst")
    labels = labels_file.read_text().split() if labels_file.is_file() else None
    for i, (line_no, obj) in enumerate(iter_jsonl(path)):
        answer = obj.get("answer") or (labels[i] if labels and i < len(labels) else None)
        yield {
            "_line": line_no,
            "qID": obj.get("qID"),
            "sentence": obj.get("sentence"),
            "option1": obj.get("option1"),
            "option2": obj.get("option2"),
            "answer": as_label_text(answer),
        }


def _read_winogrande(config):
    size = config.subset or "xl"
    if use_local(config):
        files = {"train": [f"train_{size}.jsonl"], "validation": ["dev.jsonl"]}
        return {s: from_file(winogrande_rows, find_file(config, s, files[s])) for s in files}
    return {s: from_hub("allenai/winogrande", f"winogrande_{size}", s) for s in ("train", "validation")}


def _winogrande_id(row, position) -> str:
    return row.get("qID") or str(position)


def _format_winogrande(row):
    answer = str(row.get("answer") or "").strip()
    if answer not in ("1", "2"):
        raise ValueError(
            f"answer {row.get('answer')!r} is not 1 or 2" if row.get("answer") else "missing field 'answer'"
        )
    sentence, first, second = (text_field(row, key) for key in ("sentence", "option1", "option2"))
    source = f"sentence: {sentence} option0: {first} option1: {second}"
    return {"source": source, "target": str(int(answer) - 1)}


# ---- Yelp polarity -----------------------------------------------------------------------------
def yelp_rows(path: Path):
    for line_no, row in iter_tsv(path, columns=["label", "text"], delimiter=","):
        text = row["text"].replace("\\n", "\n").replace('\\"', '"')  # the csv escapes newlines and quotes
        yield {"_line": line_no, "text": text, "label": row["label"]}


def _read_yelp(config):
    if use_local(config):  # the official test set fills the "validation" slot: the protocol makes it the test split
        return {
            "train": from_file(yelp_rows, find_file(config, "train", ["train.csv"])),
            "validation": from_file(yelp_rows, find_file(config, "validation", ["test.csv"])),
        }
    return {
        "train": from_hub("fancyzhx/yelp_polarity", None, "train"),
        "validation": from_hub("fancyzhx/yelp_polarity", None, "test"),
    }


def _format_yelp(row):
    label = row.get("label")
    if isinstance(label, str):  # the csv's 1 (negative) / 2 (positive)
        label = {"1": 0, "2": 1}.get(label.strip(), label)
    return {
        "source": f"sentence: {text_field(row, 'text')}",
        "target": str(label_index(label, ["negative", "positive"])),
    }


# ---- SciTail -----------------------------------------------------------------------------------
def scitail_rows(path: Path):
    for line_no, row in iter_tsv(path, columns=["premise", "hypothesis", "label"]):
        yield {"_line": line_no, **row}


def _read_scitail(config):
    if use_local(config):
        files = {"train": ["scitail_1.0_train.tsv", "train.tsv"], "validation": ["scitail_1.0_dev.tsv", "dev.tsv"]}
        return {s: from_file(scitail_rows, find_file(config, s, files[s])) for s in files}
    return {s: from_hub("allenai/scitail", "tsv_format", s) for s in ("train", "validation")}


def _format_scitail(row):
    target = label_index(row.get("label"), ["entailment", "neutral"], {"entails": 0})
    return {
        "source": f"premise: {text_field(row, 'premise')} hypothesis: {text_field(row, 'hypothesis')}",
        "target": str(target),
    }


# ---- PAWS --------------------------------------------------------------------------------------
def paws_rows(path: Path):
    for line_no, row in iter_tsv(path, columns=["id", "sentence1", "sentence2", "label"]):
        if not row["id"].strip().isdigit():
            raise DataError(f"{path}: line {line_no}: id {row['id']!r} is not a number")
        yield {"_line": line_no, **row, "id": int(row["id"])}  # an int, as on the hub


def _read_paws(config):
    if use_local(config):
        files = {"train": ["train.tsv"], "validation": ["dev.tsv"], "test": ["test.tsv"]}
        return {s: from_file(paws_rows, find_file(config, s, files[s])) for s in files}
    return {s: from_hub("google-research-datasets/paws", "labeled_final", s) for s in ("train", "validation", "test")}


def _format_paws(row):
    source = f"sentence1: {text_field(row, 'sentence1')} sentence2: {text_field(row, 'sentence2')}"
    return {"source": source, "target": str(label_index(row.get("label"), ["different", "paraphrase"]))}


ACCURACY = M.classification(["accuracy"], BINARY)
for _name, _description, _read, _format, _protocol, _hub, _id_key in [
    (
        "winogrande",
        "WinoGrande fill-in-the-blank, two options (accuracy)",
        _read_winogrande,
        _format_winogrande,
        "carve",
        "allenai/winogrande",
        _winogrande_id,
    ),
    (
        "yelp_polarity",
        "Yelp review polarity (accuracy)",
        _read_yelp,
        _format_yelp,
        "carve",
        "fancyzhx/yelp_polarity",
        "idx",
    ),
    (
        "scitail",
        "SciTail science entailment (accuracy)",
        _read_scitail,
        _format_scitail,
        "halve",
        "allenai/scitail/tsv_format",
        "idx",
    ),
    (
        "paws",
        "PAWS-Wiki labeled final paraphrase adversaries (accuracy)",
        _read_paws,
        _format_paws,
        "own",
        "google-research-datasets/paws/labeled_final",
        "id",
    ),
]:
    register(
        Task(
            name=_name,
            family="other",
            description=_description,
            read=_read,
            format=_format,
            metrics=ACCURACY,
            metric_names=["accuracy"],
            protocol=_protocol,
            labels=BINARY,
            hub=_hub,
            id_key=_id_key,
        )
    )

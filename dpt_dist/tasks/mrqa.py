"""MRQA extractive QA as span extraction by generation: squad, nq, hotpotqa, searchqa, newsqa,
and `mrqa` for any MRQA-format file (e.g. the out-of-domain DROP, DuoRC, RelationExtraction
dev files).

Format: `question: … context: …` -> the answer text. Local data: the official jsonl / jsonl.gz
files (first line a header naming the dataset), found as `<data_dir>/{train,dev}/<Name>.jsonl.gz`
or given one by one in `task.files` (a split may list several files: their datasets are
scored separately and macro-averaged). Hub: mrqa-workshop/mrqa, filtered by subset.

Fixes to the reference code: targets are not cut to 20 tokens, and every prediction is scored
against ALL gold answers (the reference uses answers[0] only). In training, a context too long
for the source budget is cut to a window that keeps the answer span (`fit_source`); evaluation
truncates at the end, as it must not know the answer.

Example ids (`id`): the question's `qid`, the key of the official MRQA prediction files.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from . import metrics as M
from .registry import Task, register
from .sources import DataError, RawSplit, find_file, from_file, from_hub, iter_jsonl, text_field, use_local

HUB = "mrqa-workshop/mrqa"
NAMES = {
    "squad": "SQuAD",
    "nq": "NaturalQuestionsShort",
    "hotpotqa": "HotpotQA",
    "searchqa": "SearchQA",
    "newsqa": "NewsQA",
}


def mrqa_rows(path: Path):
    """One row per question, with the dataset name from the header line (else the file name)."""
    dataset = path.name.split(".")[0]
    for line_no, obj in iter_jsonl(path):
        if "header" in obj:
            dataset = obj["header"].get("dataset", dataset)
            continue
        for qa in obj.get("qas") or []:
            detected = qa.get("detected_answers") or []
            spans = detected[0].get("char_spans") if detected else None
            yield {
                "_line": line_no,
                "dataset": dataset,
                "qid": qa.get("qid"),
                "context": obj.get("context"),
                "question": qa.get("question"),
                "answers": list(qa.get("answers") or []),
                "answer_text": detected[0].get("text") if detected else None,
                "answer_start": int(spans[0][0]) if spans else -1,
            }


def _files(config, split: str, candidates: list[str]) -> list[Path]:
    given = (config.files or {}).get(split)
    if isinstance(given, (list, tuple)):
        return [Path(p) for p in given]
    return [find_file(config, split, candidates)]


def _read_local(config, split: str, candidates: list[str]) -> RawSplit:
    parts = [from_file(mrqa_rows, p) for p in _files(config, split, candidates)]
    if len(parts) == 1:
        return parts[0]
    return RawSplit(
        datasets.concatenate_datasets([p.rows for p in parts]), " + ".join(p.origin for p in parts), local=True
    )


def _reader(name: str | None):
    def read(config):
        if name is None:  # the generic task: files named in the config
            if not config.files or "train" not in config.files or "validation" not in config.files:
                raise DataError(
                    "task mrqa: set task.files.train and task.files.validation (and optionally task.files.test) "
                    "to MRQA-format .jsonl or .jsonl.gz files"
                )
            splits = ["train", "validation"] + (["test"] if "test" in config.files else [])
            return {s: _read_local(config, s, []) for s in splits}
        title = NAMES[name]
        if use_local(config):
            cands = {
                "train": [f"train/{title}.jsonl.gz", f"train/{title}.jsonl"],
                "validation": [f"{d}/{title}.{ext}" for d in ("dev", "in_domain_dev") for ext in ("jsonl.gz", "jsonl")],
            }
            return {s: _read_local(config, s, cands[s]) for s in ("train", "validation")}
        out = {}
        for split in ("train", "validation"):
            raw = from_hub(HUB, None, split)
            out[split] = RawSplit(
                raw.rows.filter(lambda r: r["subset"] == title), f"{raw.origin} subset {title}", local=False
            )
        return out

    return read


def _format(row):
    if "detected_answers" in row:  # a hub row
        detected = row["detected_answers"] or {}
        texts = detected.get("text") or []
        spans = detected.get("char_spans") or []
        row = {
            **row,
            "dataset": row.get("subset"),
            "answer_text": texts[0] if texts else None,
            "answer_start": int(spans[0]["start"][0]) if spans and spans[0]["start"] else -1,
        }
    answers = [a for a in (row.get("answers") or []) if a and a.strip()]
    target = row.get("answer_text") or (answers[0] if answers else None)
    if not target:
        raise ValueError("no answers")
    question, context = text_field(row, "question"), text_field(row, "context")
    return {
        "source": f"question: {question} context: {context}",
        "target": target,
        "answers": answers or [target],
        "question": question,
        "context": context,
        "dataset": str(row.get("dataset") or "mrqa"),
        "answer_start": int(row["answer_start"]) if row.get("answer_start") is not None else -1,
    }


def fit_source(batch: dict, tokenizer, max_length: int) -> list[str]:
    """Training sources whose context is cut to a window around the answer when the whole
    `question: … context: …` would not fit in `max_length` tokens."""
    out = []
    for question, context, start, answer, source in zip(
        batch["question"], batch["context"], batch["answer_start"], batch["target"], batch["source"]
    ):
        if start < 0 or len(tokenizer(source)["input_ids"]) <= max_length:
            out.append(source)
            continue
        prefix = f"question: {question} context: "
        offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        first = next((i for i, (_, e) in enumerate(offsets) if e > start), len(offsets) - 1)
        last = max((i for i, (s, _) in enumerate(offsets) if s < start + len(answer)), default=first)
        budget = max_length - len(tokenizer(prefix)["input_ids"])
        fitted = source
        for _ in range(4):  # re-tokenising a cut context can shift a token or two: shrink and retry
            if budget <= 0:
                break
            lo = (
                first
                if last - first + 1 >= budget
                else max(0, min(first - (budget - (last - first + 1)) // 2, len(offsets) - budget))
            )
            hi = min(len(offsets), lo + budget) - 1
            fitted = prefix + context[offsets[lo][0] : offsets[hi][1]]
            excess = len(tokenizer(fitted)["input_ids"]) - max_length
            if excess <= 0:
                break
            budget -= excess
        out.append(fitted)
    return out


def _metrics(predictions, examples):
    return M.qa_metrics(predictions, list(examples["answers"]), list(examples["context"]), list(examples["dataset"]))


COMMON = dict(
    family="mrqa",
    format=_format,
    metrics=_metrics,
    metric_names=["f1", "em", "span_share"],
    max_source_length=512,
    max_target_length=128,
    max_new_tokens=64,
    fit_source=fit_source,
    id_key="qid",
)
for _name, _title in NAMES.items():
    register(
        Task(
            name=_name,
            description=f"MRQA {_title}, answer generated from the context (F1, EM, span share)",
            read=_reader(_name),
            protocol="carve",
            hub=f"{HUB} subset {_title}",
            **COMMON,
        )
    )
register(
    Task(
        name="mrqa",
        description="any MRQA-format file(s) named in task.files (F1, EM, span share; datasets macro-averaged)",
        read=_reader(None),
        protocol="own",
        **COMMON,
    )
)

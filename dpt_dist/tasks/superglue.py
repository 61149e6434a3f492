"""SuperGLUE: boolq, cb, copa, multirc, record, rte, wic, wsc.

Local data: `task.data_dir` is one task's directory of the SuperGLUE download (train.jsonl,
val.jsonl). BoolQ also reads Google's original files (train.jsonl.gz / dev.jsonl.gz, with
`answer` and `title`). Hub: aps/super_glue. Readers yield the hub schema: MultiRC one row per
answer option, ReCoRD one row per query, each with the file's `idx` as the hub has it.

Example ids (`id`), keyed as the official SuperGLUE submission files key predictions:
- boolq, cb, copa, rte, wic, wsc: the row's `idx` (Google's original BoolQ files have none: the
  row position, which is the SuperGLUE `idx` of the same row).
- multirc: one example is one answer option, and the submission file (MultiRC.jsonl) nests
  `{"idx": paragraph, "passage": {"questions": [{"idx": question, "answers": [{"idx": answer,
  "label": 0/1}]}]}}`, so an option is identified by its three idx values: the id is the string
  "<paragraph>-<question>-<answer>" (`group` is its "<paragraph>-<question>" prefix), from
  which the nested file can be rebuilt; answer idx alone is unique in the official files but
  does not say where the answer goes.
- record: one evaluation example is one query, and the submission file (ReCoRD.jsonl) has one
  `{"idx": <query idx>, "label": <answer>}` line per query: the id is the query's `idx` (an int);
  the training copies made one per answer keep it.
(T5's and jiant's SuperGLUE submission writers key the two files by exactly these idx values.)

Fixes to the reference code, on purpose:
- COPA keeps its question (cause / effect); the reference drops it, which makes half the
  examples ambiguous.
- WSC spans are located with an escaped pattern at the given word index, falling back to the
  nearest occurrence when the original (unfixed) index is off, instead of a raw regex that
  silently leaves the text unmarked.
- ReCoRD evaluates one row per query against all its answers (the reference scores every
  duplicated copy against one answer); training still gets one row per answer.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import metrics as M
from .registry import BINARY, BOOL_ALIASES, Task, label_index, prefixed_classification, register
from .sources import as_label_text, find_file, from_file, from_hub, iter_jsonl, text_field, use_local

HUB = "aps/super_glue"
FILES = {"train": ["train.jsonl", "train.jsonl.gz"], "validation": ["val.jsonl", "dev.jsonl", "dev.jsonl.gz"]}
FIELDS = {
    "boolq": ["question", "passage"],
    "cb": ["premise", "hypothesis"],
    "copa": ["premise", "choice1", "choice2", "question"],
    "rte": ["premise", "hypothesis"],
    "wic": ["word", "sentence1", "sentence2"],
}


def superglue_rows(path: Path, task: str):
    for line_no, obj in iter_jsonl(path):
        row = {"_line": line_no, "idx": obj.get("idx"), "label": as_label_text(obj.get("label", obj.get("answer")))}
        if task == "wsc":
            spans = obj.get("target") or {}
            row.update(
                text=obj.get("text"),
                span1_text=spans.get("span1_text"),
                span2_text=spans.get("span2_text"),
                span1_index=spans.get("span1_index"),
                span2_index=spans.get("span2_index"),
            )
        else:
            row.update({key: obj.get(key) for key in FIELDS[task]})
            if task == "boolq" and obj.get("title") and obj.get("passage"):  # Google's original format
                row["passage"] = f"{obj['title']} -- {obj['passage']}"
        yield row


def multirc_rows(path: Path):
    """One row per answer option, as the hub dataset has it."""
    for line_no, obj in iter_jsonl(path):
        passage = obj.get("passage") or {}
        for question in passage.get("questions") or []:
            for answer in question.get("answers") or []:
                yield {
                    "_line": line_no,
                    "paragraph": passage.get("text"),
                    "question": question.get("question"),
                    "answer": answer.get("text"),
                    "label": as_label_text(answer.get("label")),
                    "idx": {"paragraph": obj.get("idx"), "question": question.get("idx"), "answer": answer.get("idx")},
                }


def record_rows(path: Path):
    """One row per query; entities and answers as sorted unique strings (as on the hub)."""
    for line_no, obj in iter_jsonl(path):
        passage = obj.get("passage") or {}
        text = passage.get("text") or ""
        entities = sorted({text[e["start"] : e["end"] + 1] for e in passage.get("entities") or []})
        for qa in obj.get("qas") or []:
            yield {
                "_line": line_no,
                "passage": text,
                "query": qa.get("query"),
                "entities": entities,
                "answers": sorted({a["text"] for a in qa.get("answers") or []}),
                "idx": {"passage": obj.get("idx"), "query": qa.get("idx")},
            }


def _reader(task: str, hub_config: str, rows=None):
    def read(config):
        if use_local(config):
            reader = rows or superglue_rows
            kwargs = {} if rows else {"task": task}
            return {s: from_file(reader, find_file(config, s, FILES[s]), **kwargs) for s in ("train", "validation")}
        return {s: from_hub(HUB, hub_config, s) for s in ("train", "validation")}

    return read


# ---- WSC ---------------------------------------------------------------------------------------
def mark_span(text: str, span: str, word_index: int, mark: str) -> str:
    """Surround `span`, which starts at whitespace-word `word_index`, with ` mark ` (T5's WSC
    format: `* noun *`, `# pronoun #`). If the index is off (the unfixed SuperGLUE file has a few
    such rows), the occurrence nearest to it is marked."""
    pattern = r"(?:^|(?<=\s))(" + r"\s+".join(re.escape(w) for w in span.split()) + ")"  # any white space between words
    hits = [(m.start(1), m.end(1), len(text[: m.start(1)].split())) for m in re.finditer(pattern, text, re.IGNORECASE)]
    if not hits:
        raise ValueError(f"span {span!r} does not occur in the text")
    start, end, _ = min(hits, key=lambda h: (abs(h[2] - word_index), h[0]))
    return f"{text[:start]}{mark} {text[start:end]} {mark}{text[end:]}"


def _format_wsc(row):
    text = text_field(row, "text")
    for key in ("span1_text", "span2_text", "span1_index", "span2_index"):
        if row.get(key) is None:
            raise ValueError(f"missing field {key!r}")
    i1, i2 = int(row["span1_index"]), int(row["span2_index"])
    text = mark_span(text, row["span1_text"], i1, "*")
    text = mark_span(text, row["span2_text"], i2 + 2 * (i1 < i2), "#")  # marking added two words before it
    return {"source": f"text: {text}", "target": str(label_index(row.get("label"), ["False", "True"], BOOL_ALIASES))}


# ---- MultiRC -----------------------------------------------------------------------------------
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\s*/?>")


def strip_html(text: str) -> str:
    return _TAG.sub("", _BREAK.sub(" ", text))


def _multirc_idx(row) -> tuple:
    idx = row.get("idx") or {}
    parts = tuple(idx.get(key) for key in ("paragraph", "question", "answer"))
    if any(part is None for part in parts):
        raise ValueError("missing field 'idx' (the paragraph, question and answer idx)")
    return parts


def _multirc_id(row, position) -> str:
    """`<paragraph>-<question>-<answer>` idx: what places an option in MultiRC.jsonl (module docstring)."""
    return "-".join(str(part) for part in _multirc_idx(row))


def _format_multirc(row):
    paragraph, question, _ = _multirc_idx(row)
    source = (
        f"question: {strip_html(text_field(row, 'question'))} answer: {strip_html(text_field(row, 'answer'))} "
        f"paragraph: {strip_html(text_field(row, 'paragraph'))}"
    )
    return {
        "source": source,
        "target": str(label_index(row.get("label"), ["False", "True"], BOOL_ALIASES)),
        "group": f"{paragraph}-{question}",
    }


# ---- ReCoRD ------------------------------------------------------------------------------------
def record_passage(passage: str) -> str:
    """Highlights become sentences (the reference's preprocessing)."""
    passage = re.sub(r"(\.|\?|!|\"|')\n@highlight\n", r"\1 ", passage)
    return re.sub(r"\n@highlight\n", ". ", passage)


def _format_record(row):
    answers = list(row.get("answers") or [])
    if not answers:
        raise ValueError("no answers")
    entities = list(row.get("entities") or [])
    passage = record_passage(text_field(row, "passage"))
    source = f"record query: {text_field(row, 'query')} entities: {', '.join(entities)} passage: {passage}"
    return {"source": source, "target": answers[0], "answers": answers}


def _explode_answers(batch):
    out = {key: [] for key in batch}
    for i, answers in enumerate(batch["answers"]):
        for answer in answers:
            for key in batch:
                out[key].append(answer if key == "target" else batch[key][i])
    return out


def _record_train(ds):
    """Training sees one copy of a query per gold answer (as the reference trains)."""
    return ds.map(_explode_answers, batched=True, desc="record: one row per answer")


def _record_id(row, position) -> int:
    """The query's idx: the key of ReCoRD.jsonl (module docstring)."""
    query = (row.get("idx") or {}).get("query")
    if query is None:
        raise ValueError("missing field 'idx' (the query idx)")
    return query


def _record_metrics(predictions, examples):
    return M.qa_metrics(predictions, list(examples["answers"]))


# ---- registry ------------------------------------------------------------------------------------
def _classification(name, description, fields, classes, metric_names, aliases=None, hub_config=None):
    labels = [str(i) for i in range(len(classes))]
    register(
        Task(
            name=name,
            family="superglue",
            description=description,
            read=_reader(hub_config or name, hub_config or name),
            format=prefixed_classification([(f, f) for f in fields], classes, aliases),
            metrics=M.classification(metric_names, labels),
            metric_names=metric_names,
            protocol="halve",
            labels=labels,
            hub=f"{HUB}/{hub_config or name}",
        )
    )


_classification(
    "boolq", "BoolQ yes/no questions (accuracy)", ["question", "passage"], ["False", "True"], ["accuracy"], BOOL_ALIASES
)
_classification(
    "cb",
    "CommitmentBank, 3-way entailment (accuracy, macro-F1)",
    ["premise", "hypothesis"],
    ["entailment", "contradiction", "neutral"],
    ["accuracy", "macro_f1"],
)
_classification(
    "copa",
    "Choice of Plausible Alternatives (accuracy)",
    ["premise", "question", "choice1", "choice2"],
    ["choice1", "choice2"],
    ["accuracy"],
)
_classification(
    "superglue-rte",
    "Recognizing Textual Entailment, SuperGLUE files (accuracy)",
    ["premise", "hypothesis"],
    ["entailment", "not_entailment"],
    ["accuracy"],
    hub_config="rte",
)
_classification(
    "wic",
    "Words in Context (accuracy)",
    ["sentence1", "sentence2", "word"],
    ["False", "True"],
    ["accuracy"],
    BOOL_ALIASES,
)

register(
    Task(
        name="wsc",
        family="superglue",
        description="Winograd Schema Challenge, noun *marked*, pronoun #marked# (accuracy)",
        read=_reader("wsc", "wsc.fixed"),
        format=_format_wsc,
        metrics=M.classification(["accuracy"], BINARY),
        metric_names=["accuracy"],
        protocol="halve",
        labels=BINARY,
        hub=f"{HUB}/wsc.fixed",
    )
)
register(
    Task(
        name="multirc",
        family="superglue",
        description="Multi-Sentence Reading Comprehension, per answer option (F1 over options, EM per question)",
        read=_reader("multirc", "multirc", rows=multirc_rows),
        format=_format_multirc,
        metrics=M.multirc_metrics,
        metric_names=["f1", "em"],
        protocol="halve",
        labels=BINARY,
        max_source_length=348,
        hub=f"{HUB}/multirc",
        id_key=_multirc_id,
    )
)
register(
    Task(
        name="record",
        family="superglue",
        description="Reading Comprehension with Commonsense Reasoning (F1, EM; max over answers)",
        read=_reader("record", "record", rows=record_rows),
        format=_format_record,
        metrics=_record_metrics,
        metric_names=["f1", "em"],
        protocol="carve",
        max_source_length=512,
        max_target_length=64,
        max_new_tokens=32,
        expand_train=_record_train,
        hub=f"{HUB}/record",
        id_key=_record_id,
    )
)

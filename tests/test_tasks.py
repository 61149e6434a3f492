"""The task router on the real files in data/: formats (golden), example ids, splits, metrics, bad input."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import datasets
import pytest
from conftest import ROOT

from dpt_dist.config import TaskConfig
from dpt_dist.tasks import TASKS, DataError, get_task, load_splits
from dpt_dist.tasks import metrics as M
from dpt_dist.tasks.glue import stsb_target
from dpt_dist.tasks.registry import format_split
from dpt_dist.tasks.sources import RawSplit
from dpt_dist.tasks.superglue import _format_multirc, mark_span

DATA = ROOT / "data"
ISSUE_TASKS = [
    "boolq",
    "cb",
    "copa",
    "multirc",
    "record",
    "superglue-rte",
    "wic",
    "wsc",
    "mnli",
    "qqp",
    "qnli",
    "sst2",
    "stsb",
    "mrpc",
    "rte",
    "cola",
    "nq",
    "hotpotqa",
    "searchqa",
    "newsqa",
    "squad",
    "mrqa",
    "winogrande",
    "yelp_polarity",
    "scitail",
    "paws",
]


def formatted_rows(task_name: str, path, split: str = "train"):
    """(line number, formatted row) for every row of one real file."""
    task = get_task(task_name)
    files = {s: str(path) for s in ("train", "validation", "test", "validation_matched", "validation_mismatched")}
    raw = task.read(TaskConfig(name=task_name, files=files))[split]
    return list(zip(raw.rows["_line"], format_split(task, raw)))


# One real example per task with data here: (task, file, line) -> exact source and target. The
# targets are class indices as strings, as in the DePT/ADePT reference code.
GOLDEN = [
    (
        "boolq",
        "superglue/BoolQ/val.jsonl",
        107,
        "question: do you pay tax on gambling winnings in australia passage: Gambling in Australia -- Gamblers' winnings in "
        "Australia are not taxed . There are 3 main reasons for that:",
        "0",
    ),
    (
        "cb",
        "superglue/CB/val.jsonl",
        15,
        "premise: A: Your turn. B: Okay. Uh, I don't think they should abolish it. hypothesis: they should abolish it",
        "1",
    ),
    (
        "copa",
        "superglue/COPA/val.jsonl",
        33,
        "premise: I coughed. question: cause choice1: I inhaled smoke. choice2: I lowered my voice.",
        "0",
    ),
    (
        "multirc",
        "superglue/MultiRC/val.jsonl",
        37,
        "question: How many people did Susan call? answer: 5 paragraph: Susan wanted to have a birthday party. She called all of "
        "her friends. She has five friends. Her mom said that Susan can invite them all to the party. Her first friend could not "
        "go to the party because she was sick. Her second friend was going out of town. Her third friend was not so sure if her "
        "parents would let her. The fourth friend said maybe. The fifth friend could go to the party for sure. Susan was a little "
        "sad. On the day of the party, all five friends showed up. Each friend had a present for Susan. Susan was happy and sent "
        "each friend a thank you card the next week. ",
        "1",
    ),
    (
        "record",
        "superglue/ReCoRD/dev32.jsonl",
        17,
        "record query: That's not all that worries critics about @placeholder, who introduces the real world of demons and ghouls "
        "in the premiere. entities: Alan Sepinwall, CNN, Constantine, DC, Hellblazer, Hitfix.com, John Constantine, Matt Ryan, NBC "
        'passage: (CNN) -- NBC\'s "Constantine" joined the growing party of comic book-based TV series with its Friday night '
        "premiere on NBC. But critics couldn't quite agree on whether it was worth staying home (or even DVRing) to catch it. Matt "
        "Ryan stars as John Constantine, a rebellious and not very likable exorcist with an affinity for trench coats and cigarettes "
        '-- at least, that\'s how he appears in "Hellblazer," the DC comic book upon which the show is based. To adhere to network '
        "standards, Constantine ditches his bad habit for TV, a source of contention for Hitfix.com critic Alan Sepinwall and others. "
        "'Constantine,' the latest comic book based series, premiered Friday. Matt Ryan plays rebellious exorcist John Constantine. "
        "Critical response mixed",
        "Constantine",
    ),
    (
        "superglue-rte",
        "superglue/RTE/val.jsonl",
        209,
        "premise: The girl was found in Drummondville. hypothesis: Drummondville contains the girl.",
        "1",
    ),
    ("wic", "superglue/WiC/val.jsonl", 240, "sentence1: Bean curd. sentence2: Lemon curd. word: curd", "1"),
    ("wsc", "superglue/WSC/val.jsonl", 11, "text: * Jane * gave Joan candy because # she # was hungry.", "0"),
    ("cola", "glue/CoLA/dev.tsv", 224, "sentence: Wash you!", "0"),
    ("sst2", "glue/SST-2/dev.tsv", 205, "sentence: bad . ", "0"),
    (
        "mrpc",
        "glue/MRPC/dev.tsv",
        78,
        'sentence1: McCabe said he was considered a witness , not a suspect . sentence2: " He is not considered a suspect , " McCabe said .',
        "0",
    ),
    ("stsb", "glue/STS-B/dev.tsv", 534, "sentence1: man on steps sentence2: A man sits on steps.", "4.0"),
    (
        "rte",
        "glue/RTE/dev.tsv",
        210,
        "sentence1: The girl was found in Drummondville. sentence2: Drummondville contains the girl.",
        "1",
    ),
    (
        "qnli",
        "glue/QNLI/dev.tsv",
        12,
        "question: What affects the climate in Europe? sentence: Evidence of human habitation in the Alps goes back to the Paleolithic era.",
        "1",
    ),
    (
        "qqp",
        "glue/QQP/dev.tsv",
        13,
        "question1: When will the PAP lose an election? question2: Will PAP ever be defeated?",
        "1",
    ),
    ("mnli", "glue/MNLI/train.tsv", 2, "premise: That's all right. hypothesis: That's fine.", "0"),
    (
        "squad",
        "mrqa/dev/SQuAD.jsonl.gz",
        183,
        "question: What happened to his lab? context: On 7 January 1900, Tesla left Colorado Springs.[citation needed] His lab was "
        "torn down in 1904, and its contents were sold two years later to satisfy a debt.",
        "His lab was torn down",
    ),
    (
        "winogrande",
        "winogrande/dev.jsonl",
        82,
        "sentence: God liked to control the day and the night, but the _ was too bright. option0: day option1: night",
        "0",
    ),
    (
        "paws",
        "paws_wiki/dev.tsv",
        42,
        "sentence1: It was that Easipower said , sentence2: It was Easipower that said :",
        "1",
    ),
    (
        "yelp_polarity",
        "yelp_polarity/test.csv",
        3,
        "sentence: Friendly staff, same starbucks fair you get anywhere else.  Sometimes the lines can get long.",
        "1",
    ),
]


@pytest.mark.parametrize("task, path, line, source, target", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_a_real_example_is_formatted_exactly_as_the_reference(task, path, line, source, target):
    rows = [row for line_no, row in formatted_rows(task, DATA / path) if line_no == line]
    assert rows, f"no row from line {line}"
    assert {"source": source, "target": target} in [{"source": r["source"], "target": r["target"]} for r in rows]


def test_record_lists_all_entities_and_scores_against_all_answers():
    rows = [row for line_no, row in formatted_rows("record", DATA / "superglue/ReCoRD/dev32.jsonl") if line_no == 17]
    assert rows[0]["answers"] == ["Constantine", "John Constantine"]
    assert M.qa_metrics(["John Constantine"], [rows[0]["answers"]])["em"] == 100.0


def test_record_trains_on_one_copy_per_answer_but_evaluates_each_query_once():
    path = str(DATA / "superglue/ReCoRD/dev32.jsonl")
    splits = load_splits(
        get_task("record"), TaskConfig(name="record", files={"train": path, "validation": path}, validation_size=5)
    )
    queries = format_split(
        get_task("record"),
        get_task("record").read(TaskConfig(name="record", files={"train": path, "validation": path}))["train"],
    )
    assert len(splits["test"]) == len(queries) == 32  # one row per query
    carved_train = len(queries) - 5
    assert len(splits["train"]) > carved_train  # expanded: one row per gold answer
    assert all(t in a for t, a in zip(splits["train"]["target"], splits["train"]["answers"]))


def test_winogrande_shows_both_options():
    rows = formatted_rows("winogrande", DATA / "winogrande/dev.jsonl")
    raw = [json.loads(line) for line in (DATA / "winogrande/dev.jsonl").read_text().splitlines()]
    for (_, row), src in zip(rows[:50], raw[:50]):
        assert f"option0: {src['option1']} option1: {src['option2']}" in row["source"]


def test_wsc_marks_every_real_row_and_recovers_an_off_by_one_index():
    for name in ("train", "val"):
        rows = formatted_rows("wsc", DATA / f"superglue/WSC/{name}.jsonl")
        assert all(
            r["source"].count(" * ") + r["source"].startswith("text: * ") >= 2 and " # " in r["source"] for _, r in rows
        )
    assert (
        mark_span("The cat saw the dog .", "dog", 3, "#") == "The cat saw the # dog # ."
    )  # index 3 is 'the': nearest 'dog'
    assert mark_span("Mr. Smith (a+b) met him", "(a+b)", 2, "*") == "Mr. Smith * (a+b) * met him"  # no regex injection


def test_multirc_strips_html_from_hub_rows():
    row = {
        "paragraph": "<b>Sent 1: </b>Tom ran.<br><b>Sent 2: </b>He won.<br>",
        "question": "Who <i>won</i>?",
        "answer": "Tom",
        "label": 1,
        "idx": {"paragraph": 3, "question": 7, "answer": 0},
    }
    out = _format_multirc(row)
    assert out == {
        "source": "question: Who won? answer: Tom paragraph: Sent 1: Tom ran. Sent 2: He won. ",
        "target": "1",
        "group": "3-7",
    }


def test_stsb_rounds_to_the_nearest_step_of_0_2():
    assert [stsb_target(x) for x in (0, 1.13, 2.5, 4.75, 5.0)] == [
        "0.0",
        "1.2",
        "2.4",
        "4.8",
        "5.0",
    ]  # reference: 1.13 -> "1.1"


def test_mrqa_rows_keep_all_gold_answers_and_the_dataset_name():
    rows = formatted_rows("squad", DATA / "mrqa/dev/SQuAD.jsonl.gz")
    assert len(rows) == 10507
    first = rows[0][1]
    assert first["answers"] == ["Denver Broncos"] * 3 and first["dataset"] == "SQuAD"
    assert first["context"][first["answer_start"] :].startswith(first["target"])


# ---- splits ----------------------------------------------------------------------------------
def test_cb_official_validation_splits_28_28_deterministically():
    cfg = TaskConfig(name="cb", data_dir=str(DATA / "superglue/CB"))
    a, b = load_splits(get_task("cb"), cfg), load_splits(get_task("cb"), cfg)
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (250, 28, 28)
    assert list(a["validation"]["source"]) == list(b["validation"]["source"]) and list(a["test"]["source"]) == list(
        b["test"]["source"]
    )
    official = {r["source"] for _, r in formatted_rows("cb", DATA / "superglue/CB/val.jsonl")}
    assert set(a["validation"]["source"]).isdisjoint(a["test"]["source"])
    assert set(a["validation"]["source"]) | set(a["test"]["source"]) == official


@pytest.mark.parametrize("task, path", [("superglue-rte", "superglue/RTE/val.jsonl"), ("rte", "glue/RTE/dev.tsv")])
def test_rte_277_splits_138_139(task, path):
    files = {"train": str(DATA / path), "validation": str(DATA / path)}
    splits = load_splits(get_task(task), TaskConfig(name=task, files=files))
    assert (len(splits["validation"]), len(splits["test"])) == (138, 139)


def test_a_large_task_moves_exactly_1000_training_examples_to_validation():
    cfg = TaskConfig(name="winogrande", data_dir=str(DATA / "winogrande"), subset="m")
    splits = load_splits(get_task("winogrande"), cfg)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (2558 - 1000, 1000, 1267)
    everything = [r["source"] for _, r in formatted_rows("winogrande", DATA / "winogrande/train_m.jsonl")]
    # every training row lands in exactly one of train / validation (the file has a few duplicate rows)
    assert Counter(splits["train"]["source"]) + Counter(splits["validation"]["source"]) == Counter(everything)


def test_official_mode_reports_on_the_official_validation_set():
    splits = load_splits(
        get_task("cb"), TaskConfig(name="cb", data_dir=str(DATA / "superglue/CB"), split_mode="official")
    )
    assert len(splits["validation"]) == len(splits["test"]) == 56


def test_mnli_uses_mismatched_for_validation_and_matched_for_test():
    files = {
        "train": str(DATA / "glue/MNLI/train.tsv"),
        "validation_matched": str(DATA / "glue/MNLI/dev_matched.tsv"),
        "validation_mismatched": str(DATA / "glue/MNLI/train.tsv"),
    }
    splits = load_splits(get_task("mnli"), TaskConfig(name="mnli", files=files))
    matched = [r["source"] for _, r in formatted_rows("mnli", DATA / "glue/MNLI/dev_matched.tsv")]
    assert list(splits["test"]["source"]) == matched and list(splits["validation"]["source"]) == list(
        splits["train"]["source"]
    )


# ---- example ids -------------------------------------------------------------------------------
# The id of each GOLDEN row, read from its file: SuperGLUE `idx`, GLUE `index` column or data-row
# position (CoLA has no header line, SST-2 / MRPC one), MultiRC "<paragraph>-<question>-<answer>",
# ReCoRD the query idx, MRQA qid, WinoGrande qID, PAWS id, Yelp the row position.
GOLDEN_IDS = {
    "boolq": 106,
    "cb": 14,
    "copa": 32,
    "multirc": "36-425-2147",
    "record": 80808,
    "superglue-rte": 208,
    "wic": 239,
    "wsc": 10,
    "cola": 223,
    "sst2": 203,
    "mrpc": 76,
    "stsb": 532,
    "rte": 208,
    "qnli": 36429,
    "qqp": 11,
    "mnli": 155219,
    "squad": "922b478b609c4bc6852d4ca763f51229",
    "winogrande": "3T8DUCXY0PK4NXNC1QUPNRZJBZBT93-1",
    "paws": 42,
    "yelp_polarity": 2,
}


@pytest.mark.parametrize("task, path, line, source, target", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_a_real_example_carries_its_own_id_from_the_file(task, path, line, source, target):
    rows = formatted_rows(task, DATA / path)
    ids = [row["id"] for line_no, row in rows if line_no == line and row["source"] == source]
    assert ids and set(ids) == {GOLDEN_IDS[task]}


def _tv(path: str, **extra) -> dict:
    return {"files": {"train": str(DATA / path), "validation": str(DATA / path)}, **extra}


NEWSQA = str(DATA / "mrqa/samples/NewsQA_sample.jsonl")
RECORD = {
    "train": str(DATA / "superglue/ReCoRD/fewglue_train.jsonl"),
    "validation": str(DATA / "superglue/ReCoRD/dev32.jsonl"),
}
MNLI = {
    "train": str(DATA / "glue/MNLI/train.tsv"),
    "validation_matched": str(DATA / "glue/MNLI/dev_matched.tsv"),
    "validation_mismatched": str(DATA / "glue/MNLI/train.tsv"),
}
ID_CASES = {  # every registered task on local data (validation_size small enough for the carve protocol)
    "boolq": _tv("superglue/BoolQ/val.jsonl"),
    "cb": {"data_dir": str(DATA / "superglue/CB")},
    "copa": {"data_dir": str(DATA / "superglue/COPA")},
    "multirc": _tv("superglue/MultiRC/val.jsonl"),
    "record": {"files": RECORD, "validation_size": 5},
    "superglue-rte": _tv("superglue/RTE/val.jsonl"),
    "wic": _tv("superglue/WiC/val.jsonl"),
    "wsc": {"data_dir": str(DATA / "superglue/WSC")},
    "mnli": {"files": MNLI},
    "qqp": {"data_dir": str(DATA / "glue/QQP"), "validation_size": 8},
    "qnli": _tv("glue/QNLI/dev.tsv", validation_size=8),
    "sst2": _tv("glue/SST-2/dev.tsv", validation_size=100),
    "stsb": _tv("glue/STS-B/dev.tsv"),
    "mrpc": _tv("glue/MRPC/dev.tsv"),
    "rte": _tv("glue/RTE/dev.tsv"),
    "cola": _tv("glue/CoLA/dev.tsv"),
    **{
        name: {"files": {"train": NEWSQA, "validation": NEWSQA}, "validation_size": 5}
        for name in ("squad", "nq", "hotpotqa", "searchqa", "newsqa")
    },
    "mrqa": {"files": {"train": NEWSQA, "validation": [NEWSQA, str(DATA / "mrqa/dev/SQuAD.jsonl.gz")]}},
    "winogrande": {"data_dir": str(DATA / "winogrande"), "subset": "m"},
    "yelp_polarity": {"data_dir": str(DATA / "yelp_polarity"), "validation_size": 2},
    "scitail": None,  # no data in data/: a file written by the test
    "paws": {"files": {s: str(DATA / "paws_wiki/dev.tsv") for s in ("train", "validation", "test")}},
    "mbpp": {"data_dir": str(DATA / "mbpp")},
    "mbpp-sanitized": {"data_dir": str(DATA / "mbpp"), "split_mode": "official"},
}


def _scitail_config(tmp_path) -> dict:
    rows = [
        "A cat sat.\tAn animal sat.\tentails",
        "It rained.\tIt was dry.\tneutral",
        "Ice melts.\tWater freezes.\tneutral",
        "Dogs bark.\tDogs make sounds.\tentails",
    ]
    (tmp_path / "scitail_1.0_train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "scitail_1.0_dev.tsv").write_text("\n".join(rows) + "\n")
    return {"data_dir": str(tmp_path)}


def _hub(name: str, rows: list[dict]):
    """Hub-schema rows of one task, formatted as a hub split would be."""
    raw = RawSplit(datasets.Dataset.from_list(rows), f"hub:{name} split validation", local=False)
    return format_split(get_task(name), raw)


def _jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / path).read_text().splitlines()]


def test_every_registered_task_has_an_id_case():
    assert set(TASKS) == set(ID_CASES)


@pytest.mark.parametrize("name", sorted(ID_CASES))
def test_every_task_carries_its_examples_own_ids(name, tmp_path):
    task = get_task(name)
    kwargs = ID_CASES[name] if ID_CASES[name] is not None else _scitail_config(tmp_path)
    splits = load_splits(task, TaskConfig(name=name, **kwargs))
    types = set()
    for split, ds in splits.items():
        assert "id" in ds.column_names, (name, split)
        ids = list(ds["id"])
        types |= {type(i) for i in ids}
        json.dumps(ids)
        if not (split == "train" and task.expand_train is not None):  # ReCoRD trains on one copy per answer
            assert len(set(ids)) == len(ids), (name, split)  # every official file here has unique ids
    assert types in ({int}, {str}), (name, types)  # one JSON type per task
    if task.protocol == "halve":  # the halves of one official file
        assert set(splits["validation"]["id"]).isdisjoint(splits["test"]["id"])
    if task.protocol == "carve":  # train and the carved validation come from one official file
        assert set(splits["train"]["id"]).isdisjoint(splits["validation"]["id"])


@pytest.mark.parametrize(
    "task, path",
    [
        ("boolq", "superglue/BoolQ/val.jsonl"),
        ("cb", "superglue/CB/train.jsonl"),
        ("copa", "superglue/COPA/val.jsonl"),
        ("superglue-rte", "superglue/RTE/val.jsonl"),
        ("wic", "superglue/WiC/val.jsonl"),
        ("wsc", "superglue/WSC/val.jsonl"),
    ],
)
def test_superglue_ids_are_the_rows_idx(task, path):
    assert [row["id"] for _, row in formatted_rows(task, DATA / path)] == [o["idx"] for o in _jsonl(path)]


def test_superglue_and_glue_hub_rows_keep_their_idx():
    assert _hub("cb", [{"premise": "a", "hypothesis": "b", "label": 0, "idx": 5}])[0]["id"] == 5
    assert _hub("cola", [{"sentence": "Wash you!", "label": 0, "idx": 223}])[0]["id"] == 223


def test_halved_validation_and_test_keep_the_ids_of_their_rows():
    splits = load_splits(get_task("cb"), TaskConfig(name="cb", data_dir=str(DATA / "superglue/CB")))
    official = {row["source"]: row["id"] for _, row in formatted_rows("cb", DATA / "superglue/CB/val.jsonl")}
    assert len(official) == 56 and set(official.values()) == set(range(56))
    for split in ("validation", "test"):
        assert all(official[s] == i for s, i in zip(splits[split]["source"], splits[split]["id"], strict=True))
    assert set(splits["validation"]["id"]).isdisjoint(splits["test"]["id"])
    assert set(splits["validation"]["id"]) | set(splits["test"]["id"]) == set(range(56))


def test_carved_train_and_validation_keep_the_ids_of_their_rows():
    cfg = TaskConfig(name="winogrande", data_dir=str(DATA / "winogrande"), subset="m")
    splits = load_splits(get_task("winogrande"), cfg)
    sentences = {o["qID"]: o["sentence"] for o in _jsonl("winogrande/train_m.jsonl")}
    for split in ("train", "validation"):
        pairs = zip(splits[split]["source"], splits[split]["id"], strict=True)
        assert all(source.startswith(f"sentence: {sentences[i]} option0: ") for source, i in pairs)
    assert set(splits["train"]["id"]).isdisjoint(splits["validation"]["id"])
    assert set(splits["train"]["id"]) | set(splits["validation"]["id"]) == set(sentences)
    assert list(splits["test"]["id"]) == [o["qID"] for o in _jsonl("winogrande/dev.jsonl")]


def test_boolq_original_files_get_the_superglue_idx_of_the_same_row():
    rows = [row for _, row in formatted_rows("boolq", DATA / "boolq_original/dev.jsonl.gz")]
    superglue = {o["question"]: o["idx"] for o in _jsonl("superglue/BoolQ/val.jsonl")}
    with gzip.open(DATA / "boolq_original/dev.jsonl.gz", "rt") as f:
        originals = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == list(range(50)) == [superglue[o["question"]] for o in originals]


def test_multirc_ids_name_paragraph_question_and_answer_idx():
    rows = [row for _, row in formatted_rows("multirc", DATA / "superglue/MultiRC/val.jsonl")]
    expected = [
        f"{p['idx']}-{q['idx']}-{a['idx']}"
        for p in _jsonl("superglue/MultiRC/val.jsonl")
        for q in p["passage"]["questions"]
        for a in q["answers"]
    ]
    assert [r["id"] for r in rows] == expected and len(set(expected)) == 4848
    assert all(r["id"].rsplit("-", 1)[0] == r["group"] for r in rows)
    hub = {
        "paragraph": "Tom ran.",
        "question": "Who ran?",
        "answer": "Tom",
        "label": 1,
        "idx": {"paragraph": 3, "question": 7, "answer": 21},
    }
    assert _hub("multirc", [hub])[0]["id"] == "3-7-21"


def test_record_ids_are_query_idx_and_every_training_copy_keeps_its_query_id():
    dev = str(DATA / "superglue/ReCoRD/dev32.jsonl")
    cfg = TaskConfig(name="record", files={"train": dev, "validation": dev}, validation_size=5)
    splits = load_splits(get_task("record"), cfg)
    assert list(splits["test"]["id"]) == [q["idx"] for o in _jsonl("superglue/ReCoRD/dev32.jsonl") for q in o["qas"]]
    by_id = {}
    train = splits["train"]
    for i, target, answers in zip(train["id"], train["target"], train["answers"], strict=True):
        by_id.setdefault(i, (answers, []))[1].append(target)
    assert len(by_id) == 32 - 5 and set(by_id).isdisjoint(splits["validation"]["id"])
    assert all(sorted(targets) == sorted(answers) for answers, targets in by_id.values())  # one copy per answer
    hub = {
        "passage": "Tom ran.",
        "query": "@placeholder ran.",
        "entities": ["Tom"],
        "answers": ["Tom"],
        "idx": {"passage": 5, "query": 12},
    }
    assert _hub("record", [hub])[0]["id"] == 12


def test_glue_ids_are_the_index_column_or_the_data_row_position():
    def ids(task, path):
        return [row["id"] for _, row in formatted_rows(task, DATA / path)]

    for task, path in (
        ("rte", "glue/RTE/dev.tsv"),
        ("stsb", "glue/STS-B/dev.tsv"),
        ("qnli", "glue/QNLI/dev.tsv"),
        ("mnli", "glue/MNLI/dev_matched.tsv"),
    ):
        column = [int(line.split("\t")[0]) for line in (DATA / path).read_text().splitlines()[1:]]
        assert ids(task, path) == column, task  # the official row number, also in the k-shot subsets
    assert ids("qnli", "glue/QNLI/dev.tsv")[:3] == [34733, 90148, 22138]
    assert ids("cola", "glue/CoLA/dev.tsv") == list(range(1043))  # no header line
    assert ids("sst2", "glue/SST-2/dev.tsv") == list(range(872))
    assert ids("mrpc", "glue/MRPC/dev.tsv") == list(range(408))
    assert ids("qqp", "glue/QQP/dev.tsv") == list(range(32))  # the hub's idx, not Quora's pair ids (`id` column)
    # the same RTE example has the same id in the GLUE and the SuperGLUE files
    assert ids("rte", "glue/RTE/dev.tsv") == ids("superglue-rte", "superglue/RTE/val.jsonl")


def test_mrqa_ids_are_the_question_qids():
    rows = [row for _, row in formatted_rows("squad", DATA / "mrqa/dev/SQuAD.jsonl.gz")]
    assert rows[0]["question"] == "Which NFL team represented the AFC at Super Bowl 50?"
    assert rows[0]["id"] == "b0626b3af0764c80b1e6f22c114982c1" and len({r["id"] for r in rows}) == 10507
    sample = [row["id"] for _, row in formatted_rows("mrqa", DATA / "mrqa/samples/NewsQA_sample.jsonl")]
    assert sample == [q["qid"] for o in _jsonl("mrqa/samples/NewsQA_sample.jsonl") for q in o["qas"]]


def test_mbpp_ids_are_the_task_ids():
    for name, split_mode in (("mbpp", "dept"), ("mbpp-sanitized", "official")):
        cfg = TaskConfig(name=name, data_dir=str(DATA / "mbpp"), split_mode=split_mode)
        splits = load_splits(get_task(name), cfg)
        assert all(list(ds["id"]) == list(ds["task_id"]) for ds in splits.values())
        if name == "mbpp":
            assert list(splits["test"]["id"]) == list(range(488, 975))
        else:
            assert all(11 <= i <= 510 for i in splits["test"]["id"])


def test_other_tasks_use_their_own_ids_or_the_row_position(tmp_path):
    wino = [row["id"] for _, row in formatted_rows("winogrande", DATA / "winogrande/dev.jsonl")]
    assert wino == [o["qID"] for o in _jsonl("winogrande/dev.jsonl")]
    paws = [row["id"] for _, row in formatted_rows("paws", DATA / "paws_wiki/dev.tsv")]
    assert paws == [int(line.split("\t")[0]) for line in (DATA / "paws_wiki/dev.tsv").read_text().splitlines()]
    assert [row["id"] for _, row in formatted_rows("yelp_polarity", DATA / "yelp_polarity/test.csv")] == list(range(9))
    scitail = load_splits(get_task("scitail"), TaskConfig(name="scitail", **_scitail_config(tmp_path)))
    assert sorted(list(scitail["validation"]["id"]) + list(scitail["test"]["id"])) == [0, 1, 2, 3]
    # hub rows: PAWS has an int id; WinoGrande has no qID, so its row position (a string like the qIDs)
    assert _hub("paws", [{"id": 7, "sentence1": "a", "sentence2": "b", "label": 1}])[0]["id"] == 7
    wino_hub = [{"sentence": "A _ b", "option1": "x", "option2": "y", "answer": "1"}] * 2
    assert list(_hub("winogrande", wino_hub)["id"]) == ["0", "1"]


def test_a_multirc_option_without_its_idx_names_file_and_line(tmp_path):
    lines = (DATA / "superglue/MultiRC/val.jsonl").read_text().splitlines()[:3]
    broken = json.loads(lines[1])
    del broken["passage"]["questions"][0]["idx"]
    path = tmp_path / "val.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    with pytest.raises(DataError, match=rf"{path}: line 2: missing field 'idx'"):
        formatted_rows("multirc", path)


# ---- metrics (hand-computed) -------------------------------------------------------------------
def test_binary_metrics_count_an_invalid_prediction_as_wrong():
    preds, golds, labels = ["1", "0", "maybe", "1"], ["1", "1", "0", "0"], ["0", "1"]
    # invalid -> the other label: effective predictions 1, 0, 1, 1
    assert M.accuracy(preds, golds, labels) == 25.0
    assert M.binary_f1(preds, golds, labels) == pytest.approx(40.0)  # TP 1, FP 2, FN 1: P 1/3, R 1/2
    assert M.matthews(preds, golds, labels) == pytest.approx(100 * -2 / 12**0.5)  # (TP TN - FP FN) / sqrt(...)


def test_cb_accuracy_and_macro_f1_by_hand():
    m = M.classification(["accuracy", "macro_f1"], ["0", "1", "2"])(
        ["0", "2", "garbage!", "1 "], {"target": ["0", "1", "2", "1"]}
    )
    assert m["accuracy"] == 50.0
    assert m["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)  # per class: 1, P 1 R .5, 0


def test_stsb_correlations_treat_an_unparseable_score_as_invalid():
    m = M.correlations(["1.0", "2.0", "x", "4.0"], ["1.0", "2.0", "3.0", "4.0"])  # x -> -1
    assert m["pearson"] == pytest.approx(100 * 3 / 65**0.5)
    assert m["spearman"] == pytest.approx(40.0)  # ranks 2,3,1,4 vs 1,2,3,4: 1 - 6*6/(4*15)
    assert M.correlations(["x"] * 4, ["1", "2", "3", "4"]) == {"pearson": 0.0, "spearman": 0.0}


def test_multirc_f1_over_all_options_and_em_per_question():
    m = M.multirc_metrics(["1", "0", "0", "0"], {"target": ["1", "0", "1", "0"], "group": ["q1", "q1", "q2", "q2"]})
    assert m["em"] == 50.0 and m["f1"] == pytest.approx(100 * 2 / 3)


def squad_dev():
    with gzip.open(DATA / "mrqa/dev/SQuAD.jsonl.gz", "rt") as f:
        lines = f.read().splitlines()
    return [(qa["answers"], ctx["context"]) for ctx in map(json.loads, lines[1:]) for qa in ctx["qas"]]


def test_gold_answers_score_100_on_the_real_squad_dev_file():
    rows = squad_dev()
    assert len(rows) == 10507
    m = M.qa_metrics([a[0] for a, _ in rows], [a for a, _ in rows], [c for _, c in rows])
    assert m["em"] == m["f1"] == 100.0


def test_perturbed_squad_predictions_score_what_the_official_normalisation_gives():
    answers = [a for a, _ in squad_dev()[:5]]
    preds = ["The Denver Broncos!", "Panthers", "Levi's Stadium, Santa Clara", "", "Gold."]
    m = M.qa_metrics(preds, answers)
    # EM: 1, 0, 0, 0, 1.  F1: 1; 2/3 (1 of 2 gold tokens); max(4/7, 2/3, 8/15) = 2/3 ("levis stadium"); 0 (empty); 1
    assert m["em"] == pytest.approx(40.0)
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3 + 0 + 1) / 5)
    assert M.normalize_answer("The  Levi's, Stadium") == "levis stadium"


def test_mrqa_datasets_are_macro_averaged_and_spans_counted():
    m = M.qa_metrics(
        ["a b", "x", "x", "x"], [["a b"], ["y"], ["y"], ["y"]], ["a b c", "z", "x y", "x"], ["A", "B", "B", "B"]
    )
    assert m["em"] == 50.0 and m["em/A"] == 100.0 and m["em/B"] == 0.0  # micro would be 25
    assert m["span_share"] == 75.0


# ---- the router and bad input -------------------------------------------------------------------
def test_every_task_of_the_issue_is_registered_and_listed(capsys):
    from dpt_dist.cli import main

    assert set(ISSUE_TASKS) <= set(TASKS)
    assert main(["tasks"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert set(ISSUE_TASKS) <= listed


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: boolq, cb"):
        get_task("nope")


def _cb_copy(tmp_path, edit):
    rows = [json.loads(line) for line in (DATA / "superglue/CB/train.jsonl").read_text().splitlines()[:5]]
    edit(rows)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val.jsonl").write_text((DATA / "superglue/CB/val.jsonl").read_text())
    return TaskConfig(name="cb", data_dir=str(tmp_path))


def test_a_row_with_a_missing_field_names_file_and_line(tmp_path):
    cfg = _cb_copy(tmp_path, lambda rows: rows[2].pop("hypothesis"))
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.jsonl'}: line 3: missing field 'hypothesis'"):
        load_splits(get_task("cb"), cfg)


def test_a_label_outside_the_label_set_names_file_and_line(tmp_path):
    cfg = _cb_copy(tmp_path, lambda rows: rows[1].update(label="maybe"))
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.jsonl'}: line 2: label 'maybe' is not in the label set"):
        load_splits(get_task("cb"), cfg)


def test_an_empty_split_is_an_error_naming_the_file(tmp_path):
    cfg = _cb_copy(tmp_path, lambda rows: rows.clear())
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.jsonl'}: the file has no rows"):
        load_splits(get_task("cb"), cfg)
    (tmp_path / "val.jsonl").write_text((DATA / "superglue/CB/val.jsonl").read_text().splitlines()[0] + "\n")
    (tmp_path / "train.jsonl").write_text((DATA / "superglue/CB/train.jsonl").read_text())
    with pytest.raises(DataError, match=r"first half of .*val.jsonl: the validation split is empty"):
        load_splits(get_task("cb"), cfg)


def test_a_broken_tsv_row_and_invalid_json_name_file_and_line(tmp_path):
    bad_tsv = tmp_path / "dev.tsv"
    bad_tsv.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly one field\n")
    with pytest.raises(DataError, match=rf"{bad_tsv}: line 3 has 2 fields"):
        get_task("rte").read(TaskConfig(name="rte", files={"train": str(bad_tsv), "validation": str(bad_tsv)}))
    bad_json = tmp_path / "val.jsonl"
    bad_json.write_text('{"premise": "a", "hypothesis": "b", "label": "neutral"}\n{"premise": \n')
    with pytest.raises(DataError, match=rf"{bad_json}: line 2 is not valid JSON"):
        get_task("cb").read(TaskConfig(name="cb", files={"train": str(bad_json), "validation": str(bad_json)}))


def test_a_changed_reader_reads_the_cached_file_again(tmp_path, monkeypatch):
    """datasets hashes a module-level reader by its name: its code must be part of the cache key,
    or a reader that now yields a new field (like the ids) would be served stale cached rows."""
    import importlib

    from dpt_dist.tasks.sources import from_file

    data = tmp_path / "rows.jsonl"
    data.write_text('{"a": 1}\n')
    module = tmp_path / f"reader_{tmp_path.name.replace('-', '_')}.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    for version in (1, 2):
        module.write_text(f"def rows(path):\n    yield {{'_line': 1, 'version': {version}}}\n")
        importlib.invalidate_caches()
        reader = importlib.reload(importlib.import_module(module.stem)).rows
        assert from_file(reader, data).rows[0]["version"] == version


def test_a_missing_data_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task cb: no train file in .* \(looked for train.jsonl"):
        load_splits(get_task("cb"), TaskConfig(name="cb", data_dir=str(tmp_path)))


def test_mrqa_training_truncation_keeps_the_answer_in_the_window(tiny_backbones):
    from dpt_dist.backbone import load_tokenizer
    from dpt_dist.tasks.mrqa import fit_source

    tokenizer = load_tokenizer(tiny_backbones["t5"])
    rows = [r for _, r in formatted_rows("squad", DATA / "mrqa/dev/SQuAD.jsonl.gz")[:300]]
    batch = {key: [r[key] for r in rows] for key in rows[0]}
    fitted = fit_source(batch, tokenizer, 64)
    assert all(len(tokenizer(s)["input_ids"]) <= 64 for s in fitted)
    assert all(s.startswith(f"question: {q} context: ") for s, q in zip(fitted, batch["question"]))
    kept = sum(r["target"] in s for r, s in zip(rows, fitted)) / len(rows)
    cut = [tokenizer.decode(tokenizer(r["source"], truncation=True, max_length=64)["input_ids"]) for r in rows]
    plain = sum(r["target"] in s for r, s in zip(rows, cut)) / len(rows)
    assert kept >= 0.97 and plain < 0.5, (kept, plain)


def test_any_mrqa_file_works_and_several_validation_files_are_macro_averaged():
    sample, squad = str(DATA / "mrqa/samples/NewsQA_sample.jsonl"), str(DATA / "mrqa/dev/SQuAD.jsonl.gz")
    cfg = TaskConfig(name="mrqa", files={"train": sample, "validation": [sample, squad]})
    splits = load_splits(get_task("mrqa"), cfg)
    assert len(splits["train"]) == 17 and len(splits["test"]) == 17 + 10507
    assert set(splits["test"]["dataset"]) == {"NewsQA_sample", "SQuAD"}  # no header line: named after the file
    metrics = get_task("mrqa").metrics([a[0] for a in splits["test"]["answers"]], splits["test"])
    assert metrics["f1"] == metrics["f1/SQuAD"] == metrics["f1/NewsQA_sample"] == 100.0
    with pytest.raises(DataError, match="set task.files.train and task.files.validation"):
        load_splits(get_task("mrqa"), TaskConfig(name="mrqa"))

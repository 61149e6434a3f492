"""MBPP: data and splits, completion cutting, pass@k, `dpt-dist eval-mbpp` (reference solutions
and bad input), and 2-rank ZeRO-3 train + sample + execute runs on a tiny Llama."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import BIN, ROOT, TEST_ENV, launch

from dpt_dist.config import TaskConfig
from dpt_dist.tasks import get_task, load_splits
from dpt_dist.tasks.mbpp import cut_completion, execute, load_problems, pass_at_k, read_completions, summarize

MBPP = ROOT / "data" / "mbpp"


def cli(*args, timeout=120):
    return subprocess.run(
        [str(BIN / "python"), "-m", "dpt_dist.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)},
    )


def write_completions(path, pairs):
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in pairs))
    return path


@pytest.fixture(scope="module")
def problems():
    return load_problems(MBPP / "mbpp.jsonl")


# ---- data -------------------------------------------------------------------------------------
def test_both_file_formats_load_into_one_schema(problems):
    assert len(problems) == 974 and problems[11]["text"].startswith(
        "Write a python function to remove first and last occurrence"
    )
    sanitized = load_problems(MBPP / "sanitized-mbpp.json")
    assert len(sanitized) == 427
    with_imports = [p for p in sanitized.values() if p["test_setup_code"]]
    assert with_imports and all(
        line.startswith(("import", "from")) for p in with_imports for line in p["test_setup_code"].splitlines()
    )


@pytest.mark.parametrize(
    "mode, sizes, ranges",
    [
        ("dept", (487, 487, 487), {"train": (1, 487), "validation": (488, 974), "test": (488, 974)}),
        ("official", (374, 90, 500), {"train": (601, 974), "validation": (511, 600), "test": (11, 510)}),
    ],
)
def test_splits_follow_the_protocols(mode, sizes, ranges):
    splits = load_splits(get_task("mbpp"), TaskConfig(name="mbpp", data_dir=str(MBPP), split_mode=mode))
    assert tuple(len(splits[s]) for s in ("train", "validation", "test")) == sizes
    for name, (lo, hi) in ranges.items():
        assert min(splits[name]["task_id"]) == lo and max(splits[name]["task_id"]) == hi
    row = splits["train"][0]
    problem = load_problems(MBPP / "mbpp.jsonl")[row["task_id"]]
    assert row["source"] == problem["text"].strip() + "\n" + "\n".join(t.strip() for t in problem["test_list"]) + "\n"
    assert row["target"].startswith(problem["code"].replace("\r\n", "\n").replace("\t", "    ")[:20])


def test_over_long_prompts_lose_their_beginning_not_their_asserts(tiny_backbones):
    from dpt_dist.backbone import load_tokenizer
    from dpt_dist.data import tokenize

    tokenizer = load_tokenizer(tiny_backbones["llama"])
    splits = load_splits(get_task("mbpp"), TaskConfig(name="mbpp", data_dir=str(MBPP)))
    sample = splits["test"].select(range(20))
    short = tokenize(sample, tokenizer, False, 24, 64, keep_source_end=True)
    full = tokenize(sample, tokenizer, False, 10_000, 64)
    for cut, whole in zip(short["prompt_ids"], full["prompt_ids"]):
        assert len(cut) <= 24 and cut == whole[-len(cut) :]


# ---- completions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("def f(x):\n    return x\n\nassert f(1) == 1\nprint(f(2))", "def f(x):\n    return x"),
        (
            "Here is the code:\n```python\nimport math\ndef f(x):\n    return math.sqrt(x)\n```\nIt uses math.",
            "import math\ndef f(x):\n    return math.sqrt(x)",
        ),
        (
            "def f(x):\n    if x:\n        return 1\n    else:\n        return 2\nif __name__ == '__main__':\n    f(1)",
            "def f(x):\n    if x:\n        return 1\n    else:\n        return 2",
        ),
        (
            "LIMIT = 10\n@cache\ndef g(n):\n    return n\nThe function g returns n.",
            "LIMIT = 10\n@cache\ndef g(n):\n    return n",
        ),
        ("def f():\n    pass\n```\nmore", "def f():\n    pass"),
    ],
)
def test_completions_are_cut_where_a_user_expects(raw, expected):
    assert cut_completion(raw) == expected


# ---- pass@k -----------------------------------------------------------------------------------
def test_pass_at_k_equals_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(3, 1, 3) == 1.0
    # averaged over problems; pass@k only where every problem has >= k samples
    assert summarize([(5, 2), (5, 0)]) == {"pass@1": pytest.approx(20.0)}
    assert set(summarize([(10, 1), (12, 12)])) == {"pass@1", "pass@10"}
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_greedy_pass_at_1_is_the_share_of_passing_problems(problems):
    ids = [11, 12, 13, 14, 15]
    samples = [(t, problems[t]["code"]) for t in ids[:3]] + [(t, "def nothing():\n    pass") for t in ids[3:]]
    sample_rows, problem_rows, summary = execute(problems, samples, allow_code_execution=True, workers=2)
    assert summary["pass@1"] == pytest.approx(100 * 3 / 5)
    assert [r["passed"] for r in problem_rows] == [1, 1, 1, 0, 0] and summary["failed_task_ids"] == [14, 15]
    assert [r["sample"] for r in sample_rows] == [0] * 5


def test_several_samples_per_problem_give_pass_at_k(problems):
    bad = "def remove_Occ(s, ch):\n    return s"
    samples = [(11, problems[11]["code"]), (11, bad), (11, bad), (12, bad), (12, bad), (12, problems[12]["code"])]
    _, problem_rows, summary = execute(problems, samples, allow_code_execution=True, workers=2)
    assert [(r["n"], r["passed"]) for r in problem_rows] == [(3, 1), (3, 1)]
    assert summary["pass@1"] == pytest.approx(100 / 3)


def test_nothing_runs_without_the_opt_in(problems):
    with pytest.raises(PermissionError, match="--allow-code-execution"):
        execute(problems, [(11, "import os")], allow_code_execution=False)


# ---- the CLI ----------------------------------------------------------------------------------
def test_reference_solutions_pass_except_the_two_that_use_an_undefined_class(tmp_path, problems):
    completions = write_completions(tmp_path / "ref.jsonl", [(t, p["code"]) for t, p in problems.items()])
    proc = cli(
        "eval-mbpp",
        "--completions",
        str(completions),
        "--allow-code-execution",
        "--out",
        str(tmp_path / "out"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["problems"] == 974 and summary["problems_passed"] == 972
    assert summary["failed_task_ids"] == [367, 927] and "[367, 927]" in proc.stdout
    assert summary["pass@1"] == pytest.approx(100 * 972 / 974)
    rows = [json.loads(line) for line in (tmp_path / "out" / "problems.jsonl").read_text().splitlines()]
    assert len(rows) == 974 and {r["task_id"] for r in rows if not r["passed"]} == {367, 927}
    failing = [
        json.loads(line)
        for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
        if '"passed": false' in line
    ]
    assert all("Node" in r["error"] for r in failing)
    assert summary["limits"]["cpu_seconds"] == 10.0  # the default limit


def test_split_option_scores_exactly_that_split(tmp_path, problems):
    test_half = [(t, p["code"]) for t, p in problems.items() if t >= 488]
    completions = write_completions(tmp_path / "c.jsonl", test_half)
    proc = cli(
        "eval-mbpp",
        "--completions",
        str(completions),
        "--allow-code-execution",
        "--split",
        "5050-test",
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["problems"] == 487
    partial = write_completions(tmp_path / "p.jsonl", test_half[:10])
    proc = cli(
        "eval-mbpp",
        "--completions",
        str(partial),
        "--allow-code-execution",
        "--split",
        "5050-test",
        "--out",
        str(tmp_path / "o2"),
    )
    assert proc.returncode == 2 and "477 problem(s) of split 5050-test have no completion" in proc.stderr


def bad_data_file(tmp_path):
    rows = [json.loads(line) for line in (MBPP / "mbpp.jsonl").read_text().splitlines()[:3]]
    rows[1]["test_list"] = []
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-flag", "refusing to execute model-generated code without --allow-code-execution"),
        ("not-json", "line 2 is not valid JSON"),
        ("missing-field", "line 1: each line needs 'task_id' and 'completion'"),
        ("unknown-task", "task_id(s) not in the data: [5000]"),
        ("no-tests", "problem 2 has no tests"),
        ("bad-split", "--split 'nope'"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, case, message):
    good = write_completions(tmp_path / "good.jsonl", [(1, "x = 1")])
    args = ["--completions", str(good), "--allow-code-execution", "--out", str(tmp_path / "out")]
    if case == "no-flag":
        args.remove("--allow-code-execution")
    elif case == "not-json":
        (tmp_path / "bad.jsonl").write_text('{"task_id": 1, "completion": "x"}\n{oops\n')
        args[1] = str(tmp_path / "bad.jsonl")
    elif case == "missing-field":
        (tmp_path / "bad.jsonl").write_text('{"id": 1, "completion": "x"}\n')
        args[1] = str(tmp_path / "bad.jsonl")
    elif case == "unknown-task":
        args[1] = str(write_completions(tmp_path / "bad.jsonl", [(5000, "x = 1")]))
    elif case == "no-tests":
        args += ["--data", str(bad_data_file(tmp_path))]
    elif case == "bad-split":
        args += ["--split", "nope"]
    proc = cli("eval-mbpp", *args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_read_completions_names_the_line():
    with pytest.raises(ValueError, match="line 1: completion must be a string"):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write('{"task_id": 3, "completion": 7}\n')
        read_completions(f.name)


# ---- training on MBPP -------------------------------------------------------------------------
@pytest.mark.distributed
def test_training_refuses_mbpp_without_the_opt_in(tmp_path, tiny_backbones):
    proc = cli(
        "train",
        "adept-mbpp-deepseek-coder-1.3b",
        "--model.name",
        tiny_backbones["llama"],
        "--task.data_dir",
        str(MBPP),
        "--train.output_dir",
        str(tmp_path / "r"),
    )
    assert proc.returncode == 2 and "--allow-code-execution" in proc.stderr and "Traceback" not in proc.stderr


SMALL_RUN = [
    "--model.dtype",
    "fp32",
    "--train.epochs",
    "null",
    "--train.steps",
    "3",
    "--train.batch_size",
    "8",
    "--train.micro_batch_size",
    "4",
    "--task.max_train_examples",
    "32",
    "--task.max_eval_examples",
    "10",
    "--task.max_new_tokens",
    "24",
    "--train.eval_batch_size",
    "4",
]


@pytest.mark.distributed
def test_the_launch_recipe_trains_samples_and_executes_on_two_zero3_ranks(tmp_path):
    out = tmp_path / "mbpp"
    env = {
        **os.environ,
        **TEST_ENV,
        "PYTHONPATH": str(ROOT),
        "LAUNCHER": "cpu",
        "SPLIT": "",
        "OUT": str(out),
        "VENV": str(BIN.parent),
    }
    proc = subprocess.run(
        # the preset's placement is `auto` (a tiny model is replicated); ZeRO-3 is named so the
        # sharded path is the one exercised
        [
            "bash",
            "launch/mbpp_node.sh",
            "adept-mbpp-deepseek-coder-1.3b",
            "--model.name",
            "tiny-llama",
            "--deepspeed.config",
            "zero3",
            *SMALL_RUN,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 3 and metrics["task"] == "mbpp"
    assert metrics["generation"] == {"num_samples": 1, "do_sample": True, "temperature": 0.6, "top_p": 0.95}
    assert set(metrics["test"]) == {"pass@1"} and 0.0 <= metrics["test"]["pass@1"] <= 100.0
    rows = [json.loads(line) for line in (out / "predictions" / "validation_step3.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(488 <= r["task_id"] <= 974 for r in rows)
    assert all(
        r["results"][0]["status"] in ("passed", "failed", "timeout", "out-of-memory", "syntax-error") for r in rows
    )
    summary = json.loads((out / "eval-mbpp" / "summary.json").read_text())
    assert summary["problems"] == 10 and summary["pass@1"] == pytest.approx(metrics["test"]["pass@1"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert "eval/validation/pass@1" in events.Tags()["scalars"]


@pytest.mark.distributed
def test_lora_baseline_trains_through_peft_under_zero3_and_reloads(tmp_path, tiny_backbones):
    out = tmp_path / "lora"
    launch(
        2,
        [
            "-m",
            "dpt_dist.cli",
            "train",
            "lora-mbpp-deepseek-coder-1.3b",
            "--model.name",
            tiny_backbones["llama"],
            "--task.data_dir",
            str(MBPP),
            "--train.output_dir",
            str(out),
            "--allow-code-execution",
            "--prompt.rank",
            "4",
            "--train.network_lr",
            "0.05",
            "--task.num_samples",
            "2",
            *SMALL_RUN,
        ],
        timeout=300,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "lora" and metrics["trainable_params"] == 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert metrics["generation"]["num_samples"] == 2
    rows = [json.loads(line) for line in (out / "predictions" / "validation_step3.jsonl").read_text().splitlines()]
    assert all(r["n"] == 2 and len(r["results"]) == 2 for r in rows)

    from safetensors.torch import load_file

    state = load_file(str(out / "prompt" / "prompt.safetensors"))
    assert state and all(k.startswith("backbone.") and ".lora_" in k for k in state)
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in state.items())  # B left zero: it trained

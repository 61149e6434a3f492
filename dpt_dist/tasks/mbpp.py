"""MBPP: Python code generation scored by executing the generated code (pass@k).

Data: `mbpp.jsonl` (974 problems: text, code, task_id, test_setup_code, test_list,
challenge_test_list) or `sanitized-mbpp.json` (427 hand-cleaned problems: prompt, code,
task_id, test_imports, test_list), local (`task.data_dir` / `task.files.train`) or from the hub
(google-research-datasets/mbpp, configs full / sanitized). Both become one schema.

Splits, by task_id (REFERENCE §4):
  split_mode dept      the ADePT / LoPA 50-50 protocol: train 1-487, test 488-974. There is no
                       separate validation set: validation IS the test half, so the presets
                       evaluate once, after training (eval_every 0) and select nothing on it.
  split_mode official  the standard split: train 601-974, validation 511-600, test 11-510
                       (1-10 are the few-shot prompt problems).
Format (LoPA): source = the problem text, then its test asserts, one per line; target = the
reference code. The prompt budget is 325 tokens including the soft prompt (325 - m for the
text, truncated from the left so the asserts survive); up to 256 new tokens; sampling at
temperature 0.6, top_p 0.95, one sample per problem; pass@1.

Scoring executes every sample in the sandbox (dpt_dist/sandbox.py) against the problem's
test_setup_code, then its test_list; only with the caller's explicit opt-in. The asserts are
judged outside the program; each job names the reference solution's top-level definitions so
that a function the problem asks for under a builtin's name (problem 126: `sum`) is the
program's, while every other builtin in an assert stays the real one.

Example ids (`id`): the problem's `task_id` (kept as its own column too).
"""

from __future__ import annotations

import ast
import json
import re
from math import comb
from pathlib import Path

from ..sandbox import OPT_IN_ERROR, Limits, SandboxPool
from .registry import Task, register
from .sources import DataError, RawSplit, from_file, from_hub, iter_jsonl, use_local

# name -> inclusive task_id ranges
SPLITS = {
    "all": [(1, 10**9)],
    "prompt": [(1, 10)],
    "test": [(11, 510)],
    "validation": [(511, 600)],
    "train": [(601, 974)],
    "5050-train": [(1, 487)],
    "5050-test": [(488, 974)],
}
# The full MBPP (974 problems, CC-BY-4.0) ships inside the package: eval-mbpp's default data in
# any install (a wheel has no repository checkout to look in).
SHIPPED_MBPP = Path(__file__).with_name("mbpp.jsonl")
PROTOCOL_SPLITS = {
    "dept": {"train": "5050-train", "validation": "5050-test", "test": "5050-test"},
    "official": {"train": "train", "validation": "validation", "test": "test"},
}


# ---- problems ----------------------------------------------------------------------------------
def problem_rows(path: Path):
    """Either file format, as hub-schema rows (`text`, `test_setup_code`, lists of asserts)."""
    if path.suffix == ".json":
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a JSON file (not UTF-8 text)") from None
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(items, list):
            raise DataError(f"{path}: expected a JSON list of problems (sanitized-mbpp.json)")
        numbered = [(i + 1, item) for i, item in enumerate(items)]
    else:
        numbered = list(iter_jsonl(path))
    for where, item in numbered:
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {where} is not a JSON object")
        setup = item.get("test_setup_code")
        if setup is None and "test_imports" in item:  # sanitized format
            setup = "\n".join(item.get("test_imports") or [])
        yield {
            "_line": where,
            "task_id": item.get("task_id"),
            "text": item.get("text", item.get("prompt")),
            "code": item.get("code"),
            "test_setup_code": setup or "",
            "test_list": item.get("test_list"),
            "challenge_test_list": item.get("challenge_test_list") or [],
        }


def check_problem(row: dict, origin: str) -> dict:
    """A problem usable for execution, or a DataError naming it."""
    tid = row.get("task_id")
    if not isinstance(tid, int):
        raise DataError(f"{origin}: item {row.get('_line', '?')}: task_id must be an integer, got {tid!r}")
    tests = row.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise DataError(f"{origin}: problem {tid} has no tests (test_list must be a non-empty list of asserts)")
    if not isinstance(row.get("text"), str) or not row["text"].strip():
        raise DataError(f"{origin}: problem {tid} has no problem text")
    return row


def load_problems(path: str | Path) -> dict[int, dict]:
    """task_id -> problem, straight from a file (the eval-mbpp path: no datasets cache)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: file not found")
    problems: dict[int, dict] = {}
    for row in problem_rows(path):
        row = check_problem(row, str(path))
        if row["task_id"] in problems:
            raise DataError(f"{path}: task_id {row['task_id']} appears twice")
        problems[row["task_id"]] = row
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems


def in_split(task_id: int, split: str) -> bool:
    return any(lo <= task_id <= hi for lo, hi in SPLITS[split])


def prompt_text(problem: dict) -> str:
    """LoPA's format: the problem statement, then the asserts the code must pass."""
    return problem["text"].strip() + "\n" + "\n".join(t.strip() for t in problem["test_list"]) + "\n"


# ---- completions -------------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
_KEEP_TOP_LEVEL = re.compile(
    r"(def |class |async def |import |from |@|#|[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_]\w*)*\s*(:[^=]*)?=[^=])"
)
_CODE_CONTINUATION = re.compile(r"(else|elif|except|finally)\b")


def cut_completion(text: str) -> str:
    """The code a user means from a raw generation: inside the first fenced block if the
    generation opens one (a fence after code closes it), and up to the first top-level line
    that is not a definition, import, decorator, comment or assignment (prose, the asserts
    again, a print, `if __name__ == ...`)."""
    text = text.replace("\r\n", "\n")
    fence = text.find("```")
    if fence >= 0:
        before = _code_lines(text[:fence])
        if before:
            return before
        opened = _FENCE.search(text)
        if opened:
            text = opened.group(1)
    return _code_lines(text)


def _code_lines(text: str) -> str:
    kept: list[str] = []
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            break
        top_level = line[:1] not in (" ", "\t") and line.strip() != ""
        if top_level and not _KEEP_TOP_LEVEL.match(line) and not _CODE_CONTINUATION.match(line):
            if kept:
                break
            continue  # prose before the code starts
        kept.append(line)
    return "\n".join(kept).strip("\n")


def read_completions(path: str | Path) -> list[tuple[int, str]]:
    """(task_id, completion) per line of a completions JSONL; one clear error per bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--completions {path}: file not found")
    samples = []
    for line_no, obj in iter_jsonl(path):
        if "task_id" not in obj or "completion" not in obj:
            raise DataError(f"{path}: line {line_no}: each line needs 'task_id' and 'completion'")
        tid, completion = obj["task_id"], obj["completion"]
        if isinstance(tid, str) and tid.strip().isdigit():
            tid = int(tid)
        if isinstance(tid, bool) or not isinstance(tid, int):
            raise DataError(f"{path}: line {line_no}: task_id must be an integer, got {obj['task_id']!r}")
        if not isinstance(completion, str):
            raise DataError(f"{path}: line {line_no}: completion must be a string, got {type(completion).__name__}")
        samples.append((tid, completion))
    if not samples:
        raise DataError(f"{path}: no completions")
    return samples


def defined_names(code: str | None) -> list[str]:
    """The top-level functions, classes and variables a (reference) solution defines: the names
    its tests mean as the program's own (imports are not: `math` in an assert is the real one)."""
    try:
        body = ast.parse(code or "").body
    except (SyntaxError, ValueError):
        return []
    names = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names


# ---- pass@k ------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples of which c pass."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c})")
    return 1.0 - comb(n - c, k) / comb(n, k)


def summarize(per_problem: list[tuple[int, int]], ks=(1, 10, 100)) -> dict[str, float]:
    """pass@k in percent, averaged over problems, for each k every problem has enough samples for."""
    if not per_problem:
        return {}
    fewest = min(n for n, _ in per_problem)
    return {
        f"pass@{k}": 100.0 * sum(pass_at_k(n, c, k) for n, c in per_problem) / len(per_problem)
        for k in ks
        if k <= fewest
    }


def execute(
    problems: dict[int, dict],
    samples: list[tuple[int, str]],
    *,
    allow_code_execution: bool,
    limits: Limits | None = None,
    workers: int | None = None,
    progress=None,
):
    """Run every (task_id, completion) against its problem's set-up code and asserts.

    Returns (sample rows, problem rows, summary) ready to be written as JSONL / JSON."""
    if not allow_code_execution:
        raise PermissionError(OPT_IN_ERROR)
    unknown = sorted({tid for tid, _ in samples if tid not in problems})
    if unknown:
        raise DataError(
            f"completions name task_id(s) not in the data: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    names = {tid: defined_names(problems[tid].get("code")) for tid in {tid for tid, _ in samples}}
    jobs = [
        {
            "setup": problems[tid]["test_setup_code"],
            "program": code,
            "tests": "\n".join(problems[tid]["test_list"]),
            "names": names[tid],
        }
        for tid, code in samples
    ]
    with SandboxPool(workers=workers, limits=limits) as pool:
        results = pool.run(jobs, progress=progress)
        isolation = pool.isolation_report()
        limits = pool.limits
    sample_rows, problem_rows_out = result_rows(samples, results)
    return sample_rows, problem_rows_out, summary_of(problem_rows_out, results, limits, isolation)


def result_rows(samples: list[tuple[int, str]], results: list) -> tuple[list[dict], list[dict]]:
    """One row per sample (its status and error) and one per problem (n, passed, pass@1)."""
    sample_rows, by_problem = [], {}
    for (tid, code), res in zip(samples, results):
        sample_no = len(by_problem.setdefault(tid, []))
        by_problem[tid].append(res)
        sample_rows.append(
            {
                "task_id": tid,
                "sample": sample_no,
                "completion": code,
                "status": res.status,
                "passed": res.passed,
                "error": res.error,
                "wall_seconds": res.wall_seconds,
                "cpu_seconds": res.cpu_seconds,
            }
        )
    problem_rows_out = []
    for tid in sorted(by_problem):
        res = by_problem[tid]
        n, c = len(res), sum(r.passed for r in res)
        problem_rows_out.append(
            {
                "task_id": tid,
                "n": n,
                "passed": c,
                "pass@1": 100.0 * pass_at_k(n, c, 1),
                "statuses": [r.status for r in res],
            }
        )
    return sample_rows, problem_rows_out


def summary_of(problem_rows_out: list[dict], results: list, limits: Limits, isolation: dict) -> dict:
    """pass@k, status counts, failing problems, and the limits and isolation actually in force."""
    counts = [(row["n"], row["passed"]) for row in problem_rows_out]
    statuses = [r.status for r in results]
    return {
        **summarize(counts),
        "problems": len(counts),
        "samples": len(results),
        "problems_passed": sum(1 for row in problem_rows_out if row["passed"] == row["n"]),
        "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
        "failed_task_ids": [row["task_id"] for row in problem_rows_out if row["passed"] < row["n"]],
        "limits": {
            "cpu_seconds": limits.cpu_seconds,
            "wall_seconds": limits.wall,
            "memory_mb": limits.memory_mb,
            "max_processes": limits.max_processes,
            "max_file_mb": limits.max_file_mb,
        },
        "isolation": isolation,
    }


# ---- the training task -------------------------------------------------------------------------
def _read(config, sanitized: bool):
    name = "sanitized-mbpp.json" if sanitized else "mbpp.jsonl"
    if use_local(config):
        path = Path(config.files["train"]) if "train" in config.files else Path(config.data_dir) / name
        if not path.is_file():
            raise FileNotFoundError(
                f"task {config.name}: {path} not found (set task.data_dir to the folder with {name}, "
                "or task.files.train to the file)"
            )
        raw = from_file(problem_rows, path)
    else:  # the hub's four splits hold the same 974 (427) problems; split by task_id ourselves
        import datasets

        parts = [
            from_hub("google-research-datasets/mbpp", "sanitized" if sanitized else "full", s).rows
            for s in ("train", "validation", "test", "prompt")
        ]
        rows = datasets.concatenate_datasets(parts)
        if sanitized:
            rows = rows.map(
                lambda r: {
                    "text": r["prompt"],
                    "test_setup_code": "\n".join(r["test_imports"]),
                    "challenge_test_list": [],
                }
            )
        raw = RawSplit(rows, "hub:google-research-datasets/mbpp", local=False)
    out = {}
    for split, name_ in PROTOCOL_SPLITS[config.split_mode].items():
        lo_hi = SPLITS[name_]
        selected = raw.rows.filter(
            lambda tid, ranges=lo_hi: any(lo <= tid <= hi for lo, hi in ranges),
            input_columns="task_id",
            desc=f"mbpp {name_}",
        )
        out[split] = RawSplit(selected, f"{raw.origin} ({name_}: task_id {lo_hi[0][0]}-{lo_hi[0][1]})", raw.local)
    return out


def _format(row):
    row = check_problem(dict(row), "mbpp")
    return {
        "source": prompt_text(row),
        "target": row["code"].replace("\r\n", "\n").replace("\t", "    "),
        "task_id": row["task_id"],
        "setup": row["test_setup_code"],
        "tests": row["test_list"],
    }


def score(samples: list[list[str]], examples, *, allow_code_execution: bool):
    """Execute the (cut) samples of every problem: pass@k, and one result row per problem."""
    references = examples["target"] if "target" in _columns(examples) else [None] * len(examples["task_id"])
    problems = {
        tid: {"test_setup_code": setup, "test_list": tests, "code": code}
        for tid, setup, tests, code in zip(examples["task_id"], examples["setup"], examples["tests"], references)
    }
    flat = [(tid, code) for tid, codes in zip(examples["task_id"], samples) for code in codes]
    sample_rows, problem_rows_out, summary = execute(problems, flat, allow_code_execution=allow_code_execution)
    metrics = {k: v for k, v in summary.items() if k.startswith("pass@")}
    by_tid: dict[int, list[dict]] = {}
    for row in sample_rows:
        by_tid.setdefault(row["task_id"], []).append({k: row[k] for k in ("completion", "status", "error")})
    details = [
        {"task_id": row["task_id"], "passed": row["passed"], "n": row["n"], "results": by_tid[row["task_id"]]}
        for row in problem_rows_out
    ]
    order = {row["task_id"]: row for row in details}
    return metrics, [order[tid] for tid in examples["task_id"]]


def _columns(examples) -> list[str]:
    """A datasets.Dataset's columns, or a dict's keys."""
    names = getattr(examples, "column_names", None)
    return list(examples.keys()) if names is None else list(names)


for _name, _sanitized in (("mbpp", False), ("mbpp-sanitized", True)):
    register(
        Task(
            _name,
            "code",
            f"MBPP{' sanitized (427)' if _sanitized else ''}: Python from a problem statement and its asserts",
            read=lambda config, s=_sanitized: _read(config, s),
            format=_format,
            metrics=None,
            metric_names=["pass@1"],
            protocol="fixed",
            max_source_length=325,
            max_target_length=256,
            max_new_tokens=256,
            hub="google-research-datasets/mbpp",
            budget_includes_prompt=True,
            truncate_source_left=True,
            sampling={"do_sample": True, "temperature": 0.6, "top_p": 0.95},
            postprocess=cut_completion,
            score=score,
            executes_code=True,
            id_key="task_id",
        )
    )

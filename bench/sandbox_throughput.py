"""Sandbox throughput: the pre-forked pool against a naive fresh-interpreter-per-program runner,
on the same programs (MBPP reference solutions + tests), the same worker count, in one run.

    python bench/sandbox_throughput.py [--workers 2] [--problems 974] [--out results.json]

The naive runner starts `python -I -c PROGRAM` per program in its own session and temp dir with
the same CPU / memory / file rlimits and a scrubbed environment, and trusts its exit status (no
minimal root, no Landlock, no namespaces, no verdict outside the program: it does less
isolation work, so the ratio printed is conservative). Prints programs/s for both and their
ratio; the target is >= 4x. Also prints what judging the tests outside the program costs, in
CPU time (steady on a busy machine, unlike wall time): the pool once more with each program's
asserts appended to the program itself (run inside it, as an in-process harness would, and no
tests for the judge); the difference is the judge's planning, the round trips and its own
evaluation. And the planning time alone (splitting the asserts, one core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpt_dist.sandbox import Limits, SandboxPool, _make_plan  # noqa: E402
from dpt_dist.tasks.mbpp import defined_names, load_problems  # noqa: E402

TARGET = 4.0


def naive_run(job: dict, limits: Limits) -> bool:
    source = f"{job['setup']}\n{job['program']}\n{job['tests']}\n"

    def confine():
        cpu = int(limits.cpu_seconds + 0.999)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb << 20,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb << 20,) * 2)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", source],
                cwd=tmp,
                env={"PATH": "/usr/bin:/bin"},
                capture_output=True,
                timeout=limits.wall,
                preexec_fn=confine,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every reaped descendant: workers, runners, programs
    return usage.ru_utime + usage.ru_stime


def pool_run(jobs: list[dict], workers: int, limits: Limits) -> dict:
    """-> seconds (start-up included), start-up seconds, CPU seconds, programs passed, isolation report."""
    started, cpu = time.perf_counter(), cpu_of_children()
    with SandboxPool(workers=workers, limits=limits) as pool:
        startup = time.perf_counter() - started
        results = pool.run(jobs)
        isolation = pool.isolation_report()
    return {
        "seconds": time.perf_counter() - started,
        "startup": startup,
        "cpu": cpu_of_children() - cpu,
        "passed": sum(r.passed for r in results),
        "isolation": isolation,
    }


def planning_ms(jobs: list[dict]) -> float:
    started = time.perf_counter()
    for job in jobs:
        _make_plan(job["setup"], job["tests"], job["names"])
    return 1000 * (time.perf_counter() - started) / len(jobs)


def mbpp_jobs(data: str, count: int) -> list[dict]:
    problems = list(load_problems(data).values())[:count]
    return [
        {
            "setup": p["test_setup_code"],
            "program": p["code"],
            "tests": "\n".join(p["test_list"]),
            "names": defined_names(p["code"]),
        }
        for p in problems
    ]


def report(figures: dict) -> None:
    print(f"{'runner':<34} {'seconds':>8} {'programs/s':>11} {'passed':>7}")
    for name, key in (("pre-forked sandbox pool", "pool"), ("naive python -I per program", "naive")):
        seconds, rate, passed = (figures[f"{key}_{what}"] for what in ("seconds", "programs_per_s", "passed"))
        print(f"{name:<34} {seconds:>8.2f} {rate:>11} {passed:>7}")
    print(
        f"speedup {figures['speedup']}x (target >= {TARGET:g}x), {figures['workers']} workers on {figures['cpus']} CPUs"
    )
    print(
        f"judging the tests outside the program: {figures['judging_cpu_ms_per_program']} ms of CPU per program "
        f"({figures['pool_cpu_ms_per_program']} judged outside, {figures['pool_cpu_ms_per_program_tests_inside']} "
        f"with the asserts run inside the program); planning {figures['planning_ms_per_program']} ms of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--problems", type=int, default=974)
    parser.add_argument("--data", default=str(ROOT / "data" / "mbpp" / "mbpp.jsonl"))
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    jobs, limits = mbpp_jobs(args.data, args.problems), Limits()

    pool = pool_run(jobs, args.workers, limits)
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as ex:
        naive_passed = sum(ex.map(lambda j: naive_run(j, limits), jobs))
    naive_seconds = time.perf_counter() - started
    inside = pool_run(
        [{**job, "program": f"{job['program']}\n{job['tests']}\n", "tests": ""} for job in jobs], args.workers, limits
    )

    figures = {
        "programs": len(jobs),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "pool_seconds": round(pool["seconds"], 2),
        "pool_startup_seconds": round(pool["startup"], 2),
        "pool_passed": pool["passed"],
        "pool_programs_per_s": round(len(jobs) / pool["seconds"], 1),
        "naive_seconds": round(naive_seconds, 2),
        "naive_passed": naive_passed,
        "naive_programs_per_s": round(len(jobs) / naive_seconds, 1),
        "speedup": round(naive_seconds / pool["seconds"], 2),
        "target_speedup": TARGET,
        "pool_cpu_ms_per_program": round(1000 * pool["cpu"] / len(jobs), 2),
        "pool_cpu_ms_per_program_tests_inside": round(1000 * inside["cpu"] / len(jobs), 2),
        "judging_cpu_ms_per_program": round(1000 * (pool["cpu"] - inside["cpu"]) / len(jobs), 2),
        "planning_ms_per_program": round(planning_ms(jobs), 3),
        "isolation": pool["isolation"],
    }
    report(figures)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

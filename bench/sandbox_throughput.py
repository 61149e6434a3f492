"""Sandbox throughput: the pre-forked pool against a naive fresh-interpreter-per-program runner,
on the same programs (MBPP reference solutions + tests), the same worker count, in one run.

    python bench/sandbox_throughput.py [--workers 2] [--problems 974] [--out results.json]

The naive runner starts `python -I -c PROGRAM` per program in its own session and temp dir with
the same CPU / memory / file rlimits and a scrubbed environment (no Landlock, no network
namespace: it does less isolation work, so the ratio printed is conservative). Prints
programs/s for both and their ratio; the target is >= 3x.
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

from dpt_dist.sandbox import Limits, SandboxPool  # noqa: E402
from dpt_dist.tasks.mbpp import load_problems  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--problems", type=int, default=974)
    parser.add_argument("--data", default=str(ROOT / "data" / "mbpp" / "mbpp.jsonl"))
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    problems = list(load_problems(args.data).values())[: args.problems]
    jobs = [{"setup": p["test_setup_code"], "program": p["code"], "tests": "\n".join(p["test_list"])} for p in problems]
    limits = Limits()

    started = time.perf_counter()
    with SandboxPool(workers=args.workers, limits=limits) as pool:
        startup = time.perf_counter() - started
        results = pool.run(jobs)
        isolation = pool.isolation_report()
    pool_seconds = time.perf_counter() - started  # start-up included
    pool_passed = sum(r.passed for r in results)

    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as ex:
        naive_passed = sum(ex.map(lambda j: naive_run(j, limits), jobs))
    naive_seconds = time.perf_counter() - started

    figures = {
        "programs": len(jobs),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "pool_seconds": round(pool_seconds, 2),
        "pool_startup_seconds": round(startup, 2),
        "pool_passed": pool_passed,
        "pool_programs_per_s": round(len(jobs) / pool_seconds, 1),
        "naive_seconds": round(naive_seconds, 2),
        "naive_passed": naive_passed,
        "naive_programs_per_s": round(len(jobs) / naive_seconds, 1),
        "speedup": round(naive_seconds / pool_seconds, 2),
        "target_speedup": 3.0,
        "isolation": isolation,
    }
    print(f"{'runner':<34} {'seconds':>8} {'programs/s':>11} {'passed':>7}")
    print(f"{'pre-forked sandbox pool':<34} {pool_seconds:>8.2f} {figures['pool_programs_per_s']:>11} {pool_passed:>7}")
    print(
        f"{'naive python -I per program':<34} {naive_seconds:>8.2f} "
        f"{figures['naive_programs_per_s']:>11} {naive_passed:>7}"
    )
    print(f"speedup {figures['speedup']}x (target >= 3x), {args.workers} workers on {os.cpu_count()} CPUs")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`dpt-dist` command line: train, tasks, presets."""
from __future__ import annotations

import argparse
import sys

USAGE = """dpt-dist train CONFIG.yaml|PRESET [--dry-run] [--allow-code-execution] [--section.key value ...]
       dpt-dist eval-mbpp --completions FILE.jsonl --allow-code-execution [--data PATH] [--split NAME] --out DIR
       dpt-dist tasks      (the task router's tasks)
       dpt-dist presets    (the papers' settings, runnable by name)

examples:
  dpt-dist train configs/demo_cb_adept.yaml
  dpt-dist train adept-superglue-t5-base --task.name rte --task.data_dir data/superglue/RTE
  torchrun --nproc_per_node 2 -m dpt_dist.cli train configs/demo_cb_adept.yaml --train.steps 50
  deepspeed --num_gpus 8 -m dpt_dist.cli train my.yaml --prompt.method dpt --prompt.rank 10
  dpt-dist eval-mbpp --completions runs/x/predictions/validation_step500.completions.jsonl --allow-code-execution --out runs/x/mbpp
"""
ALLOW_HELP = "run model-generated code in the sandbox (off by default: nothing is executed without it)"


def _quiet_libraries() -> None:
    import warnings

    # torch 2.13 deprecates collectives DeepSpeed 0.19.8 still calls: one warning per step otherwise.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    import datasets

    datasets.disable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dpt-dist", description="Decomposed prompt tuning of frozen LMs under DeepSpeed.", usage=USAGE)
    # the deepspeed launcher passes --local_rank=N before the subcommand (LOCAL_RANK is also set)
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a soft prompt on a frozen backbone")
    train.add_argument("config", help="YAML run config, or the name of a preset (dpt-dist presets)")
    train.add_argument("--dry-run", action="store_true", help="build data, model and engine config, print the parameter count, exit")
    train.add_argument("--allow-code-execution", action="store_true", help=ALLOW_HELP + "; MBPP training needs it")
    mbpp = sub.add_parser("eval-mbpp", help="score MBPP completions by running them in the sandbox (pass@k)")
    mbpp.add_argument("--completions", required=True, help="JSONL, one {task_id, completion} per line; several lines per task = samples")
    mbpp.add_argument("--allow-code-execution", action="store_true", help=ALLOW_HELP)
    mbpp.add_argument("--data", default=None, help="mbpp.jsonl or sanitized-mbpp.json (default: the repo's data/mbpp/mbpp.jsonl)")
    mbpp.add_argument("--split", default=None, help="score exactly this split's problems: all, test, validation, train, prompt, "
                      "5050-train, 5050-test (default: the problems the completions name)")
    mbpp.add_argument("--out", required=True, help="directory for samples.jsonl, problems.jsonl and summary.json")
    mbpp.add_argument("--workers", type=int, default=None, help="parallel sandbox workers (default: one per CPU)")
    mbpp.add_argument("--timeout", type=float, default=10.0, help="CPU seconds per program (wall clock: 3x + 5 s)")
    mbpp.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per program")
    sub.add_parser("tasks", help="list the tasks, their split protocol and metrics")
    sub.add_parser("presets", help="list the preset configs (the papers' settings)")
    args, overrides = parser.parse_known_args(argv)

    if args.command == "tasks":
        return _list_tasks()
    if args.command == "presets":
        return _list_presets()
    if args.command == "eval-mbpp":
        return _eval_mbpp(args) if not overrides else parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if overrides and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    _quiet_libraries()
    from .config import load_config, preset_path

    try:
        cfg = load_config(preset_path(args.config), overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"dpt-dist: error: {err}", file=sys.stderr)
        return 2
    from . import engine
    from .train import run

    try:
        run(cfg, dry_run=args.dry_run, allow_code_execution=args.allow_code_execution)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"dpt-dist: error: {err}", file=sys.stderr)
        engine.shutdown(together=False)
        return 2
    except BaseException:
        engine.shutdown(together=False)
        raise
    engine.shutdown()
    return 0


def _eval_mbpp(args) -> int:
    import json
    from pathlib import Path

    from .monitor import write_json_atomic
    from .tasks.mbpp import SPLITS, execute, in_split, load_problems, read_completions
    from .sandbox import Limits

    def fail(message: str) -> int:
        print(f"dpt-dist eval-mbpp: error: {message}", file=sys.stderr)
        return 2

    if not args.allow_code_execution:
        return fail("refusing to execute model-generated code without --allow-code-execution")
    if args.split is not None and args.split not in SPLITS:
        return fail(f"--split {args.split!r}: choose one of {', '.join(SPLITS)}")
    data = Path(args.data) if args.data else Path(__file__).resolve().parents[1] / "data" / "mbpp" / "mbpp.jsonl"
    try:
        limits = Limits(cpu_seconds=args.timeout, memory_mb=args.memory_mb)
        problems = load_problems(data)
        samples = read_completions(args.completions)
        if args.split is not None:
            outside = sorted({t for t, _ in samples if t in problems and not in_split(t, args.split)})
            if outside:
                return fail(f"{args.completions}: task_id(s) {outside[:10]} are not in split {args.split}")
            uncovered = sorted(t for t in problems if in_split(t, args.split) and t not in {t for t, _ in samples})
            if uncovered:
                return fail(f"{args.completions}: {len(uncovered)} problem(s) of split {args.split} have no completion "
                            f"(e.g. {uncovered[:10]})")
        started = __import__("time").time()
        sample_rows, problem_rows, summary = execute(problems, samples, allow_code_execution=True, limits=limits, workers=args.workers)
        summary.update(seconds=round(__import__("time").time() - started, 2), data=str(data), completions=str(args.completions),
                       split=args.split or "the problems named in the completions")
    except (ValueError, FileNotFoundError, PermissionError) as err:
        return fail(str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("samples.jsonl", sample_rows), ("problems.jsonl", problem_rows)):
        tmp = out / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out / name)
    write_json_atomic(out / "summary.json", summary)
    passes = ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if k.startswith("pass@"))
    print(f"{summary['problems']} problems, {summary['samples']} samples in {summary['seconds']} s: {passes}")
    print(f"statuses: {summary['status_counts']}")
    failed = summary["failed_task_ids"]
    print(f"problems not passing every sample ({len(failed)}): {failed[:50]}{' ...' if len(failed) > 50 else ''}")
    print(f"written: {out / 'samples.jsonl'}, {out / 'problems.jsonl'}, {out / 'summary.json'}")
    return 0


def _list_tasks() -> int:
    from .tasks import TASKS

    print(f"{'task':<15} {'family':<10} {'split':<6} {'metrics':<26} {'hub dataset':<44} description")
    for task in sorted(TASKS.values(), key=lambda t: (t.family, t.name)):
        print(f"{task.name:<15} {task.family:<10} {task.protocol:<6} {', '.join(task.metric_names):<26} {task.hub:<44} {task.description}")
    print("\nsplit (DePT protocol): halve = official validation halved into validation/test; carve = 1,000 training rows "
          "become validation, official validation is test; mnli = mismatched/matched; own = the dataset's splits. "
          "task.split_mode=official reports on the official validation set instead.")
    return 0


def _list_presets() -> int:
    import yaml

    from .config import PRESET_DIR

    for path in sorted(PRESET_DIR.glob("*.yaml")):
        first = path.read_text().splitlines()[0].lstrip("# ").strip()
        tree = yaml.safe_load(path.read_text())
        print(f"{path.stem:<28} {tree['model']['name']:<22} {tree['prompt']['method']:<6} {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

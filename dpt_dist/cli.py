"""`dpt-dist` command line: train, eval-mbpp, export, predict, tasks, presets."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

USAGE = """dpt-dist train CONFIG.yaml|PRESET [--dry-run] [--allow-code-execution] [--section.key value ...]
       dpt-dist eval-mbpp --completions FILE.jsonl --allow-code-execution [--data PATH] [--split NAME] --out DIR
       dpt-dist export ARTIFACT --out DIR [--merge-embeddings] [--backbone PATH]
       dpt-dist predict ARTIFACT (--input FILE.jsonl | --text TEXT ...) [--backbone PATH] [--out FILE.jsonl]
       dpt-dist plan CONFIG.yaml|PRESET [--world N] [--ranks-per-node R] [--device-memory-gb G] [--device cuda|cpu]
       dpt-dist tasks      (the task router's tasks)
       dpt-dist presets    (the papers' settings, runnable by name)

examples:
  dpt-dist train configs/demo_cb_adept.yaml
  dpt-dist train adept-superglue-t5-base --task.name rte --task.data_dir data/superglue/RTE
  torchrun --nproc_per_node 2 -m dpt_dist.cli train configs/demo_cb_adept.yaml --train.steps 50
  deepspeed --num_gpus 8 -m dpt_dist.cli train my.yaml --prompt.method dpt --prompt.rank 10
  dpt-dist eval-mbpp --allow-code-execution --out runs/x/mbpp \\
      --completions runs/x/predictions/validation_step500.completions.jsonl
"""
ALLOW_HELP = "run model-generated code in the sandbox (off by default: nothing is executed without it)"


def _quiet_libraries() -> None:
    import warnings

    # torch 2.13 deprecates collectives DeepSpeed 0.19.8 still calls: one warning per step otherwise.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    import datasets

    datasets.disable_progress_bars()


def _add_eval_mbpp(sub) -> None:
    mbpp = sub.add_parser(
        "eval-mbpp",
        help="score MBPP completions by running them in the sandbox (pass@k)",
    )
    mbpp.add_argument(
        "--completions",
        required=True,
        help="JSONL, one {task_id, completion} per line; several lines per task = samples",
    )
    mbpp.add_argument("--allow-code-execution", action="store_true", help=ALLOW_HELP)
    mbpp.add_argument(
        "--data",
        default=None,
        help="mbpp.jsonl or sanitized-mbpp.json (default: the full MBPP, which ships with dpt_dist)",
    )
    mbpp.add_argument(
        "--split",
        default=None,
        help="score exactly this split's problems: all, test, validation, train, prompt, "
        "5050-train, 5050-test (default: the problems the completions name)",
    )
    mbpp.add_argument(
        "--out",
        required=True,
        help="directory for samples.jsonl, problems.jsonl and summary.json",
    )
    mbpp.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel sandbox workers (default: one per CPU)",
    )
    mbpp.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="CPU seconds per program (wall clock: 3x + 5 s)",
    )
    mbpp.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per program")


def _add_predict(sub) -> None:
    pred = sub.add_parser("predict", help="generate with a backbone + prompt artifact (exported or not)")
    pred.add_argument("artifact", help="a prompt artifact directory")
    source = pred.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="JSONL with a 'source' (or 'input' / 'text') field per line")
    source.add_argument("--text", nargs="+", help="one or more input texts")
    pred.add_argument(
        "--backbone",
        default=None,
        help="base model (default: the one recorded in the artifact)",
    )
    pred.add_argument(
        "--max-new-tokens", type=int, default=None, help="generation budget (default: the training run's, else 32)"
    )
    pred.add_argument("--batch-size", type=int, default=16)
    pred.add_argument("--out", default=None, help="JSONL output (default: print to stdout)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpt-dist",
        description="Decomposed prompt tuning of frozen LMs under DeepSpeed.",
        usage=USAGE,
    )
    # the deepspeed launcher passes --local_rank=N before the subcommand (LOCAL_RANK is also set)
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a soft prompt on a frozen backbone")
    train.add_argument("config", help="YAML run config, or the name of a preset (dpt-dist presets)")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="build data, model and engine config, print the parameter count, exit",
    )
    train.add_argument(
        "--allow-code-execution",
        action="store_true",
        help=ALLOW_HELP + "; MBPP training needs it",
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint in OUTPUT_DIR/checkpoints (or the one given); "
        "a fresh start if there is none yet",
    )
    _add_eval_mbpp(sub)
    exp = sub.add_parser(
        "export",
        help="fold a trained prompt for inference (DPT: A.B; ADePT: merged input table)",
    )
    exp.add_argument("artifact", help="a prompt artifact directory (OUTPUT_DIR/prompt)")
    exp.add_argument("--out", required=True, help="directory for the exported artifact")
    exp.add_argument(
        "--merge-embeddings",
        action="store_true",
        help="ADePT: precompute E + f(E) over the vocabulary",
    )
    exp.add_argument(
        "--backbone",
        default=None,
        help="base model (default: the one recorded in the artifact)",
    )
    _add_predict(sub)
    plan = sub.add_parser("plan", help="where the frozen weights would live (deepspeed.config auto), without running")
    plan.add_argument("config", help="YAML run config, or the name of a preset")
    plan.add_argument("--world", type=int, default=1, help="ranks in the job")
    plan.add_argument("--ranks-per-node", type=int, default=None, help="default: --world (one node)")
    plan.add_argument("--device-memory-gb", type=float, default=None, help="per rank (default: this machine's)")
    plan.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: this machine's")
    sub.add_parser("tasks", help="list the tasks, their split protocol and metrics")
    sub.add_parser("presets", help="list the preset configs (the papers' settings)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if args.command == "tasks":
        return _list_tasks()
    if args.command == "presets":
        return _list_presets()
    if args.command == "plan":
        return _plan(args, overrides)
    if args.command in ("export", "predict"):
        if overrides:
            parser.error(f"unrecognized arguments: {' '.join(overrides)}")
        _quiet_libraries()
        try:
            return _export(args) if args.command == "export" else _predict(args)
        except (ValueError, FileNotFoundError, OSError) as err:
            print(f"dpt-dist {args.command}: error: {err}", file=sys.stderr)
            return 2
    if args.command == "eval-mbpp":
        return _eval_mbpp(args) if not overrides else parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if overrides and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    from .interrupts import Interrupted, StopRequest

    try:
        with StopRequest().installed():  # from here on a SIGINT / SIGTERM ends in one line
            return _train_command(args, overrides)
    except (Interrupted, KeyboardInterrupt) as err:
        signum, phase = (
            getattr(err, "signum", signal.SIGINT),
            getattr(err, "phase", "start-up"),
        )
        return _interrupted(
            signum,
            f"during {phase}; nothing of this run was lost, but nothing was trained either",
        )


def _train_command(args, overrides: list[str]) -> int:
    _quiet_libraries()
    from .config import load_config, preset_path

    try:
        cfg = load_config(preset_path(args.config), overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"dpt-dist: error: {err}", file=sys.stderr)
        return 2
    return _train(cfg, args)


def resume_command(argv: list[str]) -> str:
    """This command line with `--resume` (latest) instead of any --resume it had."""
    kept, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        if not arg.startswith("--resume="):
            kept.append(arg)
    return shlex.join(["dpt-dist", *kept, "--resume"])


def _interrupted(signum: int, where: str) -> int:
    """One line for a SIGINT / SIGTERM, and the conventional exit status 128 + signal."""
    # only if it is loaded already: an interrupt during `import torch` leaves torch half-imported
    dist = sys.modules.get(f"{__package__}.dist")
    rank = dist.rank() if dist is not None else int(os.environ.get("RANK", "0") or 0)
    if rank == 0:
        print(f"dpt-dist: stopped by {signal.Signals(signum).name} {where}", file=sys.stderr, flush=True)
    if dist is not None:
        dist.shutdown(together=False)
    return 128 + signum


def _train(cfg, args) -> int:
    from . import dist
    from .interrupts import Interrupted
    from .train import run

    try:
        result = run(
            cfg,
            dry_run=args.dry_run,
            allow_code_execution=args.allow_code_execution,
            resume=args.resume,
        )
    except Interrupted as err:
        return _interrupted(
            err.signum,
            f"during {err.phase}; every checkpoint in {cfg.train.output_dir}/checkpoints is complete, and this "
            f"continues from the newest (or starts afresh): {resume_command(sys.argv[1:])}",
        )
    # bad input, and unwritable or missing files: one line
    except (ValueError, OSError) as err:
        print(f"dpt-dist: error: {err}", file=sys.stderr)
        dist.shutdown(together=False)
        return 2
    except RuntimeError as err:
        if dist.world_size() <= 1:
            dist.shutdown(together=False)
            raise
        # A collective failed: another rank died or lost its connection. Say so, and how to go on.
        print(
            f"dpt-dist: error: rank {dist.rank()} lost its peers "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"the job stops. Rerun with --resume to continue from the last complete checkpoint in "
            f"{cfg.train.output_dir}/checkpoints",
            file=sys.stderr,
            flush=True,
        )
        dist.shutdown(together=False)
        return 1
    except BaseException:
        dist.shutdown(together=False)
        raise
    if result.status == "interrupted":
        return _interrupted(
            result.signal,
            f"after step {result.steps_run}/{result.steps}; checkpoint {result.checkpoint} is "
            f"complete. Continue with: {resume_command(sys.argv[1:])}",
        )
    dist.shutdown()
    return 0


def _load_for_inference(artifact: str, backbone_path: str | None):
    from .artifact import read_artifact
    from .backbone import load_backbone, load_tokenizer, resolve_backbone

    meta, _ = read_artifact(artifact)
    if backbone_path:
        path = tokenizer = resolve_backbone(backbone_path)
    else:
        path, tokenizer = (
            meta.get("base_model"),
            meta.get("tokenizer") or meta.get("base_model"),
        )
        if path and not Path(path).exists() and meta.get("base_model_name"):
            # the converted checkpoint of a GGUF base model is a cache entry: make it again if it went
            path = tokenizer = resolve_backbone(meta["base_model_name"])
    if not path:
        raise ValueError(f"{artifact}: the artifact names no base model; pass --backbone")
    return meta, load_backbone(path), load_tokenizer(tokenizer)


def _export(args) -> int:
    from .export import export

    backbone = _load_for_inference(args.artifact, args.backbone)[1] if args.merge_embeddings else None
    out = export(
        args.artifact,
        args.out,
        merge_embeddings=args.merge_embeddings,
        backbone=backbone,
    )
    print(f"exported {args.artifact} -> {out}")
    return 0


def _predict(args) -> int:
    import torch

    from .data import collate_generate, encode_sources
    from .files import write_jsonl_atomic
    from .model import PromptedModel

    if args.input:
        from .tasks.sources import iter_jsonl

        texts = []
        for line_no, row in iter_jsonl(Path(args.input)):
            text = row.get("source", row.get("input", row.get("text")))
            if not isinstance(text, str):
                raise ValueError(f"{args.input}: line {line_no} has no 'source', 'input' or 'text' string")
            texts.append(text)
    else:
        texts = args.text
    meta, backbone, tokenizer = _load_for_inference(args.artifact, args.backbone)
    model = PromptedModel.from_pretrained(backbone, args.artifact)  # eval mode
    encoder_decoder = model.is_encoder_decoder
    # the inputs are cut as the run that trained the artifact cut them (its max_source_length,
    # from the end or, for MBPP, from the start); artifacts older than that record are not cut
    max_source = meta.get("max_source_length") or 10**9
    max_new_tokens = args.max_new_tokens or meta.get("max_new_tokens") or 32
    rows = []
    for start in range(0, len(texts), args.batch_size):
        chunk = texts[start : start + args.batch_size]
        ids = encode_sources(chunk, tokenizer, encoder_decoder, max_source, meta.get("truncate_source_left", False))
        batch = collate_generate(
            [{"prompt_ids": i} for i in ids],
            tokenizer.pad_token_id,
            left=not encoder_decoder,
        )
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        rows += [
            {"input": t, "prediction": p.strip()}
            for t, p in zip(chunk, tokenizer.batch_decode(out, skip_special_tokens=True))
        ]
    if args.out:
        write_jsonl_atomic(args.out, rows)
        print(f"{len(rows)} predictions -> {args.out}")
    else:
        sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return 0


def _eval_mbpp_problem(args) -> str | None:
    """What is wrong with eval-mbpp's flags, before anything is read or run (None: nothing)."""
    from .tasks.mbpp import SPLITS

    if not args.allow_code_execution:
        return "refusing to execute model-generated code without --allow-code-execution"
    if args.split is not None and args.split not in SPLITS:
        return f"--split {args.split!r}: choose one of {', '.join(SPLITS)}"
    for flag, value, low in (
        ("--timeout", args.timeout, 0.1),
        ("--memory-mb", args.memory_mb, 64),
        ("--workers", args.workers, 1),
    ):
        if value is not None and not value >= low:
            return f"{flag} must be at least {low:g}, got {value}"
    return None


def _check_split_coverage(samples, problems, split: str, completions: str) -> None:
    """--split NAME scores exactly that split: every completion in it, every problem of it covered."""
    from .tasks.mbpp import in_split

    outside = sorted({t for t, _ in samples if t in problems and not in_split(t, split)})
    if outside:
        raise ValueError(f"{completions}: task_id(s) {outside[:10]} are not in split {split}")
    named = {t for t, _ in samples}
    uncovered = sorted(t for t in problems if in_split(t, split) and t not in named)
    if uncovered:
        raise ValueError(
            f"{completions}: {len(uncovered)} problem(s) of split {split} have no completion (e.g. {uncovered[:10]})"
        )


def _eval_mbpp(args) -> int:
    from .files import check_writable, write_json_atomic, write_jsonl_atomic
    from .sandbox import Limits
    from .tasks.mbpp import SHIPPED_MBPP, execute, load_problems, read_completions

    def fail(message: str) -> int:
        print(f"dpt-dist eval-mbpp: error: {message}", file=sys.stderr)
        return 2

    problem = _eval_mbpp_problem(args)
    if problem:
        return fail(problem)
    data, out = Path(args.data) if args.data else SHIPPED_MBPP, Path(args.out)
    try:
        check_writable(out, "--out")  # before minutes of execution, not after
        limits = Limits(cpu_seconds=args.timeout, memory_mb=args.memory_mb)
        problems, samples = load_problems(data), read_completions(args.completions)
        if args.split is not None:
            _check_split_coverage(samples, problems, args.split, args.completions)
        started = time.time()
        sample_rows, problem_rows, summary = execute(
            problems, samples, allow_code_execution=True, limits=limits, workers=args.workers
        )
        summary.update(
            seconds=round(time.time() - started, 2),
            data=str(data),
            completions=str(args.completions),
            split=args.split or "the problems named in the completions",
        )
        write_jsonl_atomic(out / "samples.jsonl", sample_rows)
        write_jsonl_atomic(out / "problems.jsonl", problem_rows)
        write_json_atomic(out / "summary.json", summary)
    except (ValueError, OSError) as err:
        return fail(str(err))
    passes = ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if k.startswith("pass@"))
    print(f"{summary['problems']} problems, {summary['samples']} samples in {summary['seconds']} s: {passes}")
    print(f"statuses: {summary['status_counts']}")
    failed = summary["failed_task_ids"]
    print(f"problems not passing every sample ({len(failed)}): {failed[:50]}{' ...' if len(failed) > 50 else ''}")
    print(f"written: {out / 'samples.jsonl'}, {out / 'problems.jsonl'}, {out / 'summary.json'}")
    return 0


def _plan(args, overrides: list[str]) -> int:
    """`dpt-dist plan`: the planner's decision for a config on a cluster, from configs alone."""
    _quiet_libraries()
    from .config import load_config, preset_path
    from .placement import decide, detect_cluster, footprint

    try:
        for flag, value in (("--world", args.world), ("--ranks-per-node", args.ranks_per_node)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if args.device_memory_gb is not None and args.device_memory_gb <= 0:
            raise ValueError(f"--device-memory-gb must be > 0, got {args.device_memory_gb}")
        cfg = load_config(preset_path(args.config), overrides)
        cluster = detect_cluster(args.world, args.ranks_per_node or args.world, args.device_memory_gb, args.device)
        need = footprint(cfg, cluster)
        print(
            f"model {cfg.model.name} ({cfg.model.dtype}), micro-batch {cfg.train.micro_batch_size}, "
            f"{cluster.world} rank(s), {cluster.ranks_per_node} per node, {cluster.device_memory_gb:.1f} GB per rank"
        )
        print(decide(need, cluster).describe())
    except (ValueError, FileNotFoundError) as err:
        print(f"dpt-dist plan: error: {err}", file=sys.stderr)
        return 2
    if cfg.deepspeed.config != "auto":
        print(f"note: this config names deepspeed.config {cfg.deepspeed.config}, which wins over the planner in a run")
    return 0


def _list_tasks() -> int:
    from .tasks import TASKS

    print(f"{'task':<15} {'family':<10} {'split':<6} {'metrics':<26} {'hub dataset':<44} description")
    for task in sorted(TASKS.values(), key=lambda t: (t.family, t.name)):
        print(
            f"{task.name:<15} {task.family:<10} {task.protocol:<6} {', '.join(task.metric_names):<26} "
            f"{task.hub:<44} {task.description}"
        )
    print(
        "\nsplit (DePT protocol): halve = official validation halved into validation/test; carve = 1,000 training rows "
        "become validation, official validation is test; mnli = mismatched/matched; own = the dataset's splits. "
        "task.split_mode=official reports on the official validation set instead."
    )
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

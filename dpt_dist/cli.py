"""`dpt-dist` command line: train, tasks, presets."""
from __future__ import annotations

import argparse
import sys

USAGE = """dpt-dist train CONFIG.yaml|PRESET [--dry-run] [--section.key value ...]
       dpt-dist tasks      (the task router's tasks)
       dpt-dist presets    (the papers' settings, runnable by name)

examples:
  dpt-dist train configs/demo_cb_adept.yaml
  dpt-dist train adept-superglue-t5-base --task.name rte --task.data_dir data/superglue/RTE
  torchrun --nproc_per_node 2 -m dpt_dist.cli train configs/demo_cb_adept.yaml --train.steps 50
  deepspeed --num_gpus 8 -m dpt_dist.cli train my.yaml --prompt.method dpt --prompt.rank 10
"""


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
    sub.add_parser("tasks", help="list the tasks, their split protocol and metrics")
    sub.add_parser("presets", help="list the preset configs (the papers' settings)")
    args, overrides = parser.parse_known_args(argv)

    if args.command == "tasks":
        return _list_tasks()
    if args.command == "presets":
        return _list_presets()
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
        run(cfg, dry_run=args.dry_run)
    except (ValueError, FileNotFoundError) as err:
        print(f"dpt-dist: error: {err}", file=sys.stderr)
        engine.shutdown(together=False)
        return 2
    except BaseException:
        engine.shutdown(together=False)
        raise
    engine.shutdown()
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

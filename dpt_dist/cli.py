"""`dpt-dist` command line: train (more subcommands join as the project grows)."""
from __future__ import annotations

import argparse
import sys

USAGE = """dpt-dist train CONFIG.yaml [--dry-run] [--section.key value ...]

examples:
  dpt-dist train configs/demo_cb_adept.yaml
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
    train.add_argument("config", help="YAML run config")
    train.add_argument("--dry-run", action="store_true", help="build data, model and engine config, print the parameter count, exit")
    args, overrides = parser.parse_known_args(argv)

    _quiet_libraries()
    from .config import load_config

    try:
        cfg = load_config(args.config, overrides)
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


if __name__ == "__main__":
    sys.exit(main())

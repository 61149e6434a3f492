"""Logging: one console line format, TensorBoard scalars and a tqdm bar, all on rank 0 only."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("dpt_dist")


def setup_logging(rank: int) -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"[dpt_dist rank{rank}] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.propagate = False


class Monitor:
    def __init__(self, log_dir: str, total_steps: int, enabled: bool):
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=log_dir)
            self.bar = tqdm(total=total_steps, desc="train", dynamic_ncols=True, disable=not sys.stderr.isatty() and os.environ.get("DPT_DIST_PROGRESS") != "1")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer:
            for key, value in values.items():
                if value is not None:
                    self.writer.add_scalar(key, value, step)

    def advance(self, postfix: dict | None = None) -> None:
        if self.bar:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.writer:
            self.writer.flush()
            self.writer.close()


def write_json_atomic(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)

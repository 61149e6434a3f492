"""Checkpoint files: what a run needs to continue, never the frozen backbone.

    OUTPUT_DIR/checkpoints/step_00000050/
        state.safetensors    fp32 trainable tensors, Adam moments, the best prompt so far,
                             every rank's torch RNG state
        trainer_state.json   step, optimizer step, LR schedule, data position, losses,
                             evaluations, model selection, spectrum history, world size, config
        COMPLETE             written last: a directory without it is never loaded

Rank 0 writes everything (the states are replicated; RNG states are gathered to it first),
so no shared filesystem is needed to write, and a checkpoint is a few MB even for 11B models.
It is written under a temporary name and renamed into place once COMPLETE is on disk; a job
killed mid-write leaves only a `.tmp-*` directory, which the next run ignores and removes.
The last `keep` checkpoints and the one of the best validation step are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import make_shareable

COMPLETE = "COMPLETE"
STATE = "state.safetensors"
TRAINER = "trainer_state.json"
_NAME = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(root: str | Path, step: int, tensors: dict[str, torch.Tensor], trainer_state: dict) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATE))
    (tmp / TRAINER).write_text(json.dumps(trainer_state, indent=1, default=str))
    pause = _fault_pause(step)
    if pause:  # fault injection for the tests: a window in which the write is incomplete
        print(f"[dpt_dist] fault injection: pausing {pause:g} s inside the checkpoint write of step {step}", flush=True)
        time.sleep(pause)
    for name in (STATE, TRAINER):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    (tmp / COMPLETE).write_text(f"step {step}\n")
    make_shareable(tmp)
    _fsync_dir(tmp)
    if final.exists():  # the same step written again (e.g. a rerun): replace it whole
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(root)
    return final


def _fault_pause(step: int) -> float:
    """DPT_DIST_FAULT_PAUSE_IN_CHECKPOINT="STEP:SECONDS" (or "SECONDS" for every step): sleep
    inside that checkpoint write, before it is complete. Only the fault-tolerance tests set it."""
    spec = os.environ.get("DPT_DIST_FAULT_PAUSE_IN_CHECKPOINT", "")
    if not spec:
        return 0.0
    at, _, seconds = spec.rpartition(":")
    return float(seconds) if not at or int(at) == step else 0.0


def complete(root: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _NAME.match(path.name)
        if m and (path / COMPLETE).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def resolve(spec: str, root: str | Path, on_skip=None) -> Path | None:
    """`--resume` value -> a checkpoint directory. "latest": the newest complete checkpoint
    under root that reads back intact (a damaged one is reported through `on_skip(path, error)`
    and the one before it tried); None if there is none yet (a fresh start). Otherwise a path
    that must be a complete, intact checkpoint."""
    if spec == "latest":
        found = complete(root)
        for _, path in reversed(found):
            try:
                read(path)
                return path
            except ValueError as err:
                if on_skip is not None:
                    on_skip(path, err)
        if found:
            raise ValueError(
                f"--resume: every checkpoint in {root} is damaged ({', '.join(p.name for _, p in found)}); "
                "remove them to start afresh"
            )
        return None
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {spec}: no such checkpoint directory")
    if not (path / COMPLETE).is_file():
        raise ValueError(
            f"--resume {spec}: incomplete checkpoint (no {COMPLETE} marker: it was being written when its job "
            f"stopped); use an earlier one or --resume latest"
        )
    read(path)
    return path


REQUIRED_STATE = ("step",)  # what every checkpoint holds; the recipe checks its own fields


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise ValueError(f"{path}: incomplete checkpoint (no {COMPLETE} marker)")
    try:
        tensors, state = load_file(str(path / STATE)), json.loads((path / TRAINER).read_text())
    except Exception as err:  # noqa: BLE001 - a damaged file (OSError, SafetensorError, bad JSON) is one clear error
        detail = str(err).splitlines()[0][:200] if str(err) else ""
        raise ValueError(f"{path}: damaged checkpoint ({type(err).__name__}: {detail})") from None
    missing = [key for key in REQUIRED_STATE if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path}: damaged checkpoint ({TRAINER} lacks {', '.join(missing)})")
    return tensors, state


def prune(root: str | Path, keep: int, protect: set[int]) -> None:
    """Remove all but the newest `keep` complete checkpoints and those in `protect` (the best),
    and temporary directories left by killed writers (other processes than this one)."""
    root = Path(root)
    found = complete(root)
    keep_steps = {s for s, _ in found[-keep:]} | protect if keep > 0 else {s for s, _ in found}
    for step, path in found:
        if step not in keep_steps:
            shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".tmp-step_*"):
        if not path.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(path, ignore_errors=True)

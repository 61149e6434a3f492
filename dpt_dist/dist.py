"""The small collectives room: who am I, how many are we, and the few collectives the training
loop, evaluation and the CLI need. torch.distributed only (no DeepSpeed), and every function
also works in a plain single process with no process group at all.

Joining the process group is DeepSpeed's job (engine.setup_distributed: it also discovers
mpirun's environment); everything after that lives here.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def launcher_rank() -> int:
    """This process's rank as its launcher announced it (torchrun / deepspeed: RANK; mpirun,
    srun: their own variables), readable before the process group exists."""
    for name in (
        "RANK",
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
    ):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(value: float | int) -> float:
    """The sum of `value` over all ranks (float64, so token counts stay exact)."""
    t = torch.tensor([float(value)], dtype=torch.float64)
    if _active():
        dist.all_reduce(t)
    return t.item()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a signal that reached one)."""
    return all_reduce_sum(1.0 if flag else 0.0) > 0


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's value of `obj` on every rank (decisions made from rank-0-only metrics)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_rank0_then_everywhere(fn, errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)):
    """Run fn on rank 0 only (files may exist only there) and hand its result, or its error, to
    every rank, so that all ranks go on or stop together."""
    result, error = None, None
    if rank() == 0:
        try:
            result = fn()
        except errors as err:
            error = err
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (filling caches, writing files), then the others."""
    if rank() != 0:
        barrier()
    try:
        yield
    finally:
        if rank() == 0:
            barrier()


def shutdown(together: bool = True) -> None:
    """Leave together (a barrier first) so no rank tears its process group down while another
    still uses it. After an error the other ranks may be gone: then do not wait for them."""
    if dist.is_initialized():
        try:
            if together:
                barrier()
        finally:
            dist.destroy_process_group()

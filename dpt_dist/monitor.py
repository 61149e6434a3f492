"""Logging: one console line format, TensorBoard scalars and a tqdm bar, all on rank 0 only."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .files import write_json_atomic

log = logging.getLogger("dpt_dist")


def setup_logging(rank: int) -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"[dpt_dist rank{rank}] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.propagate = False


def peak_memory_mb() -> float:
    """Peak memory of this process: the accelerator's allocator peak on GPU, else peak RSS."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def spectrum_summary(values) -> dict[str, float]:
    """The DPT paper's rank analysis as scalars: entropy-based effective rank (Roy & Vetterli),
    how many singular values hold 99 % of the energy, and the largest one."""
    import torch

    s = values.double().clamp(min=0)
    p = s / s.sum().clamp(min=1e-12)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
    energy = torch.cumsum(s**2, 0) / (s**2).sum().clamp(min=1e-12)
    return {
        "spectrum/effective_rank": float(torch.exp(entropy)),
        "spectrum/rank_99": int((energy < 0.99).sum()) + 1,
        "spectrum/sigma_max": float(s[0]) if len(s) else 0.0,
    }


class Monitor:
    def __init__(self, log_dir: str, total_steps: int, enabled: bool, initial: int = 0):
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=log_dir)
            self.bar = tqdm(
                total=total_steps,
                initial=initial,
                desc="train",
                dynamic_ncols=True,
                disable=not sys.stderr.isatty() and os.environ.get("DPT_DIST_PROGRESS") != "1",
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer:
            for key, value in values.items():
                if value is not None:
                    self.writer.add_scalar(key, value, step)

    def spectrum(self, step: int, values) -> None:
        """Singular values of the effective prompt: summary scalars and the whole spectrum."""
        self.scalars(step, spectrum_summary(values))
        if self.writer:
            self.writer.add_histogram("spectrum/singular_values", values, step)

    def spectrum_plot(self, spectra: list, png_path: Path, json_path: Path) -> None:
        """The spectrum over training: one line per logged step (sorted singular values), the
        effective rank beside it. Written as PNG and JSON, and into TensorBoard as a figure."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        cmap = plt.get_cmap("viridis")
        last = max(step for step, _ in spectra) or 1
        for step, values in spectra:
            left.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values], color=cmap(step / last), lw=1)
        left.set(xlabel="index", ylabel="singular value", title="effective prompt spectrum (dark: early, light: late)")
        ranks = [spectrum_summary(torch.tensor(values))["spectrum/effective_rank"] for _, values in spectra]
        right.plot([step for step, _ in spectra], ranks, marker="o")
        right.set(xlabel="step", ylabel="effective rank", title="effective rank over training")
        fig.tight_layout()
        png_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = png_path.with_name(png_path.name + ".tmp.png")
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, png_path)
        if self.writer:
            self.writer.add_figure("spectrum/plot", fig, spectra[-1][0])
        plt.close(fig)
        write_json_atomic(json_path, {"steps": [s for s, _ in spectra], "singular_values": [v for _, v in spectra]})

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

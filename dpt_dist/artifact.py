"""The trainable-only artifact: prompt tensors as safetensors + a JSON config, written atomically.

    DIR/prompt.safetensors   the method's tensors (kilobytes)
    DIR/prompt_config.json   method, hyperparameters, shapes, base model, tokenizer, versions
    DIR/input_embeddings.safetensors   only in an ADePT export: the merged input table
A directory is written under a temporary name and renamed into place, so a reader never sees
a half-written artifact and an existing one is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import make_shareable

WEIGHTS = "prompt.safetensors"
CONFIG = "prompt_config.json"
MERGED_TABLE = "input_embeddings.safetensors"  # an ADePT export's merged input table E + f(E)
FORMAT_VERSION = 1


def write_artifact(
    out_dir: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict,
    extra_files: dict[str, dict[str, torch.Tensor]] | None = None,
) -> str:
    """`extra_files`: more safetensors files in the same directory (an export's merged table)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(tmp / WEIGHTS))
        for name, extra in (extra_files or {}).items():
            save_file({k: v.detach().to("cpu").contiguous() for k, v in extra.items()}, str(tmp / name))
        meta = {
            "format_version": FORMAT_VERSION,
            **meta,
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()},
        }
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        make_shareable(tmp)  # mkdtemp made it private; the artifact is for others to load too
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)


def check_prompt_meta(meta: dict, path: str | os.PathLike) -> None:
    """What loading a prompt from an artifact needs: its method and the embedding size."""
    if "method" not in meta["prompt"] or not isinstance(meta.get("embed_dim"), int):
        raise ValueError(
            f"{Path(path) / CONFIG}: not a prompt artifact's config (it needs 'prompt' with a 'method', "
            "and 'embed_dim')"
        )


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file, or one ValueError naming it when it is truncated or not safetensors."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...: one clear line
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"{path}: damaged or not a safetensors file ({detail})") from None


def read_artifact(artifact_dir: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    path = Path(artifact_dir)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path}: not a prompt artifact (expected {CONFIG} and {WEIGHTS})")
    try:
        meta = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path / CONFIG}: invalid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("prompt"), dict):
        raise ValueError(f"{path / CONFIG}: not a prompt artifact's config (it has no 'prompt' section)")
    if not isinstance(meta.get("format_version", 0), int) or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: artifact format {meta['format_version']} is newer than this dpt_dist understands")
    return meta, read_tensors(path / WEIGHTS)

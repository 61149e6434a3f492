"""Writing files: whole or not at all, readable by others, and refused early where it cannot be.

- Atomic: a file is written under a temporary name and renamed into place, so a reader (or a
  job killed mid-write) sees the old file or the new one, never half of one. Directories
  (artifacts, checkpoints, converted backbones) are built the same way by their writers.
- Shareable: temporary directories and files are created private (0700 / 0600); once renamed
  into place they get the mode the user's umask gives a normal file or directory, so a colleague
  on a shared filesystem can load the prompt a job produced.
- Writable: an output location is checked before anything expensive runs, and a location that
  cannot be written is one clear error naming it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def make_shareable(path: str | os.PathLike) -> None:
    """Give `path` (and, for a directory, everything in it) the modes a normal mkdir / open
    would under the current umask: 0755 / 0644 under umask 022."""
    mask = _umask()
    path = Path(path)
    if path.is_dir():
        for inner in path.rglob("*"):
            if not inner.is_symlink():
                os.chmod(inner, (0o777 if inner.is_dir() else 0o666) & ~mask)
        os.chmod(path, 0o777 & ~mask)
    elif path.exists():
        os.chmod(path, 0o666 & ~mask)


def check_writable(directory: str | os.PathLike, what: str) -> None:
    """Create `directory` if needed and prove a file can be written in it, or raise one
    ValueError naming it (`what` says which setting it came from)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{what} {directory}: cannot write there ({err.strerror or err})") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Readers see the old file or the new one, never half of one (temp file + rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:  # name the file the user asked for, not our temporary one
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | os.PathLike, rows) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json_atomic(path: str | os.PathLike, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))

"""Reading the original files (or the hub) into HF datasets, with errors that name file and line.

Local files are parsed by small generators (jsonl, jsonl.gz, tsv, csv) and turned into Arrow
by `datasets.Dataset.from_generator`, which caches them: the second run, and every rank but the
first, reads the cache. The cache key includes the file's size and mtime, so an edited file is
read again, and the source code of the task package and of the reader's module, so changed
reading or formatting code runs again (datasets hashes a module-level function by its name
only: without this, stale cached rows, and their cached formatting, whose key follows the
rows', would be served; hub rows are formatted under the same digest). Each local row carries
`_line`, its line number in the file, for error messages. Readers yield rows in the schema of
the task's hub dataset, so one formatter serves both.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import inspect
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets


class DataError(ValueError):
    """Bad input data: the message names the file (or hub split) and the row."""


@dataclass
class RawSplit:
    """One official split before formatting, and where it came from (named in every error)."""

    rows: datasets.Dataset
    origin: str  # a file path, or "hub:<id>[/<config>] split <name>"
    local: bool  # local rows carry `_line`


def _signature(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file (.gz too); a file that is not UTF-8 text (or a broken
    .gz) is one DataError naming it and the line."""
    line_no = 0
    with open_text(path) as f:
        try:
            for line_no, line in enumerate(f, 1):
                yield line_no, line
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
            raise DataError(f"{path}: line {line_no + 1}: not readable as UTF-8 text ({err})") from None


def iter_jsonl(path: Path, skip_header: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; `skip_header` drops an MRQA header line."""
    for line_no, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {line_no} is not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {line_no} is not a JSON object")
        if skip_header and "header" in obj and line_no == 1:
            continue
        yield line_no, obj


def iter_tsv(path: Path, columns: list[str] | None = None, delimiter: str = "\t") -> Iterator[tuple[int, dict]]:
    """Rows as dicts. With `columns` the file has no header line (or it is detected and
    skipped when its first field equals the first column name); else line 1 is the header.
    GLUE-style files are read without quote processing, as the GLUE tools write them."""
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader((line for _, line in read_lines(path)), delimiter=delimiter, quoting=quoting)
    header = columns
    for line_no, fields in enumerate(reader, 1):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if header is None:
            header = [h.strip() for h in fields]
            continue
        if line_no == 1 and columns is not None and fields[0].strip() == columns[0]:
            continue  # an optional header line
        if len(fields) < len(header):
            missing = header[len(fields) :]
            raise DataError(f"{path}: line {line_no} has {len(fields)} fields, missing {missing}")
        yield line_no, dict(zip(header, fields))


def code_signature(function: Callable) -> str:
    """A digest of the code that turns a file into formatted rows: this package's modules (the
    readers, formatters and `format_split`) and `function`'s own module, wherever it lives."""
    parts = [f.read_text(encoding="utf-8") for f in sorted(Path(__file__).parent.glob("*.py"))]
    module = sys.modules.get(getattr(function, "__module__", None) or "")
    try:
        parts.append(inspect.getsource(module) if module is not None else "")
    except (OSError, TypeError):  # no source at hand (a frozen or interactive module): its compiled code
        code = getattr(function, "__code__", None)
        parts.append(repr(code.co_code) + repr(code.co_consts) if code is not None else "")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _generate(reader: Callable, path: str, signature: str, code: str, kwargs: dict):
    count = 0
    for row in reader(Path(path), **kwargs):
        count += 1
        yield row
    if count == 0:
        raise DataError(f"{path}: the file has no rows")


def from_file(reader: Callable[..., Iterator[dict]], path: Path, **kwargs) -> RawSplit:
    """Run `reader(path, **kwargs)` (a generator of hub-schema rows with `_line`) into a cached
    Arrow dataset. `reader` must be a module-level function (it is part of the cache key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        rows = datasets.Dataset.from_generator(
            _generate,
            gen_kwargs={
                "reader": reader,
                "path": str(path),
                "signature": _signature(path),
                "code": code_signature(reader),
                "kwargs": kwargs,
            },
        )
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise DataError(f"{path}: could not be read ({cause or err})") from None
    return RawSplit(rows, str(path), local=True)


def from_hub(hub_id: str, config_name: str | None, split: str) -> RawSplit:
    """A hub dataset split; offline (HF_DATASETS_OFFLINE=1) it is served from the local cache."""
    origin = f"hub:{hub_id}{'/' + config_name if config_name else ''} split {split}"
    try:
        rows = datasets.load_dataset(hub_id, config_name, split=split)
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one clear message
        raise DataError(
            f"{origin}: could not be loaded ({type(err).__name__}: {err}). Offline, only datasets already in the "
            f"HF cache load; point task.data_dir (or task.files) at a local copy of the original files instead."
        ) from None
    return RawSplit(rows, origin, local=False)


def find_file(config, split: str, candidates: list[str]) -> Path:
    """The file for an official split: `task.files[split]` if given, else the first candidate
    name that exists under `task.data_dir`."""
    if config.files and split in config.files:
        return Path(config.files[split])
    root = Path(config.data_dir)
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"task {config.name}: no {split} file in {root} (looked for {', '.join(candidates)}); "
        f"set task.files.{split} to its path"
    )


def use_local(config) -> bool:
    return bool(config.data_dir or config.files)


def text_field(row: dict, key: str) -> str:
    """A required, non-empty text field, or a ValueError naming it."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"missing field {key!r}")
    return str(value)


def as_label_text(value) -> str | None:
    """Labels as text whatever the file stored (bool, int, float or string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

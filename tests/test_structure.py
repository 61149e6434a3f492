"""The code's shape, as the README's ARCHITECTURE section describes it: DeepSpeed in one room,
collectives without it, short functions, the linter clean, and an install that works outside
the checkout (a wheel in a fresh environment, run from an empty directory)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import BIN, ROOT, TEST_ENV

PACKAGE = ROOT / "dpt_dist"
DEEPSPEED_ROOM = PACKAGE / "engine.py"
MAX_FUNCTION_LINES = 60
LONG_FUNCTION_REASON = "# long function:"  # the comment that says why a function may be longer


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names |= {base} | {f"{base}.{alias.name}" if node.module else base + alias.name for alias in node.names}
    return names


def test_only_the_deepspeed_room_imports_deepspeed_or_reads_ds_attributes():
    offenders = []
    for path in package_modules():
        if path == DEEPSPEED_ROOM:
            continue
        text = path.read_text()
        if any(name == "deepspeed" or name.startswith("deepspeed.") for name in imported_modules(path)):
            offenders.append(f"{path.relative_to(ROOT)} imports deepspeed")
        for match in re.finditer(r"""\.ds_[a-z_]+|["']ds_[a-z_]+["']""", text):
            offenders.append(f"{path.relative_to(ROOT)} reads {match.group(0)}")
    assert not offenders, offenders


def test_evaluation_and_the_cli_take_collectives_from_the_dist_room():
    for name in ("evaluation.py", "cli.py", "dist.py"):
        imports = imported_modules(PACKAGE / name)
        assert not any(i in (".engine", "dpt_dist.engine") or i.endswith(".engine") for i in imports), (name, imports)
    assert not any("deepspeed" in name for name in imported_modules(PACKAGE / "dist.py"))


# The rooms, floor by floor, as the README's Architecture section draws them: a module imports
# only from lower floors (and its own package's modules).
FLOORS = [
    {"files", "interrupts"},
    {"dist", "monitor", "artifact", "checkpoint", "sandbox", "backbone"},
    {"data", "prompts", "tasks"},
    {"config", "model", "export"},
    {"engine", "evaluation", "placement"},
    {"assembly"},
    {"train"},
    {"cli"},
]


def room_of(module: str) -> str:
    return module.split(".")[0]


def dpt_dist_imports(path: Path) -> set[str]:
    """The rooms a module imports (relative or absolute imports of dpt_dist)."""
    package = path.relative_to(PACKAGE).parts[:-1]
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = list(package[: len(package) - node.level + 1]) + (node.module.split(".") if node.module else [])
            rooms |= {parts[0]} if parts else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dpt_dist."):
            rooms.add(node.module.split(".")[1])
    return rooms


def test_every_room_imports_only_the_rooms_below_it():
    floor = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
    wrong = []
    for path in package_modules():
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        room = room_of(str(path.relative_to(PACKAGE).with_suffix("")).replace("/", "."))
        assert room in floor, f"{path}: a room the architecture does not place"
        for other in dpt_dist_imports(path) - {room}:
            if floor[other] >= floor[room]:
                wrong.append(f"{room} (floor {floor[room]}) imports {other} (floor {floor[other]})")
    assert not wrong, wrong


def test_no_function_is_longer_than_sixty_lines_without_saying_why():
    long = []
    for path in package_modules():
        source = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                body = "\n".join(source[node.lineno - 1 : node.end_lineno])
                if length > MAX_FUNCTION_LINES and LONG_FUNCTION_REASON not in body:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def test_the_training_loop_reads_in_one_screen():
    from dpt_dist.train import TrainingRecipe

    lines = TrainingRecipe.train.__code__.co_lines()
    numbers = [line for _, _, line in lines if line is not None]
    assert max(numbers) - min(numbers) + 1 <= 40


def test_ruff_finds_nothing_to_lint_or_format():
    ruff = BIN / "ruff"
    assert ruff.is_file(), "ruff is part of the test dependencies (pip install -e '.[test]')"
    lint = subprocess.run([str(ruff), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = subprocess.run([str(ruff), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout[-3000:]


# ---- the install outside the checkout ---------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = out.glob("dpt_dist-*.whl")
    return found


def test_the_wheel_carries_the_deepspeed_configs_presets_and_mbpp(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in ("zero0", "zero1", "zero2", "zero3", "zero3_offload", "zero3_pp"):
        assert f"dpt_dist/ds_configs/{config}.json" in names
    assert {f"dpt_dist/presets/{p.name}" for p in (PACKAGE / "presets").glob("*.yaml")} <= names
    assert "dpt_dist/tasks/mbpp.jsonl" in names
    assert not any(name.startswith(("bench/", "tests/", "dpt_dist/bench")) for name in names)


def test_an_installed_wheel_trains_from_an_empty_directory_with_the_default_deepspeed_config(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The pinned dependencies come from the test environment's site-packages, added as a plain
    # path: its .pth files (the editable dpt_dist among them) are not processed, so only the
    # wheel provides dpt_dist.
    (site / "pinned_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the fresh environment's own interpreter runs pip (found through that path), so the wheel
    # lands in its site-packages and `dpt-dist` starts with its interpreter
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | TEST_ENV
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import dpt_dist; print(dpt_dist.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not the checkout
    presets = subprocess.run(
        [str(venv / "bin" / "dpt-dist"), "presets"], cwd=empty, env=env, capture_output=True, text=True, timeout=120
    )
    assert presets.returncode == 0 and "dpt-superglue-t5-small" in presets.stdout, presets.stderr
    train = subprocess.run(
        [
            str(venv / "bin" / "dpt-dist"),
            "train",
            "dpt-superglue-t5-small",
            "--model.name",
            "tiny-t5",
            "--task.data_dir",
            str(ROOT / "data/superglue/CB"),
            "--train.steps",
            "5",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "placement: replicate" in train.stdout and "steps=5" in train.stdout  # deepspeed.config auto, the default
    assert (empty / "runs" / "dpt-superglue-t5-small" / "metrics.json").is_file()
    mbpp = subprocess.run(
        [
            str(venv / "bin" / "dpt-dist"),
            "eval-mbpp",
            "--completions",
            str(tmp_path / "none.jsonl"),
            "--allow-code-execution",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        "none.jsonl" in mbpp.stderr and "mbpp.jsonl" not in mbpp.stderr
    )  # the data was found; the completions were not

"""Shared fixtures: test environment, tiny backbones materialised once, multi-rank launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CB_DIR = ROOT / "data" / "superglue" / "CB"

# Two CPU ranks on two cores: one thread each, or they fight (REFERENCE §5). No hub access.
TEST_ENV = {
    "DS_ACCELERATOR": "cpu",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}
os.environ.update(TEST_ENV)
BIN = Path(sys.executable).parent


def cb_texts() -> list[str]:
    rows = [json.loads(line) for line in (CB_DIR / "train.jsonl").read_text().splitlines()]
    return [f"premise: {r['premise']} hypothesis: {r['hypothesis']}" for r in rows] + ["0", "1", "2"] * 20


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, str]:
    """tiny-t5, tiny-llama and a >= 10M-parameter T5, saved once as local checkpoints."""
    from dpt_dist.backbone import materialize_tiny

    root = tmp_path_factory.mktemp("backbones")
    texts = cb_texts()
    return {
        "t5": materialize_tiny("tiny-t5", texts, root / "tiny-t5"),
        "llama": materialize_tiny("tiny-llama", texts, root / "tiny-llama"),
        "t5-10m": materialize_tiny(
            "tiny-t5",
            texts,
            root / "t5-10m",
            overrides=dict(d_model=320, d_kv=64, num_heads=5, d_ff=1280, num_layers=4, num_decoder_layers=4),
        ),
    }


def bench_module():
    """bench/bench.py (a development script, not part of the package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dpt_dist_bench", ROOT / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(nproc: int, argv: list[str], timeout: int, launcher: str = "torchrun") -> subprocess.CompletedProcess:
    """Run a command on `nproc` CPU ranks; fail the test (not hang it) after `timeout` seconds."""
    if launcher == "torchrun":
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", *argv]
    elif launcher == "deepspeed":  # `-m pkg` becomes the launcher's `--module pkg`
        module = ["--module", *argv[1:]] if argv[0] == "-m" else argv
        cmd = [str(BIN / "deepspeed"), f"--num_gpus={nproc}", "--master_port", str(_free_port()), *module]
    elif launcher == "mpirun":
        cmd = [
            str(BIN / "mpirun"),
            "-n",
            str(nproc),
            *([str(BIN / "python")] if argv[0].endswith(".py") or argv[0] == "-m" else []),
            *argv,
        ]
    elif launcher == "python":
        cmd = [str(BIN / "python"), *argv]
    else:
        raise ValueError(launcher)
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(
            f"{launcher} run timed out after {timeout}s: {' '.join(cmd)}\n"
            f"{(err.stdout or '')[-3000:]}\n{(err.stderr or '')[-3000:]}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{launcher} run failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_scenario(nproc: int, scenario: str, workdir: Path, backbones: list[str], timeout: int = 300, **kw) -> dict:
    out = workdir / f"{scenario}-{nproc}.json"
    extra = []
    for key, value in kw.items():
        extra += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    launch(
        nproc,
        [
            "tests/dist_scenarios.py",
            scenario,
            "--out",
            str(out),
            "--workdir",
            str(workdir / f"{scenario}-{nproc}"),
            "--backbones",
            *backbones,
            *extra,
        ],
        timeout,
    )
    return json.loads(out.read_text())

"""`make gpu-kit`: the wheels the lent GPU machine lacks, in one folder of at most 64 MiB.

That machine has no network; its python3 is CPython 3.12 (x86_64, manylinux) with torch 2.11,
transformers 5.17, pandas, pyarrow, scikit-learn, scipy, matplotlib, xxhash, msgpack, psutil,
ninja, einops, py-cpuinfo and protobuf, but no deepspeed, datasets, dill, multiprocess, hjson or
pydantic (REFERENCE §7 and the device tool's package list). This builds or downloads exactly
those, for that interpreter, plus dpt_dist itself; `bench/gpu.sh` installs them there.

    python bench/gpu_kit.py [--out .whl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--platform", "manylinux2014_x86_64"]
# pure-Python wheels, built or fetched for any interpreter (deepspeed is an sdist: built without its ops,
# which it compiles on the GPU machine when one is used)
PURE = [
    "deepspeed==0.19.8",
    "datasets==5.2.0",
    "dill==0.4.1",
    "hjson==3.1.0",
    "pydantic==2.14.3",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
]
# built per Python version: fetched for the GPU machine's CPython 3.12
BINARY = ["pydantic-core==2.50.4", "multiprocess==0.70.19"]


def pip(*args: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check", "--no-deps"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"gpu-kit: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def build(out: Path) -> list[Path]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pip("wheel", "--no-build-isolation", "-w", str(out), *PURE, env={"DS_BUILD_OPS": "0"})
    pip("download", "--only-binary=:all:", *TARGET, "-d", str(out), *BINARY)
    pip("wheel", "--no-build-isolation", "-w", str(out), str(ROOT))
    return sorted(out.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_kit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".whl"))
    args = parser.parse_args(argv)
    wheels = build(Path(args.out))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:7.2f} MiB in all (limit {LIMIT / 2**20:.0f} MiB) in {args.out}")
    if total > LIMIT:
        raise SystemExit(
            f"gpu-kit: {total / 2**20:.1f} MiB is more than the device tool carries ({LIMIT / 2**20:.0f} MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

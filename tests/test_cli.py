"""`dpt-dist train` end to end: under torchrun, the deepspeed launcher, mpirun and as a plain
process; --dry-run; bad input; and the learning test (every method lowers the loss)."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, ROOT, TEST_ENV, launch

pytestmark = pytest.mark.distributed


def train_args(out, backbone, *extra):
    return ["-m", "dpt_dist.cli", "train", "configs/demo_cb_adept.yaml", "--model.name", backbone,
            "--train.output_dir", str(out), "--train.steps", "3", "--train.batch_size", "8", "--train.micro_batch_size", "4",
            "--task.max_eval_examples", "4", "--task.max_source_length", "64", *extra]


@pytest.mark.parametrize("launcher, nproc", [("torchrun", 2), ("deepspeed", 2), ("mpirun", 2), ("python", 1)])
def test_train_runs_under_every_launcher(tmp_path, tiny_backbones, launcher, nproc):
    proc = launch(nproc, train_args(tmp_path / "run", tiny_backbones["t5"]), timeout=240, launcher=launcher)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == nproc
    assert len(metrics["train_loss"]) == 3
    assert "accuracy" in metrics["test"]
    assert "trainable params: " in proc.stdout and " || all params: " in proc.stdout and " || trainable%: " in proc.stdout
    assert (tmp_path / "run" / "prompt" / "prompt.safetensors").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_dry_run_builds_everything_and_exits(tmp_path, tiny_backbones):
    proc = launch(1, train_args(tmp_path / "dry", tiny_backbones["llama"], "--prompt.method", "dpt", "--dry-run"), timeout=120, launcher="python")
    assert "trainable params: " in proc.stdout and "dry run" in proc.stdout
    assert not (tmp_path / "dry" / "metrics.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--model.dtype", "fp16"], "fp16 is not supported on CPU"),
    (["--task.name", "nope"], "unknown task 'nope'"),
    (["--train.batch_size", "6"], "must be a multiple of"),
    (["--deepspeed.config", "missing.json"], "missing.json does not exist"),
])
def test_bad_input_exits_nonzero_with_one_clear_error(tmp_path, tiny_backbones, extra, message):
    cmd = [str(BIN / "python"), *train_args(tmp_path / "bad", tiny_backbones["t5"], *extra)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**__import__("os").environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("method", ["pt", "residual", "dpt", "dept", "adept"])
def test_every_method_clearly_lowers_the_training_loss_on_cb(tmp_path, tiny_backbones, method):
    out = tmp_path / method
    launch(1, ["-m", "dpt_dist.cli", "train", "configs/demo_cb_adept.yaml", "--model.name", tiny_backbones["t5"],
               "--prompt.method", method, "--prompt.length", "10", "--prompt.rank", "8", "--prompt.hidden", "32",
               "--train.output_dir", str(out), "--train.steps", "60", "--train.batch_size", "16", "--train.micro_batch_size", "16",
               "--train.warmup_steps", "5", "--task.max_eval_examples", "2", "--task.max_source_length", "64",
               "--deepspeed.config", "ds_configs/zero0.json"], timeout=240, launcher="python")
    loss = json.loads((out / "metrics.json").read_text())["train_loss"]
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    assert last < 0.8 * first, f"{method}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("ds_config, dtype", [
    ("zero0.json", "fp32"), ("zero1.json", "fp32"), ("zero2.json", "bf16"), ("zero3.json", "bf16"), ("zero3_offload.json", "fp32"),
])
def test_every_zero_stage_trains_and_saves_a_kilobyte_artifact(tmp_path, tiny_backbones, ds_config, dtype):
    """Stages 0-2 keep T5's tied embeddings in DeepSpeed checkpoints; our artifact never does."""
    out = tmp_path / "run"
    launch(2, train_args(out, tiny_backbones["t5-10m"], "--deepspeed.config", f"ds_configs/{ds_config}", "--model.dtype", dtype), timeout=240)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_stage"] == int(ds_config[4]) and metrics["dtype"] == dtype
    assert all(x == x for x in metrics["train_loss"])  # finite
    size = sum(f.stat().st_size for f in (out / "prompt").iterdir())
    assert size < 100_000, f"{ds_config}: artifact is {size} bytes"
    meta = json.loads((out / "prompt" / "prompt_config.json").read_text())
    assert meta["prompt"]["method"] == "adept" and meta["base_model"] == tiny_backbones["t5-10m"]
    assert meta["dtypes"] == {k: "float32" for k in meta["shapes"]}  # fp32 master weights even in bf16

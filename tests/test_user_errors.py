"""Every failure a user can cause ends in one clear line: bad values, misspelt keys, damaged
files, read-only disks, Ctrl-C and SIGTERM (with the exact --resume command), damaged newest
checkpoints; artifacts others can read; loaded prompts in eval mode; predict feeding inputs as
training did; dry runs that leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, ROOT, TEST_ENV, launch

ENV = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


def cli(*args, timeout=240, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "python"), "-m", "dpt_dist.cli", *args],
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_args(out, backbone, *extra, steps=3):
    return [
        "train",
        "configs/demo_cb_adept.yaml",
        "--model.name",
        backbone,
        "--train.output_dir",
        str(out),
        "--train.steps",
        str(steps),
        "--train.batch_size",
        "8",
        "--train.micro_batch_size",
        "4",
        "--task.max_eval_examples",
        "4",
        "--task.max_source_length",
        "64",
        "--train.spectrum_every",
        "0",
        *extra,
    ]


def one_clear_line(proc, code: int = 2) -> str:
    """The process failed with `code`, no traceback, and said why in one `dpt-dist...:` line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dpt-dist")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


# ---- values -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        (["--train.steps", "2.5"], "command line (--train.steps): train.steps must be an integer, got 2.5"),
        (["--train.steps", "true"], "train.steps must be an integer"),
        (["--train.stpes", "5"], "command line: unknown key(s) --train.stpes in section 'train'"),
        (["--prompt.lenght", "5"], "command line: unknown key(s) --prompt.lenght in section 'prompt'"),
        (["--model.dropout", "1.5"], "model.dropout must be in [0, 1)"),
        (["--train.prompt_lr", "-0.1"], "train.prompt_lr must be >= 0"),
        (["--train.eval_every", "x"], "train.eval_every must be an integer, got 'x'"),
        (["--task.max_eval_examples", "0"], "task.max_eval_examples must be >= 1"),
        (["--model.gradient_checkpointing", "1"], "model.gradient_checkpointing must be true or false"),
        (["--deepspeed.overrides", "[1]"], "deepspeed.overrides must be a mapping"),
    ],
)
def test_a_bad_value_or_key_is_refused_before_anything_is_written(tmp_path, override, message):
    proc = cli(*train_args(tmp_path / "run", "tiny-t5", *override))
    assert message in one_clear_line(proc)
    assert not (tmp_path / "run").exists()


def test_a_bad_value_in_the_yaml_file_names_the_file(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text("train:\n  steps: 2.5\n")
    assert f"{config} : train.steps must be an integer".replace(" :", ":") in one_clear_line(cli("train", str(config)))


def test_integers_may_be_written_as_exact_numbers():
    from dpt_dist.config import load_config

    assert load_config(None, ["--train.steps", "1e4", "--train.batch_size", "32.0"]).train.steps == 10_000


def test_a_deepspeed_config_that_is_not_an_object_is_one_clear_error(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text("[1, 2]")
    proc = cli(*train_args(tmp_path / "run", "tiny-t5", "--deepspeed.config", str(bad)))
    assert "a DeepSpeed config is a JSON object" in one_clear_line(proc)


# ---- damaged files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_backbones, tmp_path_factory) -> Path:
    """A finished 1-rank run with checkpoints every 2 steps (ADePT on CB, source length 12)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    launch(
        1,
        [
            "-m",
            "dpt_dist.cli",
            *train_args(
                out, tiny_backbones["t5"], "--train.checkpoint_every", "2", "--task.max_source_length", "12", steps=4
            ),
        ],
        timeout=240,
        launcher="python",
    )
    return out


@pytest.mark.parametrize("damage", ["truncated", "garbage", "config"])
def test_a_damaged_artifact_is_one_clear_error_for_predict_and_export(trained, tmp_path, damage):
    artifact = tmp_path / "prompt"
    shutil.copytree(trained / "prompt", artifact)
    weights = artifact / "prompt.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:40])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 100)
    else:
        (artifact / "prompt_config.json").write_text('{"format_version": 1}')
    for command in (
        ["predict", str(artifact), "--text", "premise: a hypothesis: b"],
        ["export", str(artifact), "--out", str(tmp_path / "exp"), "--merge-embeddings"],
    ):
        line = one_clear_line(cli(*command))
        assert str(artifact) in line and ("damaged" in line or "not a prompt artifact" in line), line
    assert not (tmp_path / "exp").exists()


def test_resume_latest_falls_back_from_a_damaged_newest_checkpoint(trained, tmp_path, tiny_backbones):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = run / "checkpoints" / "step_00000004"
    (newest / "state.safetensors").write_bytes(b"not safetensors")
    proc = cli(
        *train_args(
            run,
            tiny_backbones["t5"],
            "--train.checkpoint_every",
            "2",
            "--task.max_source_length",
            "12",
            "--resume",
            steps=5,
        )
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"skipping {newest}" in proc.stdout and "resumed from" in proc.stdout and "at step 2/5" in proc.stdout


def test_resume_from_a_wrong_path_is_refused_before_data_and_model_are_built(tmp_path, tiny_backbones):
    started = time.time()
    proc = cli(*train_args(tmp_path / "run", tiny_backbones["t5"], "--resume", str(tmp_path / "no-such-checkpoint")))
    assert "no such checkpoint directory" in one_clear_line(proc)
    assert "trainable params" not in proc.stdout and not (tmp_path / "run" / "backbone").exists()
    assert time.time() - started < 60


# ---- disks --------------------------------------------------------------------------------------
def _read_only_mount_works() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True)
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs a mount namespace (root) for a read-only file system")
def test_training_into_a_read_only_location_is_refused_before_the_model_is_built(tmp_path, tiny_backbones):
    mount = tmp_path / "ro"
    mount.mkdir()
    command = [str(BIN / "python"), "-m", "dpt_dist.cli", *train_args(mount / "run", tiny_backbones["t5"])]
    script = f"mount -t tmpfs -o ro tmpfs {mount} && exec {' '.join(command)}"
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240
    )
    line = one_clear_line(proc)
    assert f"train.output_dir {mount / 'run'}: cannot write there (Read-only file system)" in line
    assert "trainable params" not in proc.stdout


def test_artifacts_exports_and_checkpoints_are_readable_by_others_under_umask_022(tmp_path, tiny_backbones):
    out = tmp_path / "run"
    old = os.umask(0o022)  # the children inherit it
    try:
        train = cli(*train_args(out, tiny_backbones["t5"], "--train.checkpoint_every", "2", steps=2))
        assert train.returncode == 0, train.stderr[-2000:]
        exported = cli("export", str(out / "prompt"), "--out", str(tmp_path / "export"), "--merge-embeddings")
        assert exported.returncode == 0, exported.stderr[-2000:]
    finally:
        os.umask(old)
    for root in (out / "prompt", out / "checkpoints" / "step_00000002", tmp_path / "export", out / "metrics.json"):
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o755 if path.is_dir() else 0o644), f"{path}: {oct(mode)}"


# ---- signals ------------------------------------------------------------------------------------
def _wait_for_line(proc, needle: str, timeout: float) -> str:
    seen, deadline = "", time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen += line
        if needle in line:
            return seen
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"never saw {needle!r}:\n{seen[-3000:]}")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_stops_with_a_checkpoint_and_the_resume_command(tmp_path, tiny_backbones, sig, code):
    out = tmp_path / "run"
    args = train_args(out, tiny_backbones["t5"], "--train.log_every", "1", steps=400)
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "dpt_dist.cli", *args],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for_line(proc, "step 3/400", 240)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    line = one_clear_line(result, code)
    step = int(line.split("after step ")[1].split("/")[0])
    assert line.startswith(f"dpt-dist: stopped by {signal.Signals(sig).name} after step {step}/400")
    assert f"checkpoint {out / 'checkpoints' / f'step_{step:08d}'} is complete" in line
    assert line.endswith("--train.spectrum_every 0 --train.log_every 1 --resume")
    assert (out / "checkpoints" / f"step_{step:08d}" / "COMPLETE").is_file()


def test_a_signal_during_set_up_is_one_line_too(tmp_path):
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "dpt_dist.cli", *train_args(tmp_path / "run", "tiny-t5")],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)  # importing torch / transformers / deepspeed
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    line = one_clear_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), 130)
    assert line.startswith("dpt-dist: stopped by SIGINT during")


@pytest.mark.distributed
def test_sigterm_to_a_two_rank_torchrun_job_stops_it_at_one_step_and_resume_is_bit_identical(tmp_path, tiny_backbones):
    t5 = tiny_backbones["t5"]
    steps = ["--train.log_every", "1", "--train.eval_every", "0"]
    straight = tmp_path / "straight"
    launch(
        2,
        ["-m", "dpt_dist.cli", *train_args(straight, t5, *steps, "--train.checkpoint_every", "12", steps=12)],
        timeout=300,
    )
    out = tmp_path / "run"
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "dpt_dist.cli",
        *train_args(out, t5, *steps, steps=12),
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    _wait_for_line(proc, "step 4/12", 240)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to both ranks
    output, _ = proc.communicate(timeout=120)
    assert time.time() - sent < 60
    line = next(line for line in output.splitlines() if line.startswith("dpt-dist: stopped by SIGTERM"))
    step = int(line.split("after step ")[1].split("/")[0])
    assert 4 <= step <= 6 and "Traceback" not in output.split("Sending process")[0]
    assert (out / "checkpoints" / f"step_{step:08d}" / "COMPLETE").is_file()
    launch(
        2,
        ["-m", "dpt_dist.cli", *train_args(out, t5, *steps, "--train.checkpoint_every", "12", "--resume", steps=12)],
        timeout=300,
    )
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, out))
    assert a["train_loss"] == b["train_loss"]  # bit for bit
    from safetensors.torch import load_file

    ta, tb = (load_file(str(d / "checkpoints" / "step_00000012" / "state.safetensors")) for d in (straight, out))
    trained = [k for k in ta if k.startswith("train/")]
    assert trained and all(torch.equal(ta[k], tb[k]) for k in trained)


# ---- loading and predicting ---------------------------------------------------------------------
def test_a_loaded_prompt_is_in_eval_mode_and_gives_the_same_output_twice(trained):
    from dpt_dist import PromptedModel
    from dpt_dist.backbone import load_backbone

    base = json.loads((trained / "prompt" / "prompt_config.json").read_text())["base_model"]
    model = PromptedModel.from_pretrained(load_backbone(base), str(trained / "prompt"))
    assert not model.training and model.prompt.config.dropout > 0  # ADePT with dropout: eval mode switches it off
    ids = torch.randint(3, 100, (2, 10))
    with torch.no_grad():
        first, second = (model(ids, torch.ones_like(ids), labels=ids).logits for _ in range(2))
    assert torch.equal(first, second)
    trainable = PromptedModel.from_pretrained(load_backbone(base), str(trained / "prompt"), is_trainable=True)
    assert trainable.training and all(p.requires_grad for _, p in trainable.trainable_named_parameters())


def test_predict_cuts_inputs_as_the_training_run_did_and_reads_the_source_field(trained, tmp_path):
    predictions = sorted((trained / "predictions").glob("validation_step*.jsonl"))[-1]
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert all(len(r["input"].split()) > 12 for r in rows)  # longer than the run's 12-token source budget
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"source": r["input"]}) + "\n" for r in rows))
    proc = cli(
        "predict", str(trained / "prompt"), "--input", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "p.jsonl")
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted = [json.loads(line)["prediction"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert predicted == [r["prediction"] for r in rows]


def test_a_dry_run_writes_nothing_into_the_output_directory(tmp_path):
    proc = cli(*train_args(tmp_path / "run", "tiny-t5", "--dry-run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run" in proc.stdout and "nothing was written" in proc.stdout
    assert not (tmp_path / "run").exists()


# ---- eval-mbpp ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--timeout", "0"], "--timeout must be at least"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--memory-mb", "1"], "--memory-mb must be at least 64"),
    ],
)
def test_eval_mbpp_refuses_impossible_limits(tmp_path, flags, message):
    (tmp_path / "c.jsonl").write_text(json.dumps({"task_id": 2, "completion": "pass"}) + "\n")
    proc = cli(
        "eval-mbpp",
        "--completions",
        str(tmp_path / "c.jsonl"),
        "--allow-code-execution",
        "--out",
        str(tmp_path / "o"),
        *flags,
    )
    assert message in one_clear_line(proc)

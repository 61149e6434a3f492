"""`dpt-dist train` end to end: under torchrun, the deepspeed launcher, mpirun and as a plain
process; --dry-run; bad input; and the learning test (every method lowers the loss)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import BIN, ROOT, TEST_ENV, launch

pytestmark = pytest.mark.distributed


def train_args(out, backbone, *extra):
    return [
        "-m",
        "dpt_dist.cli",
        "train",
        "configs/demo_cb_adept.yaml",
        "--model.name",
        backbone,
        "--train.output_dir",
        str(out),
        "--train.steps",
        "3",
        "--train.batch_size",
        "8",
        "--train.micro_batch_size",
        "4",
        "--task.max_eval_examples",
        "4",
        "--task.max_source_length",
        "64",
        *extra,
    ]


@pytest.mark.parametrize("launcher, nproc", [("torchrun", 2), ("deepspeed", 2), ("mpirun", 2), ("python", 1)])
def test_train_runs_under_every_launcher(tmp_path, tiny_backbones, launcher, nproc):
    proc = launch(nproc, train_args(tmp_path / "run", tiny_backbones["t5"]), timeout=240, launcher=launcher)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == nproc
    assert len(metrics["train_loss"]) == 3
    assert "accuracy" in metrics["test"]
    assert (
        "trainable params: " in proc.stdout and " || all params: " in proc.stdout and " || trainable%: " in proc.stdout
    )
    assert (tmp_path / "run" / "prompt" / "prompt.safetensors").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_dry_run_builds_everything_and_exits(tmp_path, tiny_backbones):
    proc = launch(
        1,
        train_args(tmp_path / "dry", tiny_backbones["llama"], "--prompt.method", "dpt", "--dry-run"),
        timeout=120,
        launcher="python",
    )
    assert "trainable params: " in proc.stdout and "dry run" in proc.stdout
    assert not (tmp_path / "dry" / "metrics.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.dtype", "fp16"], "fp16 is not supported on CPU"),
        (["--task.name", "nope"], "unknown task 'nope'"),
        (["--train.batch_size", "6"], "must be a multiple of"),
        (["--deepspeed.config", "missing.json"], "missing.json does not exist"),
    ],
)
def test_bad_input_exits_nonzero_with_one_clear_error(tmp_path, tiny_backbones, extra, message):
    cmd = [str(BIN / "python"), *train_args(tmp_path / "bad", tiny_backbones["t5"], *extra)]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**__import__("os").environ, **TEST_ENV, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("method", ["pt", "residual", "dpt", "dept", "adept"])
def test_every_method_clearly_lowers_the_training_loss_on_cb(tmp_path, tiny_backbones, method):
    out = tmp_path / method
    launch(
        1,
        [
            "-m",
            "dpt_dist.cli",
            "train",
            "configs/demo_cb_adept.yaml",
            "--model.name",
            tiny_backbones["t5"],
            "--prompt.method",
            method,
            "--prompt.length",
            "10",
            "--prompt.rank",
            "8",
            "--prompt.hidden",
            "32",
            "--train.output_dir",
            str(out),
            "--train.steps",
            "60",
            "--train.batch_size",
            "16",
            "--train.micro_batch_size",
            "16",
            "--train.warmup_steps",
            "5",
            "--task.max_eval_examples",
            "2",
            "--task.max_source_length",
            "64",
            "--deepspeed.config",
            "ds_configs/zero0.json",
        ],
        timeout=240,
        launcher="python",
    )
    loss = json.loads((out / "metrics.json").read_text())["train_loss"]
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    assert last < 0.8 * first, f"{method}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize(
    "ds_config, dtype",
    [
        ("zero0.json", "fp32"),
        ("zero1.json", "fp32"),
        ("zero2.json", "bf16"),
        ("zero3.json", "bf16"),
        ("zero3_offload.json", "fp32"),
    ],
)
def test_every_zero_stage_trains_and_saves_a_kilobyte_artifact(tmp_path, tiny_backbones, ds_config, dtype):
    """Stages 0-2 keep T5's tied embeddings in DeepSpeed checkpoints; our artifact never does."""
    out = tmp_path / "run"
    launch(
        2,
        train_args(
            out, tiny_backbones["t5-10m"], "--deepspeed.config", f"ds_configs/{ds_config}", "--model.dtype", dtype
        ),
        timeout=240,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_stage"] == int(ds_config[4]) and metrics["dtype"] == dtype
    assert all(x == x for x in metrics["train_loss"])  # finite
    size = sum(f.stat().st_size for f in (out / "prompt").iterdir())
    assert size < 100_000, f"{ds_config}: artifact is {size} bytes"
    meta = json.loads((out / "prompt" / "prompt_config.json").read_text())
    assert meta["prompt"]["method"] == "adept" and meta["base_model"] == tiny_backbones["t5-10m"]
    assert meta["dtypes"] == dict.fromkeys(meta["shapes"], "float32")  # fp32 master weights even in bf16


def read_scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_whole_loop(out, metric_names, steps, eval_every):
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps_run"] == steps
    assert [e["step"] for e in metrics["evaluations"]] == list(range(eval_every, steps + 1, eval_every))
    best = max(metrics["evaluations"], key=lambda e: (e["validation"][metric_names[0]], -e["step"]))
    assert metrics["best_step"] == best["step"] and metrics["validation"] == best["validation"]
    assert set(metric_names) <= set(metrics["test"])
    assert (out / "prompt" / "prompt.safetensors").is_file()
    assert json.loads((out / "prompt" / "prompt_config.json").read_text())["steps"] == metrics["best_step"]
    assert (out / "predictions" / f"test_step{metrics['best_step']}.jsonl").is_file()
    scalars = read_scalars(out / "tensorboard")
    first = metric_names[0]
    assert [s for s, _ in scalars[f"eval/validation/{first}"]] == [e["step"] for e in metrics["evaluations"]]
    assert scalars[f"eval/test/{first}"] == [(metrics["best_step"], pytest.approx(metrics["test"][first], abs=1e-4))]
    return metrics


def test_train_runs_the_whole_loop_on_cb_over_two_ranks(tmp_path, tiny_backbones):
    out = tmp_path / "cb"
    launch(2, train_args(out, tiny_backbones["t5"], "--train.steps", "6", "--train.eval_every", "2"), timeout=300)
    metrics = assert_whole_loop(out, ["accuracy", "macro_f1"], steps=6, eval_every=2)
    assert len(metrics["train_loss"]) == 6


def test_train_runs_the_whole_loop_on_squad_over_two_ranks(tmp_path, tiny_backbones):
    """MRQA on a subset of the real SQuAD dev file: 30 contexts to train on, 6 more to test on."""
    import gzip

    with gzip.open(ROOT / "data/mrqa/dev/SQuAD.jsonl.gz", "rt") as f:
        lines = f.read().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:31]) + "\n")  # header + 30 contexts
    (tmp_path / "dev.jsonl").write_text("\n".join([lines[0], *lines[31:37]]) + "\n")
    out = tmp_path / "squad"
    launch(
        2,
        train_args(
            out,
            tiny_backbones["t5"],
            "--task.name",
            "squad",
            "--task.data_dir",
            "null",
            "--task.files.train",
            str(tmp_path / "train.jsonl"),
            "--task.files.validation",
            str(tmp_path / "dev.jsonl"),
            "--task.validation_size",
            "8",
            "--task.max_new_tokens",
            "8",
            "--task.max_source_length",
            "96",
            "--train.steps",
            "4",
            "--train.eval_every",
            "2",
        ),
        timeout=300,
    )
    metrics = assert_whole_loop(out, ["f1", "em", "span_share"], steps=4, eval_every=2)
    assert metrics["config"]["task"]["name"] == "squad"
    rows = [
        json.loads(line)
        for line in (out / "predictions" / f"test_step{metrics['best_step']}.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 4 and all(r["answers"] and r["input"].startswith("question: ") for r in rows)


def test_early_stopping_ends_training_after_patience_evaluations_without_improvement(tmp_path, tiny_backbones):
    out = tmp_path / "stop"
    # learning rates 0: the validation score can never improve after the first evaluation
    launch(
        1,
        train_args(
            out,
            tiny_backbones["t5"],
            "--train.steps",
            "10",
            "--train.eval_every",
            "1",
            "--train.early_stopping_patience",
            "2",
            "--train.prompt_lr",
            "0",
            "--train.network_lr",
            "0",
        ),
        timeout=240,
        launcher="python",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["steps_run"] == 3 and metrics["best_step"] == 1
    assert len(metrics["train_loss"]) == 3


def test_presets_are_listed_and_runnable_by_name(tmp_path, tiny_backbones):
    from dpt_dist.config import PRESET_DIR, load_config

    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert {
        "dpt-superglue-t5-small",
        "dpt-superglue-t5-base",
        "dpt-superglue-t5-large",
        "adept-glue-t5-base",
        "adept-superglue-t5-base",
        "adept-mrqa-t5-base",
        "dept-glue-t5-base",
        "dept-superglue-t5-base",
        "dept-mrqa-t5-base",
    } <= set(names)
    for name in names:
        cfg = load_config(PRESET_DIR / f"{name}.yaml")
        assert cfg.model.name.startswith(("google-t5/", "deepseek-ai/")) and cfg.task.name
    dpt = load_config(PRESET_DIR / "dpt-superglue-t5-large.yaml")
    assert (dpt.prompt.method, dpt.prompt.length, dpt.prompt.rank, dpt.task.split_mode, dpt.train.epochs) == (
        "dpt",
        100,
        10,
        "official",
        100,
    )
    listing = launch(1, ["-m", "dpt_dist.cli", "presets"], timeout=60, launcher="python").stdout
    assert all(name in listing for name in names)
    proc = launch(
        1,
        [
            "-m",
            "dpt_dist.cli",
            "train",
            "adept-superglue-t5-base",
            "--model.name",
            tiny_backbones["t5"],
            "--task.data_dir",
            "data/superglue/CB",
            "--train.output_dir",
            str(tmp_path / "preset"),
            "--dry-run",
        ],
        timeout=120,
        launcher="python",
    )
    assert "dry run" in proc.stdout and "task=cb" in proc.stdout and "train/val/test=250/28/28" in proc.stdout


def test_a_bad_data_row_stops_the_cli_with_the_file_and_line(tmp_path, tiny_backbones):
    rows = (ROOT / "data/superglue/CB/train.jsonl").read_text().splitlines()
    broken = json.loads(rows[3])
    broken["label"] = "perhaps"
    (tmp_path / "train.jsonl").write_text("\n".join([*rows[:3], json.dumps(broken), *rows[4:]]) + "\n")
    (tmp_path / "val.jsonl").write_text((ROOT / "data/superglue/CB/val.jsonl").read_text())
    cmd = [str(BIN / "python"), *train_args(tmp_path / "bad", tiny_backbones["t5"], "--task.data_dir", str(tmp_path))]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**__import__("os").environ, **TEST_ENV, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'train.jsonl'}: line 4: label 'perhaps' is not in the label set" in proc.stderr

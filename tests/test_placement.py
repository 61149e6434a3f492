"""Placement: the planner's rules and its numbers, `dpt-dist plan` offline for the presets,
replicate vs ZeRO-3 training the same, and evaluation with weights gathered once per
evaluation predicting exactly what per-token gathering predicts."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import BIN, ROOT, TEST_ENV, run_scenario

from dpt_dist.placement import Cluster, Footprint, decide

GB = 1.0


def need(weights: float, activations: float = 4.0, overhead: float = 2.0, live: float = 0.5, params: int = 10**9):
    return Footprint(params, 2, weights, activations, overhead, live)


def gpus(world: int, per_node: int = 8, memory: float = 80.0) -> Cluster:
    return Cluster(world, per_node, memory, 2000.0, "cuda")


# ---- the rules ----------------------------------------------------------------------------------
def test_a_backbone_that_fits_is_replicated_on_every_rank():
    plan = decide(need(weights=22.0), gpus(16))  # T5-11B in bf16 on 80 GB
    assert plan.placement == "replicate" and plan.deepspeed_config == "zero0" and plan.overrides == {}
    assert plan.per_rank_gb == pytest.approx(22.0 + 4.0 + 2.0)


def test_too_big_for_one_rank_across_nodes_is_zero3_with_hpz_inside_each_node():
    plan = decide(need(weights=100.0), gpus(16, per_node=8))  # 2 nodes of 8
    assert plan.placement == "zero3_hpz" and plan.deepspeed_config == "zero3"
    assert plan.overrides == {"zero_optimization": {"zero_hpz_partition_size": 8}}
    assert plan.per_rank_gb == pytest.approx(100 / 16 + 100 / 8 + 4.0 + 2.0 + 0.5)


def test_too_big_for_one_rank_on_one_node_is_plain_zero3():
    plan = decide(need(weights=100.0), gpus(8, per_node=8))
    assert plan.placement == "zero3" and plan.overrides == {}
    assert plan.per_rank_gb == pytest.approx(100 / 8 + 6.5)


def test_when_even_hpz_does_not_fit_zero3_shards_over_all_ranks():
    # 600 GB: 600/16 + 600/8 = 112.5 > 72 usable; 600/16 = 37.5 fits
    assert decide(need(weights=600.0), gpus(16, per_node=8)).placement == "zero3"


def test_weights_that_fit_no_device_go_to_host_memory():
    plan = decide(need(weights=2000.0), Cluster(8, 8, 80.0, 4000.0, "cuda"))
    assert plan.placement == "zero3_offload" and plan.deepspeed_config == "zero3_offload"


def test_a_model_that_fits_nowhere_is_refused_with_the_numbers():
    with pytest.raises(ValueError) as err:
        decide(need(weights=2000.0, activations=100.0), Cluster(8, 8, 80.0, 500.0, "cuda"))
    message = str(err.value)
    assert "fits nowhere" in message and "2000.0 GB" in message and "72.0 GB usable of 80.0 GB" in message


def test_the_decision_line_carries_the_numbers_behind_it():
    text = decide(need(weights=22.0), gpus(16)).describe()
    for part in (
        "placement: replicate",
        "22.00 GB of frozen weights",
        "activations 4.00 GB",
        "28.00 GB per rank",
        "90% x 80.0 GB cuda memory",
        "world 16",
        "8 ranks per node",
    ):
        assert part in text, part


def test_the_activation_estimate_grows_with_batch_and_sequence_and_shrinks_with_checkpointing():
    from dpt_dist.placement import activation_bytes, backbone_config

    config = backbone_config(
        type("M", (), {"name": "google-t5/t5-large", "overrides": {}, "tokenizer_vocab_size": 0})()
    )
    base = dict(micro_batch=4, source=256, target=8, prompt=100, dtype_bytes=2, checkpointing=False)
    one = activation_bytes(config, **base)
    assert activation_bytes(config, **{**base, "micro_batch": 8}) == pytest.approx(2 * one, rel=0.01)
    assert activation_bytes(config, **{**base, "source": 512}) > 1.9 * one
    assert activation_bytes(config, **{**base, "checkpointing": True}) < one / 4


@pytest.mark.parametrize(
    "preset, params",
    [
        ("dpt-superglue-t5-small", 0.0605),
        ("dpt-superglue-t5-base", 0.223),
        ("dpt-superglue-t5-large", 0.738),
        ("adept-superglue-t5-3b", 2.85),
        ("adept-mbpp-deepseek-coder-1.3b", 1.35),
    ],
)
def test_plan_sizes_the_presets_offline_from_their_configs_alone(preset, params):
    env = {**TEST_ENV, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "dpt_dist.cli",
            "plan",
            preset,
            "--world",
            "8",
            "--device-memory-gb",
            "80",
            "--device",
            "cuda",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{params:.3g}B parameters" in proc.stdout and "placement: replicate" in proc.stdout


def test_plan_refuses_what_fits_nowhere_in_one_line():
    proc = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "dpt_dist.cli",
            "plan",
            "adept-superglue-t5-3b",
            "--world",
            "1",
            "--device-memory-gb",
            "4",
            "--device",
            "cuda",
        ],
        cwd=ROOT,
        env={**TEST_ENV, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "fits nowhere" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_with_auto_placement_logs_its_decision(tmp_path, tiny_backbones):
    proc = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "dpt_dist.cli",
            "train",
            "configs/demo_cb_adept.yaml",
            "--deepspeed.config",
            "auto",
            "--model.name",
            tiny_backbones["t5"],
            "--train.output_dir",
            str(tmp_path),
            "--dry-run",
        ],
        cwd=ROOT,
        env={**TEST_ENV, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "placement: replicate (deepspeed.config zero0)" in proc.stdout and "zero_stage=0" in proc.stdout


# ---- the same training and the same predictions whatever the placement -----------------------------
def _predictions(workdir, method, backbone) -> list[str]:
    path = next((workdir / f"{method}-{backbone.split('/')[-1]}" / "predictions").glob("test_step*.jsonl"))
    return [json.loads(line)["prediction"] for line in path.read_text().splitlines()]


@pytest.mark.distributed
def test_replicate_and_zero3_follow_the_same_loss_trajectory_and_predict_the_same(tiny_backbones, tmp_path):
    backbone, methods = tiny_backbones["t5"], ["pt", "dpt", "adept"]
    runs = {}
    for name in ("zero0", "zero3"):
        runs[name] = run_scenario(
            2,
            "training",
            tmp_path / name,
            [backbone],
            methods=methods,
            steps=4,
            timeout=400,
            deepspeed=name,
            max_eval=12,
        )["result"]
    for method in methods:
        a, b = (torch.tensor(runs[n][f"{backbone}|{method}"]["loss"]) for n in ("zero0", "zero3"))
        assert ((a - b).abs() / a.abs()).max() < 1e-4, f"{method}: replicate {a.tolist()} vs ZeRO-3 {b.tolist()}"
        assert _predictions(tmp_path / "zero0" / "training-2", method, backbone) == _predictions(
            tmp_path / "zero3" / "training-2", method, backbone
        )


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_evaluation_with_weights_gathered_once_predicts_exactly_what_per_token_gathering_does(
    tiny_backbones, tmp_path, kind
):
    backbone = tiny_backbones[kind]
    for gather in ("true", "false"):
        run_scenario(
            2,
            "training",
            tmp_path / gather,
            [backbone],
            methods=["adept", "lora"],
            steps=2,
            timeout=400,
            gather_for_eval=gather,
            max_eval=20,
            max_new_tokens=6,
        )
    for method in ("adept", "lora"):
        once = _predictions(tmp_path / "true" / "training-2", method, backbone)
        per_token = _predictions(tmp_path / "false" / "training-2", method, backbone)
        assert len(once) == 20 and once == per_token


# ---- the GPU kit ----------------------------------------------------------------------------------
def test_the_gpu_kit_builds_the_missing_wheels_within_what_the_device_tool_carries(tmp_path):
    proc = subprocess.run(
        [str(BIN / "python"), "bench/gpu_kit.py", "--out", str(tmp_path / "whl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = {p.name.split("-")[0].lower() for p in (tmp_path / "whl").glob("*.whl")}
    assert {"deepspeed", "datasets", "dill", "multiprocess", "pydantic", "pydantic_core", "dpt_dist"} <= wheels
    assert sum(p.stat().st_size for p in (tmp_path / "whl").glob("*.whl")) <= 64 * 2**20
    assert all("cp312" in p.name or "py3" in p.name or "py312" in p.name for p in (tmp_path / "whl").glob("*.whl"))


@pytest.mark.distributed
def test_the_gpu_script_runs_its_smokes_and_throughput_at_toy_size_on_cpu(tmp_path):
    env = {
        **TEST_ENV,
        "PATH": f"{BIN}:/usr/bin:/bin",
        "PYTHON": str(BIN / "python"),
        "OUT": str(tmp_path / "results"),
        "RUNS": str(tmp_path / "runs"),
    }
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--cpu-smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("smoke ok:") == 2 and "zero_stage=0" in proc.stdout and "zero_stage=3" in proc.stdout
    for shape in ("t5-3b", "llama-1b"):
        result = json.loads((tmp_path / "results" / f"gpu_{shape}_tiny.json").read_text())
        assert result["tokens_per_s"] > 0 and result["gen_tokens_per_s"] > 0 and result["dtype"] == "bf16"

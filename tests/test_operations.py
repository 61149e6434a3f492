"""Operations: exact and elastic resume, fault survival, TensorBoard scalars and the prompt's
spectrum, export round trips, the launch recipes and the docker image's pins."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, ROOT, TEST_ENV, launch

pytestmark = pytest.mark.distributed

ENV = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


def train_args(out, backbone, steps=8, *extra):
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
        str(steps),
        "--train.batch_size",
        "8",
        "--train.micro_batch_size",
        "2",
        "--train.warmup_steps",
        "2",
        "--task.max_eval_examples",
        "4",
        "--task.max_source_length",
        "64",
        "--train.spectrum_every",
        "2",
        *extra,
    ]


def metrics(out) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text())


def trained_tensors(checkpoint_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {
        k: v for k, v in load_file(str(Path(checkpoint_dir) / "state.safetensors")).items() if k.startswith("train/")
    }


# ---- resume -----------------------------------------------------------------------------------
def test_exact_resume_on_two_zero3_ranks_reproduces_the_uninterrupted_run(tmp_path, tiny_backbones):
    t5 = tiny_backbones["t5"]
    launch(2, train_args(tmp_path / "straight", t5, 8, "--train.checkpoint_every", "4"), timeout=300)
    proc = launch(
        2,
        train_args(tmp_path / "split", t5, 8, "--train.checkpoint_every", "4", "--train.max_steps_per_run", "4"),
        timeout=300,
    )
    assert "stopping after 4 steps of this run at step 4/8" in proc.stdout
    assert not (tmp_path / "split" / "metrics.json").exists()
    proc = launch(2, train_args(tmp_path / "split", t5, 8, "--train.checkpoint_every", "4", "--resume"), timeout=300)
    assert "resumed from" in proc.stdout and "at step 4/8" in proc.stdout
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "split")
    assert straight["train_loss"] == resumed["train_loss"]  # the whole trajectory, bit for bit
    a = trained_tensors(tmp_path / "straight" / "checkpoints" / "step_00000008")
    b = trained_tensors(tmp_path / "split" / "checkpoints" / "step_00000008")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # prompt and Adam moments, fp32


@pytest.mark.parametrize("stage", ["zero0", "zero2"])
def test_exact_resume_holds_for_other_zero_stages(tmp_path, tiny_backbones, stage):
    t5 = tiny_backbones["t5"]
    extra = ["--train.checkpoint_every", "3", "--deepspeed.config", f"ds_configs/{stage}.json"]
    launch(1, train_args(tmp_path / "a", t5, 6, *extra), timeout=200, launcher="python")
    launch(
        1, train_args(tmp_path / "b", t5, 6, *extra, "--train.max_steps_per_run", "3"), timeout=200, launcher="python"
    )
    launch(1, train_args(tmp_path / "b", t5, 6, *extra, "--resume"), timeout=200, launcher="python")
    assert metrics(tmp_path / "a")["train_loss"] == metrics(tmp_path / "b")["train_loss"]


def test_elastic_resume_between_world_sizes_two_and_one(tmp_path, tiny_backbones):
    t5 = tiny_backbones["t5"]
    extra = ["--train.checkpoint_every", "4"]
    # written at 2 ranks, continued at 1
    launch(2, train_args(tmp_path / "two", t5, 8, *extra, "--train.max_steps_per_run", "4"), timeout=300)
    proc = launch(1, train_args(tmp_path / "two", t5, 8, *extra, "--resume"), timeout=300, launcher="python")
    assert "elastic resume: world size 2 -> 1" in proc.stdout
    first = metrics(tmp_path / "two")
    assert first["world_size"] == 1 and first["steps_run"] == 8 and len(first["train_loss"]) == 8
    # written at 1 rank, continued at 2
    launch(
        1, train_args(tmp_path / "one", t5, 8, *extra, "--train.max_steps_per_run", "4"), timeout=300, launcher="python"
    )
    proc = launch(2, train_args(tmp_path / "one", t5, 8, *extra, "--resume"), timeout=300)
    assert "elastic resume: world size 1 -> 2" in proc.stdout
    second = metrics(tmp_path / "one")
    assert second["world_size"] == 2 and second["steps_run"] == 8
    # same data order, prompt, optimizer and schedule: the two runs differ only by which dropout
    # mask meets which example (the random streams are per rank)
    assert all(abs(x - y) < 0.05 * abs(y) for x, y in zip(first["train_loss"], second["train_loss"]))


def test_resume_refuses_a_checkpoint_of_another_run_and_an_incomplete_one(tmp_path, tiny_backbones):
    t5 = tiny_backbones["t5"]
    launch(
        1,
        train_args(tmp_path / "r", t5, 4, "--train.checkpoint_every", "2", "--train.max_steps_per_run", "2"),
        timeout=200,
        launcher="python",
    )
    ckpt = tmp_path / "r" / "checkpoints" / "step_00000002"
    cmd = [str(BIN / "python"), *train_args(tmp_path / "r", t5, 4, "--prompt.method", "dpt", "--resume", str(ckpt))]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 2 and "a checkpoint only continues the run that wrote it" in proc.stderr
    broken = tmp_path / "r" / "checkpoints" / "step_00000009"
    broken.mkdir()
    (broken / "state.safetensors").write_bytes(b"half")
    cmd = [str(BIN / "python"), *train_args(tmp_path / "r", t5, 4, "--resume", str(broken))]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 2 and "incomplete checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    # "latest" skips it: only complete checkpoints count
    from dpt_dist import checkpoint

    assert checkpoint.resolve("latest", tmp_path / "r" / "checkpoints") == ckpt


def test_keeps_the_last_k_checkpoints_and_the_best(tmp_path):
    from dpt_dist import checkpoint

    root = tmp_path / "ck"
    for step in range(1, 7):
        checkpoint.write(root, step, {"x": torch.tensor([float(step)])}, {"step": step})
    (root / ".tmp-step_00000007-999999").mkdir()  # left by a writer that was killed
    checkpoint.prune(root, keep=2, protect={2})
    assert [s for s, _ in checkpoint.complete(root)] == [2, 5, 6]
    assert not list(root.glob(".tmp-*"))
    tensors, meta = checkpoint.read(root / "step_00000006")
    assert meta["step"] == 6 and tensors["x"].item() == 6.0


# ---- faults -----------------------------------------------------------------------------------
def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    from dpt_dist.sandbox import _descendants

    for pid in _descendants(launcher_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"dpt_dist.cli" in cmdline:
            return pid
    return None


def _start(out, backbone, *extra, env=None):
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", *train_args(out, backbone, 400, *extra)]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(condition, timeout: float, proc) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"condition not reached (exit {proc.poll()}):\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)


def _killed_job_exits_nonzero(proc, victim: int, within: float = 90.0) -> str:
    os.kill(victim, signal.SIGKILL)
    started = time.time()
    try:
        output, _ = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the job hung for {within} s after a rank was killed")
    assert proc.returncode != 0, output[-2000:]
    assert time.time() - started < within
    return output


def test_a_rank_killed_mid_training_stops_the_job_and_the_rerun_resumes(tmp_path, tiny_backbones):
    out = tmp_path / "run"
    proc = _start(out, tiny_backbones["t5"], "--train.checkpoint_every", "5")
    _wait_for(
        lambda: any(s >= 10 for s, _ in __import__("dpt_dist.checkpoint").checkpoint.complete(out / "checkpoints")),
        240,
        proc,
    )
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None
    output = _killed_job_exits_nonzero(proc, victim)
    assert "SIGKILL" in output or "Signal 9" in output or "lost its peers" in output
    from dpt_dist import checkpoint

    last = checkpoint.complete(out / "checkpoints")[-1][0]
    rerun = launch(
        2, train_args(out, tiny_backbones["t5"], last + 5, "--train.checkpoint_every", "5", "--resume"), timeout=300
    )
    assert f"resumed from {out / 'checkpoints' / f'step_{last:08d}'} at step {last}/" in rerun.stdout
    assert metrics(out)["steps_run"] == last + 5


def test_a_rank_killed_during_a_checkpoint_write_never_leaves_a_loadable_half_checkpoint(tmp_path, tiny_backbones):
    out = tmp_path / "run"
    env = {**ENV, "DPT_DIST_FAULT_PAUSE_IN_CHECKPOINT": "10:60"}  # the write of step 10 stalls before it is complete
    proc = _start(out, tiny_backbones["t5"], "--train.checkpoint_every", "5", env=env)
    _wait_for(
        lambda: list((out / "checkpoints").glob(".tmp-step_00000010-*")) if (out / "checkpoints").is_dir() else False,
        240,
        proc,
    )
    writer = _rank_pid(proc.pid, 0)
    _killed_job_exits_nonzero(proc, writer)
    from dpt_dist import checkpoint

    assert [s for s, _ in checkpoint.complete(out / "checkpoints")] == [5]  # step 10 never became a checkpoint
    assert list((out / "checkpoints").glob(".tmp-step_00000010-*"))
    rerun = launch(
        2, train_args(out, tiny_backbones["t5"], 12, "--train.checkpoint_every", "5", "--resume"), timeout=300
    )
    assert "at step 5/12" in rerun.stdout
    assert [s for s, _ in checkpoint.complete(out / "checkpoints")][-1] == 12
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the dead writer's leftovers are gone


# ---- observability ----------------------------------------------------------------------------
def test_tensorboard_holds_every_training_scalar_and_the_prompt_spectrum(tmp_path, tiny_backbones):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    launch(2, train_args(out, tiny_backbones["t5"], 6, "--train.eval_every", "3"), timeout=300)
    events = EventAccumulator(
        str(out / "tensorboard"), size_guidance={"histograms": 0, "images": 0, "scalars": 0}
    ).Reload()
    tags = events.Tags()
    expected = {
        "train/loss",
        "train/lr_prompt",
        "train/lr_network",
        "train/grad_norm",
        "train/tokens_per_s",
        "train/samples_per_s",
        "train/step_time_s",
        "train/peak_memory_mb",
        "eval/validation/accuracy",
        "eval/test/accuracy",
        "spectrum/effective_rank",
        "spectrum/rank_99",
        "spectrum/sigma_max",
    }
    assert expected <= set(tags["scalars"]), expected - set(tags["scalars"])
    assert len(events.Scalars("train/loss")) == 6 and all(e.value > 0 for e in events.Scalars("train/tokens_per_s"))
    assert [e.step for e in events.Scalars("spectrum/effective_rank")] == [0, 2, 4, 6]
    assert "spectrum/singular_values" in tags["histograms"] and "spectrum/plot" in tags["images"]
    spectrum = json.loads((out / "spectrum.json").read_text())
    assert spectrum["steps"] == [0, 2, 4, 6] and all(
        len(v) == 20 for v in spectrum["singular_values"]
    )  # the 20 x d prompt
    assert (out / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- export -----------------------------------------------------------------------------------
def _generate(model, ids):
    model.eval()
    mask = (ids != 0).long()
    return model.generate(ids, mask, max_new_tokens=8, do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=1)


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_adept_merged_embedding_export_generates_what_the_unmerged_model_generates(tmp_path, tiny_backbones, kind):
    from dpt_dist import PromptConfig, PromptedModel
    from dpt_dist.backbone import load_backbone
    from dpt_dist.export import export

    torch.manual_seed(0)
    model = PromptedModel.from_config(
        load_backbone(tiny_backbones[kind]), PromptConfig(method="adept", length=4, rank=8)
    )
    with torch.no_grad():  # a trained-looking offset network (it starts at zero)
        for p in model.prompt.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(str(tmp_path / "adept"), base_model=tiny_backbones[kind])
    export(str(tmp_path / "adept"), str(tmp_path / "merged"), merge_embeddings=True)
    merged = PromptedModel.from_pretrained(load_backbone(tiny_backbones[kind]), str(tmp_path / "merged"))
    assert merged.prompt.method_name == "pt" and not merged.prompt.has_offset
    ids = torch.randint(3, 200, (3, 12))
    assert torch.equal(_generate(model, ids), _generate(merged, ids))


def test_dpt_product_export_generates_what_the_factored_prompt_generates(tmp_path, tiny_backbones):
    from dpt_dist import PromptConfig, PromptedModel
    from dpt_dist.backbone import load_backbone
    from dpt_dist.export import export

    torch.manual_seed(0)
    model = PromptedModel.from_config(
        load_backbone(tiny_backbones["t5"]), PromptConfig(method="dpt", length=10, rank=3)
    )
    model.save_pretrained(str(tmp_path / "dpt"), base_model=tiny_backbones["t5"])
    export(str(tmp_path / "dpt"), str(tmp_path / "product"))
    exported = PromptedModel.from_pretrained(load_backbone(tiny_backbones["t5"]), str(tmp_path / "product"))
    assert torch.equal(exported.prompt.prompt.weight, model.prompt.effective_prompt())
    ids = torch.randint(3, 200, (3, 12))
    assert torch.equal(_generate(model, ids), _generate(exported, ids))


def test_export_and_predict_from_the_command_line(tmp_path, tiny_backbones):
    run = tmp_path / "run"
    launch(1, train_args(run, tiny_backbones["t5"], 3), timeout=200, launcher="python")
    proc = launch(
        1,
        ["-m", "dpt_dist.cli", "export", str(run / "prompt"), "--out", str(tmp_path / "exp"), "--merge-embeddings"],
        timeout=120,
        launcher="python",
    )
    assert "exported" in proc.stdout and (tmp_path / "exp" / "input_embeddings.safetensors").is_file()
    rows = [json.loads(line) for line in (ROOT / "data/superglue/CB/val.jsonl").read_text().splitlines()[:3]]
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"source": f"premise: {r['premise']} hypothesis: {r['hypothesis']}"}) + "\n" for r in rows)
    )
    outputs = []
    for artifact in (run / "prompt", tmp_path / "exp"):
        out = tmp_path / f"pred-{artifact.name}.jsonl"
        launch(
            1,
            ["-m", "dpt_dist.cli", "predict", str(artifact), "--input", str(tmp_path / "in.jsonl"), "--out", str(out)],
            timeout=120,
            launcher="python",
        )
        outputs.append([json.loads(line)["prediction"] for line in out.read_text().splitlines()])
    assert len(outputs[0]) == 3 and outputs[0] == outputs[1]
    bad = subprocess.run(
        [str(BIN / "python"), "-m", "dpt_dist.cli", "export", str(run / "prompt"), "--out", str(tmp_path / "x")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "without --merge-embeddings" in bad.stderr


# ---- launch recipes, configs, docker ----------------------------------------------------------
RECIPE_RUN = [
    "configs/demo_cb_adept.yaml",
    "--train.steps",
    "2",
    "--train.batch_size",
    "8",
    "--train.micro_batch_size",
    "4",
    "--task.max_eval_examples",
    "4",
    "--task.max_source_length",
    "64",
]


@pytest.mark.parametrize(
    "script, env_extra",
    [
        ("launch/gpu_node.sh", {"NUM_GPUS": "2"}),  # the deepspeed launcher
        ("launch/cpu.sh", {}),  # torchrun
        ("launch/mpi.sh", {"NP": "2"}),  # mpirun + mpi4py discovery
    ],
)
def test_launch_recipes_run_two_cpu_ranks(tmp_path, tiny_backbones, script, env_extra):
    out = tmp_path / "run"
    env = {**ENV, "VENV": str(BIN.parent), "MASTER_PORT": str(_free_port()), **env_extra}
    proc = subprocess.run(
        ["bash", script, *RECIPE_RUN, "--model.name", tiny_backbones["t5"], "--train.output_dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert metrics(out)["world_size"] == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_and_multinode_recipes_print_the_commands_they_would_run(tmp_path):
    env = {
        **ENV,
        "DRY_RUN": "1",
        "SLURM_NNODES": "4",
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "gpu07,gpu08,gpu09,gpu10",
        "GPUS_PER_NODE": "8",
    }
    env.pop("MASTER_ADDR", None)
    proc = subprocess.run(
        ["bash", "launch/slurm.sbatch", "my.yaml", "--model.dtype", "bf16"],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("srun --nodes 4 --ntasks-per-node 1")
    for part in (
        "--nnodes 4",
        "--nproc_per_node 8",
        "--rdzv_id 777",
        "--rdzv_backend c10d",
        "--rdzv_endpoint gpu07:29500",
        "-m dpt_dist.cli train my.yaml --model.dtype bf16 --resume",
    ):
        assert part in line, part
    hosts = tmp_path / "hosts"
    hosts.write_text("# two nodes\nnode01 slots=8\nnode02 slots=8\n")
    proc = subprocess.run(
        ["bash", "launch/multinode.sh", "my.yaml"],
        cwd=ROOT,
        env={**ENV, "DRY_RUN": "1", "HOSTFILE": str(hosts), "NCCL_SOCKET_IFNAME": "ib0", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NCCL_SOCKET_IFNAME=ib0" in proc.stdout and "HF_HUB_OFFLINE=1" in proc.stdout
    assert re.search(
        r"deepspeed --hostfile \S+hosts --master_addr node01 --master_port 29500 --module dpt_dist.cli train my.yaml",
        proc.stdout,
    )
    assert not (ROOT / ".deepspeed_env").exists() or "DRY" not in (ROOT / ".deepspeed_env").read_text()


def test_zero_plus_plus_config_is_valid_deepspeed(tmp_path):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    from dpt_dist.engine import build_ds_config

    cfg = build_ds_config(
        "ds_configs/zero3_pp.json", {}, batch_size=32, micro_batch_size=4, dtype="bf16", grad_clip=1.0, world=8
    )
    zero = DeepSpeedZeroConfig(**cfg["zero_optimization"])
    assert zero.stage == 3 and zero.zero_hpz_partition_size == 8 and zero.zero_quantized_weights


def test_docker_image_pins_the_same_versions_as_the_repository():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    installs = [line for line in dockerfile.replace("\\\n", " ").splitlines() if "pip3 install" in line]
    assert installs
    for line in installs:
        for name, version in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s]*)", line):
            assert pins.get(name) == version, f"Dockerfile pins {name}=={version}, constraints.txt {pins.get(name)}"
        if "==" not in line:
            assert "-c constraints.txt" in line, f"unpinned install in the Dockerfile: {line.strip()}"
    assert "deepspeed" in dockerfile and "DS_BUILD_" in dockerfile  # ops compiled into the image
    assert re.search(r"FROM nvidia/cuda:\S+-devel", dockerfile)


# ---- performance pieces -----------------------------------------------------------------------
def test_gradient_checkpointing_trains_exactly_like_the_plain_backward(tmp_path, tiny_backbones):
    t5 = tiny_backbones["t5"]
    extra = ["--deepspeed.config", "ds_configs/zero0.json", "--model.dropout", "0.0", "--prompt.dropout", "0.0"]
    launch(1, train_args(tmp_path / "plain", t5, 3, *extra), timeout=200, launcher="python")
    launch(
        1,
        train_args(tmp_path / "ckpt", t5, 3, *extra, "--model.gradient_checkpointing", "true"),
        timeout=200,
        launcher="python",
    )
    plain, ckpt = metrics(tmp_path / "plain")["train_loss"], metrics(tmp_path / "ckpt")["train_loss"]
    assert plain == pytest.approx(ckpt, rel=1e-5)


def test_prompt_tensors_stay_whole_on_every_zero3_rank(tmp_path, tiny_backbones):
    script = textwrap.dedent("""
        import json, sys
        from dpt_dist import dist, engine
        from dpt_dist.assembly import build_model
        from dpt_dist.backbone import load_tokenizer
        from dpt_dist.prompts import PromptConfig

        rank, world = engine.setup_distributed()
        bb = sys.argv[1]
        ds = engine.build_ds_config("ds_configs/zero3.json", {}, batch_size=8 * world, micro_batch_size=8, dtype="fp32",
                                    grad_clip=1.0, world=world)
        built = build_model(bb, PromptConfig(method="pt", length=313, init="random"), ds, dtype="fp32", dropout=0.0,
                            tokenizer=load_tokenizer(bb), seed=0)
        engine.TrainEngine(built, prompt_lr=0.3, network_lr=1e-4, weight_decay=0, adam_eps=1e-6, warmup_steps=0,
                           total_steps=10)
        p = built.model.prompt.prompt.weight
        frozen = [(n, q) for n, q in built.model.named_parameters() if not q.requires_grad]
        big = [n for n, q in frozen if q.ds_persist and q.ds_numel > 100000]
        print("RESULT", json.dumps({"persist": bool(p.ds_persist), "numel": p.ds_numel, "frozen_big_persistent": big}))
        dist.shutdown()
    """)
    (tmp_path / "probe.py").write_text(script)
    proc = launch(2, [str(tmp_path / "probe.py"), tiny_backbones["t5-10m"]], timeout=200)
    found = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    # 313 x 320 = 100,160 is above the config's persistence threshold (1e5), below the smallest
    # frozen matrix (320 x 320): the threshold is raised for the prompt, no frozen matrix follows
    assert found["persist"] and found["numel"] == 100_160 and found["frozen_big_persistent"] == []


def test_the_benchmark_writes_every_ratio(tmp_path):
    proc = launch(
        1,
        [
            "bench/bench.py",
            "--d-model",
            "64",
            "--layers",
            "1",
            "--steps",
            "4",
            "--rounds",
            "1",
            "--skip-demo",
            "--out",
            str(tmp_path / "bench"),
            "--workdir",
            str(tmp_path / "work"),
        ],
        timeout=420,
        launcher="python",
    )
    result = json.loads((tmp_path / "bench" / "bench.json").read_text())
    for key in (
        "step_over_forward",
        "vs_peft_same_padding",
        "vs_peft_default",
        "zero3_rank_fraction",
        "padding_ratio",
        "gen_tokens_per_s",
    ):
        assert result[key] > 0, key
    assert set(result["padding"]) == {"cb", "superglue-rte", "squad", "mbpp"}
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "| `vs_peft_default` |" in table and result["machine"] in table and "step_over_forward" in proc.stdout

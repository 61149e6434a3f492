"""Placement measured at 2 ranks, in one run: replicate vs ZeRO-3 step time, generation with the
weights gathered once per evaluation vs gathered for every token, the bytes each rank sends and
receives per step, and what docs/scaling.md's formula predicts for the same numbers.

    python bench/placement.py [--d-model 512 --layers 6 --steps 8]   (make bench runs it too)

Each placement runs in its own 2-rank torchrun probe (this file with --probe); every
torch.distributed collective is wrapped and counted there (algorithmic bytes per rank: for an
all-gather or reduce-scatter of S bytes in all, (W-1)/W x S sent and as much received; an
all-reduce twice that), so the counts include DeepSpeed's ZeRO-3 gathers and our own
all-reduces. The formula: step time = compute (4 x parameters x tokens FLOPs per rank: forward
and the activation-gradient backward of a frozen model, at the FLOP rate the replicated run
achieved) + bytes / (all-gather bandwidth measured in the same probe), no overlap assumed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# ZeRO-3 as it behaves for a model larger than its live-parameter budget (1e9 in the shipped config:
# any model above ~1B parameters): every tensor partitioned, each layer released after its use and
# gathered again when needed (the backward, the next generated token). A small model under the
# shipped config would instead keep everything gathered after the first forward, which is not the
# regime the placement decision is about.
ZERO3_AS_FOR_A_LARGE_MODEL = {
    "stage3_param_persistence_threshold": 0,
    "stage3_max_live_parameters": 100_000,
    "stage3_max_reuse_distance": 0,
}
GOALS = {"replicate_over_zero3_step": ("<=", 0.8), "gathered_over_per_token_tokens_per_s": (">=", 3.0)}
_COUNTED = (
    "all_reduce",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "all_gather",
    "broadcast",
    "_all_gather_base",
    "_reduce_scatter_base",
    "reduce_scatter",
    "all_to_all_single",
    "all_gather_object",
    "broadcast_object_list",
)


# ---- in every rank of a probe --------------------------------------------------------------------
def count_collectives() -> dict:
    """Wrap torch.distributed's collectives (before DeepSpeed keeps references to them); the
    returned dict accumulates bytes sent / received by this rank and the number of calls."""
    import torch
    import torch.distributed as torch_dist

    counts = {"sent": 0, "received": 0, "calls": 0}

    def size(obj) -> int:
        if torch.is_tensor(obj):
            return obj.numel() * obj.element_size()
        if isinstance(obj, (list, tuple)):
            return sum(size(o) for o in obj)
        return 0

    def wrap(name, fn):
        signature = inspect.signature(fn)

        def counted(*args, **kwargs):
            try:  # the tensors, whether passed by position or by keyword
                values = tuple(signature.bind(*args, **kwargs).arguments.values())
            except TypeError:
                values = args
            world = torch_dist.get_world_size()
            share = (world - 1) / world
            if name in ("all_gather_into_tensor", "_all_gather_base", "all_gather"):
                moved = share * size(values[0])  # the output: everything every rank ends up with
            elif name in ("reduce_scatter_tensor", "_reduce_scatter_base", "reduce_scatter"):
                moved = share * size(values[1])  # the input being reduced
            elif name == "all_reduce":
                moved = 2 * share * size(values[0])
            else:
                moved = share * size(values[0]) if values else 0
            counts["sent"] += moved
            counts["received"] += moved
            counts["calls"] += 1
            return fn(*args, **kwargs)

        return counted

    for name in _COUNTED:
        if hasattr(torch_dist, name):
            setattr(torch_dist, name, wrap(name, getattr(torch_dist, name)))
    return counts


def _all_gather_link(megabytes: int = 32) -> tuple[float, float]:
    """(bytes per second one rank moves in a large all-gather, seconds of a tiny one): the
    formula's bandwidth and per-call latency."""
    import torch
    import torch.distributed as torch_dist

    world = torch_dist.get_world_size()

    def timed(elements: int, repeats: int) -> float:
        part = torch.ones(max(1, elements // world))
        out = torch.empty(part.numel() * world)
        torch_dist.all_gather_into_tensor(out, part)
        started = time.perf_counter()
        for _ in range(repeats):
            torch_dist.all_gather_into_tensor(out, part)
        return (time.perf_counter() - started) / repeats

    large = megabytes * 2**20 // 4
    return (world - 1) / world * large * 4 / timed(large, 3), timed(256, 50)


def probe(args) -> None:
    counts = count_collectives()
    from dpt_dist import dist, engine
    from dpt_dist.assembly import build_model
    from dpt_dist.backbone import load_tokenizer
    from dpt_dist.prompts import PromptConfig

    rank, world = engine.setup_distributed()
    tokenizer = load_tokenizer(args.backbone)
    overrides = {"zero_optimization": ZERO3_AS_FOR_A_LARGE_MODEL} if args.probe == "zero3" else {}
    ds = engine.build_ds_config(
        args.probe,
        overrides,
        batch_size=args.batch * world,
        micro_batch_size=args.batch,
        dtype="fp32",
        grad_clip=1.0,
        world=world,
    )
    built = build_model(
        args.backbone,
        PromptConfig(method="pt", length=20, init="random"),
        ds,
        dtype="fp32",
        dropout=0.0,
        tokenizer=tokenizer,
        seed=0,
    )
    train_engine = engine.TrainEngine(
        built, prompt_lr=0.3, network_lr=1e-4, weight_decay=0.0, adam_eps=1e-6, warmup_steps=0, total_steps=10**6
    )
    train_engine.train()
    batch, generate_rows = _batches(tokenizer, args, rank)
    times, before = [], None
    for step in range(args.steps + 2):  # the first two warm up (ZeRO-3 builds its gather schedule)
        if step == 2:
            before = dict(counts)
        started = time.perf_counter()
        train_engine.train_step([batch], global_tokens=dist.all_reduce_sum(int((batch["labels"] != -100).sum())))
        times.append(time.perf_counter() - started)
    moved = {k: (counts[k] - before[k]) / args.steps for k in ("sent", "received", "calls")}
    result = {
        "placement": args.probe,
        "world": world,
        "step_s": statistics.median(times[2:]),
        "per_step": moved,
        "tokens_per_rank_per_step": int(batch["attention_mask"].sum()) + 20 * len(batch["input_ids"]),
    }
    result["allgather_bytes_per_s"], result["allgather_latency_s"] = _all_gather_link()
    result.update(_generation(train_engine.module, tokenizer, generate_rows, args))
    gathered = dist.all_gather_objects(result)
    if rank == 0:
        Path(args.probe_out).write_text(json.dumps(gathered[0]))
    dist.shutdown()


def _batches(tokenizer, args, rank: int):
    from dpt_dist.config import TaskConfig
    from dpt_dist.data import collate_train, tokenize
    from dpt_dist.tasks import get_task, load_splits

    train = load_splits(get_task("cb"), TaskConfig(name="cb", data_dir=str(ROOT / "data/superglue/CB")))["train"]
    data = tokenize(train.select(range(max(64, args.gen_rows))), tokenizer, True, 64, 8)
    rows = [data[i] for i in range(rank * args.batch, (rank + 1) * args.batch)]
    return collate_train(rows, tokenizer.pad_token_id), data.select(range(args.gen_rows))


def _generation(model, tokenizer, data, args) -> dict:
    """Tokens per second of greedy generation on 2 ranks: the partitioned model with synced_gpus
    (a gather of every layer for every token) against a replica gathered once per evaluation
    (engine.inference_replica, its build included), alternating over 3 rounds, medians."""
    from dpt_dist import engine
    from dpt_dist.evaluation import generate_samples

    # every row generates exactly new_tokens tokens (eos suppressed until then): both paths do the same work
    fixed = {"batch_size": 8, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}

    def run(name: str):
        if name == "per_token" or args.probe != "zero3":
            return generate_samples(model, data, tokenizer, synced=args.probe == "zero3", **fixed)
        with engine.inference_replica(model) as (replica, synced):
            return generate_samples(replica, data, tokenizer, synced=synced, **fixed)

    seconds, texts = {"per_token": [], "gathered_once": []}, {}
    for _ in range(3):
        for name in seconds:
            started = time.perf_counter()
            texts[name] = run(name)
            seconds[name].append(time.perf_counter() - started)
    out = {}
    for name, times in seconds.items():
        out[f"gen_{name}_tokens_per_s"] = len(data) * args.new_tokens / statistics.median(times)
    out["gen_same_predictions"] = texts["per_token"] == texts["gathered_once"]
    return out


# ---- the driver ------------------------------------------------------------------------------------
def _backbone(workdir: Path, d_model: int, layers: int) -> str:
    from dpt_dist.backbone import materialize_tiny
    from dpt_dist.config import TaskConfig
    from dpt_dist.tasks import get_task, load_splits

    texts = list(
        load_splits(get_task("cb"), TaskConfig(name="cb", data_dir=str(ROOT / "data/superglue/CB")))["train"]["source"]
    )
    overrides = {
        "d_model": d_model,
        "d_kv": 64,
        "num_heads": max(1, d_model // 64),
        "d_ff": 4 * d_model,
        "num_layers": layers,
        "num_decoder_layers": layers,
    }
    return materialize_tiny("tiny-t5", texts, workdir / f"t5-d{d_model}-l{layers}", overrides, seed=0)


def _launch(placement: str, backbone: str, workdir: Path, args) -> dict:
    out = workdir / f"probe-{placement}.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
    }
    env.update(
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(ROOT),
    )
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).resolve()),
        "--probe",
        placement,
        "--backbone",
        backbone,
        "--probe-out",
        str(out),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--new-tokens",
        str(args.new_tokens),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        tail = [line for line in (proc.stdout + proc.stderr).splitlines() if "it/s]" not in line][-30:]
        raise SystemExit(
            f"bench/placement.py: the {placement} probe failed (exit {proc.returncode}):\n" + "\n".join(tail)
        )
    return json.loads(out.read_text())


def _median_run(runs: list[dict]) -> dict:
    """The probes of one placement over the alternating rounds: medians of the timed figures."""
    out = dict(runs[0])
    keys = (
        "step_s",
        "gen_per_token_tokens_per_s",
        "gen_gathered_once_tokens_per_s",
        "allgather_bytes_per_s",
        "allgather_latency_s",
    )
    for key in keys:
        out[key] = statistics.median(r[key] for r in runs)
    out["gen_same_predictions"] = all(r["gen_same_predictions"] for r in runs)
    return out


def predict(
    parameters: int,
    bytes_per_parameter: int,
    tokens: int,
    flops_per_s: float,
    link_bytes_per_s: float,
    latency_s: float,
    placement: str,
    world: int,
    layers: int,
    micro_steps: int = 1,
    gathers: int = 1,
) -> dict:
    """docs/scaling.md's formula for one training step of a frozen backbone, per rank: compute
    4 x parameters x tokens FLOPs; under ZeRO-3 every micro-step gathers the weights `gathers`
    times (1 while DeepSpeed keeps them for the backward: models under stage3_max_live_parameters,
    1e9 in the shipped config; else 2), about 2 collectives per layer each time."""
    compute = 4 * parameters * tokens / flops_per_s
    if placement != "zero3":
        return {"compute_s": compute, "bytes": 0.0, "comm_s": 0.0, "step_s": compute}
    moved = gathers * micro_steps * (world - 1) / world * parameters * bytes_per_parameter
    comm = moved / link_bytes_per_s + gathers * micro_steps * 2 * layers * latency_s
    return {"compute_s": compute, "bytes": moved, "comm_s": comm, "step_s": compute + comm}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/placement.py", description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="micro-batch per rank")
    parser.add_argument("--new-tokens", type=int, default=32, help="generation budget (MRQA's is 64)")
    parser.add_argument("--gen-rows", type=int, default=64, help="rows generated for in each timing")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two placements")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench-placement"))
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backbone", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(args)
        return 0
    return report(args)


def report(args) -> int:
    from dpt_dist.files import write_text_atomic
    from dpt_dist.placement import count_parameters

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backbone = _backbone(workdir, args.d_model, args.layers)
    from transformers import AutoConfig

    parameters = count_parameters(AutoConfig.from_pretrained(backbone))[0]
    rounds = [{p: _launch(p, backbone, workdir, args) for p in ("zero0", "zero3")} for _ in range(args.rounds)]
    replicate, zero3 = (_median_run([r[p] for r in rounds]) for p in ("zero0", "zero3"))
    tokens = replicate["tokens_per_rank_per_step"]
    flops_per_s = 4 * parameters * tokens / replicate["step_s"]  # what the replicated (compute-only) step achieved
    link = zero3["allgather_bytes_per_s"]
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "parameters": parameters,
        "model": f"T5 d_model={args.d_model}, {args.layers}+{args.layers} layers, random weights, fp32, PT l=20",
        "micro_batch_per_rank": args.batch,
        "world": 2,
        "replicate_step_s": replicate["step_s"],
        "zero3_step_s": zero3["step_s"],
        "replicate_over_zero3_step": replicate["step_s"] / zero3["step_s"],
        "bytes_per_rank_per_step": {"replicate": replicate["per_step"], "zero3": zero3["per_step"]},
        "gen_per_token_tokens_per_s": zero3["gen_per_token_tokens_per_s"],
        "gen_gathered_once_tokens_per_s": zero3["gen_gathered_once_tokens_per_s"],
        "gathered_over_per_token_tokens_per_s": zero3["gen_gathered_once_tokens_per_s"]
        / zero3["gen_per_token_tokens_per_s"],
        "gathered_predictions_identical": zero3["gen_same_predictions"],
        "measured_flops_per_s": flops_per_s,
        "measured_allgather_bytes_per_s": link,
        "measured_allgather_latency_s": zero3["allgather_latency_s"],
        "formula": {
            p: predict(
                parameters,
                4,
                tokens,
                flops_per_s,
                link,
                zero3["allgather_latency_s"],
                p,
                2,
                layers=2 * args.layers,
                gathers=2,  # the probe's ZeRO-3 releases every layer after use (ZERO3_AS_FOR_A_LARGE_MODEL)
            )
            for p in ("replicate", "zero3")
        },
    }
    result["met"] = {k: (result[k] <= v if op == "<=" else result[k] >= v) for k, (op, v) in GOALS.items()}
    write_text_atomic(Path(args.out) / "placement.json", json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    f, b = r["formula"], r["bytes_per_rank_per_step"]
    mib = 2**20
    lines = [
        f"Measured {r['date']}, 2 CPU ranks; {r['model']} ({r['parameters'] / 1e6:.1f}M parameters), "
        f"micro-batch {r['micro_batch_per_rank']} per rank.",
        "",
        "| | replicate (ZeRO 0) | ZeRO-3 | ratio |",
        "|---|---|---|---|",
    ]
    lines.append(
        f"| step time, measured | {r['replicate_step_s'] * 1e3:.0f} ms | {r['zero3_step_s'] * 1e3:.0f} ms "
        f"| {r['replicate_over_zero3_step']:.2f} (goal <= 0.8) |"
    )
    lines.append(
        f"| step time, formula | {f['replicate']['step_s'] * 1e3:.0f} ms | {f['zero3']['step_s'] * 1e3:.0f} ms "
        f"| {f['replicate']['step_s'] / f['zero3']['step_s']:.2f} |"
    )
    lines.append(
        f"| sent per rank per step, measured | {b['replicate']['sent'] / mib:.2f} MiB | "
        f"{b['zero3']['sent'] / mib:.1f} MiB | |"
    )
    lines.append(
        f"| sent per rank per step, formula | {f['replicate']['bytes'] / mib:.2f} MiB | "
        f"{f['zero3']['bytes'] / mib:.1f} MiB | |"
    )
    lines.append(
        f"| generation tokens/s | per token: {r['gen_per_token_tokens_per_s']:.0f} | gathered once: "
        f"{r['gen_gathered_once_tokens_per_s']:.0f} | {r['gathered_over_per_token_tokens_per_s']:.1f}x "
        f"(goal >= 3x; same predictions: {r['gathered_predictions_identical']}) |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

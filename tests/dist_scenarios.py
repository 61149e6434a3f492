"""Multi-process scenarios the tests launch with torchrun (every rank runs this file).

Each scenario trains through the real code path (dpt_dist.train.run, DeepSpeed, ZeRO) and
rank 0 writes what it observed to --out as JSON; the pytest side asserts on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=FutureWarning)

from dpt_dist import dist, engine  # noqa: E402
from dpt_dist.backbone import load_tokenizer  # noqa: E402
from dpt_dist.config import build_config  # noqa: E402
from dpt_dist.data import collate_generate  # noqa: E402
from dpt_dist.train import run  # noqa: E402

DATA = "data/superglue/CB"


def run_config(backbone: str, method: str, out_dir: str, steps: int, **extra) -> dict:
    tree = {
        "model": {"name": backbone, "dropout": 0.0},
        "prompt": {
            "method": method,
            "length": 8,
            "rank": 4,
            "dropout": 0.0,
            "init": "vocab",
            "max_positions": 64,
            "hidden": 16,
        },
        "task": {"name": "cb", "data_dir": DATA, "max_source_length": 64, "max_eval_examples": 6},
        "train": {
            "output_dir": out_dir,
            "steps": steps,
            "batch_size": 8,
            "micro_batch_size": 4,
            "prompt_lr": 0.3,
            "network_lr": 1e-2,
            "warmup_steps": 0,
            "log_every": 100,
            "eval_batch_size": 4,
        },
        # persistence threshold 0: even the tiny test model is really partitioned
        "deepspeed": {
            "config": "ds_configs/zero3.json",
            "overrides": {"zero_optimization": {"stage3_param_persistence_threshold": 0}},
        },
    }
    for section, values in extra.items():
        tree.setdefault(section, {}).update(values)
    return tree


def deepspeed_section(name: str) -> dict:
    """ZeRO-3 with persistence threshold 0 (even the tiny test model is really partitioned), or
    the shipped config of that name."""
    if name == "zero3":
        return {"config": "zero3", "overrides": {"zero_optimization": {"stage3_param_persistence_threshold": 0}}}
    return {"config": name, "overrides": {}}


def state_digest(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(engine.trainable_state(model).items()):
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def training(args) -> dict:
    """Loss trajectories, per-rank prompt digests after every step, frozen-gradient checks."""
    results = {}
    for backbone in args.backbones:
        for method in args.methods:
            observed = {"digests": [], "frozen_grads": 0, "optimizer_params": None}

            def on_step(step, train_engine, loss, observed=observed):
                model = train_engine.module
                observed["frozen_grads"] += sum(
                    1 for p in model.backbone.parameters() if p.requires_grad or p.grad is not None
                )
                optimized = {id(p) for g in train_engine.engine.optimizer.param_groups for p in g["params"]}
                frozen_ids = {id(p) for p in model.backbone.parameters()}
                observed["frozen_in_optimizer"] = len(optimized & frozen_ids)
                observed["digests"].append(dist.all_gather_objects(state_digest(model)))
                observed["shard_fraction"] = dist.all_gather_objects(engine.frozen_shard_fraction(model))

            cfg = build_config(
                run_config(
                    backbone,
                    method,
                    f"{args.workdir}/{method}-{backbone.split('/')[-1]}",
                    args.steps,
                    task={
                        "max_source_length": args.max_source,
                        "max_eval_examples": args.max_eval,
                        "max_new_tokens": args.max_new_tokens,
                    },
                    train={"gather_for_eval": args.gather_for_eval == "true"},
                    deepspeed=deepspeed_section(args.deepspeed),
                )
            )
            result = run(cfg, on_step=on_step)
            results[f"{backbone}|{method}"] = {
                "loss": result.train_loss,
                **observed,
                "trainable": result.trainable_params,
            }
    return results


def artifact(args) -> dict:
    """Train a >= 10M-parameter T5 under ZeRO-3, record greedy outputs of the sharded model,
    save the artifact, and generate with a different number of new tokens on each rank."""
    captured = {}
    cfg = build_config(run_config(args.backbones[0], "adept", f"{args.workdir}/artifact", args.steps))
    run(cfg, on_step=lambda step, e, loss: captured.update(engine=e))
    model = captured["engine"].module
    tokenizer = load_tokenizer(args.backbones[0])
    sources = [
        "premise: The cat sat on the mat. hypothesis: A cat sat.",
        "premise: It rained. hypothesis: The ground is dry.",
    ]
    ids = [tokenizer(s)["input_ids"] for s in sources]
    batch = collate_generate([{"prompt_ids": i} for i in ids], tokenizer.pad_token_id, left=False)
    model.eval()
    with torch.no_grad():
        # pad/eos suppressed so the random model must produce 6 real tokens to compare
        sharded_tokens = model.generate(
            **batch, max_new_tokens=6, do_sample=False, synced_gpus=True, suppress_tokens=[0, 1]
        )
        logits = model(**batch, labels=sharded_tokens.clone()).logits
        # a different output length on each rank: only synced_gpus keeps the collectives matched
        rank = dist.rank()
        uneven = model.generate(**batch, max_new_tokens=2 + 5 * rank, do_sample=False, synced_gpus=True)
    return {
        "artifact": f"{args.workdir}/artifact/prompt",
        "backbone": args.backbones[0],
        "sources": sources,
        "tokens": sharded_tokens.tolist(),
        "logits_sum": float(logits.double().sum()),
        "logits_first": logits[0, 0, :16].tolist(),
        "uneven_lengths": dist.all_gather_objects(int(uneven.shape[1])),
        "shard_fraction": dist.all_gather_objects(engine.frozen_shard_fraction(model)),
        "trainable": sum(engine.full_numel(p) for p in model.prompt.parameters()),
        "frozen": sum(engine.full_numel(p) for p in model.backbone.parameters()),
    }


def evaluation(args) -> dict:
    """Train 2 steps, then evaluate CB's whole official validation set (56 rows: not a multiple
    of 2 x 5) under ZeRO-3, counting the generate calls and rows of every rank."""
    from dpt_dist.data import tokenize
    from dpt_dist.evaluation import evaluate
    from dpt_dist.tasks import get_task, load_splits

    captured = {}
    cfg = build_config(run_config(args.backbones[0], "adept", f"{args.workdir}/eval", args.steps))
    run(cfg, on_step=lambda step, e, loss: captured.update(engine=e))
    model = captured["engine"].module
    tokenizer = load_tokenizer(args.backbones[0])
    cfg.task.split_mode = "official"
    validation = load_splits(get_task("cb"), cfg.task)["validation"]
    data = tokenize(validation, tokenizer, True, 64, 16)
    calls = []
    generate = model.generate
    model.generate = lambda **kw: calls.append(int(kw["input_ids"].shape[0])) or generate(**kw)
    path = f"{args.workdir}/eval/predictions.jsonl"
    metrics = evaluate(model, get_task("cb"), data, tokenizer, batch_size=5, max_new_tokens=3, predictions_path=path)
    dist.barrier()
    predictions = [json.loads(line) for line in Path(path).read_text().splitlines()] if dist.rank() == 0 else []
    return {
        "n": len(data),
        "metrics": metrics,
        "predictions": predictions,
        "calls_per_rank": dist.all_gather_objects(len(calls)),
        "rows_per_rank": dist.all_gather_objects(sum(calls)),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["training", "artifact", "evaluation"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--backbones", nargs="+", required=True)
    parser.add_argument("--methods", nargs="+", default=["pt", "dpt", "adept"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max_source", type=int, default=64, help="training: task.max_source_length")
    parser.add_argument("--max_eval", type=int, default=6, help="training: task.max_eval_examples")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="training: task.max_new_tokens")
    parser.add_argument("--deepspeed", default="zero3", help="training: zero3 (threshold 0) or a shipped config")
    parser.add_argument(
        "--gather_for_eval", default="true", choices=["true", "false"], help="training: train.gather_for_eval"
    )
    args = parser.parse_args()
    engine.setup_distributed(timeout_s=300)
    result = {"training": training, "artifact": artifact, "evaluation": evaluation}[args.scenario](args)
    result_all = {"world_size": dist.world_size(), "result": result}
    if dist.rank() == 0:
        with open(args.out, "w") as f:
            json.dump(result_all, f)
    dist.shutdown()


if __name__ == "__main__":
    main()
    # Once (1 run in ~10) a rank aborted in native teardown at interpreter exit ("terminate
    # called without an active exception") after all its work was done and written; the result
    # is complete here, so skip the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

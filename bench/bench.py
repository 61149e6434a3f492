"""`make bench` (python bench/bench.py): does dpt_dist waste work, and does it beat PEFT + the HF Trainer on the same
job? Everything is measured in one run, as ratios, on this machine; JSON + a markdown table.

    step_over_forward     train step time / forward time, same batch (ideal ~2.0: frozen
                          weights need activation gradients only; full fine-tuning ~3.0)
    vs_peft_same_padding  our step time / PEFT PromptTuning + Trainer step time, identical batches
    vs_peft_default       the same, each with its own default batching: ours length-grouped and
                          dynamically padded, the reference protocol padding every input to 256
    zero3_rank_fraction   per-rank resident frozen-parameter bytes under ZeRO-3, 2 ranks / 1 rank
    padding_ratio         tokens computed / real tokens of our batching (worst of CB, RTE,
                          SQuAD dev, MBPP); the same for padding to L is reported beside it
    gen_tokens_per_s      evaluation generation throughput (greedy, batch 16)
    demo_train_seconds    the demo's training part end to end at 1 and 2 ranks

The model is a T5 built from a config with random weights (weights do not change speed);
`--d-model/--layers` scale it. On a GPU the same command measures the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository: its data/ and README.md
sys.path.insert(0, str(ROOT))  # run as a script from a checkout, dpt_dist installed or not
README, README_START, README_END = ROOT / "README.md", "<!-- bench:start -->", "<!-- bench:end -->"
TARGETS = {
    "step_over_forward": ("<=", 2.2),
    "vs_peft_same_padding": ("<=", 1.05),
    "vs_peft_default": ("<=", 0.8),
    "zero3_rank_fraction": ("<=", 0.52),
    "padding_ratio": ("<=", 1.10),
}


def _texts(name: str) -> list[str]:
    """Formatted sources of a task's real data in data/ (RTE and SQuAD: their dev sets)."""
    from dpt_dist.config import TaskConfig
    from dpt_dist.tasks import get_task, load_splits

    one_file = {"superglue-rte": "superglue/RTE/val.jsonl", "squad": "mrqa/dev/SQuAD.jsonl.gz"}
    if name in one_file:
        path = str(ROOT / "data" / one_file[name])
        config = TaskConfig(name=name, files={"train": path, "validation": path}, split_mode="official")
    else:
        config = TaskConfig(
            name=name, data_dir=str(ROOT / "data" / {"cb": "superglue/CB", "mbpp": "mbpp"}[name]), split_mode="official"
        )
    return list(load_splits(get_task(name), config)["train"]["source"])


def _backbone(workdir: Path, d_model: int, layers: int) -> str:
    from dpt_dist.backbone import materialize_tiny

    texts = [t for name in ("cb", "superglue-rte", "mbpp") for t in _texts(name)[:400]]
    overrides = {
        "d_model": d_model,
        "d_kv": 64,
        "num_heads": max(1, d_model // 64),
        "d_ff": 4 * d_model,
        "num_layers": layers,
        "num_decoder_layers": layers,
    }
    return materialize_tiny("tiny-t5", texts, workdir / f"t5-d{d_model}-l{layers}", overrides, seed=0)


def _batches(tokenizer, texts, targets, batch_size, pad_to: int | None):
    """Encoder-decoder batches in order; pad_to=None pads each batch to its longest row."""
    from dpt_dist.data import pad

    out, pad_id = [], tokenizer.pad_token_id
    for start in range(0, len(texts) - batch_size + 1, batch_size):
        src = tokenizer(texts[start : start + batch_size], truncation=True, max_length=256)["input_ids"]
        tgt = tokenizer(targets[start : start + batch_size])["input_ids"]
        width = pad_to or max(map(len, src))
        out.append(
            {
                "input_ids": torch.tensor([s + [pad_id] * (width - len(s)) for s in src]),
                "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in src]),
                "labels": pad(tgt, -100),
            }
        )
    return out


# ---- (a), (b): our engine vs PEFT + Trainer ------------------------------------------------------
def _our_engine(backbone_path: str, tokenizer, length: int, batch_size: int):
    from dpt_dist import engine
    from dpt_dist.assembly import build_model
    from dpt_dist.prompts import PromptConfig

    engine.setup_distributed()
    ds_config = engine.build_ds_config(
        "zero0", {}, batch_size=batch_size, micro_batch_size=batch_size, dtype="fp32", grad_clip=1.0, world=1
    )
    built = build_model(
        backbone_path,
        PromptConfig(method="pt", length=length, init="random"),
        ds_config,
        dtype="fp32",
        dropout=0.0,
        tokenizer=tokenizer,
        seed=0,
    )
    return engine.TrainEngine(
        built, prompt_lr=0.3, network_lr=1e-4, weight_decay=0.0, adam_eps=1e-6, warmup_steps=0, total_steps=10**6
    )


# The bench's own process group (world 1) put RANK/MASTER_PORT/... into os.environ; a child that
# inherited them would try to join it, so every child starts from an environment without them.
_DIST_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "CROSS_RANK",
    "CROSS_SIZE",
    "LOCAL_SIZE",
)


def _run_child(what: str, cmd: list[str], timeout: int, attempts: int = 1, **env) -> None:
    """Run one measurement in a child process; if it fails, the error says which and shows why.
    Multi-rank launches get `attempts=2`: a rendezvous can lose a race for a port on a busy
    machine, and one such hiccup should not throw away a ten-minute benchmark."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in _DIST_ENV and not k.startswith(("TORCHELASTIC_", "TORCH_ELASTIC_"))
    }
    clean.update(PYTHONPATH=str(ROOT), **env)
    for attempt in range(1, attempts + 1):
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"bench: {what} did not finish within {timeout} s: {' '.join(cmd)}") from None
        if proc.returncode == 0:
            return
        # progress bars are noise here; the traceback and the error lines are what matter
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip() and "it/s]" not in line]
        report = f"bench: {what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(lines[-40:])
        if attempt == attempts:
            raise RuntimeError(report)
        print(report + "\nbench: trying once more", file=sys.stderr, flush=True)


def _torchrun(world: int) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={world}"]


def _our_step(train_engine, batch) -> None:
    train_engine.backward(train_engine.forward(batch).loss)
    train_engine.step()


def _our_step_times(train_engine, batches) -> list[float]:
    """Seconds per step over `batches`, the first two (warm-up) left out."""
    train_engine.train()
    times = []
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        _our_step(train_engine, batch)
        if i >= 2:
            times.append(time.perf_counter() - started)
    return times


def _peft_step_times(backbone_path: str, length: int, batches, workdir: Path) -> list[float]:
    """PEFT PromptTuning trained by the HF Trainer, in a fresh single process (no process group:
    the Trainer would otherwise wrap it in DDP); each dataset item is one prepared batch, so both
    sides see identical tensors."""
    path = workdir / "peft-batches.pt"
    torch.save(batches, path)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--peft-probe",
        backbone_path,
        "--probe-out",
        str(workdir / "peft.json"),
        "--prompt-length",
        str(length),
        "--batches",
        str(path),
    ]
    _run_child("the PEFT + Trainer run", cmd, timeout=900)
    return json.loads((workdir / "peft.json").read_text())["step_s"]


def _ours_vs_peft(
    train_engine, ours_batches, backbone_path: str, length: int, peft_batches, workdir: Path, rounds: int
):
    """Median step time of each side over `rounds` alternating rounds (ours, PEFT, ours, PEFT...).
    Both do the same arithmetic, so the ratio is close to 1 and a shared machine's drift over a
    minute is as large as the difference; alternating makes both sides sample the same drift."""
    ours, peft = [], []
    for _ in range(rounds):
        ours += _our_step_times(train_engine, ours_batches)
        peft += _peft_step_times(backbone_path, length, peft_batches, workdir)
    return statistics.median(ours), statistics.median(peft)


def peft_probe(backbone_path: str, length: int, batches_path: str, out: str) -> None:
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, Trainer, TrainerCallback, TrainingArguments

    batches = torch.load(batches_path)
    workdir = Path(out).parent
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(backbone_path),
        PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=length),
    )
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.started)

    args = TrainingArguments(
        output_dir=str(workdir / "peft"),
        per_device_train_batch_size=1,
        max_steps=len(batches),
        learning_rate=0.3,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_grad_norm=1.0,
        seed=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=batches, data_collator=lambda items: items[0], callbacks=[StepTimer()]
    )
    trainer.train()
    Path(out).write_text(json.dumps({"step_s": times[2:], "steps": len(times)}))  # the first two are warm-up


def measure_training(backbone_path: str, workdir: Path, batch_size: int, steps: int, length: int, rounds: int) -> dict:
    from dpt_dist.backbone import load_tokenizer
    from dpt_dist.config import TaskConfig
    from dpt_dist.data import collate_train, global_batches, tokenize
    from dpt_dist.tasks import get_task, load_splits

    tokenizer = load_tokenizer(backbone_path)
    train = load_splits(get_task("cb"), TaskConfig(name="cb", data_dir=str(ROOT / "data/superglue/CB")))["train"]
    texts, targets = list(train["source"]), list(train["target"])
    ours_engine = _our_engine(backbone_path, tokenizer, length, batch_size)

    # (a) a training step against a forward pass on the same batch
    same = _batches(tokenizer, texts, targets, batch_size, None)
    batch = same[0]
    ours_engine.train()

    forward_times, step_times = [], []
    for rep in range(9):  # alternating, so drift in the machine's speed hits both alike
        started = time.perf_counter()
        ours_engine.forward(batch)
        middle = time.perf_counter()
        _our_step(ours_engine, batch)
        if rep >= 2:
            forward_times.append(middle - started)
            step_times.append(time.perf_counter() - middle)
    forward_s, step_s = statistics.median(forward_times), statistics.median(step_times)

    # (b1) identical, dynamically padded batches on both sides
    cycle = (same * (steps // len(same) + 1))[:steps]
    ours_same, peft_same = _ours_vs_peft(ours_engine, cycle, backbone_path, length, cycle, workdir, rounds)

    # (b2) each side's default batching: ours length-grouped + dynamic padding; the reference pads to 256
    data = tokenize(train, tokenizer, True, 256, 16)
    lengths = [len(i) for i in data["input_ids"]]
    stream = global_batches(len(data), batch_size, 0, lengths=lengths)
    ours_default = [collate_train([data[i] for i in next(stream)], tokenizer.pad_token_id) for _ in range(steps)]
    padded = _batches(tokenizer, texts, targets, batch_size, 256)
    peft_default_batches = (padded * (steps // len(padded) + 1))[:steps]
    ours_def, peft_def = _ours_vs_peft(
        ours_engine, ours_default, backbone_path, length, peft_default_batches, workdir, rounds
    )
    return {
        "forward_s": forward_s,
        "step_s": step_s,
        "step_over_forward": step_s / forward_s,
        "ours_step_s_same_padding": ours_same,
        "peft_step_s_same_padding": peft_same,
        "vs_peft_same_padding": ours_same / peft_same,
        "ours_step_s_default": ours_def,
        "peft_step_s_default": peft_def,
        "vs_peft_default": ours_def / peft_def,
    }


# ---- (c) ZeRO-3 residency: a 2-rank probe ---------------------------------------------------------
def zero3_probe(backbone_path: str, out: str) -> None:
    """Run on every rank (torchrun): build the model under ZeRO-3, report resident frozen bytes."""
    from dpt_dist import dist, engine
    from dpt_dist.assembly import build_model
    from dpt_dist.backbone import load_tokenizer
    from dpt_dist.prompts import PromptConfig

    rank, world = engine.setup_distributed()
    ds_config = engine.build_ds_config(
        "zero3", {}, batch_size=8 * world, micro_batch_size=8, dtype="fp32", grad_clip=1.0, world=world
    )
    built = build_model(
        backbone_path,
        PromptConfig(method="pt", length=20, init="random"),
        ds_config,
        dtype="fp32",
        dropout=0.0,
        tokenizer=load_tokenizer(backbone_path),
        seed=0,
    )
    engine.TrainEngine(
        built, prompt_lr=0.3, network_lr=1e-4, weight_decay=0.0, adam_eps=1e-6, warmup_steps=0, total_steps=10
    )
    all_held = dist.all_gather_objects(engine.resident_frozen_bytes(built.model))
    if rank == 0:
        Path(out).write_text(json.dumps({"world": world, "resident_frozen_bytes": max(all_held)}))
    dist.shutdown()


def measure_zero3(backbone_path: str, workdir: Path) -> dict:
    results = {}
    accelerator = os.environ.get("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    for world in (1, 2):
        out = workdir / f"zero3-{world}.json"
        cmd = [
            *_torchrun(world),
            str(Path(__file__).resolve()),
            "--zero3-probe",
            backbone_path,
            "--probe-out",
            str(out),
        ]
        _run_child(
            f"the ZeRO-3 residency probe at {world} rank(s)", cmd, timeout=600, attempts=2, DS_ACCELERATOR=accelerator
        )
        results[world] = json.loads(out.read_text())["resident_frozen_bytes"]
    return {
        "zero3_frozen_bytes_1rank": results[1],
        "zero3_frozen_bytes_2ranks": results[2],
        "zero3_rank_fraction": results[2] / results[1],
    }


# ---- (d) padding ----------------------------------------------------------------------------------
def measure_padding(backbone_path: str, batch_size: int = 32, micro_batch_size: int = 8) -> dict:
    from dpt_dist.backbone import load_tokenizer
    from dpt_dist.data import global_batches, padding_ratio

    tokenizer = load_tokenizer(backbone_path)
    budgets = {"cb": 256, "superglue-rte": 256, "squad": 512, "mbpp": 325}
    out = {}
    for name, limit in budgets.items():
        texts = _texts(name)
        lengths = [min(len(ids), limit) for ids in tokenizer(texts)["input_ids"]]
        n = len(lengths) // batch_size
        grouped = global_batches(len(lengths), batch_size, 0, lengths=lengths)
        plain = global_batches(len(lengths), batch_size, 0)
        ours = padding_ratio(lengths, [next(grouped) for _ in range(n)], micro_batch_size)
        random_dynamic = padding_ratio(lengths, [next(plain) for _ in range(n)], micro_batch_size)
        out[name] = {
            "ours": round(ours, 4),
            "random_batches_dynamic": round(random_dynamic, 4),
            "pad_to_L": round(limit * len(lengths) / sum(lengths), 4),
            "L": limit,
            "examples": len(lengths),
        }
    return {"padding_ratio": max(v["ours"] for v in out.values()), "padding": out}


# ---- (e) generation -------------------------------------------------------------------------------
def measure_generation(backbone_path: str) -> dict:
    from dpt_dist import engine
    from dpt_dist.backbone import load_backbone, load_tokenizer
    from dpt_dist.config import TaskConfig
    from dpt_dist.data import tokenize
    from dpt_dist.evaluation import generate_samples
    from dpt_dist.model import PromptedModel
    from dpt_dist.prompts import PromptConfig
    from dpt_dist.tasks import get_task, load_splits

    engine.setup_distributed()
    tokenizer = load_tokenizer(backbone_path)
    model = PromptedModel.from_config(
        load_backbone(backbone_path), PromptConfig(method="pt", length=20, init="random")
    ).eval()
    val = load_splits(get_task("cb"), TaskConfig(name="cb", data_dir=str(ROOT / "data/superglue/CB")))["train"].select(
        range(64)
    )
    data = tokenize(val, tokenizer, True, 256, 16)
    started = time.perf_counter()
    texts = generate_samples(model, data, tokenizer, batch_size=16, max_new_tokens=16)
    seconds = time.perf_counter() - started
    # every row generates until eos or the budget: count the tokens actually produced
    tokens = sum(len(tokenizer(t[0], add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    return {"gen_tokens_per_s": tokens / seconds, "gen_examples": len(texts)}


# ---- (f) the demo's training part at 1 and 2 ranks ------------------------------------------------
def measure_demo(workdir: Path) -> dict:
    out = {}
    env = {
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for world in (1, 2):
        run_dir = workdir / f"demo-{world}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a continuation of the last bench's
        cmd = [
            *_torchrun(world),
            "-m",
            "dpt_dist.cli",
            "train",
            "configs/demo_cb_adept.yaml",
            "--train.output_dir",
            str(run_dir),
            "--train.spectrum_every",
            "0",
        ]
        _run_child(f"the demo's training at {world} rank(s)", cmd, timeout=900, attempts=2, **env)
        out[world] = json.loads((run_dir / "metrics.json").read_text())["train_seconds"]
    return {"demo_train_seconds_1rank": out[1], "demo_train_seconds_2ranks": out[2]}


# ---- report ---------------------------------------------------------------------------------------
def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPUs"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, no GPU"


def markdown(r: dict) -> str:
    rows = [
        (
            "train step / forward, same batch",
            "step_over_forward",
            f"{r['step_over_forward']:.2f}",
            "ideal ~2.0; full fine-tuning ~3.0",
        ),
        (
            "ours / PEFT+Trainer, same batches",
            "vs_peft_same_padding",
            f"{r['vs_peft_same_padding']:.2f}",
            f"{r['ours_step_s_same_padding'] * 1e3:.0f} ms vs {r['peft_step_s_same_padding'] * 1e3:.0f} ms per step",
        ),
        (
            "ours / PEFT+Trainer, own default batching",
            "vs_peft_default",
            f"{r['vs_peft_default']:.2f}",
            f"{r['ours_step_s_default'] * 1e3:.0f} ms (grouped, dynamic) vs "
            f"{r['peft_step_s_default'] * 1e3:.0f} ms (pad to 256)",
        ),
        (
            "ZeRO-3 frozen bytes per rank, 2 ranks / 1",
            "zero3_rank_fraction",
            f"{r['zero3_rank_fraction']:.3f}",
            f"{r['zero3_frozen_bytes_2ranks'] / 2**20:.1f} MiB vs {r['zero3_frozen_bytes_1rank'] / 2**20:.1f} MiB",
        ),
        (
            "padded / real tokens (worst dataset)",
            "padding_ratio",
            f"{r['padding_ratio']:.3f}",
            "; ".join(f"{k} {v['ours']:.3f} (pad to {v['L']}: {v['pad_to_L']:.2f})" for k, v in r["padding"].items()),
        ),
        ("generation tokens/s", "gen_tokens_per_s", f"{r['gen_tokens_per_s']:.0f}", "greedy, batch 16, 1 rank"),
    ]
    if "demo_train_seconds_1rank" in r:
        rows.append(
            (
                "demo training wall time",
                "demo_train_seconds",
                f"{r['demo_train_seconds_1rank']:.1f} s / {r['demo_train_seconds_2ranks']:.1f} s",
                "1 rank / 2 ranks, 300 steps",
            )
        )
    lines = [
        f"Measured {r['date']} on {r['machine']}; model: {r['model']}.",
        "",
        "| measure | key | value | target | detail |",
        "|---|---|---|---|---|",
    ]
    for label, key, value, detail in rows:
        target = " ".join(str(x) for x in TARGETS[key]) if key in TARGETS else ""
        lines.append(f"| {label} | `{key}` | {value} | {target} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results", help="directory for bench.json and bench.md")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours and PEFT per comparison")
    parser.add_argument("--skip-demo", action="store_true", help="skip (f), the two demo trainings")
    parser.add_argument(
        "--update-readme", action="store_true", help="replace the README's benchmark table with this run's"
    )
    parser.add_argument(
        "--workdir", default=str(ROOT / "runs" / "bench"), help="scratch directory (model, probes, demo runs)"
    )
    parser.add_argument("--zero3-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peft-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-length", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--batches", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.zero3_probe:
        zero3_probe(args.zero3_probe, args.probe_out)
        return 0
    if args.peft_probe:
        peft_probe(args.peft_probe, args.prompt_length, args.batches, args.probe_out)
        return 0
    import datasets
    import transformers

    from dpt_dist.files import write_text_atomic

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if args.update_readme and not all(marker in README.read_text() for marker in (README_START, README_END)):
        raise SystemExit(
            f"bench: error: {README} has no {README_START} ... {README_END} markers to put the table between"
        )
    out = Path(args.out)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    backbone = _backbone(workdir, args.d_model, args.layers)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "model": f"T5 d_model={args.d_model}, {args.layers}+{args.layers} layers, random weights, fp32, "
        f"prompt length 20, batch {args.batch_size}",
    }
    result.update(measure_training(backbone, workdir, args.batch_size, args.steps, 20, args.rounds))
    result.update(measure_padding(backbone))
    result.update(measure_generation(backbone))
    result.update(measure_zero3(backbone, workdir))
    if not args.skip_demo:
        result.update(measure_demo(workdir))
    result["seconds"] = round(time.time() - started, 1)
    result["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
    result["met"] = {k: (result[k] <= v) for k, (op, v) in TARGETS.items()}
    table = markdown(result)
    write_text_atomic(out / "bench.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "bench.md", table)
    print(table)
    print(
        json.dumps(
            {
                k: round(result[k], 4)
                for k in (
                    "step_over_forward",
                    "vs_peft_same_padding",
                    "vs_peft_default",
                    "zero3_rank_fraction",
                    "padding_ratio",
                    "gen_tokens_per_s",
                )
            }
        )
    )
    print(f"bench: {result['seconds']} s; written {out / 'bench.json'} and {out / 'bench.md'}")
    if args.update_readme:
        text = README.read_text()
        text = text[: text.index(README_START) + len(README_START)] + "\n" + table + text[text.index(README_END) :]
        write_text_atomic(README, text)
    from dpt_dist import dist

    dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

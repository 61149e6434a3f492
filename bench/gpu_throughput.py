"""Training-step and generation throughput, and MFU, of a frozen backbone with a prompt, through
dpt_dist's own training engine, at the shape of a real model with random weights (weights do not
change speed). Run by bench/gpu.sh on a GPU; `--tiny` runs the same steps at a toy size on CPU.

    python bench/gpu_throughput.py --shape t5-3b --batch 8 --source 256 --target 8
    python bench/gpu_throughput.py --shape llama-1b --batch 8 --source 325 --target 128

MFU counts the useful FLOPs of a frozen backbone: 4 x parameters per token (a forward, and a
backward that computes activation gradients only), against the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAPES = {"t5-3b": "google-t5/t5-3b", "llama-1b": "deepseek-ai/deepseek-coder-1.3b-base"}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per GPU


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def build(args):
    import torch
    from transformers import AutoConfig

    from dpt_dist import PromptConfig, PromptedModel
    from dpt_dist.placement import SHIPPED_MODEL_CONFIGS

    config = AutoConfig.from_pretrained(str(SHIPPED_MODEL_CONFIGS / f"{SHAPES[args.shape].replace('/', '--')}.json"))
    if args.tiny:  # the same architecture at a toy size, for the CPU smoke
        small = {
            "d_model": 64,
            "d_ff": 128,
            "d_kv": 16,
            "num_heads": 4,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": 512,
        }
        for key, value in small.items():
            if hasattr(config, key):
                setattr(config, key, value)
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(0)
    backbone = cls.from_config(config, dtype=args.torch_dtype).to(args.device)
    model = PromptedModel.from_config(backbone, PromptConfig(method="adept", length=60, rank=19, init="random"))
    return model.to(args.device), config


def batch(config, args):
    import torch

    vocab = config.vocab_size
    g = torch.Generator().manual_seed(0)
    if config.is_encoder_decoder:
        ids = torch.randint(3, vocab, (args.batch, args.source), generator=g)
        labels = torch.randint(3, vocab, (args.batch, args.target), generator=g)
    else:
        ids = torch.randint(3, vocab, (args.batch, args.source + args.target), generator=g)
        labels = ids.clone()
        labels[:, : args.source] = -100
    to = {"device": args.device}
    return {"input_ids": ids.to(**to), "attention_mask": torch.ones_like(ids).to(**to), "labels": labels.to(**to)}


def measure(args) -> dict:
    import torch

    from dpt_dist import engine
    from dpt_dist.assembly import BuiltModel

    engine.setup_distributed()
    model, config = build(args)
    ds = engine.build_ds_config(
        "zero0", {}, batch_size=args.batch, micro_batch_size=args.batch, dtype=args.dtype, grad_clip=1.0, world=1
    )
    train_engine = engine.TrainEngine(
        BuiltModel(model, ds, None),
        prompt_lr=0.3,
        network_lr=1e-4,
        weight_decay=0.0,
        adam_eps=1e-6,
        warmup_steps=0,
        total_steps=10**6,
    )
    parameters = sum(p.numel() for p in model.parameters())
    data = batch(config, args)
    tokens = (
        int(data["attention_mask"].sum())
        + 60 * args.batch
        + (args.batch * args.target if config.is_encoder_decoder else 0)
    )
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    times = []
    for step in range(args.steps + 2):
        sync()
        started = time.perf_counter()
        train_engine.train_step([data], global_tokens=float((data["labels"] != -100).sum()))
        sync()
        if step >= 2:
            times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    peak = peak_flops(name)
    result = {
        "shape": args.shape,
        "tiny": args.tiny,
        "device": name,
        "dtype": args.dtype,
        "parameters": parameters,
        "batch": args.batch,
        "source": args.source,
        "target": args.target,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "useful_flops_per_s": 4 * parameters * tokens / step_s,
        "mfu": 4 * parameters * tokens / step_s / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
    }
    result.update(generation(train_engine.module, data, args, sync))
    return result


def generation(model, data, args, sync) -> dict:
    import torch

    model.eval()
    prompt = {
        "input_ids": data["input_ids"][:, : args.source],
        "attention_mask": data["attention_mask"][:, : args.source],
    }
    with torch.no_grad():
        sync()
        started = time.perf_counter()
        out = model.generate(**prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
        sync()
    return {"gen_new_tokens": int(out.shape[1]), "gen_tokens_per_s": out.numel() / (time.perf_counter() - started)}


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="bench/gpu_throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=256)
    parser.add_argument("--target", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="a toy size of the same architecture (CPU smoke)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.dtype = "bf16"
    args.torch_dtype = torch.bfloat16
    result = measure(args)
    from dpt_dist.files import write_text_atomic

    name = f"gpu_{args.shape}{'_tiny' if args.tiny else ''}.json"
    write_text_atomic(Path(args.out) / name, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    from dpt_dist import dist

    dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generation-based evaluation, sharded over ranks while the model is ZeRO-3-partitioned.

Every rank generates for its shard with synced_gpus and makes the same number of generate
calls (a rank that stopped early would leave the others waiting for its parameter shards
forever); predictions are gathered, filler rows dropped, and each example scored exactly once.
Examples are sharded in order of length, so a batch holds inputs of similar length (little
padding) and every rank gets a similar mix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import engine as dist_engine
from .data import collate_generate, eval_shard


@torch.no_grad()
def generate_predictions(model, dataset, tokenizer, *, batch_size: int, max_new_tokens: int) -> list[str]:
    rank, world = dist_engine.rank(), dist_engine.world_size()
    was_training = model.training
    model.eval()
    left = not model.is_encoder_decoder
    mine: list[tuple[int, str]] = []
    lengths = [len(ids) for ids in dataset["prompt_ids"]]
    by_length = sorted(range(len(dataset)), key=lambda i: (-lengths[i], i))
    try:
        for positions in eval_shard(len(dataset), batch_size, rank, world):
            indices = [by_length[p] if p >= 0 else -1 for p in positions]
            rows = [dataset[i if i >= 0 else by_length[-1]] for i in indices]  # filler: the shortest
            batch = collate_generate(rows, tokenizer.pad_token_id, left=left)
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                synced_gpus=world > 1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            mine += [(i, t.strip()) for i, t in zip(indices, texts) if i >= 0]
    finally:
        model.train(was_training)
    predictions: dict[int, str] = {}
    for shard in dist_engine.all_gather_objects(mine):
        for i, text in shard:
            predictions.setdefault(i, text)
    missing = set(range(len(dataset))) - set(predictions)
    if missing:
        raise RuntimeError(f"evaluation lost {len(missing)} examples (e.g. {sorted(missing)[:5]})")
    return [predictions[i] for i in range(len(dataset))]


def evaluate(model, task, dataset, tokenizer, *, batch_size: int, max_new_tokens: int, predictions_path: str | None = None) -> dict[str, float]:
    """Generate on every rank, score on rank 0 (others return {}), write predictions JSONL."""
    predictions = generate_predictions(model, dataset, tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if dist_engine.rank() != 0:
        return {}
    metrics = task.metrics(predictions, dataset)
    if predictions_path:
        path = Path(predictions_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        extras = [c for c in ("answers", "group", "dataset") if c in dataset.column_names]
        with tmp.open("w") as f:
            for ex, pred in zip(dataset, predictions):
                row = {"input": ex["source"], "target": ex["target"], "prediction": pred, **{c: ex[c] for c in extras}}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return metrics

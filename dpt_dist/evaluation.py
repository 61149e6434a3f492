"""Generation-based evaluation, sharded over ranks.

Every rank generates for its shard and makes the same number of generate calls; while the
model's weights are ZeRO-3 partitions (no whole replica: engine.inference_replica) generate runs
with synced_gpus, since every forward gathers each layer from all ranks and a rank that stopped
early would leave the others waiting for its shards forever. Predictions are gathered, filler
rows dropped, and each example scored exactly once.
Examples are sharded in order of length, so a batch holds inputs of similar length (little
padding) and every rank gets a similar mix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import dist
from .data import collate_generate, eval_shard
from .files import write_jsonl_atomic
from .tasks.metrics import majority_share


@torch.no_grad()
def generate_samples(
    model,
    dataset,
    tokenizer,
    *,
    batch_size: int,
    max_new_tokens: int,
    num_samples: int = 1,
    sampling: dict | None = None,
    seed: int = 0,
    synced: bool | None = None,
    **generate_kwargs,
) -> list[list[str]]:
    """Raw generated texts, `num_samples` per example (greedy unless `sampling` has do_sample).
    `synced`: generate with synced_gpus (needed while the weights are ZeRO-3 partitions; None:
    whenever there are several ranks). `generate_kwargs` go to generate (e.g. min_new_tokens).

    Sampling draws from a generator seeded by (seed, rank) inside a forked RNG state, so an
    evaluation neither depends on nor disturbs the training RNG.
    """
    rank, world = dist.rank(), dist.world_size()
    synced = world > 1 if synced is None else synced
    was_training = model.training
    model.eval()
    left = not model.is_encoder_decoder
    mine: list[tuple[int, list[str]]] = []
    lengths = [len(ids) for ids in dataset["prompt_ids"]]
    by_length = sorted(range(len(dataset)), key=lambda i: (-lengths[i], i))
    sampling = dict(sampling or {})
    if not sampling.get("do_sample"):
        sampling = {"do_sample": False, "num_beams": 1}
    if num_samples > 1 and not sampling.get("do_sample"):
        raise ValueError(
            f"task.num_samples={num_samples} needs sampling (task.do_sample=true): greedy samples are identical"
        )
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            torch.manual_seed(seed * 1000 + rank)
            for positions in eval_shard(len(dataset), batch_size, rank, world):
                indices = [by_length[p] if p >= 0 else -1 for p in positions]
                rows = [dataset[i if i >= 0 else by_length[-1]] for i in indices]  # filler: the shortest
                batch = collate_generate(rows, tokenizer.pad_token_id, left=left)
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    **sampling,
                    synced_gpus=synced,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **generate_kwargs,
                )
                texts = tokenizer.batch_decode(out, skip_special_tokens=True)
                for j, i in enumerate(indices):  # generate returns the samples of a row together
                    if i >= 0:
                        mine.append((i, texts[j * num_samples : (j + 1) * num_samples]))
    finally:
        model.train(was_training)
    return _gather_in_order(mine, len(dataset))


def _gather_in_order(mine: list[tuple[int, list[str]]], count: int) -> list[list[str]]:
    """Every rank's (example index, texts), merged: each example exactly once, in dataset order."""
    samples: dict[int, list[str]] = {}
    for shard in dist.all_gather_objects(mine):
        for i, texts in shard:
            samples.setdefault(i, texts)
    missing = set(range(count)) - set(samples)
    if missing:
        raise RuntimeError(f"evaluation lost {len(missing)} examples (e.g. {sorted(missing)[:5]})")
    return [samples[i] for i in range(count)]


def evaluate(
    model,
    task,
    dataset,
    tokenizer,
    *,
    batch_size: int,
    max_new_tokens: int,
    predictions_path: str | None = None,
    num_samples: int = 1,
    sampling: dict | None = None,
    seed: int = 0,
    allow_code_execution: bool = False,
    synced: bool | None = None,
) -> dict[str, float]:
    """Generate on every rank, score on rank 0 (others return {}), write predictions JSONL.

    A task with its own `score` (MBPP) gets every sample and returns one result row per example,
    merged into the predictions file; its completions are also written as `<name>.completions.jsonl`
    in the format `dpt-dist eval-mbpp` reads."""
    raw = generate_samples(
        model,
        dataset,
        tokenizer,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        sampling=sampling,
        seed=seed,
        synced=synced,
    )
    if dist.rank() != 0:
        return {}
    samples = [[task.postprocess(text) for text in texts] for texts in raw]
    if task.score is not None:
        metrics, details = task.score(samples, dataset, allow_code_execution=allow_code_execution)
    else:
        metrics, details = task.metrics([s[0] for s in samples], dataset), [{} for _ in samples]
        if task.labels:  # classification: is the model still printing one label for everything?
            metrics["majority_share"] = majority_share([s[0] for s in samples])
    if predictions_path:
        write_predictions(Path(predictions_path), task, dataset, raw, samples, details, many=num_samples > 1)
    return metrics


def write_predictions(path: Path, task, dataset, raw, samples, details, many: bool) -> None:
    """One JSONL row per example: its own id first (so a row can go to the dataset's official
    scorer), input, target, prediction, the extras the metrics used and the task's per-example
    details; with several samples (or code execution) every generation. MBPP also gets
    `<name>.completions.jsonl`, the format `dpt-dist eval-mbpp` reads."""
    extras = [c for c in ("answers", "group", "dataset") if c in dataset.column_names]
    rows = []
    for ex, texts, preds, detail in zip(dataset, raw, samples, details):
        row = {"id": ex.get("id"), "input": ex["source"], "target": ex["target"], "prediction": preds[0]}
        row.update({c: ex[c] for c in extras}, **detail)
        if many or task.score is not None:
            row.update(generations=texts, predictions=preds)
        rows.append(row)
    write_jsonl_atomic(path, rows)
    if "task_id" in dataset.column_names:
        completions = ({"task_id": t, "completion": p} for t, preds in zip(dataset["task_id"], samples) for p in preds)
        write_jsonl_atomic(path.with_name(path.stem + ".completions.jsonl"), completions)

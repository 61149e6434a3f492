"""Tokenisation, world-size-invariant batching, collation and evaluation sharding.

Batching is defined on the *global* batch: the same seed gives the same sequence of global
batches at any world size, and each rank takes its share of every one. That is what makes a
1-rank and a 2-rank run of the same configuration follow the same loss trajectory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import torch

IGNORE_INDEX = -100  # labels with this value are not scored (padding, the source, the prompt)
_CODE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def source_bos(tokenizer) -> list[int]:
    """Decoder-only sources start with the tokenizer's BOS when it has a distinct one (Llama,
    DeepSeek-Coder; not GPT-2 style BOS = EOS)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [bos] if bos is not None and bos != eos else []


def encode_sources(
    sources: list[str], tokenizer, encoder_decoder: bool, max_source_length: int, keep_source_end: bool = False
) -> list[list[int]]:
    """Token ids of model inputs, truncated to `max_source_length` the way training saw them:
    from the end (default) or from the start (`keep_source_end`, MBPP: the asserts matter);
    T5 sources keep their final eos, decoder-only ones start with the BOS (source_bos)."""

    def cut(ids: list[int], limit: int) -> list[int]:
        return ids[-limit:] if keep_source_end else ids[:limit]

    if encoder_decoder:
        if keep_source_end:  # T5 ends every source with eos: keep it, cut from the left before it
            return [cut(s[:-1], max_source_length - 1) + s[-1:] for s in tokenizer(sources)["input_ids"]]
        return tokenizer(sources, truncation=True, max_length=max_source_length)["input_ids"]
    bos = source_bos(tokenizer)
    return [
        bos + cut(s, max_source_length - len(bos)) for s in tokenizer(sources, add_special_tokens=False)["input_ids"]
    ]


def tokenize(
    ds: datasets.Dataset,
    tokenizer,
    encoder_decoder: bool,
    max_source_length: int,
    max_target_length: int,
    fit_source=None,
    keep_source_end: bool = False,
) -> datasets.Dataset:
    """Add input_ids / labels (training) and prompt_ids (generation input) columns.

    Encoder-decoder: input = source (+eos), labels = target (+eos).
    Decoder-only: input = source + target + eos with labels -100 on the source; the generation
    input is the source alone. The source is truncated, never the target's end-of-sequence.
    `fit_source(batch, tokenizer, max_source_length)` may first rewrite over-long sources (MRQA
    training keeps the window around the answer). `keep_source_end` truncates over-long sources
    from the left instead (MBPP: the asserts at the end matter most); see encode_sources, which
    `dpt-dist predict` shares. datasets caches the result: the same data and tokenizer are
    tokenised once, not once per rank or per run.
    """
    eos = tokenizer.eos_token_id

    def encode(batch, code: str):  # `code` keys datasets' cache to this file's source (see below)
        sources = fit_source(batch, tokenizer, max_source_length) if fit_source else batch["source"]
        src = encode_sources(sources, tokenizer, encoder_decoder, max_source_length, keep_source_end)
        if encoder_decoder:
            tgt = tokenizer(batch["target"], truncation=True, max_length=max_target_length)["input_ids"]
            return {"input_ids": src, "labels": tgt, "prompt_ids": src}
        tgt = tokenizer(batch["target"], add_special_tokens=False, truncation=True, max_length=max_target_length - 1)[
            "input_ids"
        ]
        tgt = [t + [eos] for t in tgt]
        return {
            "input_ids": [s + t for s, t in zip(src, tgt)],
            "labels": [[IGNORE_INDEX] * len(s) + t for s, t in zip(src, tgt)],
            "prompt_ids": src,
        }

    # datasets fingerprints a function by its own code and pickles module-level helpers by name:
    # without this digest a changed encode_sources would still be served from the old cache
    return ds.map(encode, batched=True, desc="tokenize", fn_kwargs={"code": _CODE_DIGEST})


def pad(sequences: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    rows = [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in sequences]
    return torch.tensor(rows, dtype=torch.long)


def collate_train(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest row of the micro-batch (right side)."""
    ids = [r["input_ids"] for r in rows]
    return {
        "input_ids": pad(ids, pad_id),
        "attention_mask": pad([[1] * len(s) for s in ids], 0),
        "labels": pad([r["labels"] for r in rows], IGNORE_INDEX),
    }


def collate_generate(rows: list[dict], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    ids = [r["prompt_ids"] for r in rows]
    return {"input_ids": pad(ids, pad_id, left), "attention_mask": pad([[1] * len(s) for s in ids], 0, left)}


def global_batches(
    num_examples: int, batch_size: int, seed: int, lengths: list[int] | None = None, group_size: int = 64
):
    """Endless stream of global batches (index lists): a fresh seeded permutation per epoch,
    the incomplete tail of an epoch dropped so every global batch has the same size.

    With `lengths`, batches are length-grouped: each run of `group_size` x batch_size examples
    of the permutation is sorted by length and cut into batches, and the batches of the epoch
    are shuffled again, so a batch holds similar lengths (dynamic padding then pads little)
    while the epoch stays random. Every global batch is sorted too, so each rank's contiguous
    slice and each micro-batch hold neighbours in length. None of this depends on the world size.
    """
    if num_examples < batch_size:
        raise ValueError(f"the training split has {num_examples} examples, fewer than train.batch_size={batch_size}")
    epoch = 0
    while True:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(num_examples, generator=g).tolist()
        usable = num_examples - num_examples % batch_size
        if lengths is None:
            yield from (order[start : start + batch_size] for start in range(0, usable, batch_size))
        else:
            chunk = batch_size * group_size
            batches = []
            for start in range(0, usable, chunk):
                block = sorted(order[start : min(start + chunk, usable)], key=lambda i: (-lengths[i], i))
                batches += [block[b : b + batch_size] for b in range(0, len(block), batch_size)]
            yield from (batches[i] for i in torch.randperm(len(batches), generator=g).tolist())
        epoch += 1


def padding_ratio(lengths: list[int], batches: list[list[int]], micro_batch_size: int) -> float:
    """Tokens computed (each micro-batch padded to its longest row) over real tokens."""
    padded = real = 0
    for batch in batches:
        for start in range(0, len(batch), micro_batch_size):
            rows = [lengths[i] for i in batch[start : start + micro_batch_size]]
            padded += max(rows) * len(rows)
            real += sum(rows)
    return padded / max(real, 1)


def micro_batches_for_rank(
    global_batch: list[int], micro_batch_size: int, rank: int, world_size: int
) -> list[list[int]]:
    """This rank's micro-batches of one global batch: contiguous slice, then split by micro size."""
    per_rank = len(global_batch) // world_size
    mine = global_batch[rank * per_rank : (rank + 1) * per_rank]
    return [mine[i : i + micro_batch_size] for i in range(0, per_rank, micro_batch_size)]


def eval_shard(num_examples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Batches of example indices for one rank. Every rank gets the same number of batches
    (ZeRO-3 generation is collective); short ranks repeat index 0 as filler, which the
    gather step drops, so every example is scored exactly once."""
    mine = list(range(rank, num_examples, world_size))
    per_rank = -(-num_examples // world_size)
    num_batches = max(1, -(-per_rank // batch_size))
    mine += [-1] * (num_batches * batch_size - len(mine))  # -1 marks filler
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]

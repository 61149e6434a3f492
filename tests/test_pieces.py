"""Unit tests of config parsing, batching, evaluation sharding and artifacts (tasks: test_tasks.py)."""

from __future__ import annotations

import pytest
from conftest import bench_module

from dpt_dist.config import load_config, parse_overrides
from dpt_dist.data import eval_shard, global_batches, micro_batches_for_rank


def test_cli_overrides_are_typed_and_nested():
    assert parse_overrides(["--train.steps", "10", "--train.prompt_lr=0.5", "--model.dropout", "null"]) == {
        "train": {"steps": 10, "prompt_lr": 0.5},
        "model": {"dropout": None},
    }


def test_yaml_config_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prompt:\n  method: dpt\n  length: 100\n  rank: 10\ntrain:\n  steps: 5\n  prompt_lr: 3e-1\n")
    cfg = load_config(path, ["--train.steps", "7", "--train.network_lr", "1e-4"])
    assert (cfg.prompt.method, cfg.prompt.length, cfg.train.steps) == ("dpt", 100, 7)
    assert cfg.train.prompt_lr == 0.3 and cfg.train.network_lr == 1e-4  # YAML 1.1 reads 3e-1 as a string


@pytest.mark.parametrize(
    "text, message",
    [
        ("prompt:\n  method: nope\n", "unknown method 'nope'"),
        ("train:\n  stepz: 3\n", "unknown key"),
        ("trian:\n  steps: 3\n", "unknown section 'trian'"),
        ("prompt: [\n", "invalid YAML"),
        ("model:\n  dtype: fp8\n", "model.dtype"),
        ("train:\n  prompt_lr: fast\n", "train.prompt_lr must be a number"),
    ],
)
def test_bad_config_is_one_clear_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_config(path)
    assert "bad.yaml" in str(err.value)


def test_global_batches_do_not_depend_on_world_size():
    """Rank shares of a global batch, over all ranks, are exactly that global batch."""
    stream = global_batches(50, 8, seed=3)
    for _ in range(10):
        gb = next(stream)
        assert len(gb) == 8
        one = [i for mb in micro_batches_for_rank(gb, 4, 0, 1) for i in mb]
        two = [i for r in range(2) for mb in micro_batches_for_rank(gb, 4, r, 2) for i in mb]
        assert one == two == gb


def test_every_epoch_visits_distinct_examples():
    stream = global_batches(16, 8, seed=0)
    epoch = next(stream) + next(stream)
    assert sorted(epoch) == list(range(16))


@pytest.mark.parametrize("n, batch, world", [(7, 2, 2), (28, 16, 2), (1, 4, 2), (10, 3, 1)])
def test_eval_shards_cover_every_example_once_with_equal_call_counts(n, batch, world):
    shards = [eval_shard(n, batch, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same number of generate calls on every rank
    seen = [i for s in shards for b in s for i in b if i >= 0]
    assert sorted(seen) == list(range(n))


def test_artifact_write_is_atomic_and_replaces_whole(tmp_path):
    import torch

    from dpt_dist.artifact import read_artifact, write_artifact

    target = tmp_path / "prompt"
    write_artifact(target, {"w": torch.ones(2)}, {"prompt": {}})
    write_artifact(target, {"w": torch.zeros(3)}, {"prompt": {}, "tag": 2})
    meta, state = read_artifact(target)
    assert meta["tag"] == 2 and state["w"].tolist() == [0, 0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["prompt"]  # no temp directories left behind


def test_length_grouped_batches_cover_each_epoch_once_and_pad_little():
    import json
    import random

    from dpt_dist.data import padding_ratio

    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(5, 30), rng.randint(100, 250)]) for _ in range(640)]
    grouped = global_batches(640, 32, seed=1, lengths=lengths)
    epoch = [next(grouped) for _ in range(20)]
    assert sorted(i for b in epoch for i in b) == list(range(640))  # every example once per epoch
    for gb in epoch:  # sorted within the global batch, so rank slices and micro-batches are neighbours
        assert [lengths[i] for i in gb] == sorted((lengths[i] for i in gb), reverse=True)
        one = [i for mb in micro_batches_for_rank(gb, 8, 0, 1) for i in mb]
        two = [i for r in range(2) for mb in micro_batches_for_rank(gb, 8, r, 2) for i in mb]
        assert one == two == gb
    plain = global_batches(640, 32, seed=1)
    random_ratio = padding_ratio(lengths, [next(plain) for _ in range(20)], 8)
    assert padding_ratio(lengths, epoch, 8) <= 1.10 < random_ratio
    again = global_batches(640, 32, seed=1, lengths=lengths)
    assert [next(again) for _ in range(20)] == epoch  # deterministic: resume replays it
    assert json.dumps(epoch)  # plain ints


def test_a_failed_benchmark_step_names_itself_and_shows_the_child_error(monkeypatch):
    import sys

    _run_child = bench_module()._run_child

    # the bench's own world-1 process group exports these; a child must not try to join it
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.setenv("RANK", "0")
    script = (
        "import os, sys; print('inherited', os.environ.get('MASTER_PORT'), os.environ.get('RANK'), file=sys.stderr); "
        "sys.exit(3)"
    )
    with pytest.raises(RuntimeError) as err:
        _run_child("the residency probe", [sys.executable, "-c", script], timeout=60, attempts=2)
    message = str(err.value)
    assert "the residency probe failed (exit 3)" in message and "inherited None None" in message

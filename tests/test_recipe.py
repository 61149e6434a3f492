"""The training recipe's pieces without torchrun: the run state and its checkpoint layout,
resume round trips, model selection and early stopping, per-method configuration."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from dpt_dist import checkpoint
from dpt_dist.config import load_config
from dpt_dist.prompts import PROMPT_METHODS, PromptConfig, build_prompt, make_prompt_config
from dpt_dist.train import RunState, Selection, check_resumable


def a_run_state() -> RunState:
    g = torch.Generator().manual_seed(0)
    return RunState(
        step=7,
        steps=20,
        world_size=2,
        config=load_config(None).to_dict(),
        losses=[2.5, 2.25, 2.0],
        evaluations=[{"step": 5, "validation": {"accuracy": 50.0}}],
        spectra=[[0, [3.0, 1.0]], [5, [2.5, 1.5]]],
        selection=Selection("accuracy", patience=3, best_step=5, best={"accuracy": 50.0}, stale=1),
        optimizer={"optimizer_step": 7.0, "scheduler": {"last_epoch": 7}, "global_steps": 7, "global_samples": 56},
        trained={
            "param/prompt.weight": torch.randn(4, 8, generator=g),
            "exp_avg/prompt.weight": torch.randn(4, 8, generator=g),
        },
        best_prompt={"prompt.weight": torch.randn(4, 8, generator=g)},
        rng={"rank0/cpu": torch.get_rng_state(), "rank1/cpu": torch.get_rng_state()},
    )


def assert_same_state(a: RunState, b: RunState) -> None:
    for f in dataclasses.fields(RunState):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict) and x and all(torch.is_tensor(v) for v in x.values()):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f.name
        else:
            assert x == y, f.name


def test_run_state_survives_a_checkpoint_write_and_read(tmp_path):
    state = a_run_state()
    tensors, saved = state.to_checkpoint()
    path = checkpoint.write(tmp_path, state.step, tensors, saved)
    assert_same_state(RunState.from_checkpoint(*checkpoint.read(path)), state)


def test_the_checkpoint_layout_is_what_the_run_state_declares():
    tensors, saved = a_run_state().to_checkpoint()
    assert set(tensors) == {
        "train/param/prompt.weight",
        "train/exp_avg/prompt.weight",
        "best/prompt.weight",
        "rng/rank0/cpu",
        "rng/rank1/cpu",
    }
    assert set(saved) == {"step", "steps", "world_size", "config", "losses", "evals", "spectra", "tracker", "optimizer"}
    assert saved["tracker"]["best_step"] == 5 and saved["optimizer"]["global_samples"] == 56


def test_a_run_without_a_best_prompt_yet_resumes_without_one():
    tensors, saved = RunState(step=2, losses=[1.0, 0.5]).to_checkpoint()
    assert tensors == {}
    state = RunState.from_checkpoint(tensors, saved)
    assert state.best_prompt is None and state.selection.best_step is None and state.losses == [1.0, 0.5]


def test_checkpoints_written_before_the_run_state_still_load():
    tensors = {
        "train/param/prompt.weight": torch.ones(2, 2),
        "best/prompt.weight": torch.zeros(2, 2),
        "rng/rank0/cpu": torch.get_rng_state(),
    }
    saved = {
        "step": 4,
        "steps": 8,
        "world_size": 1,
        "data_position": {"global_batches_consumed": 4},
        "optimizer_step": 4.0,
        "scheduler": {"last_epoch": 4},
        "global_steps": 4,
        "global_samples": 32,
        "losses": [1, 2, 3, 4],
        "evals": [],
        "spectra": [],
        "has_best": True,
        "tracker": {"best_step": 2, "best": {"accuracy": 1.0}, "stale": 0},
        "config": {},
    }
    state = RunState.from_checkpoint(tensors, saved)
    assert state.step == 4 and state.optimizer["global_samples"] == 32 and state.selection.best_step == 2
    assert torch.equal(state.best_prompt["prompt.weight"], torch.zeros(2, 2)) and set(state.rng) == {"rank0/cpu"}


def test_model_selection_keeps_the_best_step_and_stops_after_patience():
    selection = Selection("accuracy", patience=2)
    assert selection.update(1, {"accuracy": 40.0}) == (True, False)
    assert selection.update(2, {"accuracy": 55.0}) == (True, False)
    assert selection.update(3, {"accuracy": 55.0}) == (False, False)  # equal is not better
    assert selection.update(4, {"accuracy": 50.0}) == (False, True)
    assert selection.best_step == 2 and selection.best == {"accuracy": 55.0}


def test_without_patience_model_selection_never_stops():
    selection = Selection("f1")
    assert [selection.update(step, {"f1": 10.0 - step})[1] for step in range(1, 8)] == [False] * 7
    assert selection.best_step == 1


def test_a_checkpoint_of_another_prompt_config_is_refused():
    saved = load_config(None, ["--prompt.method", "dpt", "--prompt.rank", "4"]).to_dict()
    check_resumable(saved, load_config(None, ["--prompt.method", "dpt", "--prompt.rank", "4"]), "ck")
    with pytest.raises(ValueError, match="only continues the run that wrote it"):
        check_resumable(saved, load_config(None, ["--prompt.method", "dpt", "--prompt.rank", "5"]), "ck")


# ---- per-method configuration -------------------------------------------------------------------
def test_each_method_has_its_own_config_with_only_its_fields():
    assert type(PromptConfig(method="dpt")).__name__ == "DPTConfig"
    fields = {name: {f.name for f in dataclasses.fields(cls.config_class)} for name, cls in PROMPT_METHODS.items()}
    assert fields["dpt"] == {"method", "length", "rank", "factor_init", "init_std"}
    assert fields["lora"] == {"method", "rank", "alpha", "dropout", "target_modules"}
    assert "max_positions" in fields["dept"] and "max_positions" not in fields["adept"]
    assert "hidden" in fields["residual"] and all("hidden" not in f for m, f in fields.items() if m != "residual")


def test_a_field_the_method_ignores_is_named_in_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="dpt_dist"):
        config = make_prompt_config({"method": "pt", "length": 5, "rank": 4, "max_positions": 8})
    assert config.to_dict() == {"method": "pt", "length": 5, "init": "vocab", "init_text": "", "vocab_init_range": 5000}
    lines = [r.getMessage() for r in caplog.records]
    assert (
        len(lines) == 1
        and "prompt.max_positions=8" in lines[0]
        and "prompt.rank=4" in lines[0]
        and "method pt" in lines[0]
    )


def test_a_field_no_method_knows_is_an_error():
    with pytest.raises(ValueError, match="unknown key"):
        load_config(None, ["--prompt.lenght", "5"])


def test_yaml_prompt_keys_keep_working_for_every_method(tmp_path):
    for method in PROMPT_METHODS:
        cfg = load_config(None, ["--prompt.method", method, "--prompt.rank", "3"])
        assert cfg.prompt.method == method and getattr(cfg.prompt, "rank", 3) == 3


@pytest.mark.parametrize("method", [m for m in PROMPT_METHODS if m != "lora"])
def test_each_methods_parameter_formula_counts_its_tensors(method):
    config = (
        PromptConfig(method=method, length=7, rank=3)
        if method != "residual"
        else PromptConfig(method=method, length=7, hidden=5)
    )
    module = build_prompt(config, 24)
    assert PROMPT_METHODS[method].num_parameters(config, 24) == sum(p.numel() for p in module.parameters())


def test_the_lora_parameter_formula_counts_its_adapters():
    from transformers import AutoModelForSeq2SeqLM, T5Config

    from dpt_dist import PromptedModel

    backbone = AutoModelForSeq2SeqLM.from_config(
        T5Config(
            vocab_size=64,
            d_model=16,
            d_kv=4,
            d_ff=32,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            decoder_start_token_id=0,
        )
    )
    config = PromptConfig(method="lora", rank=2)
    expected = PROMPT_METHODS["lora"].num_parameters(config, 16, backbone)
    model = PromptedModel.from_config(backbone, config)
    assert expected == model.trainable_parameter_summary()[0] == 2 * (16 + 8) * 2 * 6  # q, v in 6 attention blocks


def test_each_method_declares_how_it_exports():
    forms = {name: cls.export_form for name, cls in PROMPT_METHODS.items()}
    assert forms == {
        "pt": "prompt",
        "residual": "prompt",
        "dpt": "prompt",
        "adept": "merged_embeddings",
        "dept": None,
        "lora": None,
    }
    assert all(PROMPT_METHODS[name].export_refusal for name, form in forms.items() if form is None)


def test_steps_on_the_command_line_win_over_a_presets_epochs():
    from dpt_dist.config import preset_path

    assert load_config(preset_path("dpt-superglue-t5-small")).train.epochs == 100
    cfg = load_config(preset_path("dpt-superglue-t5-small"), ["--train.steps", "5"])
    assert cfg.train.steps == 5 and cfg.train.epochs is None

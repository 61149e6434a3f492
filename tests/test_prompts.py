"""Unit tests of the prompt methods and the wrapper (single process, no DeepSpeed)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaConfig, T5Config

from dpt_dist import PromptConfig, PromptedModel
from dpt_dist.prompts import build_prompt


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# REFERENCE §1 formulas, evaluated at the papers' settings.
def test_dpt_t5_large_l100_r10_has_11240_parameters():
    assert n_params(build_prompt(PromptConfig(method="dpt", length=100, rank=10), 1024)) == 11_240


def test_adept_t5_base_m60_r19_has_76051_parameters():
    assert n_params(build_prompt(PromptConfig(method="adept", length=60, rank=19), 768)) == 76_051


def test_adept_d1024_m60_r19_has_101395_parameters():
    assert n_params(build_prompt(PromptConfig(method="adept", length=60, rank=19), 1024)) == 101_395


def test_residual_pt_t5_base_l100_k400_has_693904_parameters():
    assert n_params(build_prompt(PromptConfig(method="residual", length=100, hidden=400), 768)) == 693_904


def test_dept_t5_base_60_30_256_has_76800_parameters():
    assert n_params(build_prompt(PromptConfig(method="dept", length=60, rank=30, max_positions=256), 768)) == 76_800


def test_pt_t5_base_l100_has_76800_parameters():
    assert n_params(build_prompt(PromptConfig(method="pt", length=100), 768)) == 76_800


def test_dpt_factor_init_is_selectable():
    torch.manual_seed(0)
    uniform = build_prompt(PromptConfig(method="dpt", length=100, rank=10, factor_init="uniform"), 64)
    gaussian = build_prompt(PromptConfig(method="dpt", length=100, rank=10, factor_init="gaussian"), 64)
    assert uniform.A.abs().max() <= 0.5 and uniform.B.abs().max() <= 0.5
    assert gaussian.A.abs().max() > 0.5  # 1000 N(0,1) draws: some exceed 0.5


def tiny_t5():
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=128,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return AutoModelForSeq2SeqLM.from_config(cfg).eval()


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        eos_token_id=1,
    )
    return AutoModelForCausalLM.from_config(cfg).eval()


BACKBONES = {"t5": tiny_t5, "llama": tiny_llama}


def batch():
    ids = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
    mask = (torch.arange(5) < torch.tensor([[5], [3]])).long()
    labels = torch.tensor([[11, 12, 1], [13, 1, -100]])
    return ids, mask, labels


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_adept_at_init_gives_exactly_the_logits_of_pt_with_the_same_prompt(kind):
    backbone = BACKBONES[kind]()
    adept = PromptedModel.from_config(backbone, PromptConfig(method="adept", length=4, rank=3, init="random")).eval()
    pt = PromptedModel.from_config(backbone, PromptConfig(method="pt", length=4, init="random")).eval()
    pt.prompt.prompt.weight.data.copy_(adept.prompt.prompt.weight.data)
    ids, mask, labels = batch()
    if kind == "llama":
        labels = torch.where(mask.bool(), ids, -100)
    a, p = adept(ids, mask, labels=labels), pt(ids, mask, labels=labels)
    assert torch.equal(a.logits, p.logits)
    assert torch.equal(a.loss_sum, p.loss_sum)


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_prompt_length_zero_without_offset_equals_the_bare_backbone(kind):
    backbone = BACKBONES[kind]()
    model = PromptedModel.from_config(backbone, PromptConfig(method="pt", length=0)).eval()
    ids, mask, labels = batch()
    if kind == "t5":
        ours = model(ids, mask, labels=labels).logits
        bare = backbone(input_ids=ids, attention_mask=mask, labels=labels).logits
    else:
        ours = model(ids, mask).logits
        bare = backbone(input_ids=ids, attention_mask=mask).logits
    real = mask.bool() if kind == "llama" else torch.ones(ours.shape[:2], dtype=torch.bool)
    assert torch.allclose(ours[real], bare[real], atol=1e-6, rtol=0)


def test_only_prompt_tensors_train():
    model = PromptedModel.from_config(tiny_t5(), PromptConfig(method="adept", length=4, rank=3))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prompt.") for n in trainable)
    ids, mask, labels = batch()
    model.train()
    model(ids, mask, labels=labels).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.prompt.parameters())


def test_offsets_touch_real_input_tokens_only():
    """ADePT/DePT offsets: not the prompt, not padding (and T5 decoder inputs never pass through)."""
    for method in ("adept", "dept"):
        prompt = build_prompt(PromptConfig(method=method, length=3, rank=2, dropout=0.0, max_positions=8), 16)
        for p in prompt.parameters():
            torch.nn.init.normal_(p)
        embeds = torch.randn(2, 5, 16)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out, p = prompt(embeds, mask, positions)
        assert torch.equal(out[~mask], embeds[~mask])
        assert not torch.allclose(out[mask], embeds[mask])
        assert p.shape == (3, 16)


def test_dept_offset_depends_on_position_among_real_tokens_not_padding_side():
    prompt = build_prompt(PromptConfig(method="dept", length=2, rank=2, max_positions=4), 8)
    torch.nn.init.normal_(prompt.B)
    e = torch.randn(1, 3, 8)
    right = torch.cat([e, torch.zeros(1, 2, 8)], 1)
    left = torch.cat([torch.zeros(1, 2, 8), e], 1)
    masks = torch.tensor([[1, 1, 1, 0, 0]]).bool(), torch.tensor([[0, 0, 1, 1, 1]]).bool()
    outs = []
    for x, m in zip((right, left), masks):
        outs.append(prompt(x, m, (m.long().cumsum(-1) - 1).clamp(min=0))[0][m])
    assert torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("method", ["pt", "dept", "adept"])
def test_decoder_only_generation_matches_the_training_forward(method):
    """Greedy tokens from generate() equal the argmax of the training-path logits fed back."""
    backbone = tiny_llama()
    model = PromptedModel.from_config(
        backbone, PromptConfig(method=method, length=3, rank=2, dropout=0.0, max_positions=16, init="random")
    )
    for p in model.prompt.parameters():
        torch.nn.init.normal_(p, std=0.5)
    model.eval()
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])  # left padded row 0
    mask = (ids != 0).long()
    new = model.generate(ids, mask, max_new_tokens=4, do_sample=False, suppress_tokens=[0, 1])
    for row in range(2):
        seq = ids[row][mask[row].bool()].tolist()
        for t in range(4):
            logits = model(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long)).logits
            nxt = logits[0, -1]
            nxt[[0, 1]] = -float("inf")
            assert int(nxt.argmax()) == int(new[row, t]), f"row {row} step {t}"
            seq.append(int(new[row, t]))


def test_save_and_from_pretrained_round_trip(tmp_path):
    backbone = tiny_t5()
    model = PromptedModel.from_config(backbone, PromptConfig(method="dpt", length=5, rank=2))
    model.save_pretrained(str(tmp_path / "artifact"), base_model="tiny")
    again = PromptedModel.from_pretrained(backbone, str(tmp_path / "artifact"))
    for (n1, p1), (n2, p2) in zip(model.prompt.named_parameters(), again.prompt.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    line = again.print_trainable_parameters()  # DPT: l*r + r*d = 5*2 + 2*32
    assert line.startswith("trainable params: 74 || all params:")


def test_loading_an_artifact_onto_the_wrong_backbone_is_a_clear_error(tmp_path):
    model = PromptedModel.from_config(tiny_t5(), PromptConfig(method="pt", length=2))
    model.save_pretrained(str(tmp_path / "a"))
    bigger = AutoModelForCausalLM.from_config(
        LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    )
    with pytest.raises(ValueError, match="embedding size 32"):
        PromptedModel.from_pretrained(bigger, str(tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="not a prompt artifact"):
        PromptedModel.from_pretrained(bigger, str(tmp_path / "missing"))


def test_lora_through_peft_starts_as_the_bare_backbone_and_round_trips(tmp_path):
    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    ids = torch.randint(2, 64, (2, 7))
    mask = torch.ones_like(ids)
    bare = backbone(input_ids=ids, attention_mask=mask).logits
    pristine = copy.deepcopy(backbone)  # LoRA is installed in place
    model = PromptedModel.from_config(backbone, PromptConfig(method="lora", rank=4, alpha=8, dropout=0.0))
    # peft's default targets for llama: q_proj (32 -> 32) and v_proj (32 -> 16), r * (d_in + d_out) each, 2 layers
    trainable = dict(model.trainable_named_parameters())
    assert sum(p.numel() for p in trainable.values()) == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    assert all(k.startswith("backbone.") for k in trainable) and model.prompt.num_virtual_tokens == 0
    assert torch.allclose(model(ids, mask).logits, bare, atol=1e-6)  # B = 0: unchanged at init
    with torch.no_grad():
        for p in trainable.values():
            p.add_(torch.randn_like(p) * 0.1)
    tuned = model(ids, mask).logits
    assert not torch.allclose(tuned, bare, atol=1e-4)
    model.save_pretrained(str(tmp_path / "lora"))
    again = PromptedModel.from_pretrained(pristine, str(tmp_path / "lora"))
    assert torch.allclose(again(ids, mask).logits, tuned, atol=1e-6)


def test_lora_on_a_missing_module_name_is_a_clear_error():
    backbone = tiny_t5()
    with pytest.raises(ValueError, match="prompt.target_modules"):
        PromptedModel.from_config(backbone, PromptConfig(method="lora", rank=2, target_modules=["no_such_proj"]))

"""Model assembly: which backbone a run means, and the frozen backbone + a fresh prompt method,
initialised, as one PromptedModel.

    model.name -> backbone path (a tiny preset is materialised once into the run directory, a
    GGUF file or preset converted once into the cache)
    -> backbone loaded (partitioned at birth under ZeRO-3) -> prompt built from the same seed on
    every rank -> prompt table initialised from the vocabulary / a text, read from the
    (gathered) embedding table
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import dist, engine
from .backbone import is_tiny_preset, load_backbone, materialize_tiny, resolve_backbone
from .model import PromptedModel
from .prompts import PromptConfig, prompt_init_token_ids


@dataclass
class BuiltModel:
    model: PromptedModel
    deepspeed_config: dict
    zero3_loading: object | None  # must stay alive as long as the model (engine.zero3_loading)


def prepare_backbone(model_config, train_texts: list[str], out_dir: Path, seed: int) -> str:
    """Hub id / local path as given; a GGUF file or preset converted to a float checkpoint in
    the cache; a tiny preset materialised once into OUT_DIR/backbone, with a tokenizer trained
    on `train_texts`. Rank 0 writes, the others wait and then find it."""
    if not is_tiny_preset(model_config.name):
        with dist.main_process_first():
            return resolve_backbone(model_config.name)
    target = Path(out_dir) / "backbone"
    with dist.main_process_first():
        if dist.rank() == 0:
            materialize_tiny(model_config.name, train_texts, target, model_config.overrides, seed=seed)
    return str(target.resolve())


def build_model(
    backbone_path: str,
    prompt_config: PromptConfig,
    deepspeed_config: dict,
    *,
    dtype: str,
    dropout: float | None,
    tokenizer,
    seed: int,
    gradient_checkpointing: bool = False,
) -> BuiltModel:
    """Load the frozen backbone (sharded at birth under ZeRO-3) and attach a fresh prompt.
    `gradient_checkpointing` recomputes the backbone's activations in the backward pass (long
    inputs: memory for compute); non-reentrant, so gradients still reach the prompt."""
    loading = engine.zero3_loading(deepspeed_config)
    backbone = load_backbone(backbone_path, engine.DTYPES[dtype], dropout)
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # same seed on every rank: the prompt starts identical everywhere
    model = PromptedModel.from_config(backbone, prompt_config)
    if model.prompt.uses_embedding_init:
        table = backbone.get_input_embeddings()
        ids = prompt_init_token_ids(prompt_config, prompt_config.length, tokenizer, table.num_embeddings, seed)
        if ids is not None:
            with engine.gathered([table.weight]):
                rows = table.weight.detach()[torch.tensor(ids)].float().clone()
            model.prompt.init_from_embeddings(rows)
    return BuiltModel(model, deepspeed_config, loading)

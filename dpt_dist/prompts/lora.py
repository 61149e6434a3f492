"""LoRA (Hu et al. 2021) through peft, the baseline: W x + (alpha / r) B A x in chosen linear
layers of the frozen backbone, no soft prompt. B starts at zero, so the model is unchanged at
init. peft's `inject_adapter_in_model` installs the adapters in place: the backbone stays the
same module, DeepSpeed partitions the adapters with it under ZeRO-3, and the artifact stores
them as `backbone.<path>` tensors. Parameters: sum over adapted layers of r * (d_in + d_out).
"""
from __future__ import annotations

from torch import nn

from .base import PromptMethod, register


def default_target_modules(model_type: str) -> list[str]:
    """peft's per-architecture defaults (query and value projections)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if model_type not in DEFAULTS:
        raise ValueError(f"prompt.target_modules: peft has no LoRA default for model type {model_type!r}; "
                         "name the linear layers to adapt, e.g. [q_proj, v_proj]")
    return list(DEFAULTS[model_type])


@register("lora")
class LoRA(PromptMethod):
    @classmethod
    def prompt_length(cls, config) -> int:
        return 0

    def attach(self, backbone: nn.Module) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.config.target_modules or default_target_modules(backbone.config.model_type)
        lora = LoraConfig(r=self.config.rank, lora_alpha=self.config.alpha, lora_dropout=self.config.dropout,
                          target_modules=targets, bias="none")
        try:
            inject_adapter_in_model(lora, backbone)
        except ValueError as err:  # e.g. a target module name the backbone does not have
            raise ValueError(f"prompt.target_modules {targets}: {err}") from None

    def lr_group(self, param_name: str) -> str:
        return "network"  # LoPA: LoRA at 1e-4 (train.network_lr)

    def forward(self, input_embeds, token_mask, positions):
        return input_embeds, input_embeds.new_zeros(0, self.embed_dim)

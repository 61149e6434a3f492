"""LoRA (Hu et al. 2021) through peft, the baseline: W x + (alpha / r) B A x in chosen linear
layers of the frozen backbone, no soft prompt. B starts at zero, so the model is unchanged at
init. peft's `inject_adapter_in_model` installs the adapters in place: the backbone stays the
same module, DeepSpeed partitions the adapters with it under ZeRO-3, and the artifact stores
them as `backbone.<path>` tensors. Parameters: sum over adapted layers of r * (d_in + d_out).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import PromptConfig, PromptMethod, check_dropout, check_rank, register


@dataclass
class LoRAConfig(PromptConfig):
    method: str = "lora"
    rank: int = 19  # r
    alpha: float = 8.0  # lora_alpha: the update is scaled by alpha / r
    dropout: float = 0.1  # lora_dropout (training only)
    target_modules: list[str] | None = None  # linear layers to adapt (None: peft's default per architecture)

    def __post_init__(self):
        super().__post_init__()
        check_rank(self)
        check_dropout(self)


def default_target_modules(model_type: str) -> list[str]:
    """peft's per-architecture defaults (query and value projections)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if model_type not in DEFAULTS:
        raise ValueError(
            f"prompt.target_modules: peft has no LoRA default for model type {model_type!r}; "
            "name the linear layers to adapt, e.g. [q_proj, v_proj]"
        )
    return list(DEFAULTS[model_type])


def adapted_linears(config: LoRAConfig, backbone: nn.Module) -> list[nn.Linear]:
    """The linear layers LoRA adapts: peft's rule, a module whose name is a target or ends in
    `.target`."""
    targets = config.target_modules or default_target_modules(backbone.config.model_type)
    return [
        m
        for name, m in backbone.named_modules()
        if isinstance(m, nn.Linear) and any(name == t or name.endswith(f".{t}") for t in targets)
    ]


@register("lora", LoRAConfig)
class LoRA(PromptMethod):
    export_form = None
    export_refusal = "its adapters live inside the backbone's layers: use the artifact as it is"

    @classmethod
    def prompt_length(cls, config) -> int:
        return 0

    @classmethod
    def num_parameters(cls, config, embed_dim, backbone=None):
        if backbone is None:
            raise ValueError("LoRA's parameter count depends on the backbone's layers: pass backbone")
        return sum(config.rank * (m.in_features + m.out_features) for m in adapted_linears(config, backbone))

    def attach(self, backbone: nn.Module) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.config.target_modules or default_target_modules(backbone.config.model_type)
        lora = LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=targets,
            bias="none",
        )
        try:
            inject_adapter_in_model(lora, backbone)
        except ValueError as err:  # e.g. a target module name the backbone does not have
            raise ValueError(f"prompt.target_modules {targets}: {err}") from None

    def lr_group(self, param_name: str) -> str:
        return "network"  # LoPA: LoRA at 1e-4 (train.network_lr)

    def forward(self, input_embeds, token_mask, positions):
        return input_embeds, input_embeds.new_zeros(0, self.embed_dim)

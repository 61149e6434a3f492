"""Residual prompt tuning (Razdaibiedina et al. 2023): P' = LayerNorm(MLP(P)) + P.

Parameters: l*d + (d*k + k) + (k*d + d) + 2*d  (table, down, up, LayerNorm).
"""

from dataclasses import dataclass

from torch import nn

from .base import PromptMethod, PromptTable, SoftPromptConfig, register


@dataclass
class ResidualConfig(SoftPromptConfig):
    method: str = "residual"
    hidden: int = 400  # the reparameterisation MLP's bottleneck k

    def __post_init__(self):
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError(f"prompt.hidden must be >= 1, got {self.hidden}")


@register("residual", ResidualConfig)
class ResidualPromptTuning(PromptMethod):
    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.prompt = PromptTable(config.length, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)

    @classmethod
    def num_parameters(cls, config, embed_dim, backbone=None):
        d, k = embed_dim, config.hidden
        return config.length * d + (d * k + k) + (k * d + d) + 2 * d

    def lr_group(self, param_name):
        return "prompt"  # every tensor here builds the prompt; the paper trains them at one lr

    def forward(self, input_embeds, token_mask, positions):
        p = self.prompt()
        return input_embeds, (self.norm(self.mlp(p)) + p).to(input_embeds.dtype)

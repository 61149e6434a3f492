"""Residual prompt tuning (Razdaibiedina et al. 2023): P' = LayerNorm(MLP(P)) + P.

Parameters: l*d + (d*k + k) + (k*d + d) + 2*d  (table, down, up, LayerNorm).
"""
from torch import nn

from .base import PromptMethod, PromptTable, register


@register("residual")
class ResidualPromptTuning(PromptMethod):
    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.prompt = PromptTable(config.length, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)

    def lr_group(self, param_name):
        return "prompt"  # every tensor here builds the prompt; the paper trains them at one lr

    def forward(self, input_embeds, token_mask, positions):
        p = self.prompt()
        return input_embeds, (self.norm(self.mlp(p)) + p).to(input_embeds.dtype)

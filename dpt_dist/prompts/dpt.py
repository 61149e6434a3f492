"""DPT, decomposed prompt tuning: the prompt is the low-rank product P = A @ B.

A: l x r, B: r x d, so l*r + r*d parameters (T5-Large, l=100, r=10: 11,240). The paper
initialises both factors Gaussian; its released code uses U(-0.5, 0.5): `factor_init` picks.
"""
import torch
from torch import nn

from .base import PromptMethod, register


@register("dpt")
class DecomposedPromptTuning(PromptMethod):
    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.A = nn.Parameter(torch.empty(config.length, config.rank))
        self.B = nn.Parameter(torch.empty(config.rank, embed_dim))
        for factor in (self.A, self.B):
            if config.factor_init == "gaussian":
                nn.init.normal_(factor, std=config.init_std)
            else:
                nn.init.uniform_(factor, -0.5, 0.5)

    def lr_group(self, param_name):
        return "prompt"  # every tensor here builds the prompt; the paper trains them at one lr

    def forward(self, input_embeds, token_mask, positions):
        return input_embeds, (self.A @ self.B).to(input_embeds.dtype)

"""DePT (Shi & Lipani 2024): a short prompt plus a position-indexed low-rank offset.

e_i += (alpha / sqrt(r)) * (A @ B)[i] for the real input tokens at positions i < L, then the
m x d prompt is prepended. Parameters m*d + L*r + r*d. A is kaiming-uniform and B zero, so the
offset starts at exactly zero. Positions come from the wrapper as indices among real tokens, so
inputs need not be padded to L (the reference pads everything to L only to index A simply).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import PromptMethod, PromptTable, SoftPromptConfig, check_rank, register


@dataclass
class DePTConfig(SoftPromptConfig):
    method: str = "dept"
    rank: int = 19  # r of the low-rank offset A @ B
    max_positions: int = 256  # L: positions that receive an offset
    alpha: float = 8.0  # the offset's scale numerator (alpha / sqrt(r))

    def __post_init__(self):
        super().__post_init__()
        check_rank(self)
        if self.max_positions < 1:
            raise ValueError(f"prompt.max_positions must be >= 1, got {self.max_positions}")


@register("dept", DePTConfig)
class DecomposedPromptTuningDePT(PromptMethod):
    has_offset = True
    export_form = None
    export_refusal = "its offsets depend on the token's position, not on the token: nothing folds into a table"

    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.prompt = PromptTable(config.length, embed_dim)
        self.A = nn.Parameter(torch.empty(config.max_positions, config.rank))
        self.B = nn.Parameter(torch.zeros(config.rank, embed_dim))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = config.alpha / math.sqrt(config.rank)

    @classmethod
    def num_parameters(cls, config, embed_dim, backbone=None):
        return config.length * embed_dim + config.max_positions * config.rank + config.rank * embed_dim

    def forward(self, input_embeds, token_mask, positions):
        L = self.config.max_positions
        offsets = (self.A @ self.B) * self.scale  # [L, d]
        in_range = token_mask & (positions < L)
        offset = offsets[positions.clamp(max=L - 1)] * in_range.unsqueeze(-1)
        return input_embeds + offset.to(input_embeds.dtype), self.prompt().to(input_embeds.dtype)

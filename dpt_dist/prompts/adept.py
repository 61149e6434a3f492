"""ADePT: a short prompt plus a token-shared feed-forward offset on every real input token.

e += relu(dropout(e W1 + b1)) W2 + b2, then the m x d prompt is prepended. Parameters
m*d + 2*d*r + r + d (T5-Base, m=60, r=19: 76,051). W1 kaiming-uniform, W2/b1/b2 zero, so at
init the model is exactly prompt tuning with the same prompt. The offset depends on the token
only: after training E + f(E) can be precomputed for the whole vocabulary (the export).
"""

from dataclasses import dataclass

import torch
from torch import nn

from .base import PromptMethod, PromptTable, SoftPromptConfig, check_dropout, check_rank, register


@dataclass
class ADePTConfig(SoftPromptConfig):
    method: str = "adept"
    rank: int = 19  # r, the offset network's hidden width
    dropout: float = 0.1  # on the hidden pre-activation (training only)

    def __post_init__(self):
        super().__post_init__()
        check_rank(self)
        check_dropout(self)


@register("adept", ADePTConfig)
class AdaptiveDecomposedPromptTuning(PromptMethod):
    has_offset = True
    export_form = "merged_embeddings"

    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.prompt = PromptTable(config.length, embed_dim)
        self.down = nn.Linear(embed_dim, config.rank)  # W1, b1 (kaiming-uniform a=sqrt(5) by default)
        self.up = nn.Linear(config.rank, embed_dim)  # W2, b2
        self.dropout = nn.Dropout(config.dropout)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @classmethod
    def num_parameters(cls, config, embed_dim, backbone=None):
        return config.length * embed_dim + 2 * embed_dim * config.rank + config.rank + embed_dim

    def offset(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.dropout(self.down(embeds))))

    def forward(self, input_embeds, token_mask, positions):
        offset = self.offset(input_embeds) * token_mask.unsqueeze(-1).to(input_embeds.dtype)
        return input_embeds + offset, self.prompt().to(input_embeds.dtype)

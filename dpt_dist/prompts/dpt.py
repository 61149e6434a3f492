"""DPT, decomposed prompt tuning: the prompt is the low-rank product P = A @ B.

A: l x r, B: r x d, so l*r + r*d parameters (T5-Large, l=100, r=10: 11,240). The paper
initialises both factors Gaussian; its released code uses U(-0.5, 0.5): `factor_init` picks.
Exported as the product: a plain l x d prompt-tuning table.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .base import PromptConfig, PromptMethod, check_rank, register


@dataclass
class DPTConfig(PromptConfig):
    method: str = "dpt"
    length: int = 60  # l, the prompt length
    rank: int = 19  # r, the bottleneck of P = A @ B
    factor_init: str = "gaussian"  # gaussian (paper) | uniform (released code, U(-0.5, 0.5))
    init_std: float = 1.0  # std of the Gaussian factor init

    def __post_init__(self):
        super().__post_init__()
        check_rank(self)
        if self.length < 0:
            raise ValueError(f"prompt.length must be >= 0, got {self.length}")
        if self.factor_init not in ("gaussian", "uniform"):
            raise ValueError(f"prompt.factor_init must be gaussian or uniform, got {self.factor_init!r}")
        if self.init_std <= 0:
            raise ValueError(f"prompt.init_std must be > 0, got {self.init_std}")


@register("dpt", DPTConfig)
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

    @classmethod
    def num_parameters(cls, config, embed_dim, backbone=None):
        return config.length * config.rank + config.rank * embed_dim

    def lr_group(self, param_name):
        return "prompt"  # every tensor here builds the prompt; the paper trains them at one lr

    def forward(self, input_embeds, token_mask, positions):
        return input_embeds, (self.A @ self.B).to(input_embeds.dtype)

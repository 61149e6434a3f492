"""Vanilla prompt tuning (Lester et al. 2021): an l x d table prepended to the input. l*d parameters."""

from dataclasses import dataclass

from .base import PromptMethod, PromptTable, SoftPromptConfig, register


@dataclass
class PTConfig(SoftPromptConfig):
    method: str = "pt"


@register("pt", PTConfig)
class PromptTuning(PromptMethod):
    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.prompt = PromptTable(config.length, embed_dim)

    @classmethod
    def num_parameters(cls, config, embed_dim, backbone=None):
        return config.length * embed_dim

    def forward(self, input_embeds, token_mask, positions):
        return input_embeds, self.prompt().to(input_embeds.dtype)

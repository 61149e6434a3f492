"""Vanilla prompt tuning (Lester et al. 2021): an l x d table prepended to the input. l*d parameters."""
import torch

from .base import PromptMethod, PromptTable, register


@register("pt")
class PromptTuning(PromptMethod):
    uses_embedding_init = True

    def __init__(self, config, embed_dim):
        super().__init__(config, embed_dim)
        self.prompt = PromptTable(config.length, embed_dim)

    def init_from_embeddings(self, rows: torch.Tensor) -> None:
        with torch.no_grad():
            self.prompt.weight.copy_(rows)

    def forward(self, input_embeds, token_mask, positions):
        return input_embeds, self.prompt().to(input_embeds.dtype)

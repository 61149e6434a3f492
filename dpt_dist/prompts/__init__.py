"""Prompt methods: one module each (its config, its tensors, its parameter count, its export
form), one interface (base.PromptMethod), one registry."""

from . import adept, dept, dpt, lora, pt, residual  # noqa: F401  (registers the methods)
from .base import PROMPT_METHODS, PromptConfig, PromptMethod, build_prompt, make_prompt_config, prompt_init_token_ids

__all__ = [
    "PROMPT_METHODS",
    "PromptConfig",
    "PromptMethod",
    "build_prompt",
    "make_prompt_config",
    "prompt_init_token_ids",
]

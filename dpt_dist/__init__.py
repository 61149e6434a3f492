"""dpt_dist: decomposed soft prompts (DPT, ADePT and baselines) on frozen LMs under DeepSpeed."""

from .model import PromptedModel
from .prompts import PROMPT_METHODS, PromptConfig

__version__ = "0.1.0"
__all__ = ["PROMPT_METHODS", "PromptConfig", "PromptedModel", "__version__"]

"""dpt_dist: decomposed soft prompts (DPT, ADePT and baselines) on frozen LMs under DeepSpeed.

The names below load on first use, so that `import dpt_dist` (and the CLI's start, which
installs its signal handlers first) does not wait for torch and transformers.
"""

__version__ = "0.1.0"
__all__ = ["PROMPT_METHODS", "PromptConfig", "PromptedModel", "__version__"]


def __getattr__(name: str):
    if name == "PromptedModel":
        from .model import PromptedModel

        return PromptedModel
    if name in ("PromptConfig", "PROMPT_METHODS"):
        from . import prompts

        return getattr(prompts, name)
    raise AttributeError(f"module 'dpt_dist' has no attribute {name!r}")

"""The one interface every soft-prompt method implements, and the registry that names them.

A method is a small nn.Module that owns its trainable tensors and does two things to a batch:
it may add an offset to the embeddings of the real input tokens, and it returns the soft prompt
(an l x d matrix, possibly l = 0) that the model wrapper prepends. Everything happens inside
forward() on purpose: under ZeRO-3 a parameter is only gathered while its owning module runs,
so reading a tensor anywhere else would see an empty shard.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PromptConfig:
    """Plain data describing a prompt method. Fields a method does not use are ignored."""

    method: str = "adept"
    length: int = 60  # l (PT, Residual PT, DPT) or m, the short prompt of DePT / ADePT
    rank: int = 19  # r: DPT bottleneck, DePT low-rank size, ADePT hidden width, LoRA rank
    init: str = "vocab"  # soft-prompt init: random | vocab | text
    init_text: str = ""  # used when init == "text"
    factor_init: str = "gaussian"  # DPT factors: gaussian (paper) | uniform (released code, U(-0.5, 0.5))
    init_std: float = 1.0  # std of the Gaussian DPT factor init
    hidden: int = 400  # Residual PT bottleneck k
    max_positions: int = 256  # DePT L: positions that receive a low-rank offset
    alpha: float = 8.0  # DePT scaling numerator; LoRA's lora_alpha
    dropout: float = 0.1  # ADePT dropout on the hidden pre-activation; LoRA dropout (training only)
    vocab_init_range: int = 5000  # vocab init samples rows among the first N token ids (Lester)
    target_modules: list[str] | None = None  # LoRA: linear layers to adapt (None: peft's default per architecture)

    def __post_init__(self):
        if self.method not in PROMPT_METHODS:
            raise ValueError(f"prompt.method: unknown method {self.method!r}; choose one of {sorted(PROMPT_METHODS)}")
        if self.length < 0:
            raise ValueError(f"prompt.length must be >= 0, got {self.length}")
        if self.rank < 1:
            raise ValueError(f"prompt.rank must be >= 1, got {self.rank}")
        if self.init not in ("random", "vocab", "text"):
            raise ValueError(f"prompt.init must be random, vocab or text, got {self.init!r}")
        if self.init == "text" and not self.init_text:
            raise ValueError("prompt.init is 'text' but prompt.init_text is empty")
        if self.factor_init not in ("gaussian", "uniform"):
            raise ValueError(f"prompt.factor_init must be gaussian or uniform, got {self.factor_init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"prompt.dropout must be in [0, 1), got {self.dropout}")


PROMPT_METHODS: dict[str, type["PromptMethod"]] = {}


def register(name: str):
    def wrap(cls):
        cls.method_name = name
        PROMPT_METHODS[name] = cls
        return cls

    return wrap


def build_prompt(config: PromptConfig, embed_dim: int) -> "PromptMethod":
    return PROMPT_METHODS[config.method](config, embed_dim)


class PromptMethod(nn.Module):
    """Interface. Subclasses set `num_virtual_tokens` and implement `forward`.

    forward(input_embeds [B,T,d], token_mask [B,T] bool, positions [B,T] long)
        -> (input_embeds with the method's offset added on real tokens, prompt [l, d])

    `positions` is each token's index among the real input tokens (0 for the first real token,
    whatever the padding side), which DePT's position-indexed offset needs.
    """

    method_name: str = ""
    has_offset: bool = False  # does forward change the input embeddings?

    def __init__(self, config: PromptConfig, embed_dim: int):
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim

    @property
    def num_virtual_tokens(self) -> int:
        return self.prompt_length(self.config)

    @classmethod
    def prompt_length(cls, config: PromptConfig) -> int:
        """Virtual tokens this method prepends under `config` (0 for methods without a prompt)."""
        return config.length

    def attach(self, backbone: nn.Module) -> None:
        """Called once with the frozen backbone; methods that live inside it (LoRA) install
        themselves here. Soft-prompt methods need nothing."""

    def lr_group(self, param_name: str) -> str:
        """Which learning rate a parameter trains with: "prompt" (the soft-prompt table) or
        "network" (offset networks / matrices, e.g. ADePT's FFN at 1e-4 next to a 3e-1 prompt)."""
        return "prompt" if param_name.startswith("prompt.") else "network"

    @property
    def uses_embedding_init(self) -> bool:
        """Methods whose prompt is a plain table (`self.prompt`) take vocab / text init."""
        return isinstance(getattr(self, "prompt", None), PromptTable)

    def init_from_embeddings(self, rows: torch.Tensor) -> None:
        """Initialise the soft-prompt table from embedding rows [l, d] (vocab or text init)."""
        if not self.uses_embedding_init:
            raise NotImplementedError(f"{self.method_name} has no embedding-initialised prompt table")
        with torch.no_grad():
            self.prompt.weight.copy_(rows)

    def effective_prompt(self) -> torch.Tensor:
        """The l x d matrix actually prepended (used for export and the rank spectrum)."""
        like = next(self.parameters(), None)
        dummy = torch.zeros(1, 0, self.embed_dim, device=like.device if like is not None else None,
                            dtype=like.dtype if like is not None else None)
        return self(dummy, dummy[..., 0].bool(), dummy[..., 0].long())[1]


class PromptTable(nn.Module):
    """An l x d soft-prompt table. Its own module so ZeRO-3 gathers it when it is called."""

    def __init__(self, length: int, embed_dim: int):
        super().__init__()
        # Lester et al.: random init U(-0.5, 0.5); vocab/text init overwrite it later.
        self.weight = nn.Parameter(torch.empty(length, embed_dim).uniform_(-0.5, 0.5))

    def forward(self) -> torch.Tensor:
        return self.weight


def prompt_init_token_ids(config: PromptConfig, length: int, tokenizer, vocab_size: int, seed: int) -> list[int] | None:
    """Token ids whose embeddings initialise a soft-prompt table, or None for random init.

    vocab: ids sampled without replacement among the first `vocab_init_range` ids (Lester's
    "sampled vocabulary"), skipping special tokens; text: the text's tokens repeated to length.
    """
    if config.init == "random" or length == 0:
        return None
    if config.init == "text":
        ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"prompt.init_text {config.init_text!r} tokenizes to nothing")
        return (ids * math.ceil(length / len(ids)))[:length]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pool = [i for i in range(min(config.vocab_init_range, vocab_size)) if i not in special]
    if not pool:
        raise ValueError("prompt.init=vocab: the vocabulary has no ordinary tokens to sample")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(pool), (length,), generator=g) if length > len(pool) else torch.randperm(len(pool), generator=g)[:length]
    return [pool[i] for i in picks.tolist()]

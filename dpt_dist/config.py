"""Run configuration: plain YAML mapped onto dataclasses, with `--section.key value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .prompts import PROMPT_METHODS, PromptConfig, make_prompt_config


@dataclass
class ModelConfig:
    name: str = "tiny-t5"  # hub id, local directory, or a tiny preset (tiny-t5, tiny-llama)
    dtype: str = "fp32"  # fp32 | bf16  (fp16 is refused on CPU)
    dropout: float | None = None  # override the backbone's dropout (None keeps the checkpoint's)
    overrides: dict = field(default_factory=dict)  # tiny presets: config fields, e.g. {d_model: 256}
    tokenizer_vocab_size: int = 2000  # tiny presets: SentencePiece vocabulary trained on the task text
    gradient_checkpointing: bool = False  # recompute backbone activations in backward (long inputs)

    def __post_init__(self):
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"model.dtype must be fp32 or bf16, got {self.dtype!r}")


@dataclass
class TaskConfig:
    name: str = "cb"  # `dpt-dist tasks` lists them
    data_dir: str | None = None  # local directory of the original files; None loads the hub dataset
    files: dict = field(
        default_factory=dict
    )  # per official split, a file path (overrides data_dir), e.g. {train: a.jsonl}
    subset: str | None = None  # WinoGrande training size (xs, s, m, l, xl; default xl)
    split_mode: str = "dept"  # dept: the DePT/ADePT protocol splits | official: report on official validation
    validation_size: int = 1000  # large tasks: training rows moved to validation (DePT protocol)
    split_seed: int = 42  # the protocol's shuffle seed
    max_source_length: int | None = None  # None: the task's default (256; MultiRC 348; MRQA, ReCoRD 512)
    max_target_length: int | None = None  # None: the task's default
    max_new_tokens: int | None = None  # generation budget; None uses the task's default
    num_samples: int = 1  # generations per example (pass@k with k <= num_samples; needs sampling)
    do_sample: bool | None = None  # None: the task's protocol (MBPP samples, the others are greedy)
    temperature: float | None = None  # None: the task's protocol (MBPP 0.6)
    top_p: float | None = None  # None: the task's protocol (MBPP 0.95)
    max_train_examples: int | None = None
    max_eval_examples: int | None = None  # the first N rows of validation (and of test, unless max_test_examples)
    max_test_examples: int | None = None  # the first N rows of test (None: max_eval_examples)

    def __post_init__(self):
        if self.split_mode not in ("dept", "official"):
            raise ValueError(f"task.split_mode must be dept or official, got {self.split_mode!r}")
        if not isinstance(self.files, dict):
            raise ValueError(f"task.files must be a mapping of split name to file path, got {self.files!r}")
        unknown = set(self.files) - {"train", "validation", "test", "validation_matched", "validation_mismatched"}
        if unknown:
            raise ValueError(
                f"task.files: unknown split(s) {sorted(unknown)}; use train, validation, test "
                "(MNLI: validation_matched, validation_mismatched)"
            )
        if self.validation_size < 1:
            raise ValueError(f"task.validation_size must be >= 1, got {self.validation_size}")
        if self.num_samples < 1:
            raise ValueError(f"task.num_samples must be >= 1, got {self.num_samples}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"task.temperature must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"task.top_p must be in (0, 1], got {self.top_p}")

    def sampling(self, task_default: dict | None) -> dict:
        """Generation settings: the task's protocol, with this config's overrides."""
        out = dict(task_default or {"do_sample": False})
        if self.do_sample is not None:
            out["do_sample"] = self.do_sample
        for key in ("temperature", "top_p"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if not out["do_sample"]:
            out = {"do_sample": False}
        return out


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    steps: int = 100
    epochs: float | None = None  # if set, replaces steps: epochs x (training rows // batch_size)
    batch_size: int = 32  # global batch: micro_batch_size x gradient accumulation x world size
    micro_batch_size: int = 8
    group_by_length: bool = True  # length-grouped global batches (dynamic padding then pads little)
    prompt_lr: float = 0.3
    network_lr: float = 1e-4
    weight_decay: float = 0.0
    adam_eps: float = 1e-6
    warmup_steps: int = 0
    grad_clip: float = 1.0
    seed: int = 42
    log_every: int = 10
    eval_every: int = 0  # validation every N steps (0: once, after training); the best is kept
    early_stopping_patience: int = 0  # stop after N evaluations without improvement (0: never)
    eval_batch_size: int = 16
    checkpoint_every: int = 0  # write a resumable checkpoint every N steps (and after the last); 0: never
    keep_checkpoints: int = 2  # the newest K checkpoints are kept, plus the one of the best validation step
    max_steps_per_run: int | None = (
        None  # stop this run after N steps with a checkpoint (time-limited jobs); --resume continues
    )
    spectrum_every: int = 50  # log the singular values of the effective prompt every N steps (0: never)

    def __post_init__(self):
        for name in ("steps", "batch_size", "micro_batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "early_stopping_patience", "checkpoint_every", "keep_checkpoints", "spectrum_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps_per_run is not None and self.max_steps_per_run < 1:
            raise ValueError(f"train.max_steps_per_run must be >= 1, got {self.max_steps_per_run}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"train.epochs must be > 0, got {self.epochs}")


@dataclass
class DeepSpeedConfig:
    config: str = "zero3"  # a shipped config by name (zero0..3, zero3_offload, zero3_pp) or a DeepSpeed JSON file
    overrides: dict = field(default_factory=dict)  # deep-merged into the JSON


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTION_TYPES = {
    "model": ModelConfig,
    "prompt": PromptConfig,
    "task": TaskConfig,
    "train": TrainConfig,
    "deepspeed": DeepSpeedConfig,
}


def _set_path(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"override --{dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_overrides(args: list[str]) -> dict:
    """['--train.steps', '10', '--prompt.method=dpt'] -> {'train': {'steps': 10}, 'prompt': {'method': 'dpt'}}."""
    tree: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ValueError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"override {arg} has no value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        _set_path(tree, key, yaml.safe_load(raw))  # YAML typing: 10 -> int, 1e-4 -> float, null -> None
    return tree


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _coerce(cls, section: str, values: dict) -> dict:
    """YAML 1.1 reads `1e-4` as a string: convert numbers for float/int fields, clearly or not at all."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = dict(values)
    for key, value in values.items():
        kind = types.get(key, "").replace(" | None", "")
        if isinstance(value, str) and kind in ("float", "int"):
            try:
                out[key] = float(value) if kind == "float" else int(value)
            except ValueError:
                raise ValueError(f"{section}.{key} must be a number, got {value!r}") from None
        elif isinstance(value, int) and not isinstance(value, bool) and kind == "float":
            out[key] = float(value)
    return out


def _build_section(name: str, values: dict):
    if name == "prompt":  # the chosen method's own config class (prompts/): it names what it ignores
        method = values.get("method", PromptConfig.method)
        config_class = PROMPT_METHODS[method].config_class if method in PROMPT_METHODS else PromptConfig
        return make_prompt_config(_coerce(config_class, name, values))
    cls = _SECTION_TYPES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in section {name!r}; known: {sorted(known)}")
    return cls(**_coerce(cls, name, values))


def build_config(tree: dict, source: str = "config") -> RunConfig:
    if not isinstance(tree, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(tree).__name__}")
    sections = {}
    for name, value in tree.items():
        if name not in _SECTION_TYPES:
            raise ValueError(f"{source}: unknown section {name!r}; sections are {sorted(_SECTION_TYPES)}")
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping of keys to values, got {value!r}")
        try:
            sections[name] = _build_section(name, value or {})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None
    return RunConfig(**sections)


PRESET_DIR = Path(__file__).parent / "presets"


def preset_path(name_or_path: str) -> Path:
    """A YAML path as given, or the preset of that name (dpt_dist/presets/NAME.yaml)."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"{name_or_path!r} is neither a config file nor a preset; presets: {known}")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML ({err})") from None
    extra = parse_overrides(overrides or [])
    if "steps" in extra.get("train", {}) and "epochs" not in extra["train"]:
        # `--train.steps N` on the command line means N steps, also when the YAML (a paper
        # preset) counts in epochs, which would otherwise replace it
        extra["train"]["epochs"] = None
    tree = deep_merge(tree, extra)
    return build_config(tree, str(path) if path else "config")

"""Run configuration: plain YAML mapped onto dataclasses, with `--section.key value` overrides.

Every value is checked where it enters, against its field's type (an integer field takes an
integer, or a number that is exactly one: `1e4`; never 2.5 or true) and its range, and a bad
one is reported against where it came from: the YAML file, or the command line's `--key`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .prompts import PROMPT_METHODS, PromptConfig, make_prompt_config
from .prompts.base import all_config_fields


def _at_least(section: str, obj, names: tuple[str, ...], low: float, strict: bool = False) -> None:
    """Range checks: every named field (None allowed where the field is optional) >= low (> low)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and (value <= low if strict else value < low):
            raise ValueError(f"{section}.{name} must be {'>' if strict else '>='} {low:g}, got {value}")


@dataclass
class ModelConfig:
    name: str = "tiny-t5"  # hub id, local directory, or a tiny preset (tiny-t5, tiny-llama)
    dtype: str = "fp32"  # fp32 | bf16  (fp16 is refused on CPU)
    dropout: float | None = None  # override the backbone's dropout (None keeps the checkpoint's)
    overrides: dict = field(default_factory=dict)  # tiny presets: config fields, e.g. {d_model: 256}
    tokenizer_vocab_size: int = 2000  # tiny presets: SentencePiece vocabulary trained on the task text
    gradient_checkpointing: bool = False  # recompute backbone activations in backward (long inputs)

    def __post_init__(self):
        if not self.name:
            raise ValueError("model.name must name a backbone (a hub id, a directory, a .gguf file or a preset)")
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"model.dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        _at_least("model", self, ("tokenizer_vocab_size",), 32)


@dataclass
class TaskConfig:
    name: str = "cb"  # `dpt-dist tasks` lists them
    data_dir: str | None = None  # local directory of the original files; None loads the hub dataset
    # per official split, a file path (overrides data_dir), e.g. {train: a.jsonl}
    files: dict = field(default_factory=dict)
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
        if not self.name:
            raise ValueError("task.name must name a task (dpt-dist tasks lists them)")

        def paths(value) -> bool:  # one file, or several (MRQA validation: macro-averaged)
            return (isinstance(value, str) and bool(value)) or (
                isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)
            )

        if not all(paths(v) for v in self.files.values()):
            raise ValueError(f"task.files: every split needs a file path (or a list of them), got {self.files!r}")
        counts = ("validation_size", "num_samples", "max_source_length", "max_target_length", "max_new_tokens")
        _at_least("task", self, counts + ("max_train_examples", "max_eval_examples", "max_test_examples"), 1)
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
    # stop this run after N steps with a checkpoint (time-limited jobs); --resume continues
    max_steps_per_run: int | None = None
    spectrum_every: int = 50  # log the singular values of the effective prompt every N steps (0: never)
    # under ZeRO-3, evaluate with a replica of the weights gathered once (when it fits) instead of
    # gathering every layer for every generated token; false: always the per-token path
    gather_for_eval: bool = True

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("train.output_dir must be a directory path")
        positive = ("steps", "batch_size", "micro_batch_size", "eval_batch_size", "log_every", "max_steps_per_run")
        _at_least("train", self, positive, 1)
        counts = ("eval_every", "early_stopping_patience", "checkpoint_every", "keep_checkpoints", "spectrum_every")
        _at_least("train", self, counts + ("warmup_steps", "prompt_lr", "network_lr", "weight_decay", "grad_clip"), 0)
        _at_least("train", self, ("epochs", "adam_eps"), 0, strict=True)


@dataclass
class DeepSpeedConfig:
    # auto: the placement planner decides (placement.py); or a shipped config by name (zero0..3,
    # zero3_offload, zero3_pp), or a DeepSpeed JSON file, which always wins over the planner
    config: str = "auto"
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


def _number(where: str, value, integer: bool):
    """YAML 1.1 reads `1e-4` and `1e4` as strings: numbers are accepted from either spelling."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where} must be {kind}, got {value!r}")
    try:
        number = float(value) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{where} must be {kind}, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if integer:
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return int(number)
    return float(number)


def _typed(where: str, annotation: str, value):
    """`value` as the field's type (int, float, str, bool, dict, list[str]; `| None`), or one clear error."""
    kind = annotation.replace(" | None", "")
    if value is None:
        if annotation.endswith("| None"):
            return None
        raise ValueError(f"{where} must be set (got null)")
    if kind in ("int", "float"):
        return _number(where, value, integer=kind == "int")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if kind == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. an output directory named 2026
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if kind == "dict" and not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    if kind == "list[str]" and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise ValueError(f"{where} must be a list of names, got {value!r}")
    return value


def _check_types(cls, section: str, values: dict) -> dict:
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return {
        key: _typed(f"{section}.{key}", types[key], value) if key in types else value for key, value in values.items()
    }


def check_keys(tree: dict, source: str) -> None:
    """Unknown sections and keys, reported against `source` (a file, or the command line)."""
    if not isinstance(tree, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(tree).__name__}")
    for name, values in tree.items():
        if name not in _SECTION_TYPES:
            raise ValueError(f"{source}: unknown section {name!r}; sections are {sorted(_SECTION_TYPES)}")
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping of keys to values, got {values!r}")
        known = all_config_fields() if name == "prompt" else {f.name for f in dataclasses.fields(_SECTION_TYPES[name])}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            spelled = ", ".join(f"--{name}.{k}" for k in unknown) if source == "command line" else repr(unknown)
            raise ValueError(f"{source}: unknown key(s) {spelled} in section {name!r}; known: {sorted(known)}")


def _build_section(name: str, values: dict):
    if name == "prompt":  # the chosen method's own config class (prompts/): it names what it ignores
        method = values.get("method", PromptConfig.method)
        config_class = PROMPT_METHODS[method].config_class if method in PROMPT_METHODS else PromptConfig
        return make_prompt_config(_check_types(config_class, name, values))
    cls = _SECTION_TYPES[name]
    return cls(**_check_types(cls, name, values))


def build_config(tree: dict, source: str = "config", overridden: frozenset[str] = frozenset()) -> RunConfig:
    """RunConfig from a tree of sections. An error about a `section.key` in `overridden` (given on
    the command line) is reported against the command line, any other against `source`."""
    check_keys(tree, source)
    sections = {}
    for name, value in tree.items():
        try:
            sections[name] = _build_section(name, value or {})
        except (TypeError, ValueError) as err:
            key = re.match(r"(\w+\.\w+)", str(err))
            where = f"command line (--{key.group(1)})" if key and key.group(1) in overridden else source
            raise ValueError(f"{where}: {err}") from None
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
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML ({err})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a YAML file (not UTF-8 text)") from None
    extra = parse_overrides(overrides or [])
    check_keys(extra, "command line")  # a misspelt --key is the command line's fault, not the file's
    overridden = frozenset(f"{section}.{key}" for section, keys in extra.items() for key in (keys or {}))
    if "steps" in extra.get("train", {}) and "epochs" not in extra["train"]:
        # `--train.steps N` on the command line means N steps, also when the YAML (a paper
        # preset) counts in epochs, which would otherwise replace it
        extra["train"]["epochs"] = None
    tree = deep_merge(tree, extra)
    return build_config(tree, str(path) if path else "config", overridden)

"""One typed configuration for the whole pipeline.

The same TOML file is read two ways: by Metaflow's ``Config`` (through :func:`parse_config_text`, so
decorators such as ``@resources`` can read it) and by plain Python (:func:`load_config`) in tests, scripts
and notebooks. Both go through :meth:`HPSConfig.from_dict`, which rejects unknown keys by name: a typo in
a config must never be silently ignored (``epoch = 3`` instead of ``epochs = 3`` would train once).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, get_type_hints

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "flows" / "configs" / "default.toml"


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and says how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # one seed drives data generation, splits, negative draws, init and sampling
    experiment: str = "hps"  # MLflow experiment name
    output_dir: str = ".hps"  # local root for checkpoints and caches (relative to the cwd)


@dataclass(frozen=True)
class DataConfig:
    source: str = "generated"  # "generated" (the embedded world) or a local file path
    n_prompts: int = 300  # generated world only
    responses_per_prompt: int = 8  # generated world only
    eval_fraction: float = 0.15  # share of prompts held out, assigned by a hash of the prompt id
    max_prompt_chars: int = 4096  # contract bound
    max_response_chars: int = 8192  # contract bound
    on_invalid: str = "fail"  # "fail": stop the flow at validate with a report


@dataclass(frozen=True)
class TinyModelConfig:
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256


@dataclass(frozen=True)
class ModelConfig:
    base: str = "tiny"  # "tiny" builds the local default model; else a hub id or a local directory
    trust_remote_code: bool = False  # never on unless opted in: it runs code shipped with the model
    max_prompt_tokens: int = 64
    max_length: int = 128  # prompt + response tokens; longer responses are truncated (counted)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass(frozen=True)
class SFTConfig:
    epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    log_every: int = 10
    checkpoint_every: int = 50  # optimizer steps between in-training checkpoints (resume after a crash)


@dataclass(frozen=True)
class PreferenceTrainConfig:
    method: str = "dpo-hps"  # "<framework>-<preference model>"; see hps_core.losses.ALL_METHODS
    beta: float = 0.1
    label_smoothing: float = 0.0
    gamma: float = 1.0  # hardness: q(y_j) ∝ exp(gamma * score_j) over the dispreferred responses
    gamma_schedule: str = "constant"  # constant | linear (gamma_start -> gamma_end) | step (reference code)
    gamma_start: float = 0.0  # linear schedule only
    gamma_end: float = 1.0  # linear schedule only
    bt_negative_rule: str = "random"  # *-bt methods: random | max_min | max_max
    log_n_offset: bool = False  # subtract log N inside the sigmoid (the reference code omits it)
    epochs: int = 2  # passes over the prompts, each with freshly drawn negatives
    batch_size: int = 16
    lr: float = 5e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    log_every: int = 10
    checkpoint_every: int = 50  # optimizer steps between in-training checkpoints (resume after a crash)



@dataclass(frozen=True)
class RewardModelConfig:
    path: str = ""  # hub id or directory of a sequence-classification model; empty: train one in the flow
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    pairs_per_group: int = 4  # preferred vs this many dispreferred responses per training group


@dataclass(frozen=True)
class EvaluateConfig:
    max_prompts: int = 64  # eval prompts used for generation (all held-out groups are used for margins)
    samples_per_prompt: int = 2  # k generations per prompt
    max_new_tokens: int = 40
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int = 32
    bootstrap_samples: int = 1000


@dataclass(frozen=True)
class RegisterConfig:
    sft_name: str = "hps-sft"
    policy_name: str = "hps-policy"
    alias: str = "challenger"


@dataclass(frozen=True)
class ResourcesConfig:
    gpu: int = 0  # GPUs per training/eval step on a cluster (ignored on a laptop)
    memory: int = 8000  # MB per training/eval step on a cluster
    cpu: int = 2


@dataclass(frozen=True)
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    hps: PreferenceTrainConfig = field(default_factory=PreferenceTrainConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> "PipelineConfig":
        config = _build(cls, raw, source, prefix="")
        config.check(source)
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, source: str = "<dict>") -> None:
        """Reject invalid values and combinations at start-up, naming the fix."""
        if self.data.on_invalid not in ("fail",):
            raise ConfigError(f"{source}: data.on_invalid = {self.data.on_invalid!r}; valid: 'fail'")
        if not 0.0 < self.data.eval_fraction < 1.0:
            raise ConfigError(f"{source}: data.eval_fraction must be in (0, 1), got {self.data.eval_fraction}")
        if self.model.max_prompt_tokens >= self.model.max_length:
            raise ConfigError(
                f"{source}: model.max_prompt_tokens ({self.model.max_prompt_tokens}) must be smaller than "
                f"model.max_length ({self.model.max_length}) so every response keeps some tokens"
            )
        if self.hps.beta <= 0:
            raise ConfigError(f"{source}: hps.beta must be > 0, got {self.hps.beta}")
        if not 0.0 <= self.hps.label_smoothing < 0.5:
            raise ConfigError(f"{source}: hps.label_smoothing must be in [0, 0.5), got {self.hps.label_smoothing}")
        from hps_core.methods import parse_method
        from hps_core.sampling import BT_RULES, SCHEDULE_KINDS

        try:
            parse_method(self.hps.method)
        except ValueError as err:
            raise ConfigError(f"{source}: hps.method: {err}") from err
        if self.hps.gamma_schedule not in SCHEDULE_KINDS:
            raise ConfigError(f"{source}: hps.gamma_schedule = {self.hps.gamma_schedule!r}; valid: {', '.join(SCHEDULE_KINDS)}")
        if self.hps.bt_negative_rule not in BT_RULES:
            raise ConfigError(f"{source}: hps.bt_negative_rule = {self.hps.bt_negative_rule!r}; valid: {', '.join(BT_RULES)}")
        for section in ("sft", "hps"):
            sec = getattr(self, section)
            for name in ("epochs", "batch_size", "grad_accum_steps", "log_every"):
                if getattr(sec, name) < 1:
                    raise ConfigError(f"{source}: {section}.{name} must be >= 1, got {getattr(sec, name)}")


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{prefix.rstrip('.') or 'top level'}] must be a table, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}' in {source}{hint}; valid keys here: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, source, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, prefix=f"{key}.")
    expected = {int: int, float: (int, float), str: str, bool: bool}.get(hint)
    if hint is Optional[str] and value is None:
        return None
    # bool is an int subclass in Python: reject `epochs = true` explicitly.
    if expected is None or isinstance(value, bool) != (hint is bool) or not isinstance(value, expected):
        raise ConfigError(f"{source}: {key} = {value!r} has the wrong type; expected {getattr(hint, '__name__', hint)}")
    return float(value) if hint is float else value


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Read a TOML config file (default: ``flows/configs/default.toml``) into a :class:`PipelineConfig`."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    return PipelineConfig.from_dict(raw, source=str(path))


def _config_path_from_argv() -> str:
    """The file Metaflow was given with ``--config config PATH``, for error messages only."""
    argv = sys.argv
    for i, arg in enumerate(argv[:-2]):
        if arg == "--config" and argv[i + 1] == "config":
            return argv[i + 2]
    return str(DEFAULT_CONFIG_PATH)


def parse_config_text(text: str) -> dict[str, Any]:
    """Metaflow ``Config`` parser: TOML text -> the fully resolved, validated config as a plain dict.

    Returning every key (defaults filled in) lets decorators read e.g. ``config.resources.gpu`` even
    when the file leaves that section out.
    """
    from metaflow.exception import MetaflowException

    source = _config_path_from_argv()
    try:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source} is not valid TOML: {err}") from err
        return PipelineConfig.from_dict(raw, source=source).to_dict()
    except ConfigError as err:
        # Metaflow prints its own exceptions as one clean message instead of a traceback.
        exc = MetaflowException(str(err))
        exc.headline = "Invalid HPS config"
        raise exc from None

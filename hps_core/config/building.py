"""Dataclasses from parsed TOML: unknown keys and wrong types are errors that name the key and the file."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from types import UnionType
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and says how to fix it."""


# Keys that existed once, with what replaced them: a config written for an older version gets the fix.
REMOVED_KEYS = {
    "hps.gamma_updates_per_epoch": "the gamma schedule is now evaluated at every optimizer step, so an epoch "
                                   "no longer needs splitting into parts; delete the key",
}


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{prefix.rstrip('.') or 'top level'}] must be a table, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if f"{prefix}{key}" in REMOVED_KEYS:
            raise ConfigError(f"config key '{prefix}{key}' in {source} was removed: {REMOVED_KEYS[prefix + key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}' in {source}{hint}; valid keys here: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, source, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    if get_origin(hint) in (Union, UnionType) and type(None) in get_args(hint) and hint is not Optional[str]:
        (inner,) = [a for a in get_args(hint) if a is not type(None)]  # `int | None`: a value, or unset
        return None if value is None else _coerce(inner, value, source, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, prefix=f"{key}.")
    if get_origin(hint) is tuple:  # a TOML array of tables, e.g. [[evaluate.extra_sets]]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} = {value!r} must be a list of tables ([[{key}]])")
        item = get_args(hint)[0]
        if not dataclasses.is_dataclass(item):  # a TOML array of scalars, e.g. methods = ["dpo-hps"]
            return tuple(_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value))
        return tuple(_build(item, v, source, prefix=f"{key}[{i}].") for i, v in enumerate(value))
    expected = {int: int, float: (int, float), str: str, bool: bool}.get(hint)
    if hint is Optional[str] and value is None:
        return None
    # bool is an int subclass in Python: reject `epochs = true` explicitly.
    if expected is None or isinstance(value, bool) != (hint is bool) or not isinstance(value, expected):
        raise ConfigError(f"{source}: {key} = {value!r} has the wrong type; expected {getattr(hint, '__name__', hint)}")
    return float(value) if hint is float else value


class ConfigRoot:
    """A whole config (PipelineConfig, the routing flow's RoutingConfig): built from a parsed TOML dict, its
    unknown keys and wrong types rejected by name, then checked as a whole (the subclass's ``check``)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>"):
        config = _build(cls, raw, source, prefix="")
        config.check(source)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, source: str = "<dict>") -> None:
        raise NotImplementedError


# Numeric settings carry their valid range next to their default (``lr: float = ranged(5e-4, "> 0")``), so
# a value a later step or library would refuse stops the config parse instead, naming key, value and range.
_BOUND = re.compile(r"^(?P<op>>=|<=|>|<) (?P<x>-?\d+(?:\.\d+)?)$")
_INTERVAL = re.compile(r"^(?P<lo>[\[(])(?P<a>-?\d+(?:\.\d+)?), (?P<b>-?\d+(?:\.\d+)?)(?P<hi>[\])])$")


def ranged(default: Any, spec: str) -> Any:
    """A dataclass field whose values must lie in ``spec``: ``"> 0"``, ``">= 1"``, ``"(0, 1)"``, ``"[0, 1)"``,
    ``"(0, 1]"``, ``"[0, 0.5)"``, ... or ``"any real"`` (a finite number)."""
    in_range(spec, default)  # a malformed spec fails at import, not at a user's config
    return dataclasses.field(default=default, metadata={"range": spec})


def in_range(spec: str, value: float) -> bool:
    if not math.isfinite(value):
        return False
    if spec == "any real":
        return True
    if m := _BOUND.match(spec):
        x = float(m["x"])
        return {">": value > x, ">=": value >= x, "<": value < x, "<=": value <= x}[m["op"]]
    if m := _INTERVAL.match(spec):
        a, b = float(m["a"]), float(m["b"])
        return (value > a if m["lo"] == "(" else value >= a) and (value < b if m["hi"] == ")" else value <= b)
    raise ValueError(f"range spec {spec!r}: write '> x', '>= x', '< x', '<= x', '(a, b)', '[a, b]', ... or 'any real'")


def range_problems(config: Any, source: str, prefix: str = "") -> list[str]:
    """Every numeric setting of ``config`` (recursively) outside its declared range, as messages naming the
    file, the key, the value and the range."""
    problems = []
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += range_problems(value, source, prefix=f"{key}.")
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                problems += range_problems(item, source, prefix=f"{key}[{i}].")
        elif "range" in f.metadata and not in_range(f.metadata["range"], value):
            problems.append(f"{source}: {key} = {value!r} is out of range; it must be {f.metadata['range']}")
    return problems

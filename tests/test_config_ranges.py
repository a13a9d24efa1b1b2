"""Every numeric setting has a range declared beside its default, and a value outside it is refused when the
config is parsed (at the flow's start), naming the file, the key, the value and the range: a config that a
later step or library would refuse must not cost a data step or a training first."""

import dataclasses
import re

import pytest

from hps_core.config import ConfigError, PipelineConfig, load_config
from hps_core.config.building import in_range


def numeric_keys(cls=PipelineConfig, prefix=""):
    """(dotted key, field) for every int/float setting of the config, recursively."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in hints.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            yield from numeric_keys(type(default), f"{prefix}{name}.")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            yield f"{prefix}{name}", f


def outside(spec: str, is_int: bool):
    """A value just outside ``spec`` (derived from the spec's text, not from the checker)."""
    if spec == "any real":
        return None if is_int else float("inf")
    if m := re.match(r"^(>=|>|<=|<) (-?[\d.]+)$", spec):
        op, x = m.group(1), float(m.group(2))
        value = {">=": x - 1, ">": x, "<=": x + 1, "<": x}[op]
        return int(value) if is_int else value
    m = re.match(r"^([\[(])(-?[\d.]+), (-?[\d.]+)([\])])$", spec)
    lo, a, b, hi = m.group(1), float(m.group(2)), float(m.group(3)), m.group(4)
    value = b if hi == ")" else (a if lo == "(" else b + 1)
    return int(value) if is_int else value


def nested(key: str, value):
    out = {}
    cur = out
    *parents, leaf = key.split(".")
    for part in parents:
        cur = cur.setdefault(part, {})
    cur[leaf] = value
    return out


KEYS = list(numeric_keys())


def test_every_numeric_setting_declares_its_range():
    missing = [key for key, f in KEYS if "range" not in f.metadata]
    assert missing == [], f"declare a range for these settings (hps_core.config.building.ranged): {missing}"
    assert len(KEYS) >= 60
    for key, f in KEYS:  # every default lies in its own range
        default = f.default
        assert in_range(f.metadata["range"], default), (key, default, f.metadata["range"])


@pytest.mark.parametrize("key,field", KEYS, ids=[k for k, _ in KEYS])
def test_a_value_outside_the_range_is_refused_at_parse_time(key, field):
    spec = field.metadata["range"]
    value = outside(spec, isinstance(field.default, int))
    if value is None:
        pytest.skip(f"{key}: every integer is in range ({spec})")
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict(nested(key, value), source="my.toml")
    assert "my.toml" in str(err.value) and key in str(err.value), str(err.value)


def test_the_message_names_file_key_value_and_range(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[sft]\nlr = -0.001\n[evaluate]\nmax_new_tokens = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}: sft.lr = -0.001 is out of range; it must be > 0" in message
    assert f"{path}: evaluate.max_new_tokens = 0 is out of range; it must be >= 1" in message


def test_range_specs_by_hand():
    assert in_range("> 0", 1e-9) and not in_range("> 0", 0.0)
    assert in_range("[0, 1)", 0.0) and not in_range("[0, 1)", 1.0)
    assert in_range("(0, 1]", 1.0) and not in_range("(0, 1]", 0.0)
    assert in_range("[0, 0.5)", 0.49) and not in_range("[0, 0.5)", 0.5)
    assert in_range("any real", -5.0) and not in_range("any real", float("nan"))
    with pytest.raises(ValueError, match="range spec"):
        in_range("positive", 1.0)

"""Config files: TOML -> a config dataclass, and the parsers Metaflow's ``Config`` calls. One implementation
for every flow's config (:class:`PipelineConfig` here, the routing flow's ``RoutingConfig`` too)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

from hps_core.config.building import ConfigError
from hps_core.config.schema import PipelineConfig

# The embedded default ships inside the package, so a plain `pip install` (no checkout) can load it.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "default.toml"


def load_toml_config(path: str | Path | None, cls: type, default_path: Path):
    """Read a TOML file (``default_path`` when ``path`` is None) into ``cls`` (a dataclass with ``from_dict``)."""
    path = Path(path) if path is not None else default_path
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    return cls.from_dict(raw, source=str(path))


def config_path_from_argv(default_path: Path) -> str:
    """The file Metaflow was given with ``--config config PATH``, for error messages only."""
    argv = sys.argv
    for i, arg in enumerate(argv[:-2]):
        if arg == "--config" and argv[i + 1] == "config":
            return argv[i + 2]
    return str(default_path)


def parse_toml_config_text(text: str, cls: type, default_path: Path, headline: str) -> dict[str, Any]:
    """Metaflow ``Config`` parser: TOML text -> the fully resolved, validated config as a plain dict.

    Returning every key (defaults filled in) lets decorators read e.g. ``config.resources.gpu`` even
    when the file leaves that section out. Errors reach Metaflow as one clean message, not a traceback.
    """
    from metaflow.exception import MetaflowException

    source = config_path_from_argv(default_path)
    try:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source} is not valid TOML: {err}") from err
        return cls.from_dict(raw, source=source).to_dict()
    except ConfigError as err:
        exc = MetaflowException(str(err))
        exc.headline = headline
        raise exc from None


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Read a TOML config file (default: the embedded ``hps_core/config/default.toml``) into a :class:`PipelineConfig`."""
    return load_toml_config(path, PipelineConfig, DEFAULT_CONFIG_PATH)


def parse_config_text(text: str) -> dict[str, Any]:
    """The hps, compare and expand flows' ``Config`` parser (``hps_core.config.parse_config_text``)."""
    return parse_toml_config_text(text, PipelineConfig, DEFAULT_CONFIG_PATH, "Invalid HPS config")

"""Binary tags per pairwise instance, the features of HyPER (Miranda et al., ACL 2025, section 3).

- **Text statistics**, each binned into thirds of the source data (``<stat>=low|mid|high``): prompt length,
  the longer and the shorter response's length, their difference (words), and the lexical overlap of the
  two responses (Jaccard of their word sets). Bin edges are the 1/3 and 2/3 quantiles (numpy's linear
  interpolation); ``low``: value <= q1/3, ``mid``: <= q2/3, ``high``: above. Edges are fitted once on the
  source data and kept in the :class:`TagSpace`, so a target dataset is tagged on the same scale.
- **Descriptive tags** (``<field>=<value>``): the data's own metadata fields (``domain``, ``safety_concern``,
  ``complexity``) and the columns a configured tagger returns (``features.tagger = "module:function"``).

A candidate mix is then summarised by how many human-routed instances carry each tag
(:func:`hps_core.routing.candidates.tag_counts`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hps_core.routing.config import STAT_NAMES
from hps_core.routing.multipref import TAG_PREFIX, tag_fields_present

BINS = ("low", "mid", "high")
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _overlap(a: str, b: str) -> float:
    wa, wb = set(words(a)), set(words(b))
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def _lengths(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    la = table["response_a"].map(lambda t: len(words(t))).to_numpy(float)
    lb = table["response_b"].map(lambda t: len(words(t))).to_numpy(float)
    return la, lb


STATS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "prompt_len": lambda t: t["prompt"].map(lambda s: len(words(s))).to_numpy(float),
    "response_len_longer": lambda t: np.maximum(*_lengths(t)),
    "response_len_shorter": lambda t: np.minimum(*_lengths(t)),
    "response_len_diff": lambda t: np.abs(np.subtract(*_lengths(t))),
    "overlap": lambda t: np.array([_overlap(a, b) for a, b in zip(t["response_a"], t["response_b"])], float),
}
assert tuple(STATS) == STAT_NAMES, "hps_core.routing.config.STAT_NAMES must name every statistic, in order"


def text_stats(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({name: STATS[name](table) for name in names}, index=table.index)


def tertile_edges(values: np.ndarray) -> tuple[float, float]:
    q1, q2 = np.quantile(np.asarray(values, float), [1 / 3, 2 / 3])
    return float(q1), float(q2)


def bin_thirds(values: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
    """``low`` / ``mid`` / ``high`` per value (``<= q1``, ``<= q2``, above)."""
    values = np.asarray(values, float)
    return np.where(values <= edges[0], "low", np.where(values <= edges[1], "mid", "high"))


@dataclass(frozen=True)
class TagSpace:
    """Which tags exist: bin edges per statistic and the values of each descriptive field, fitted on the
    source data. ``names`` fixes the order of tag columns (and of the PPM's count vector)."""

    edges: dict[str, tuple[float, float]]
    values: dict[str, list[str]]  # descriptive field (without the tag_ prefix) -> its values
    names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TagSpace":
        return cls({k: tuple(v) for k, v in d["edges"].items()}, {k: list(v) for k, v in d["values"].items()},
                   list(d["names"]))


def load_tagger(spec: str) -> Callable[[pd.DataFrame], pd.DataFrame] | None:
    """``"module:function"`` -> the function (None for ``""``); the error names what could not be found."""
    if not spec:
        return None
    module_name, _, func_name = spec.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"features.tagger = {spec!r}: cannot load it ({err}); give an importable 'module:function'") from err
    return func


def descriptive_columns(table: pd.DataFrame, descriptive: bool, tagger: Callable | None) -> pd.DataFrame:
    """Categorical tag columns: the data's ``tag_<field>`` columns (when ``descriptive``) and the tagger's."""
    out = pd.DataFrame(index=table.index)
    if descriptive:
        for col in tag_fields_present(table):
            out[col[len(TAG_PREFIX):]] = table[col]
    if tagger is not None:
        tagged = tagger(table)
        if not isinstance(tagged, pd.DataFrame) or len(tagged) != len(table):
            raise ValueError(f"the tagger must return a DataFrame with one row per instance ({len(table)}), "
                             f"got {type(tagged).__name__} of length {len(tagged) if hasattr(tagged, '__len__') else '?'}")
        for col in tagged.columns:
            out[str(col)] = tagged[col].to_numpy()
    return out


def fit_tag_space(table: pd.DataFrame, stats: list[str], descriptive: bool = True, tagger: Callable | None = None) -> TagSpace:
    values = text_stats(table, stats)
    edges = {name: tertile_edges(values[name].to_numpy()) for name in stats}
    desc = descriptive_columns(table, descriptive, tagger)
    levels = {col: sorted(str(v) for v in desc[col].dropna().unique()) for col in desc.columns}
    names = [f"{s}={b}" for s in stats for b in BINS] + [f"{c}={v}" for c, vs in levels.items() for v in vs]
    return TagSpace(edges, levels, names)


def tag_matrix(table: pd.DataFrame, space: TagSpace, descriptive: bool = True, tagger: Callable | None = None) -> pd.DataFrame:
    """One boolean column per tag of ``space`` (in its order), one row per instance of ``table``."""
    cols: dict[str, np.ndarray] = {}
    values = text_stats(table, list(space.edges))
    for stat, edges in space.edges.items():
        binned = bin_thirds(values[stat].to_numpy(), edges)
        for b in BINS:
            cols[f"{stat}={b}"] = binned == b
    desc = descriptive_columns(table, descriptive, tagger) if space.values else pd.DataFrame(index=table.index)
    for col, levels in space.values.items():
        column = desc[col].astype("string") if col in desc else pd.Series(pd.NA, index=table.index, dtype="string")
        for v in levels:
            cols[f"{col}={v}"] = (column == v).fillna(False).to_numpy(bool)
    return pd.DataFrame({name: cols[name] for name in space.names}, index=table.index)

"""``load_preferences``: any supported public format -> the canonical table (DESIGN.md section 4).

One path for every source: records are read (:mod:`hps_core.data.records`), the format is detected from
their columns unless given, each record goes through its format's adapter, and repeats of the same
(prompt, response) are merged (:func:`hps_core.data.canonical.build_table`). The adapters drop nothing:
a record they cannot read is an error naming file, line and field; a record they can read but that is
bad data (an empty response, a tie) goes into the table for the data contracts to report or quarantine.
What was read is summarised in ``table.attrs["load_report"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hps_core.config.vocab import DATA_FORMATS

from hps_core.data import generic, hh_rlhf, pku_saferlhf, scored_jsonl, ultrafeedback
from hps_core.data.canonical import build_table
from hps_core.data.records import DataFormatError, RawSource, read_source

SOURCE_OPTIONS = ("hf_split", "hf_config")  # how to read a hub id / dataset directory


@dataclass(frozen=True)
class Format:
    name: str
    matches: Callable[[set[str]], bool]
    rows: Callable[..., list[dict[str, Any]]]
    options: tuple[str, ...]
    pairwise: bool  # one record = one preference pair


FORMATS = {f.name: f for f in (
    Format(hh_rlhf.NAME, hh_rlhf.matches, hh_rlhf.rows, hh_rlhf.OPTIONS, True),
    Format(pku_saferlhf.NAME, pku_saferlhf.matches, pku_saferlhf.rows, pku_saferlhf.OPTIONS, True),
    Format(ultrafeedback.ORIGINAL, ultrafeedback.matches_original, ultrafeedback.rows_original,
           ultrafeedback.ORIGINAL_OPTIONS, False),
    Format(ultrafeedback.BINARIZED, ultrafeedback.matches_binarized, ultrafeedback.rows_binarized,
           ultrafeedback.BINARIZED_OPTIONS, True),
    Format(scored_jsonl.NAME, scored_jsonl.matches, scored_jsonl.rows, scored_jsonl.OPTIONS, False),
    Format(generic.NAME, generic.matches, generic.rows, generic.OPTIONS, False),
)}
assert tuple(FORMATS) == DATA_FORMATS, "config.vocab.DATA_FORMATS must name every adapter, in order"


@dataclass
class Loaded:
    table: pd.DataFrame  # canonical, ``split`` still empty
    raw_files: dict[str, str]  # path -> sha256 of its bytes
    report: dict[str, Any] = field(default_factory=dict)


def load_preferences(source: str | Path, format: str | None = None, **options: Any) -> pd.DataFrame:
    """Read ``source`` (a local .jsonl/.jsonl.gz/.json/.parquet/.csv file, a local dataset directory or a
    Hugging Face dataset id) into the canonical table, one row per (prompt, response).

    ``format``: one of :data:`FORMATS` (``hh-rlhf``, ``pku-saferlhf``, ``ultrafeedback``,
    ``ultrafeedback-binarized``, ``scored-jsonl``, ``generic``), or None / ``"auto"`` to detect it from the
    columns. ``options``: the format's options (e.g. ``ranking`` for PKU-SafeRLHF, ``prompt_column`` ... for
    ``generic``) and ``hf_split`` / ``hf_config`` for dataset ids. ``split`` is left empty (the pipeline
    assigns it by prompt hash). ``table.attrs["load_report"]`` counts what was read and merged.
    """
    loaded = load(source, format, options)
    loaded.table.attrs["load_report"] = loaded.report
    loaded.table.attrs["raw_files"] = loaded.raw_files
    return loaded.table


def load(source: str | Path, format: str | None, options: dict[str, Any], *, ignore_unused: bool = False) -> Loaded:
    """:func:`load_preferences` with its parts apart. ``ignore_unused`` lets one config carry the options
    of every format (only the chosen format's are used); called directly, an unknown option is an error."""
    options = dict(options)
    src = read_source(source, **{k: options.pop(k) for k in SOURCE_OPTIONS if options.get(k)})
    fmt = detect_format(src) if format in (None, "", "auto") else _known(format)
    unknown = set(options) - set(fmt.options)
    if unknown and not ignore_unused:
        raise ValueError(f"format {fmt.name!r} has no option(s) {sorted(unknown)}; it takes "
                         f"{list(fmt.options) or 'none'} (and {list(SOURCE_OPTIONS)} for dataset ids)")
    used = {k: v for k, v in options.items() if k in fmt.options and v not in (None, "")}
    if fmt.name == generic.NAME:
        generic.check_mapping(used)
    source_name = _source_name(src)
    rows: list[dict[str, Any]] = []
    for where, record in src.records:
        try:
            rows.extend(fmt.rows(record, where, source=source_name, **used))
        except DataFormatError:
            raise
        except (TypeError, AttributeError) as err:  # a field of an unexpected type deep in a record
            raise DataFormatError(f"{src.label} {where}: record does not fit format {fmt.name!r} ({err})") from err
    table, n_merged = build_table(rows)
    report = {"source": src.label, "format": fmt.name, "options": used, "records": len(src.records),
              "rows_read": len(rows), "rows": len(table), "prompts": int(table["prompt_id"].nunique()),
              "duplicate_rows_merged": n_merged, "excluded_records": 0, "notes": _notes(fmt, table)}
    if fmt.pairwise:
        report["pairs"] = len(src.records)
    return Loaded(table=table, raw_files=src.raw_files, report=report)


def detect_format(src: RawSource) -> Format:
    columns = set(src.columns)
    found = [f for f in FORMATS.values() if f.matches(columns)]
    if len(found) == 1:
        return found[0]
    supported = ", ".join(FORMATS)
    if not found:
        raise DataFormatError(
            f"{src.label}: cannot tell the data format from its columns {sorted(columns)}. Supported formats: "
            f"{supported} (see hps_core/data/<format>.py for the columns each needs); for other columns set "
            "data.format = \"generic\" and name them in [data.columns]")
    raise DataFormatError(f"{src.label}: columns {sorted(columns)} fit several formats "
                          f"({', '.join(f.name for f in found)}); set data.format to one of them")


def _known(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown data format {name!r}; supported: auto, {', '.join(FORMATS)}")
    return FORMATS[name]


def _source_name(src: RawSource) -> str:
    digests = sorted(src.raw_files.values())
    return f"{src.name}@sha256:{digests[0][:12]}" if len(digests) == 1 else src.name


def _notes(fmt: Format, table: pd.DataFrame) -> dict[str, Any]:
    """Things worth knowing that are not errors: where, so a reviewer can look (the contracts decide)."""
    notes: dict[str, Any] = {}
    blank = table["response"].str.strip() == ""
    if blank.any():
        notes["empty_responses"] = {"count": int(blank.sum()), "origins": table.loc[blank, "origin"].tolist()[:20]}
    if fmt.name == hh_rlhf.NAME:
        extra = table["response"].map(hh_rlhf.has_extra_turns)
        if extra.any():
            notes["responses_with_extra_turns"] = {"count": int(extra.sum()),
                                                   "origins": table.loc[extra, "origin"].tolist()[:20]}
    return notes


def read_scored_jsonl(path, *, source_name: str | None = None, label_source: str = "rm"):
    """The canonical table of one scored JSONL file (``split`` empty); kept for callers of the first
    version of this module. New code: ``hps_core.data.load_preferences(path, format="scored-jsonl")``."""
    table = load(path, scored_jsonl.NAME, {"label_source": label_source}).table
    if source_name is not None:
        table["source"] = source_name
    return table

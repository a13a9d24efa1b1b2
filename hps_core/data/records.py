"""Raw records out of a local file or a Hugging Face dataset, each with the place it came from.

Local files are read here, not through ``datasets``: a bad line must become an error that names the
file and the line (issue 4.4), where a JSON/Arrow reader would stop deep inside a library with neither.
Hub ids and local dataset directories go through ``datasets.load_dataset`` and are named by row.
Either way every adapter sees the same thing: ``(where, record)`` pairs of plain Python values.
"""

from __future__ import annotations

import gzip
import zlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hps_core.common.digests import file_sha256

LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")


class DataFormatError(ValueError):
    """Raw data could not be read; the message names the file, the line or row, and the field."""


@dataclass
class RawSource:
    """Where the records come from: a display name, the digests of the raw bytes, and the records."""

    name: str  # short name used in the canonical ``source`` column
    label: str  # what error messages call the source (a path or a hub id)
    raw_files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of its bytes
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (where, record)

    @property
    def columns(self) -> list[str]:
        """Keys seen in the first records (enough to detect the format; adapters check every record)."""
        seen: dict[str, None] = {}
        for _, record in self.records[:100]:
            seen.update(dict.fromkeys(record))
        return list(seen)


def read_source(source: str | Path, *, hf_split: str = "train", hf_config: str | None = None) -> RawSource:
    """Read every record of ``source``: a local file (by suffix), a local dataset directory, or a hub id."""
    path = Path(str(source)).expanduser()
    if path.is_file():
        return _read_file(path.resolve())
    if path.is_dir() or (not path.exists() and _looks_like_hub_id(str(source))):
        return _read_hf(str(source), hf_split, hf_config)
    raise DataFormatError(
        f"data source {str(source)!r} is neither an existing file, a dataset directory nor a hub id "
        f"('owner/name'); give a local {'/'.join(LOCAL_SUFFIXES)} file or a dataset id")


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not s.startswith((".", "~")) and not s.endswith(LOCAL_SUFFIXES)


def _read_file(path: Path) -> RawSource:
    name = path.name.lower()
    suffix = next((s for s in sorted(LOCAL_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)
    if suffix is None:
        raise DataFormatError(f"{path}: unknown file type; supported: {', '.join(LOCAL_SUFFIXES)}")
    digest = file_sha256(path)
    src = RawSource(name=path.name, label=str(path), raw_files={str(path): digest})
    try:
        if suffix in (".jsonl", ".jsonl.gz"):
            src.records = list(_jsonl_records(path))
        elif suffix in (".json", ".json.gz"):
            src.records = list(_json_records(path))
        elif suffix == ".parquet":
            src.records = _table_records(path, _arrow_parquet(path))
        else:
            src.records = _table_records(path, _arrow_csv(path))
    except UnicodeDecodeError as err:
        line = _line_of_byte(path, err.start) if suffix.startswith(".json") else None
        where = f"{path}:{line}" if line else str(path)
        raise DataFormatError(f"{where}: not valid UTF-8 ({err.reason}); re-encode the file as UTF-8") from err
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # a cut-off download or a damaged copy
        lines, at = _gzip_readable_prefix(path)
        raise DataFormatError(
            f"{path}: the gzip data is truncated or corrupt ({err or type(err).__name__}): it breaks after "
            f"{lines} complete line(s), at compressed byte {at} of {path.stat().st_size}; download or copy the "
            "file again (`gzip -t` checks a file)") from err
    if not src.records:
        raise DataFormatError(f"{path}: no records found")
    return src


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield f"{path.name}:{line_no}", _parse_line(line, path, line_no)


def _parse_line(line: str, path: Path, line_no: int) -> dict[str, Any]:
    try:
        record = json.loads(line)  # NaN/Infinity parse to floats; the adapter names the field
    except ValueError as err:
        msg = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        col = f" at column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise DataFormatError(f"{path}:{line_no}: malformed JSON ({msg}{col}); fix or remove the line") from err
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
    return record


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path) as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from err
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # the {"data": [...]} wrapper some exports use
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON array of objects (or JSON lines), got {type(data).__name__}")
    for i, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}: record {i}: expected a JSON object, got {type(record).__name__}")
        yield f"{path.name}: record {i}", record


def _arrow_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataFormatError(f"{path}: not a readable parquet file ({err})") from err


def _arrow_csv(path: Path):
    import pyarrow.csv as pcsv

    try:
        return pcsv.read_csv(path)
    except Exception as err:  # pyarrow.lib.ArrowInvalid names the row; pass its message on
        raise DataFormatError(f"{path}: not a readable CSV file ({err})") from err


def _table_records(path: Path, table) -> list[tuple[str, dict[str, Any]]]:
    # Row numbers count data rows from 1 (a CSV's header line is line 1, so row r is line r + 1).
    line = " (line {})" if path.name.lower().endswith((".csv", ".csv.gz")) else ""
    return [(f"{path.name}: row {i}" + line.format(i + 1), rec) for i, rec in enumerate(table.to_pylist(), start=1)]


def _read_hf(source: str, split: str, config: str | None) -> RawSource:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a dependency
        raise DataFormatError(f"{source!r} looks like a dataset id, but `datasets` is not installed") from err
    try:
        ds = datasets.load_dataset(source, config or None, split=split)
    except Exception as err:  # hub offline, unknown id, bad split: say which and how to fix
        raise DataFormatError(
            f"could not load dataset {source!r} (config {config!r}, split {split!r}) with datasets.load_dataset: "
            f"{type(err).__name__}: {err}. Check the id/path and data.hf_split, or download the files and "
            "point data.source at a local file") from err
    raw_files = {}
    for info in getattr(ds, "cache_files", []) or []:
        p = Path(info.get("filename", ""))
        if p.is_file():
            raw_files[str(p)] = file_sha256(p)
    label = f"{source}[{split}]"
    records = [(f"{label}: row {i}", rec) for i, rec in enumerate(ds, start=1)]
    if not records:
        raise DataFormatError(f"{label}: no records found")
    return RawSource(name=Path(source).name or source, label=label, raw_files=raw_files, records=records)


def _gzip_readable_prefix(path: Path) -> tuple[int, int]:
    """How far a damaged gzip file can be read: (complete lines decompressed, compressed bytes consumed)."""
    decomp, lines, consumed = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 16):
            try:
                lines += decomp.decompress(chunk).count(b"\n")
            except zlib.error:
                break
            consumed += len(chunk)
            if decomp.eof:
                break
    return lines, consumed


def _line_of_byte(path: Path, offset: int) -> int | None:
    """1-based line holding decoded byte ``offset`` (for a non-UTF-8 error; the decoder gives only a byte)."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The decoder reports the offset inside its current chunk, so search for the first bad line instead.
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return line_no
    return None


# --------------------------------------------------------------------------- field checks for adapters
def require(record: dict[str, Any], where: str, *keys: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {missing} (found: {sorted(record)})")


def text_field(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: field {key!r} must be a string, got {type(value).__name__} ({_short(value)})")
    return value


def number_field(value: Any, field_name: str, where: str) -> float:
    """A finite number; NaN, inf, null, bools and strings are errors naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataFormatError(f"{where}: {field_name} = {_short(value)} is not a finite number; "
                              "score the record or drop it from the file")
    return float(value)


def bool_field(value: Any, field_name: str, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise DataFormatError(f"{where}: {field_name} = {_short(value)} must be true, false or null")
    return value


def _short(value: Any, n: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."

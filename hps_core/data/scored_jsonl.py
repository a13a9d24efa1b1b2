"""Adapter for the reference HPS format: JSONL rows of ``prompt``, ``responses`` (list), ``rewards`` (list),
with an optional ``is_harmful`` list (our generated world adds it)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd

from hps_core.data.canonical import normalise_dtypes, prompt_id, response_id


class DataFormatError(ValueError):
    """Raw data could not be read; the message names the file, the line and the field."""


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_scored_jsonl(path: str | Path, *, source_name: str, label_source: str = "rm") -> pd.DataFrame:
    """Read a scored multi-response JSONL file into canonical rows (``split`` left empty)."""
    path = Path(path)
    rows: list[dict] = []
    try:
        with _open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                rows.extend(_rows_of(_parse(line, path, line_no), path, line_no, source_name, label_source))
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not valid UTF-8 ({err}); re-encode the file as UTF-8") from err
    if not rows:
        raise DataFormatError(f"{path}: no records found")
    table = pd.DataFrame(rows)
    table["split"] = ""
    return normalise_dtypes(table)


def _parse(line: str, path: Path, line_no: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{line_no}: malformed JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
    return record


def _rows_of(record: dict, path: Path, line_no: int, source_name: str, label_source: str) -> list[dict]:
    where = f"{path}:{line_no}"
    for key in ("prompt", "responses", "rewards"):
        if key not in record:
            raise DataFormatError(f"{where}: missing field {key!r} (found: {sorted(record)})")
    prompt, responses, rewards = record["prompt"], record["responses"], record["rewards"]
    if not isinstance(prompt, str):
        raise DataFormatError(f"{where}: field 'prompt' must be a string, got {type(prompt).__name__}")
    if not isinstance(responses, list) or not isinstance(rewards, list) or len(responses) != len(rewards):
        raise DataFormatError(f"{where}: 'responses' and 'rewards' must be lists of equal length")
    harmful = record.get("is_harmful", [None] * len(responses))
    if not isinstance(harmful, list) or len(harmful) != len(responses):
        raise DataFormatError(f"{where}: 'is_harmful' must be a list as long as 'responses'")
    pid = prompt_id(prompt)
    rows = []
    for j, (text, score, flag) in enumerate(zip(responses, rewards, harmful)):
        if not isinstance(text, str):
            raise DataFormatError(f"{where}: responses[{j}] must be a string, got {type(text).__name__}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataFormatError(f"{where}: rewards[{j}] = {score!r} is not a finite number")
        if flag is not None and not isinstance(flag, bool):
            raise DataFormatError(f"{where}: is_harmful[{j}] = {flag!r} must be true, false or null")
        rows.append(
            {
                "prompt_id": pid,
                "prompt": prompt,
                "response_id": response_id(pid, text),
                "response": text,
                "score": float(score),
                "is_harmful": flag,
                "label_source": label_source,
                "source": source_name,
            }
        )
    return rows

"""Adapter for PKU-SafeRLHF: one prompt, two responses, each with a safety flag, plus which response is
better (helpfulness) and which is safer (harm categories and severity are kept out of the canonical table).

    {"prompt": "...", "response_0": "...", "response_1": "...", "is_response_0_safe": true,
     "is_response_1_safe": false, "better_response_id": 1, "safer_response_id": 0, ...}

``is_harmful`` is the negation of the safety flag. Which response is preferred is the ``ranking`` option:

- ``"safer_then_better"`` (default): the safe response when exactly one is safe; when both or neither are
  safe, safety does not separate them and the better one is preferred;
- ``"safer"``: ``safer_response_id``;  ``"better"``: ``better_response_id``.

The preferred response scores 1.0, the other 0.0 (``label_source = "human"``).
"""

from __future__ import annotations

from typing import Any

from hps_core.config.vocab import PKU_RANKINGS
from hps_core.data.canonical import make_row
from hps_core.data.records import DataFormatError, bool_field, require, text_field

NAME = "pku-saferlhf"
OPTIONS = ("ranking",)
RANKINGS = PKU_RANKINGS  # declared in hps_core.config.vocab (the config check reads it there)
REQUIRED = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
            "better_response_id", "safer_response_id")


def matches(columns: set[str]) -> bool:
    return set(REQUIRED) <= columns


def preferred_index(safe: tuple[bool, bool], better: int, safer: int, ranking: str) -> int:
    """Index (0 or 1) of the preferred response.

    >>> preferred_index((True, False), better=1, safer=0, ranking="safer_then_better")
    0
    >>> preferred_index((True, True), better=1, safer=0, ranking="safer_then_better")
    1
    """
    if ranking == "better":
        return better
    if ranking == "safer":
        return safer
    if ranking == "safer_then_better":
        return better if safe[0] == safe[1] else (0 if safe[0] else 1)
    raise ValueError(f"PKU-SafeRLHF ranking {ranking!r} is unknown; valid: {', '.join(RANKINGS)}")


def rows(record: dict[str, Any], where: str, *, source: str, ranking: str = "safer_then_better") -> list[dict[str, Any]]:
    if ranking not in RANKINGS:
        raise ValueError(f"PKU-SafeRLHF ranking {ranking!r} is unknown; valid: {', '.join(RANKINGS)}")
    require(record, where, *REQUIRED)
    prompt = text_field(record, "prompt", where)
    texts = [text_field(record, f"response_{i}", where) for i in (0, 1)]
    safe = []
    for i in (0, 1):
        flag = bool_field(record[f"is_response_{i}_safe"], f"is_response_{i}_safe", where)
        if flag is None:
            raise DataFormatError(f"{where}: is_response_{i}_safe is null; PKU-SafeRLHF labels every response")
        safe.append(flag)
    ids = [_response_index(record, key, where) for key in ("better_response_id", "safer_response_id")]
    best = preferred_index((safe[0], safe[1]), ids[0], ids[1], ranking)
    return [
        make_row(prompt, texts[i], 1.0 if i == best else 0.0, is_harmful=not safe[i], label_source="human",
                 source=source, origin=where)
        for i in (best, 1 - best)
    ]


def _response_index(record: dict[str, Any], key: str, where: str) -> int:
    value = record[key]
    if isinstance(value, bool) or value not in (0, 1):
        raise DataFormatError(f"{where}: {key} = {value!r} must be 0 or 1")
    return int(value)

"""Generic adapter: the config names the columns (``[data.columns]``, or keyword options of
``load_preferences(..., format="generic", prompt_column=..., ...)``). Two shapes:

- one row per response: ``prompt_column``, ``response_column``, ``score_column`` (rows sharing a prompt
  form its group);
- one row per pair: ``prompt_column``, ``chosen_column``, ``rejected_column``, and optionally
  ``score_chosen_column`` / ``score_rejected_column`` (else chosen scores 1.0 and rejected 0.0).

``is_harmful_column`` (optional) holds a boolean per row (per-response shape only); ``label_source``
(default ``"human"``) says who produced the scores.
"""

from __future__ import annotations

from typing import Any

from hps_core.data.canonical import make_row
from hps_core.data.records import bool_field, number_field, require, text_field

NAME = "generic"
OPTIONS = ("prompt_column", "response_column", "score_column", "chosen_column", "rejected_column",
           "score_chosen_column", "score_rejected_column", "is_harmful_column", "label_source")


def matches(columns: set[str]) -> bool:
    return False  # never guessed: the mapping must be given


def check_mapping(options: dict[str, Any]) -> None:
    """Reject a mapping that names neither shape completely, saying which keys are needed."""
    given = {k for k, v in options.items() if v}
    long_shape = {"prompt_column", "response_column", "score_column"}
    pair_shape = {"prompt_column", "chosen_column", "rejected_column"}
    if not (long_shape <= given or pair_shape <= given):
        raise ValueError(
            "format 'generic' needs column names: either prompt_column, response_column and score_column "
            "(one row per response) or prompt_column, chosen_column and rejected_column (one row per pair); "
            f"given: {sorted(given) or 'none'} (config: [data.columns])")
    if long_shape <= given and {"chosen_column", "rejected_column"} & given:
        raise ValueError("format 'generic': give response_column/score_column or chosen_column/rejected_column, "
                         "not both (config: [data.columns])")


def rows(record: dict[str, Any], where: str, *, source: str, prompt_column: str = "", response_column: str = "",
         score_column: str = "", chosen_column: str = "", rejected_column: str = "", score_chosen_column: str = "",
         score_rejected_column: str = "", is_harmful_column: str = "", label_source: str = "human") -> list[dict[str, Any]]:
    require(record, where, prompt_column)
    prompt = text_field(record, prompt_column, where)
    common = {"label_source": label_source, "source": source, "origin": where}
    if response_column:
        require(record, where, response_column, score_column)
        harm = bool_field(record.get(is_harmful_column), is_harmful_column, where) if is_harmful_column else None
        return [make_row(prompt, text_field(record, response_column, where),
                         number_field(record[score_column], score_column, where), is_harmful=harm, **common)]
    require(record, where, chosen_column, rejected_column)
    scores = [1.0, 0.0]
    for i, col in enumerate((score_chosen_column, score_rejected_column)):
        if col:
            require(record, where, col)
            scores[i] = number_field(record[col], col, where)
    return [make_row(prompt, text_field(record, chosen_column, where), scores[0], is_harmful=None, **common),
            make_row(prompt, text_field(record, rejected_column, where), scores[1], is_harmful=None, **common)]

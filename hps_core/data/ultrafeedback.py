"""Adapters for UltraFeedback in its two public shapes (scores are GPT-4 ratings: ``label_source = "ai"``).

Original multi-completion rows (openbmb/UltraFeedback): one instruction, several completions, each with
an ``overall_score`` and a ``fine-grained_score`` (the mean of its per-aspect ratings):

    {"instruction": "...", "completions": [{"model": "...", "response": "...", "overall_score": 7.5,
      "fine-grained_score": 4.25, "annotations": {"helpfulness": {"Rating": "4", ...}, ...}}, ...]}

Every completion becomes a row; the ``score`` option picks ``"overall"`` (default) or ``"fine_grained"``.
This is the multi-response shape where HPS differs from pair losses.

Binarized chat rows (HuggingFaceH4/ultrafeedback_binarized): ``prompt``, ``chosen`` / ``rejected`` message
lists ending in the assistant's answer, ``score_chosen``, ``score_rejected``. The prompt is the message list
before that answer (which must be the same in both), the responses are the two answers.
"""

from __future__ import annotations

from typing import Any

from hps_core.config.vocab import ULTRAFEEDBACK_SCORES
from hps_core.data.canonical import chat_prompt, make_row
from hps_core.data.records import DataFormatError, number_field, require, text_field

ORIGINAL = "ultrafeedback"
BINARIZED = "ultrafeedback-binarized"
ORIGINAL_OPTIONS = ("score",)
BINARIZED_OPTIONS: tuple[str, ...] = ()
SCORE_FIELDS = {"overall": "overall_score", "fine_grained": "fine-grained_score"}
assert tuple(SCORE_FIELDS) == ULTRAFEEDBACK_SCORES, "config.vocab.ULTRAFEEDBACK_SCORES must name every score field"


def matches_original(columns: set[str]) -> bool:
    return {"instruction", "completions"} <= columns


def matches_binarized(columns: set[str]) -> bool:
    return {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= columns


def rows_original(record: dict[str, Any], where: str, *, source: str, score: str = "overall") -> list[dict[str, Any]]:
    if score not in SCORE_FIELDS:
        raise ValueError(f"UltraFeedback score {score!r} is unknown; valid: {', '.join(SCORE_FIELDS)}")
    require(record, where, "instruction", "completions")
    prompt = text_field(record, "instruction", where)
    completions = record["completions"]
    if not isinstance(completions, list):
        raise DataFormatError(f"{where}: field 'completions' must be a list, got {type(completions).__name__}")
    key = SCORE_FIELDS[score]
    out = []
    for j, completion in enumerate(completions):
        at = f"{where}: completions[{j}]"
        if not isinstance(completion, dict):
            raise DataFormatError(f"{at} must be an object, got {type(completion).__name__}")
        require(completion, at, "response", key)
        text = text_field(completion, "response", at)
        value = number_field(completion[key], f"completions[{j}].{key}", where)
        out.append(make_row(prompt, text, value, is_harmful=None, label_source="ai", source=source, origin=where))
    return out


def rows_binarized(record: dict[str, Any], where: str, *, source: str) -> list[dict[str, Any]]:
    require(record, where, "chosen", "rejected", "score_chosen", "score_rejected")
    prefix, good = _split_chat(record["chosen"], "chosen", where)
    other_prefix, bad = _split_chat(record["rejected"], "rejected", where)
    if prefix != other_prefix:
        raise DataFormatError(f"{where}: 'chosen' and 'rejected' hold different conversations before the "
                              "final assistant message; a pair must answer the same prompt")
    if not prefix:  # some exports keep only the answers; the prompt then comes from the prompt field
        prompt = text_field(record, "prompt", where)
    else:
        prompt = chat_prompt(prefix)
    common = {"is_harmful": None, "label_source": "ai", "source": source, "origin": where}
    return [make_row(prompt, good, number_field(record["score_chosen"], "score_chosen", where), **common),
            make_row(prompt, bad, number_field(record["score_rejected"], "score_rejected", where), **common)]


def _split_chat(messages: Any, name: str, where: str) -> tuple[list[dict[str, Any]], str]:
    """(messages before the final assistant turn, that turn's text)."""
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(f"{where}: field {name!r} must be a non-empty list of chat messages, "
                              f"got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataFormatError(f"{where}: {name}[{i}] must be {{'role': str, 'content': str}}, got {m!r:.80}")
    if messages[-1]["role"] != "assistant":
        raise DataFormatError(f"{where}: the last message of {name!r} has role {messages[-1]['role']!r}; "
                              "expected the assistant's answer")
    return messages[:-1], messages[-1]["content"]

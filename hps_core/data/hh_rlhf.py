"""Adapter for Anthropic HH-RLHF: ``chosen`` / ``rejected`` each hold a whole transcript.

    "\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Help me\\n\\nAssistant: Sure, ..."

The prompt is the prefix both transcripts share, cut after its last "\\n\\nAssistant:" (multi-turn
conversations included); the responses are what follows, stripped; chosen is preferred (score 1.0,
rejected 0.0, ``label_source = "human"``). Pairs sharing a prompt merge into one group (see
:func:`hps_core.data.canonical.build_table`).

Cutting at the *shared* prefix rather than at each transcript's own last "Assistant:" matters: in a few
public records (5 of the 2,312 of harmless-base test) one transcript holds extra turns glued into the
response ("...  Human: ...\\n\\nAssistant: ..."); cutting each transcript separately would give the two
responses different prompts and split the pair.
"""

from __future__ import annotations

import os
from typing import Any

from hps_core.data.canonical import make_row
from hps_core.data.records import DataFormatError, require, text_field

NAME = "hh-rlhf"
OPTIONS: tuple[str, ...] = ()
ASSISTANT = "\n\nAssistant:"
TURN_MARKERS = ("\n\nHuman:", ASSISTANT)


def matches(columns: set[str]) -> bool:
    return {"chosen", "rejected"} <= columns and "prompt" not in columns


def split_pair(chosen: str, rejected: str, where: str = "") -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of two transcripts.

    >>> split_pair("\\n\\nHuman: Hi\\n\\nAssistant: Hello", "\\n\\nHuman: Hi\\n\\nAssistant: Go away")
    ('\\n\\nHuman: Hi\\n\\nAssistant:', 'Hello', 'Go away')
    """
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(ASSISTANT, 0, shared)  # the whole marker must lie inside the shared prefix
    if cut < 0:
        raise DataFormatError(
            f"{where}: fields 'chosen' and 'rejected' share no prefix ending in {ASSISTANT!r}, so no prompt "
            "can be cut from them; HH-RLHF records hold two transcripts of the same conversation")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


def rows(record: dict[str, Any], where: str, *, source: str) -> list[dict[str, Any]]:
    require(record, where, "chosen", "rejected")
    prompt, good, bad = split_pair(text_field(record, "chosen", where), text_field(record, "rejected", where), where)
    common = {"is_harmful": None, "label_source": "human", "source": source, "origin": where}
    return [make_row(prompt, good, 1.0, **common), make_row(prompt, bad, 0.0, **common)]


def has_extra_turns(response: str) -> bool:
    """The response holds a further turn marker (a transcript glued into the response)."""
    return any(m in response for m in TURN_MARKERS)

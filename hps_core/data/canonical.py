"""The canonical preference table: one row per (prompt, response), flat so data contracts can check it.

Columns (DESIGN.md section 4): ``prompt_id`` (stable hash of the prompt text), ``prompt``, ``response_id``,
``response``, ``score``, ``is_harmful`` (nullable bool), ``label_source`` (human | ai | rm), ``source``
(dataset name and raw-file digest), ``split`` (train | eval | reward, by a hash of the prompt id; ``reward``: pairs for the reward model only).

Optional column ``origin`` (``file:line`` or ``file: row n`` of every raw record a row came from) lets a
contract report point at the raw data; it is not part of the content digest (moving a line within the
file does not change the data).

Prompts are text. A chat prompt of one user message is that message's text; a longer conversation is
stored as its JSON message list (``[{"role": ..., "content": ...}, ...]``), see :func:`chat_prompt`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = (
    "prompt_id",
    "prompt",
    "response_id",
    "response",
    "score",
    "is_harmful",
    "label_source",
    "source",
    "split",
)
OPTIONAL_COLUMNS = ("origin",)


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt: the same text always gets the same id, across runs and machines."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def response_id(prompt_key: str, response: str) -> str:
    return hashlib.sha256(f"{prompt_key}\0{response}".encode("utf-8")).hexdigest()[:16]


def assign_split(prompt_ids: pd.Series, eval_fraction: float, seed: int = 0, reward_fraction: float = 0.0) -> pd.Series:
    """Deterministic split by a hash of (seed, prompt id): ``eval`` for a bucket below ``eval_fraction``,
    ``reward`` (pairs only the reward model trains on) for the next ``reward_fraction``, else ``train``. A
    prompt never lands in two splits, adding rows to a dataset does not move existing prompts, and a
    ``reward_fraction`` of 0 gives the same split as before it existed."""

    def split(pid: str) -> str:
        digest = hashlib.sha256(f"{seed}:{pid}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") / 2**64
        return "eval" if bucket < eval_fraction else "reward" if bucket < eval_fraction + reward_fraction else "train"

    return prompt_ids.map(split)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in COLUMNS})


_DTYPES = {
    "prompt_id": "string",
    "prompt": "string",
    "response_id": "string",
    "response": "string",
    "score": "float64",
    "is_harmful": "boolean",
    "label_source": "string",
    "source": "string",
    "split": "string",
    "origin": "string",
}


def normalise_dtypes(table: pd.DataFrame) -> pd.DataFrame:
    """Cast to the canonical dtypes and column order (a missing column is an adapter bug)."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"canonical table is missing columns {missing}")
    cols = list(COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in table.columns]
    return table.loc[:, cols].astype({c: _DTYPES.get(c, "string") for c in cols}).reset_index(drop=True)


def chat_prompt(messages: list[dict[str, Any]]) -> str:
    """Prompt text of a chat message list: one user message is its content, longer conversations their
    JSON (so the prompt id of a conversation covers every turn and role)."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return str(messages[0].get("content", ""))
    return json.dumps([{"role": m.get("role"), "content": m.get("content")} for m in messages], ensure_ascii=False)


def make_row(prompt: str, response: str, score: float, *, is_harmful: bool | None, label_source: str,
             source: str, origin: str) -> dict[str, Any]:
    """One canonical row; ids are content hashes, so the same prompt/response always gets the same ids."""
    pid = prompt_id(prompt)
    return {"prompt_id": pid, "prompt": prompt, "response_id": response_id(pid, response), "response": response,
            "score": score, "is_harmful": is_harmful, "label_source": label_source, "source": source,
            "origin": origin}


def build_table(rows: Iterable[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """Canonical table from adapter rows, with repeats of the same (prompt, response) merged into one row.

    Pairwise data repeats a response whenever it was compared more than once (and whole records are
    repeated in some public files); ids must stay unique, so a repeat becomes one row whose score is the
    mean of its scores (for pairs: the share of comparisons it won), harmful if any occurrence says so,
    and whose ``origin`` lists every raw record. Returns the table and how many rows were merged away.
    """
    table = pd.DataFrame(list(rows))
    if table.empty:
        return empty_table(), 0
    n_merged = int(table.duplicated(["prompt_id", "response_id"]).sum())
    if n_merged:
        g = table.groupby(["prompt_id", "response_id"], sort=False)  # first-appearance order (ties rank by it)
        harm = table["is_harmful"].map({True: 1.0, False: 0.0})
        any_harm = harm.groupby([table["prompt_id"], table["response_id"]], sort=False).max()
        merged = g.first()
        merged["score"] = g["score"].mean()
        merged["origin"] = g["origin"].agg(";".join)
        merged["is_harmful"] = [None if pd.isna(h) else bool(h) for h in any_harm.reindex(merged.index)]
        table = merged.reset_index()
    table["split"] = ""
    return normalise_dtypes(table), n_merged


def table_digest(table: pd.DataFrame) -> str:
    """Order-independent sha256 of the table's content: one hash per row, sorted, then hashed."""
    row_hashes = pd.util.hash_pandas_object(table.loc[:, list(COLUMNS)], index=False).to_numpy()
    row_hashes = np.sort(row_hashes)
    h = hashlib.sha256()
    h.update(",".join(COLUMNS).encode())
    h.update(row_hashes.tobytes())
    return h.hexdigest()

"""The canonical preference table: one row per (prompt, response), flat so data contracts can check it.

Columns (DESIGN.md section 4): ``prompt_id`` (stable hash of the prompt text), ``prompt``, ``response_id``,
``response``, ``score``, ``is_harmful`` (nullable bool), ``label_source`` (human | ai | rm), ``source``
(dataset name and raw-file digest), ``split`` (train | eval, by a hash of the prompt id).
"""

from __future__ import annotations

import hashlib

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


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt: the same text always gets the same id, across runs and machines."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def response_id(prompt_key: str, response: str) -> str:
    return hashlib.sha256(f"{prompt_key}\0{response}".encode("utf-8")).hexdigest()[:16]


def assign_split(prompt_ids: pd.Series, eval_fraction: float, seed: int = 0) -> pd.Series:
    """Deterministic train/eval split by a hash of (seed, prompt id): a prompt never lands in both, and
    adding rows to a dataset does not move existing prompts between splits."""

    def bucket(pid: str) -> float:
        digest = hashlib.sha256(f"{seed}:{pid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return prompt_ids.map(lambda pid: "eval" if bucket(pid) < eval_fraction else "train")


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
}


def normalise_dtypes(table: pd.DataFrame) -> pd.DataFrame:
    """Cast to the canonical dtypes and column order (a missing column is an adapter bug)."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"canonical table is missing columns {missing}")
    return table.loc[:, list(COLUMNS)].astype(_DTYPES).reset_index(drop=True)


def table_digest(table: pd.DataFrame) -> str:
    """Order-independent sha256 of the table's content: one hash per row, sorted, then hashed."""
    row_hashes = pd.util.hash_pandas_object(table.loc[:, list(COLUMNS)], index=False).to_numpy()
    row_hashes = np.sort(row_hashes)
    h = hashlib.sha256()
    h.update(",".join(COLUMNS).encode())
    h.update(row_hashes.tobytes())
    return h.hexdigest()

"""The derived tables the suites check: per-row flags (`row_checks`), per-prompt counts (`group_counts`) and
pairwise flags (`pair_checks`), and the text normalisation they share ("the same text up to case and
whitespace").

Built for 1.6M-row tables (16k prompts x 100 responses): every text is normalised once per distinct value
(prompts repeat once per response), the costly whitespace regex runs only on the texts it would change, and
texts are compared as integer codes, never as full-length string columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

GROUP_INPUT_COLUMNS = ("prompt_id", "prompt", "response", "score", "split")  # what group_counts reads
CHUNK_ROWS = 200_000  # rows whose texts are coded at once (a bound on the copies normalisation makes)

# What Python's `re` calls whitespace (`\s` in a str pattern): the normalisation collapses runs of these into
# one space. Listed, not written `\s`, so that the filter below means the same under pyarrow's RE2 (whose `\s`
# is ASCII only) as under `re` (tests/test_contracts.py checks the list against `re`).
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                 "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# A text the collapse changes has two whitespace characters in a row or one that is not a plain space.
_COLLAPSE_CHANGES = "[{ws}][{ws}]|[{other}]".format(
    ws=PY_WHITESPACE, other=PY_WHITESPACE.replace(" ", ""))
_WHITESPACE_RUN = f"[{PY_WHITESPACE}]+"


def _collapse_whitespace(texts: pd.Series) -> pd.Series:
    r"""``texts.str.replace(r"\s+", " ").str.strip()`` with Python's ``\s``, run by pyarrow (RE2, with that
    whitespace spelled out) and only where it changes something: a match scan is ~10x cheaper than a
    replacement, and most responses have single spaces only."""
    out = texts.astype("string[pyarrow]")
    changes = out.str.contains(_COLLAPSE_CHANGES, regex=True).fillna(False).to_numpy(dtype=bool)
    if changes.any():
        collapsed = pc.replace_substring_regex(pa.array(out[changes]), _WHITESPACE_RUN, " ")
        out[changes] = pd.arrays.ArrowStringArray(collapsed)
    return out.str.strip()


def text_codes(s: pd.Series, *, lower: bool = True, within: np.ndarray | None = None,
               chunk_rows: int | None = None) -> np.ndarray:
    """One int64 code per row; two rows share a code iff their normalised texts are equal (whitespace runs
    collapsed, ends stripped, and with ``lower`` case folded by ``str.lower``); a missing text is -1.

    ``within``: a key per row (int codes) such that only rows with the same key are ever compared (a
    response with the other responses to its prompt). The texts are then coded chunk by chunk of whole keys,
    so memory is bounded by a chunk's distinct texts, not the table's; rows with different keys may share a
    code, rows with the same key compare exactly."""
    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    if within is None or len(s) <= chunk_rows:
        return _codes(s, lower)
    out = np.empty(len(s), dtype="int64")
    for part in whole_key_chunks(within, chunk_rows):
        out[part] = _codes(s.iloc[part], lower)
    return out


def _codes(s: pd.Series, lower: bool) -> np.ndarray:
    codes, uniques = pd.factorize(s.astype("string"), use_na_sentinel=True)
    norm_codes = pd.factorize(_normalised_uniques(uniques, lower), use_na_sentinel=True)[0]
    return np.where(codes >= 0, norm_codes[np.maximum(codes, 0)], -1).astype("int64")


def key_codes(s: pd.Series) -> np.ndarray:
    """Int codes of a key column in order of first appearance; a missing value is a key of its own."""
    return pd.factorize(s, use_na_sentinel=False)[0].astype("int64")


def whole_key_chunks(keys: np.ndarray, chunk_rows: int) -> list[slice | np.ndarray]:
    """Row positions of chunks of about ``chunk_rows`` rows that never split a key: keys in order of first
    appearance fill the chunks (a key larger than a chunk is a chunk of its own). Slices when every key's
    rows are contiguous (no copy), else position arrays (each in table order)."""
    n = len(keys)
    if chunk_rows <= 0 or n <= chunk_rows:
        return [slice(0, n)]
    first = key_codes(pd.Series(keys))  # codes numbered by first appearance, whatever `keys` were
    sizes = np.bincount(first)
    row_chunk = ((np.cumsum(sizes) - sizes) // chunk_rows)[first]
    if np.all(row_chunk[1:] >= row_chunk[:-1]):
        bounds = np.searchsorted(row_chunk, np.unique(row_chunk), side="left").tolist() + [n]
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    order = np.argsort(row_chunk, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(row_chunk[order])) + 1)


def _normalised_uniques(uniques, lower: bool) -> pd.Series:
    u = pd.Series(uniques, dtype="string")
    return _collapse_whitespace(u.str.lower() if lower else u)


def normalised_text(s: pd.Series) -> pd.Series:
    """Case- and whitespace-insensitive form of a text column (what counts as "the same text")."""
    codes, uniques = pd.factorize(s.astype("string"), use_na_sentinel=True)
    norm = _normalised_uniques(uniques, lower=True)
    out = pd.Series(pd.array([pd.NA] * len(s), dtype="string"), index=s.index)
    valid = codes >= 0
    out[valid] = norm.to_numpy()[codes[valid]]
    return out


def row_checks(table: pd.DataFrame) -> pd.DataFrame:
    """The table plus derived flat columns the row suite checks (a shallow frame: with pandas'
    copy-on-write the table's columns are shared, not copied).

    ``is_near_duplicate`` (0/1): the normalised (prompt, response) text repeats an earlier row's.
    """
    out = table.reset_index(drop=True)
    if {"prompt", "response"} <= set(out.columns):
        # Near duplicates share their normalised prompt: responses are compared within each prompt text.
        prompt = text_codes(out["prompt"])
        key = pd.DataFrame({"p": prompt, "r": text_codes(out["response"], within=prompt)})
        out = out.assign(is_near_duplicate=key.duplicated(keep="first").astype("int8"))
    return out


def group_counts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt_id: n_responses, n_distinct_responses, n_splits, preferred_equals_dispreferred,
    has_preference, prompt_text_splits (and origin, the first raw record of the group, when known).

    The preferred response is the best-scored one (ties: first row; null scores rank last). It "equals
    a dispreferred" when another response of the group has the same whitespace-normalised text. A group
    "has a preference" when its scores are not all equal. ``prompt_text_splits`` counts the splits in
    which the group's normalised prompt text occurs (leakage that distinct prompt ids hide).
    """
    cols = list(GROUP_INPUT_COLUMNS) + (["origin"] if "origin" in table.columns else [])
    t = table.loc[:, cols].reset_index(drop=True)
    pid = t["prompt_id"]
    # Texts as codes compared within each prompt id: the raw response (NA is a value of its own, like
    # nunique(dropna=False)) and its whitespace-normalised form (case kept: "Yes" and "yes" are two answers).
    groups = key_codes(pid)
    raw = pd.Series(np.empty(len(t), dtype="int64"))
    for part in whole_key_chunks(groups, CHUNK_ROWS):
        raw.iloc[part] = pd.factorize(t["response"].iloc[part].astype("string"), use_na_sentinel=False)[0]
    norm = pd.Series(text_codes(t["response"], lower=False, within=groups))
    g = t.groupby("prompt_id", sort=True, dropna=False)
    out = pd.DataFrame({"n_responses": g.size(),
                        "n_distinct_responses": raw.groupby(pid, sort=True, dropna=False).nunique(),
                        "n_splits": g["split"].nunique(dropna=False)})
    best = (pd.DataFrame({"prompt_id": pid, "score": t["score"], "norm": norm})
            .sort_values(["prompt_id", "score"], ascending=[True, False], na_position="last", kind="stable")
            .drop_duplicates("prompt_id", keep="first")
            .set_index("prompt_id")["norm"])
    same_as_best = (norm.to_numpy() == pid.map(best).to_numpy()) & (norm.to_numpy() >= 0)
    out["preferred_equals_dispreferred"] = pd.Series(same_as_best).groupby(pid, sort=True,
                                                                           dropna=False).sum() > 1
    # A single-response group already fails n_responses; do not report it twice.
    out["has_preference"] = ((g["score"].max() > g["score"].min()) | (out["n_responses"] < 2)).fillna(False)
    # Each group counts with its first row's split, so a prompt id split in two (n_splits) is not
    # reported again here: this catches distinct prompt ids whose texts are the same.
    first = g[["prompt", "split"]].first()
    text = normalised_text(first["prompt"].astype("string"))
    out["prompt_text_splits"] = text.map(first["split"].groupby(text, dropna=False).nunique(dropna=False))
    if "origin" in t.columns:
        out["origin"] = g["origin"].first()
    out = out.reset_index()
    return out.astype({"n_responses": "int64", "n_distinct_responses": "int64", "n_splits": "int64",
                       "preferred_equals_dispreferred": "bool", "has_preference": "bool",
                       "prompt_text_splits": "int64"})


def pair_checks(table: pd.DataFrame) -> pd.DataFrame:
    """A pairwise table plus ``responses_identical``: its two responses have the same normalised text."""
    out = table.reset_index(drop=True)
    if {"response_a", "response_b"} <= set(out.columns):
        same = normalised_text(out["response_a"]) == normalised_text(out["response_b"])
        out = out.assign(responses_identical=same.fillna(False).astype(bool))
    return out

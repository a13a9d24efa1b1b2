"""Validate a large table in shards of whole prompts, with the outcome of one whole-table run.

GX validates a pandas batch by building a mask and an index list per expectation: a 160k-row table needs
about 5x its own size, and the reference recipe's 1.6M rows (16k prompts x 100 responses) would need several
GB. So the row expectations run on shards of at most about ``shard_rows`` rows, each holding every row of its
prompt ids, and what the shards found is combined into one GX result per expectation:

- a row (map) expectation: counts summed, examples and failing rows concatenated shard by shard, and
  `mostly` judged again on the totals by GX's rule ((considered - unexpected) / considered >= mostly, where
  considered = rows - missing rows);
- a column aggregate (the near-duplicate rate's mean) runs once on its whole column (a narrow frame);
- a table-shape expectation (a column exists) gives the same answer on every shard.

That is exact as long as no row expectation compares rows of different shards: a uniqueness expectation is
exact when its columns include the shard key (rows with equal values share a prompt id, hence a shard);
any other cross-row expectation is refused. Derived columns that compare rows across prompts
(``is_near_duplicate``) are computed on the whole table before sharding (data_contracts.checks).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_contracts.checks import key_codes, whole_key_chunks
from data_contracts.runner import (
    MAX_EXAMPLES,
    ContractReport,
    _gx,
    exception_infos,
    expectation_position,
    failing_key,
    load_suite,
    run_suite,
    suite_parameters,
    suite_report,
    validate_table,
)

SHARD_ROWS = 200_000  # ~1 GB of GX working set on HH-like texts; 1.6M rows are 8 shards
# Row expectations that compare rows with each other: exact in shards only when keyed by the shard key.
UNIQUENESS = frozenset({"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique",
                        "expect_multicolumn_values_to_be_unique"})
# Table-shape expectations: the same answer on every shard (all shards have the table's columns).
SHAPE = frozenset({"expect_column_to_exist", "expect_table_columns_to_match_set",
                   "expect_table_columns_to_match_ordered_list", "expect_table_column_count_to_equal",
                   "expect_table_column_count_to_be_between"})
_LISTS = ("partial_unexpected_list", "partial_unexpected_index_list", "unexpected_list", "unexpected_index_list")


def shard_rows_of(df: pd.DataFrame, key: str, shard_rows: int) -> list[slice | np.ndarray]:
    """Row positions of each shard: prompts (``key`` values) in order of first appearance fill shards of
    about ``shard_rows`` rows (a prompt is never split; one larger than a shard is a shard of its own).
    Slices when every prompt's rows are contiguous (no copy), else position arrays."""
    if key not in df.columns:
        return [slice(0, len(df))]
    return whole_key_chunks(key_codes(df[key]), shard_rows)


def validate_in_shards(df: pd.DataFrame, suite_name: str, parameters: dict[str, Any] | None = None, *,
                       key: str = "prompt_id", shard_rows: int = SHARD_ROWS,
                       complete: bool = False) -> ContractReport:
    """:func:`data_contracts.runner.validate_table`'s report, computed shard by shard (module docstring)."""
    shards = shard_rows_of(df, key, shard_rows)
    if len(shards) == 1:
        return validate_table(df, suite_name, parameters, complete=complete)
    params = suite_parameters(suite_name, parameters)
    kinds = expectation_kinds(suite_name, key)
    parts = [run_suite(df.iloc[s], suite_name, params, complete=complete)
             for s in tqdm(shards, desc=f"contracts {suite_name} ({len(df):,} rows)", unit="shard")]
    by_position = [{_position(r): r for r in p.results} for p in parts]
    whole = [j for j, kind in enumerate(kinds) if kind == "column"]
    if whole:  # column aggregates: once, on the whole of the (narrow) columns they read
        suite = load_suite(suite_name)
        columns = sorted({c for j in whole for c in _columns(suite.expectations[j].configuration.kwargs)})
        whole_result = run_suite(df[[c for c in columns if c in df.columns]], suite_name, params,
                                 complete=complete, only=whole)
        whole_by_position = {_position(r): r for r in whole_result.results}
    combined = parts[0]
    results = []
    for r in combined.results:  # in GX's order (by column), as one whole-table run gives them
        j = _position(r)
        if kinds[j] == "column":
            r = whole_by_position[j]
        elif kinds[j] == "rows":
            _sum_rows([b[j] for b in by_position], params)
        else:
            r.success = all(b[j].success for b in by_position)
        results.append(r)
    combined.results = results
    _restate(combined)
    return suite_report(suite_name, combined, params, failing_key(df, complete))


def expectation_kinds(suite_name: str, key: str) -> list[str]:
    """Per expectation of the suite: "rows" (judged row by row), "column" (a column aggregate) or "shape";
    an expectation that sharding would change is an error naming it."""
    gx = _gx()
    base = gx.expectations.expectation
    row_types = (base.ColumnMapExpectation, base.ColumnPairMapExpectation, base.MulticolumnMapExpectation)
    kinds = []
    for e in load_suite(suite_name).expectations:
        kwargs = e.configuration.kwargs
        if e.expectation_type in UNIQUENESS and key not in (kwargs.get("column_list") or [kwargs.get("column")]):
            raise ValueError(f"suite {suite_name!r}: {e.expectation_type} on {kwargs} compares rows of different "
                             f"{key}s, so it cannot be validated in shards by {key}; validate with shard_rows=0 "
                             f"(one whole-table run) or include {key} in its columns")
        if isinstance(e, row_types):
            kinds.append("rows")
        elif isinstance(e, base.ColumnAggregateExpectation):
            kinds.append("column")
        elif e.expectation_type in SHAPE:
            kinds.append("shape")
        else:
            raise ValueError(f"suite {suite_name!r}: {e.expectation_type} judges the whole table; sharded "
                             "validation cannot combine it. Validate with shard_rows=0 (one whole-table run).")
    return kinds


def _position(r: Any) -> int:
    return expectation_position(r.expectation_config.id)


def _columns(kw: Any) -> list[str]:
    return [c for c in [kw.get("column"), kw.get("column_A"), kw.get("column_B"), *(kw.get("column_list") or [])]
            if c]


def _sum_rows(results: list[Any], params: dict[str, Any]) -> None:
    """Fold the shards' results of one row expectation into the first (counts, lists, success)."""
    first = results[0]
    parts = [dict(r.result or {}) for r in results]
    errors = [r for r in results if r.exception_info and _raised(r.exception_info)]
    if errors:  # e.g. a missing column: every shard raised the same; keep one
        results[0].exception_info, results[0].success = errors[0].exception_info, False
        return
    element = sum(p.get("element_count") or 0 for p in parts)
    missing = sum(p.get("missing_count") or 0 for p in parts)
    unexpected = sum(p.get("unexpected_count") or 0 for p in parts)
    out = dict(parts[0])
    out.update(element_count=element, unexpected_count=unexpected)
    considered = element - missing
    if "missing_count" in out:
        out.update(missing_count=missing, missing_percent=_pct(missing, element))
    if "unexpected_percent" in out:
        out.update(unexpected_percent=_pct(unexpected, considered), unexpected_percent_total=_pct(unexpected, element),
                   unexpected_percent_nonmissing=_pct(unexpected, considered))
    for name in _LISTS:
        if name in out:
            merged = [x for p in parts for x in (p.get(name) or [])]
            out[name] = merged[:MAX_EXAMPLES] if name.startswith("partial") else merged
    if "partial_unexpected_counts" in out:
        out["partial_unexpected_counts"] = _value_counts(out.get("partial_unexpected_list") or [])
    mostly = first.expectation_config.kwargs.get("mostly")
    if isinstance(mostly, dict):  # {"$PARAMETER": name}
        mostly = params[mostly["$PARAMETER"]]
    mostly = 1.0 if mostly is None else float(mostly)
    first.success = considered <= 0 or (considered - unexpected) / considered >= mostly
    first.result = out


def _restate(result: Any) -> None:
    """The suite's success and statistics from its (combined) expectation results."""
    n = len(result.results)
    ok = sum(bool(r.success) for r in result.results)
    result.success = ok == n
    result.statistics = {**dict(result.statistics or {}), "evaluated_expectations": n,
                         "successful_expectations": ok, "unsuccessful_expectations": n - ok,
                         "success_percent": 100.0 * ok / n if n else None}


def _raised(info: Any) -> bool:
    return any(i.get("raised_exception") for i in exception_infos(info))


def _value_counts(values: list[Any]) -> list[dict[str, Any]]:
    try:
        counts = Counter(values)
    except TypeError:  # unhashable values (dicts): count their text
        counts = Counter(str(v) for v in values)
    return [{"value": v, "count": c} for v, c in counts.most_common()]


def _pct(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None

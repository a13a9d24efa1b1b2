"""The contracts of the canonical table: `canonical_rows` on its rows (plus the derived flags of
:func:`~data_contracts.checks.row_checks`), validated in shards of whole prompts, and `group_counts` on its
per-prompt counts (one row per prompt: small even at 1.6M rows); one report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_contracts.checks import GROUP_INPUT_COLUMNS, group_counts, row_checks
from data_contracts.runner import (
    MAX_EXAMPLES,
    ROW_INDEX_COLUMNS,
    ROW_KEY,
    ContractReport,
    ExpectationOutcome,
    _jsonable,
    validate_table,
)
from data_contracts.shards import SHARD_ROWS, validate_in_shards


def validate_canonical(table: pd.DataFrame, *, min_prompt_chars: int = 1, max_prompt_chars: int = 4096,
                       min_response_chars: int = 1, max_response_chars: int = 8192,
                       duplicate_rate_max: float = 0.05, min_responses_per_group: int = 2,
                       complete: bool = False, shard_rows: int = SHARD_ROWS) -> ContractReport:
    """Run `canonical_rows` on the table (plus :func:`row_checks`), then `group_counts` on its per-prompt
    counts; one report. ``complete``: keep every failing row / group (for quarantine). ``shard_rows``: the
    row suite runs on shards of about that many rows (whole prompts; the same report as one run, in bounded
    memory: data_contracts.shards); 0 validates the table in one run."""
    checks = row_checks(table)
    if complete:
        checks[ROW_KEY] = np.arange(len(checks))
    rows = validate_in_shards(checks, "canonical_rows", {
        "min_prompt_chars": min_prompt_chars, "max_prompt_chars": max_prompt_chars,
        "min_response_chars": min_response_chars, "max_response_chars": max_response_chars,
        "duplicate_rate_max": duplicate_rate_max}, shard_rows=shard_rows, complete=complete)
    for o in rows.outcomes:  # an aggregate bound fails on the table; the rows to blame are the repeats
        if not o.success and o.column == "is_near_duplicate" and "is_near_duplicate" in checks:
            _blame_repeats(o, checks, complete)
    if not set(GROUP_INPUT_COLUMNS) <= set(table.columns):
        return rows  # the row suite already names the missing columns
    groups = validate_groups(table, min_responses_per_group=min_responses_per_group, complete=complete)
    return ContractReport(success=rows.success and groups.success,
                          suites={**rows.suites, **groups.suites},
                          outcomes=rows.outcomes + groups.outcomes,
                          parameters={**rows.parameters, **groups.parameters},
                          gx_results=rows.gx_results + groups.gx_results)


def validate_groups(table: pd.DataFrame, *, min_responses_per_group: int = 2,
                    complete: bool = False) -> ContractReport:
    """`group_counts` alone: what removing rows from a table that passed the row suite can break."""
    return validate_table(group_counts(table), "group_counts",
                          {"min_responses_per_group": min_responses_per_group}, complete=complete)


def _blame_repeats(o: ExpectationOutcome, checks: pd.DataFrame, complete: bool) -> None:
    """Name the repeated rows behind a failed duplicate-rate bound, like a row expectation would."""
    rows = np.flatnonzero(checks["is_near_duplicate"].to_numpy() == 1)
    o.unexpected_count = int(len(rows))
    o.element_count = int(len(checks))
    index_cols = [c for c in ROW_INDEX_COLUMNS if c in checks.columns]
    o.unexpected_examples = _jsonable(checks.iloc[rows[:MAX_EXAMPLES]][index_cols].to_dict("records"))
    if complete:
        o.failing_keys = rows.tolist()

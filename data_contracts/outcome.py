"""What happens when the contracts fail (issue 4.3): stop (``on_invalid = "fail"``) or quarantine.

Quarantine removes the rows and groups GX names as failing, validates what remains again (removing a
row can leave its group too small, which the next pass catches: the group suite alone until the groups
hold, then the whole contract once more), and accepts the result only if at least ``min_keep_fraction``
of the rows remain. Every removed row is kept, with the expectations it broke,
in a quarantine table the caller writes next to the run (nothing is silently dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.canonical import validate_canonical, validate_groups
from data_contracts.runner import ContractReport, ContractViolation

POLICIES = ("fail", "quarantine")
MAX_PASSES = 3  # pass 1: rows and groups; pass 2: groups emptied by pass 1; pass 3 should find nothing
GROUP_BOUNDS = ("min_responses_per_group",)  # validate_canonical's bounds that the group suite takes


class QuarantineLimitExceeded(ContractViolation):
    """Quarantine would keep less than the configured share of the rows; str() says how much and why."""

    def __init__(self, report: ContractReport, kept: int, total: int, min_keep_fraction: float,
                 reasons: dict[str, int]):
        self.kept, self.total = kept, total
        super().__init__(report)
        top = "\n".join(f"- {n} rows: {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:10])
        self.args = (
            f"Quarantine would keep {kept} of {total} rows ({kept / max(total, 1):.1%}), below "
            f"data.min_keep_fraction = {min_keep_fraction}. Removed rows by reason:\n{top}\n\n"
            f"{report.to_markdown(only_failures=True)}\n\nNothing downstream ran on this data. Fix the data "
            "or its adapter, or lower data.min_keep_fraction if losing that much is acceptable.",)

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class ContractOutcome:
    table: pd.DataFrame  # what downstream steps get
    report: ContractReport  # the contracts on the table as read (what was found)
    final_report: ContractReport  # the contracts on `table` (passes)
    quarantined: pd.DataFrame = field(default_factory=pd.DataFrame)  # removed rows + `quarantine_reason`
    counts: dict[str, float] = field(default_factory=dict)


def enforce_contracts(table: pd.DataFrame, *, on_invalid: str = "fail", min_keep_fraction: float = 0.9,
                      **bounds: Any) -> ContractOutcome:
    """Validate ``table``; on failure raise :class:`ContractViolation` (``fail``) or quarantine.

    ``bounds`` are :func:`validate_canonical`'s parameters (length bounds, duplicate_rate_max, ...).
    """
    if on_invalid not in POLICIES:
        raise ValueError(f"on_invalid = {on_invalid!r}; valid: {', '.join(POLICIES)}")
    quarantine = on_invalid == "quarantine"
    table = table.reset_index(drop=True)
    first = validate_canonical(table, complete=quarantine, **bounds)
    if first.success:
        return ContractOutcome(table, first, first, _empty_quarantine(table), _counts(table, table, first))
    if not quarantine:
        raise ContractViolation(first)
    kept, removed, report = table, [], first
    for _ in range(MAX_PASSES):
        reasons = _failing_rows(report, kept)
        if reasons is None:  # a failure no row can be blamed for (a missing column): quarantine cannot help
            raise ContractViolation(report)
        bad = reasons.notna().to_numpy()
        removed.append(kept[bad].assign(quarantine_reason=reasons[bad].astype("string")))
        kept = kept[~bad].reset_index(drop=True)
        if not len(kept):
            break
        # Every kept row passed every row expectation, and still does without the removed rows (they are
        # checked row by row, and uniqueness holds in a subset): removal can break only groups. Check them
        # alone (cheap) until they hold; then the whole contract once more, the report of what is kept.
        report = validate_groups(kept, complete=True, **{k: bounds[k] for k in GROUP_BOUNDS if k in bounds})
        if report.success:
            report = validate_canonical(kept, complete=True, **bounds)
        if report.success:
            break
    quarantined = pd.concat(removed, ignore_index=True)
    if len(kept) and not report.success:  # still failing after MAX_PASSES: not a quarantinable problem
        raise ContractViolation(report)
    if len(kept) < min_keep_fraction * len(table):
        counts = quarantined["quarantine_reason"].value_counts().to_dict()
        raise QuarantineLimitExceeded(first, len(kept), len(table), min_keep_fraction,
                                      {str(k): int(v) for k, v in counts.items()})
    return ContractOutcome(kept, first, report, quarantined, _counts(table, kept, first))


def _failing_rows(report: ContractReport, table: pd.DataFrame) -> pd.Series | None:
    """Per row of ``table``: "; "-joined names of the expectations it (or its group) broke, else None."""
    reasons = np.full(len(table), None, dtype=object)
    for o in report.failures:
        if o.failing_keys is None or o.error:
            return None
        name = f"{o.suite}:{o.expectation}({_col(o.column)})"
        if o.suite == "group_counts":  # failing prompt ids: every row of those groups
            keys = [k for k in o.failing_keys if k is not None and not pd.isna(k)]
            in_group = table["prompt_id"].isin(keys).to_numpy(dtype=bool) if keys and "prompt_id" in table else []
            positions = np.flatnonzero(in_group)
        else:
            positions = [int(k) for k in o.failing_keys if k is not None]
        for p in positions:
            reasons[p] = name if reasons[p] is None else f"{reasons[p]}; {name}"
    if all(r is None for r in reasons):
        return None
    return pd.Series(reasons, dtype="object")


def _col(column: Any) -> str:
    return ",".join(column) if isinstance(column, list) else str(column)


def _empty_quarantine(table: pd.DataFrame) -> pd.DataFrame:
    return table.iloc[:0].assign(quarantine_reason=pd.Series(dtype="string"))


def _counts(table: pd.DataFrame, kept: pd.DataFrame, report: ContractReport) -> dict[str, float]:
    return {"rows_read": float(len(table)), "rows": float(len(kept)),
            "rows_quarantined": float(len(table) - len(kept)),
            "prompts_read": float(table["prompt_id"].nunique()) if "prompt_id" in table else 0.0,
            "prompts": float(kept["prompt_id"].nunique()) if "prompt_id" in kept else 0.0,
            "contract_failures": float(len(report.failures))}

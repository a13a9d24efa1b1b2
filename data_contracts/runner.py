"""Run the data contracts (Great Expectations 1.x suites stored as JSON) on in-memory tables.

The only module of the project that imports great_expectations; it does so lazily, so that importing
``data_contracts`` (e.g. for :func:`group_counts`) stays cheap. Validation uses an ephemeral context:
nothing is written to disk, no analytics, no progress bars.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuite

SUITES_DIR = Path(__file__).parent / "suites"
ROW_INDEX_COLUMNS = ("prompt_id", "response_id")  # how a failing row is named in the report
MAX_EXAMPLES = 5
GROUP_INPUT_COLUMNS = ("prompt_id", "response", "score", "split")  # what group_counts reads


# --------------------------------------------------------------------------- report types
@dataclass
class ExpectationOutcome:
    suite: str
    expectation: str
    column: str | list[str] | None
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_examples: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when GX raised while evaluating (e.g. the column is missing)


@dataclass
class ContractReport:
    success: bool
    suites: dict[str, str]
    outcomes: list[ExpectationOutcome]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def statistics(self) -> dict[str, int]:
        n_bad = len(self.failures)
        return {"evaluated_expectations": len(self.outcomes),
                "successful_expectations": len(self.outcomes) - n_bad,
                "unsuccessful_expectations": n_bad}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"success": self.success, "suites": dict(self.suites),
                          "parameters": dict(self.parameters), "statistics": self.statistics,
                          "outcomes": [asdict(o) for o in self.outcomes]})

    def to_markdown(self, only_failures: bool = False) -> str:
        s = self.statistics
        head = (f"**Data contracts {'PASSED' if self.success else 'FAILED'}**: "
                f"{s['unsuccessful_expectations']} of {s['evaluated_expectations']} expectations failed "
                f"(suites: {', '.join(f'{k} v{v}' for k, v in self.suites.items())})")
        rows = [head, "", "| status | suite | expectation | column | failing rows | of | examples |",
                "|---|---|---|---|---|---|---|"]
        for o in self.failures if only_failures else self.outcomes:
            col = ", ".join(o.column) if isinstance(o.column, list) else (o.column or "")
            ex = o.error or "; ".join(_short(e) for e in o.unexpected_examples)
            rows.append("| " + " | ".join(_md(x) for x in (
                "ok" if o.success else "FAIL", o.suite, o.expectation, col,
                "" if o.unexpected_count is None else o.unexpected_count,
                "" if o.element_count is None else o.element_count, ex)) + " |")
        return "\n".join(rows)


class ContractViolation(Exception):
    """The canonical table broke its data contracts; str() is the readable report."""

    def __init__(self, report: ContractReport):
        self.report = report
        super().__init__(
            report.to_markdown(only_failures=True)
            + "\n\nNothing downstream ran on this data. Fix the data (or its adapter) so these "
            "expectations hold, or set `on_invalid = \"quarantine\"` in the config to drop the "
            "offending rows/groups and continue.")


def require_valid(report: ContractReport) -> ContractReport:
    if not report.success:
        raise ContractViolation(report)
    return report


# --------------------------------------------------------------------------- suites
@lru_cache(maxsize=None)
def _suite_json(name: str) -> dict[str, Any]:
    path = SUITES_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in SUITES_DIR.glob("*.json"))
        raise FileNotFoundError(f"no suite {name!r} in {SUITES_DIR} (known: {known})")
    return json.loads(path.read_text())


def suite_version(name: str) -> str:
    return str(_suite_json(name)["meta"]["version"])


def suite_defaults(name: str) -> dict[str, Any]:
    """Default values of the suite's `$PARAMETER`s (stored in the suite's `suite_parameters`)."""
    return dict(_suite_json(name).get("suite_parameters") or {})


def load_suite(name: str) -> ExpectationSuite:
    gx = _gx()
    raw = json.loads(json.dumps(_suite_json(name)))  # deep copy: GX mutates meta
    suite = gx.core.ExpectationSuite(**raw)
    # GX logs and *drops* an invalid expectation instead of raising: never validate a partial suite.
    if len(suite.expectations) != len(raw["expectations"]):
        raise ValueError(f"suite {name!r}: {len(raw['expectations']) - len(suite.expectations)} "
                         "expectation(s) could not be built; check the JSON")
    return suite


# --------------------------------------------------------------------------- validation
def validate_table(df: pd.DataFrame, suite_name: str,
                   parameters: dict[str, Any] | None = None) -> ContractReport:
    """Validate `df` against one suite: one ephemeral context, one whole-dataframe batch, one run."""
    suite = load_suite(suite_name)
    unknown = set(parameters or {}) - set(suite.suite_parameter_options)
    if unknown:
        raise ValueError(f"suite {suite_name!r} has no parameter(s) {sorted(unknown)}; "
                         f"it takes {list(suite.suite_parameter_options)}")
    params = {**suite_defaults(suite_name), **(parameters or {})}
    batch = (_ephemeral_context().data_sources.add_pandas(f"{suite_name}_source")
             .add_dataframe_asset(suite_name)
             .add_batch_definition_whole_dataframe("whole_table")
             .get_batch(batch_parameters={"dataframe": df}))
    index_cols = [c for c in ROW_INDEX_COLUMNS if c in df.columns]  # else GX names rows by index
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    if index_cols:
        result_format["unexpected_index_column_names"] = index_cols
    result = batch.validate(suite, expectation_parameters=params, result_format=result_format)
    outcomes = [_outcome(suite_name, r) for r in result.results]
    return ContractReport(success=bool(result.success), suites={suite_name: suite_version(suite_name)},
                          outcomes=outcomes, parameters=params)


def validate_canonical(table: pd.DataFrame, *, max_prompt_chars: int = 4096,
                       max_response_chars: int = 8192,
                       min_responses_per_group: int = 2) -> ContractReport:
    """Run `canonical_rows` on the table, then `group_counts` on its per-prompt counts; one report."""
    rows = validate_table(table, "canonical_rows", {"max_prompt_chars": max_prompt_chars,
                                                    "max_response_chars": max_response_chars})
    if not set(GROUP_INPUT_COLUMNS) <= set(table.columns):
        return rows  # the row suite already names the missing columns
    groups = validate_table(group_counts(table), "group_counts",
                            {"min_responses_per_group": min_responses_per_group})
    return ContractReport(success=rows.success and groups.success,
                          suites={**rows.suites, **groups.suites},
                          outcomes=rows.outcomes + groups.outcomes,
                          parameters={**rows.parameters, **groups.parameters})


def group_counts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt_id: n_responses, n_distinct_responses, n_splits, preferred_equals_dispreferred.

    The preferred response is the best-scored one (ties: first row; null scores rank last). It "equals
    a dispreferred" when another response of the group has the same whitespace-normalised text.
    """
    t = table.loc[:, list(GROUP_INPUT_COLUMNS)].reset_index(drop=True)
    g = t.groupby("prompt_id", sort=True, dropna=False)
    out = pd.DataFrame({"n_responses": g.size(),
                        "n_distinct_responses": g["response"].nunique(dropna=False),
                        "n_splits": g["split"].nunique(dropna=False)})
    norm = t["response"].str.replace(r"\s+", " ", regex=True).str.strip()
    best = (t.assign(_norm=norm)
            .sort_values(["prompt_id", "score"], ascending=[True, False], na_position="last",
                         kind="stable")
            .drop_duplicates("prompt_id", keep="first")
            .set_index("prompt_id")["_norm"])
    same_as_best = (norm == t["prompt_id"].map(best)).fillna(False).astype(bool)
    out["preferred_equals_dispreferred"] = same_as_best.groupby(t["prompt_id"], dropna=False).sum() > 1
    out = out.reset_index()
    return out.astype({"n_responses": "int64", "n_distinct_responses": "int64", "n_splits": "int64",
                       "preferred_equals_dispreferred": "bool"})


# --------------------------------------------------------------------------- helpers
def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    log = logging.getLogger("great_expectations")
    if log.level == logging.NOTSET:
        log.setLevel(logging.ERROR)
    return gx


def _ephemeral_context():
    """In-memory stores, no docs site, no analytics, no progress bars: nothing touches the disk."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig)

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False)
    return gx.get_context(mode="ephemeral", project_config=config)


def _outcome(suite_name: str, r: Any) -> ExpectationOutcome:
    cfg = r.expectation_config
    kw = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    column = kw.get("column") or kw.get("column_list")
    if column is None and "column_A" in kw:
        column = [kw["column_A"], kw["column_B"]]
    res = dict(r.result or {})
    examples = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    error = _exception_message(r.exception_info)
    return ExpectationOutcome(
        suite=suite_name, expectation=cfg.type, column=_jsonable(column), success=bool(r.success),
        element_count=_int_or_none(res.get("element_count")),
        unexpected_count=_int_or_none(res.get("unexpected_count")),
        unexpected_examples=_jsonable(list(examples)[:MAX_EXAMPLES]), kwargs=_jsonable(kw),
        error=error)


def _exception_message(info: Any) -> str | None:
    """GX gives either one {raised_exception, exception_message} dict or one per failed metric."""
    if not isinstance(info, dict) or not info:
        return None
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    msgs = [str(i.get("exception_message")) for i in infos
            if i.get("raised_exception") or i.get("exception_message")]
    return "; ".join(dict.fromkeys(msgs)) or None


def _int_or_none(x: Any) -> int | None:
    return None if x is None else int(x)


def _jsonable(x: Any) -> Any:
    """Plain JSON types only (numpy scalars unwrapped, NA -> None, non-finite floats as strings)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, (bool, int, str)):
        return x
    return str(x)


def _short(x: Any, n: int = 80) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _md(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")

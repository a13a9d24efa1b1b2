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

from data_contracts.checks import pair_checks

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuite

SUITES_DIR = Path(__file__).parent / "suites"
# How a failing row is named in the report: where it came from (file:line) and its ids. ROW_KEY is the
# row's position in the validated table, asked for only when quarantining (it needs every failing row).
ROW_INDEX_COLUMNS = ("origin", "prompt_id", "response_id")
ROW_KEY = "row"
MAX_EXAMPLES = 5


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
    # Every failing row (ROW_KEY) or group (prompt_id), only when validated with complete=True; not in
    # to_dict (a large table can fail on many rows; the report keeps counts and examples).
    failing_keys: list[Any] | None = field(default=None, repr=False)


@dataclass
class ContractReport:
    success: bool
    suites: dict[str, str]
    outcomes: list[ExpectationOutcome]
    parameters: dict[str, Any] = field(default_factory=dict)
    gx_results: list[Any] = field(default_factory=list, repr=False)  # GX suite results, for Data Docs

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
        outcomes = [{k: v for k, v in asdict(o).items() if k != "failing_keys"} for o in self.outcomes]
        return _jsonable({"success": self.success, "suites": dict(self.suites),
                          "parameters": dict(self.parameters), "statistics": self.statistics,
                          "outcomes": outcomes})

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
    for position, expectation in enumerate(suite.expectations):  # GX orders results by column: name each
        expectation.id = expectation_id(position)  # by its place in the suite (data_contracts.shards)
    # GX logs and *drops* an invalid expectation instead of raising: never validate a partial suite.
    if len(suite.expectations) != len(raw["expectations"]):
        raise ValueError(f"suite {name!r}: {len(raw['expectations']) - len(suite.expectations)} "
                         "expectation(s) could not be built; check the JSON")
    return suite


def expectation_id(position: int) -> str:
    """The id (a UUID-shaped string, as GX wants) of the suite's expectation at ``position``."""
    return f"00000000-0000-0000-0000-{position:012d}"


def expectation_position(expectation_id: str) -> int:
    return int(expectation_id.rsplit("-", 1)[1])


# --------------------------------------------------------------------------- validation
def validate_table(df: pd.DataFrame, suite_name: str, parameters: dict[str, Any] | None = None, *,
                   complete: bool = False) -> ContractReport:
    """Validate `df` against one suite: one ephemeral context, one whole-dataframe batch, one run.

    ``complete`` asks GX for every failing row (needed to quarantine them), not just a few examples.
    """
    params = suite_parameters(suite_name, parameters)
    result = run_suite(df, suite_name, params, complete=complete)
    return suite_report(suite_name, result, params, failing_key(df, complete))


def suite_parameters(suite_name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The suite's defaults overridden by ``parameters``; an unknown name is an error that lists the known."""
    options = load_suite(suite_name).suite_parameter_options
    unknown = set(parameters or {}) - set(options)
    if unknown:
        raise ValueError(f"suite {suite_name!r} has no parameter(s) {sorted(unknown)}; it takes {list(options)}")
    return {**suite_defaults(suite_name), **(parameters or {})}


def run_suite(df: pd.DataFrame, suite_name: str, params: dict[str, Any], *, complete: bool = False,
              only: list[int] | None = None) -> Any:
    """GX's suite result for `df` (``only``: the positions of the suite's expectations to run, else all)."""
    suite = load_suite(suite_name)
    if only is not None:
        suite.expectations = [suite.expectations[i] for i in only]
    batch = (_ephemeral_context().data_sources.add_pandas(f"{suite_name}_source")
             .add_dataframe_asset(suite_name)
             .add_batch_definition_whole_dataframe("whole_table")
             .get_batch(batch_parameters={"dataframe": df}))
    index_cols = [c for c in ROW_INDEX_COLUMNS if c in df.columns]  # else GX names rows by index
    if complete and ROW_KEY in df.columns:
        index_cols.append(ROW_KEY)
    result_format: dict[str, Any] = {"result_format": "COMPLETE" if complete else "SUMMARY",
                                     "partial_unexpected_count": MAX_EXAMPLES}
    if index_cols:
        result_format["unexpected_index_column_names"] = index_cols
    return batch.validate(suite, expectation_parameters=params, result_format=result_format)


def failing_key(df: pd.DataFrame, complete: bool) -> str | None:
    """What names a failing row in a complete report: its ROW_KEY when the table has one (the row suite),
    else its prompt id (the group suite); None when only examples were asked for."""
    if not complete:
        return None
    return ROW_KEY if ROW_KEY in df.columns else "prompt_id"


def suite_report(suite_name: str, result: Any, params: dict[str, Any], key: str | None) -> ContractReport:
    """Our report of one GX suite result (``key``: see :func:`failing_key`)."""
    outcomes = [_outcome(suite_name, r, key) for r in result.results]
    return ContractReport(success=bool(result.success), suites={suite_name: suite_version(suite_name)},
                          outcomes=outcomes, parameters=params, gx_results=[result])


PAIR_SUITES = {False: "pairwise_labels", True: "gold_pairs"}


def validate_pairwise(table: pd.DataFrame, *, gold: bool = False, max_prompt_chars: int = 4096,
                      max_response_chars: int = 8192) -> ContractReport:
    """Run `pairwise_labels` (a human and an AI label per pair: the routing flow's input) or, with
    ``gold=True``, `gold_pairs` (a gold label per pair) on a table from hps_core.routing.multipref."""
    return validate_table(pair_checks(table), PAIR_SUITES[gold], {
        "max_prompt_chars": max_prompt_chars, "max_response_chars": max_response_chars})


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


def _outcome(suite_name: str, r: Any, key: str | None = None) -> ExpectationOutcome:
    cfg = r.expectation_config
    kw = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    column = kw.get("column") or kw.get("column_list")
    if column is None and "column_A" in kw:
        column = [kw["column_A"], kw["column_B"]]
    res = dict(r.result or {})
    examples = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    if key is not None and not examples:  # COMPLETE format has full lists only
        examples = res.get("unexpected_index_list") or res.get("unexpected_list") or []
    examples = [_where_first(e) if isinstance(e, dict) else e for e in list(examples)[:MAX_EXAMPLES]]
    failing = None
    if key is not None and not r.success and isinstance(res.get("unexpected_index_list"), list):
        failing = [e.get(key) if isinstance(e, dict) else e for e in res["unexpected_index_list"]]
    error = _exception_message(r.exception_info)
    return ExpectationOutcome(
        suite=suite_name, expectation=cfg.type, column=_jsonable(column), success=bool(r.success),
        element_count=_int_or_none(res.get("element_count")),
        unexpected_count=_int_or_none(res.get("unexpected_count")),
        unexpected_examples=_jsonable(examples), kwargs=_jsonable(kw),
        error=error, failing_keys=failing)


def _where_first(example: dict[str, Any]) -> dict[str, Any]:
    """Origin (file:line) and ids first, then the offending value, so a truncated example still says where."""
    keys = [k for k in ROW_INDEX_COLUMNS if k in example] + [k for k in example if k not in ROW_INDEX_COLUMNS]
    return {k: example[k] for k in keys if k != ROW_KEY}


def exception_infos(info: Any) -> list[dict[str, Any]]:
    """GX's exception_info as a list: it is one {raised_exception, exception_message} dict, or one per metric."""
    if not isinstance(info, dict) or not info:
        return []
    return [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]


def _exception_message(info: Any) -> str | None:
    """GX gives either one {raised_exception, exception_message} dict or one per failed metric."""
    infos = exception_infos(info)
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


def _short(x: Any, n: int = 120) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _md(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")

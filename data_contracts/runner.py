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
# How a failing row is named in the report: where it came from (file:line) and its ids. ROW_KEY is the
# row's position in the validated table, asked for only when quarantining (it needs every failing row).
ROW_INDEX_COLUMNS = ("origin", "prompt_id", "response_id")
ROW_KEY = "row"
MAX_EXAMPLES = 5
GROUP_INPUT_COLUMNS = ("prompt_id", "prompt", "response", "score", "split")  # what group_counts reads


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
    # GX logs and *drops* an invalid expectation instead of raising: never validate a partial suite.
    if len(suite.expectations) != len(raw["expectations"]):
        raise ValueError(f"suite {name!r}: {len(raw['expectations']) - len(suite.expectations)} "
                         "expectation(s) could not be built; check the JSON")
    return suite


# --------------------------------------------------------------------------- validation
def validate_table(df: pd.DataFrame, suite_name: str, parameters: dict[str, Any] | None = None, *,
                   complete: bool = False) -> ContractReport:
    """Validate `df` against one suite: one ephemeral context, one whole-dataframe batch, one run.

    ``complete`` asks GX for every failing row (needed to quarantine them), not just a few examples.
    """
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
    if complete and ROW_KEY in df.columns:
        index_cols.append(ROW_KEY)
    result_format: dict[str, Any] = {"result_format": "COMPLETE" if complete else "SUMMARY",
                                     "partial_unexpected_count": MAX_EXAMPLES}
    if index_cols:
        result_format["unexpected_index_column_names"] = index_cols
    result = batch.validate(suite, expectation_parameters=params, result_format=result_format)
    key = ROW_KEY if ROW_KEY in index_cols else "prompt_id"
    outcomes = [_outcome(suite_name, r, key if complete else None) for r in result.results]
    return ContractReport(success=bool(result.success), suites={suite_name: suite_version(suite_name)},
                          outcomes=outcomes, parameters=params, gx_results=[result])


def validate_canonical(table: pd.DataFrame, *, min_prompt_chars: int = 1, max_prompt_chars: int = 4096,
                       min_response_chars: int = 1, max_response_chars: int = 8192,
                       duplicate_rate_max: float = 0.05, min_responses_per_group: int = 2,
                       complete: bool = False) -> ContractReport:
    """Run `canonical_rows` on the table (plus :func:`row_checks`), then `group_counts` on its per-prompt
    counts; one report. ``complete``: keep every failing row / group (for quarantine)."""
    checks = row_checks(table)
    if complete:
        checks[ROW_KEY] = np.arange(len(checks))
    rows = validate_table(checks, "canonical_rows", {
        "min_prompt_chars": min_prompt_chars, "max_prompt_chars": max_prompt_chars,
        "min_response_chars": min_response_chars, "max_response_chars": max_response_chars,
        "duplicate_rate_max": duplicate_rate_max}, complete=complete)
    for o in rows.outcomes:  # an aggregate bound fails on the table; the rows to blame are the repeats
        if not o.success and o.column == "is_near_duplicate" and "is_near_duplicate" in checks:
            _blame_repeats(o, checks, complete)
    if not set(GROUP_INPUT_COLUMNS) <= set(table.columns):
        return rows  # the row suite already names the missing columns
    groups = validate_table(group_counts(table), "group_counts",
                            {"min_responses_per_group": min_responses_per_group}, complete=complete)
    return ContractReport(success=rows.success and groups.success,
                          suites={**rows.suites, **groups.suites},
                          outcomes=rows.outcomes + groups.outcomes,
                          parameters={**rows.parameters, **groups.parameters},
                          gx_results=rows.gx_results + groups.gx_results)


PAIR_SUITES = {False: "pairwise_labels", True: "gold_pairs"}


def pair_checks(table: pd.DataFrame) -> pd.DataFrame:
    """A pairwise table plus ``responses_identical``: its two responses have the same normalised text."""
    out = table.reset_index(drop=True)
    if {"response_a", "response_b"} <= set(out.columns):
        same = normalised_text(out["response_a"]) == normalised_text(out["response_b"])
        out = out.assign(responses_identical=same.fillna(False).astype(bool))
    return out


def validate_pairwise(table: pd.DataFrame, *, gold: bool = False, max_prompt_chars: int = 4096,
                      max_response_chars: int = 8192) -> ContractReport:
    """Run `pairwise_labels` (a human and an AI label per pair: the routing flow's input) or, with
    ``gold=True``, `gold_pairs` (a gold label per pair) on a table from hps_core.routing.multipref."""
    return validate_table(pair_checks(table), PAIR_SUITES[gold], {
        "max_prompt_chars": max_prompt_chars, "max_response_chars": max_response_chars})


def _blame_repeats(o: ExpectationOutcome, checks: pd.DataFrame, complete: bool) -> None:
    """Name the repeated rows behind a failed duplicate-rate bound, like a row expectation would."""
    rows = np.flatnonzero(checks["is_near_duplicate"].to_numpy() == 1)
    o.unexpected_count = int(len(rows))
    o.element_count = int(len(checks))
    index_cols = [c for c in ROW_INDEX_COLUMNS if c in checks.columns]
    o.unexpected_examples = _jsonable(checks.iloc[rows[:MAX_EXAMPLES]][index_cols].to_dict("records"))
    if complete:
        o.failing_keys = rows.tolist()


def normalised_text(s: pd.Series) -> pd.Series:
    """Case- and whitespace-insensitive form of a text column (what counts as "the same text")."""
    # Each distinct text once (prompts repeat once per response); lower() runs in Arrow, casefold() would not.
    codes, uniques = pd.factorize(s.astype("string"), use_na_sentinel=True)
    norm = pd.Series(uniques, dtype="string").str.lower().str.replace(r"\s+", " ", regex=True).str.strip()
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
        key = pd.DataFrame({"p": pd.factorize(normalised_text(out["prompt"]))[0],
                            "r": pd.factorize(normalised_text(out["response"]))[0]})
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


def _short(x: Any, n: int = 120) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _md(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")

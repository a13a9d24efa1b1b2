"""Data contracts: a good fixture passes; each bad fixture breaks exactly the expectation it targets."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from data_contracts import (
    ContractReport,
    ContractViolation,
    ExpectationOutcome,
    QuarantineLimitExceeded,
    enforce_contracts,
    group_counts,
    load_suite,
    normalised_text,
    pair_checks,
    render_data_docs,
    require_valid,
    row_checks,
    suite_defaults,
    suite_version,
    validate_canonical,
    validate_pairwise,
    validate_table,
)
from data_contracts import outcome as contract_outcome
from data_contracts import canonical, checks, runner
from data_contracts.runner import SUITES_DIR

GROUPS = {
    "What is 2+2?": ["4", "Four.", "5"],
    "Name a color.": ["Blue", "Red, probably.", "I don't know"],
    "Capital of France?": ["Paris", "Lyon", "London"],
}


def good_table() -> pd.DataFrame:
    """3 prompts x 3 responses, scores descending within each prompt (row 0 of a group is preferred)."""
    rows = []
    for i, (prompt, responses) in enumerate(GROUPS.items()):
        for j, response in enumerate(responses):
            rows.append({
                "prompt_id": f"p{i}", "prompt": prompt, "response_id": f"p{i}-r{j}",
                "response": response, "score": float(3 - j) - 0.5 * i,
                "is_harmful": None if j == 2 else False,
                "label_source": ["human", "ai", "rm"][j], "source": "fixture@sha256:00",
                "split": "eval" if i == 2 else "train",
            })
    return pd.DataFrame(rows).astype({"is_harmful": "boolean"})


def failures(report: ContractReport) -> dict[tuple[str, str], int | None]:
    def key(c):
        return ",".join(c) if isinstance(c, list) else str(c)
    return {(o.expectation, key(o.column)): o.unexpected_count for o in report.failures}


def test_good_table_passes():
    report = validate_canonical(good_table())
    assert report.success, report.to_markdown()
    assert report.suites == {"canonical_rows": "2.2.0", "group_counts": "2.0.0"}
    stats = report.statistics
    assert stats["unsuccessful_expectations"] == 0
    assert stats["evaluated_expectations"] == stats["successful_expectations"] == len(report.outcomes)
    assert require_valid(report) is report


def _set(t, idx, col, value):
    t.loc[idx, col] = value
    return t


def _drop(t, idx):
    return t.drop(index=idx).reset_index(drop=True)


def _near_duplicate_rows(t):
    copy = t.iloc[[0, 1, 2]].assign(prompt="What  is 2+2? ", prompt_id="p3", split="train",
                                     response_id=lambda d: d["response_id"].str.replace("p0", "p3"))
    return pd.concat([t, copy], ignore_index=True)


def _string_is_harmful(t):
    t["is_harmful"] = ["no"] * len(t)
    return t


BAD = {
    # id: (breaker, kwargs for validate_canonical, {(expectation, column): unexpected_count})
    "empty_response": (lambda t: _set(t, 1, "response", ""), {}, {
        ("expect_column_value_lengths_to_be_between", "response"): 1,
        ("expect_column_values_to_match_regex", "response"): 1}),
    "blank_response": (lambda t: _set(t, 1, "response", "  \t "), {}, {
        ("expect_column_values_to_match_regex", "response"): 1}),
    "blank_prompt": (lambda t: _set(t, [0, 1, 2], "prompt", " "), {}, {
        ("expect_column_values_to_match_regex", "prompt"): 3}),
    "null_score": (lambda t: _set(t, 4, "score", np.nan), {}, {
        ("expect_column_values_to_not_be_null", "score"): 1}),
    "inf_score": (lambda t: _set(t, 2, "score", -np.inf), {}, {
        ("expect_column_values_to_be_between", "score"): 1}),
    "null_response_id": (lambda t: _set(t, 5, "response_id", None), {}, {
        ("expect_column_values_to_not_be_null", "response_id"): 1}),
    "duplicate_ids": (lambda t: _set(t, 1, "response_id", "p0-r0"), {}, {
        ("expect_compound_columns_to_be_unique", "prompt_id,response_id"): 2}),
    "is_harmful_strings": (_string_is_harmful, {}, {
        ("expect_column_values_to_be_in_set", "is_harmful"): 9}),
    "bad_label_source": (lambda t: _set(t, 3, "label_source", "crowd"), {}, {
        ("expect_column_values_to_be_in_set", "label_source"): 1}),
    "bad_split": (lambda t: _set(t, [6, 7, 8], "split", "test"), {}, {
        ("expect_column_values_to_be_in_set", "split"): 3}),
    "prompt_in_two_splits": (lambda t: _set(t, 4, "split", "eval"), {}, {
        ("expect_column_values_to_be_between", "n_splits"): 1}),
    "single_response_group": (lambda t: _drop(t, [7, 8]), {}, {
        ("expect_column_values_to_be_between", "n_responses"): 1}),
    "group_below_min_param": (lambda t: t, {"min_responses_per_group": 4}, {
        ("expect_column_values_to_be_between", "n_responses"): 3}),
    "duplicate_dispreferred": (lambda t: _set(t, 8, "response", "Lyon"), {}, {
        ("expect_column_mean_to_be_between", "is_near_duplicate"): 1,  # 1 of 9 rows repeats: 0.11 > 0.05
        ("expect_column_pair_values_to_be_equal", "n_distinct_responses,n_responses"): 1}),
    "preferred_equals_dispreferred": (lambda t: _set(t, 8, "response", " Paris "), {}, {
        ("expect_column_mean_to_be_between", "is_near_duplicate"): 1,  # 1 of 9 rows repeats: 0.11 > 0.05
        ("expect_column_values_to_be_in_set", "preferred_equals_dispreferred"): 1}),
    "preferred_exact_duplicate": (lambda t: _set(t, 8, "response", "Paris"), {}, {
        ("expect_column_mean_to_be_between", "is_near_duplicate"): 1,  # 1 of 9 rows repeats: 0.11 > 0.05
        ("expect_column_pair_values_to_be_equal", "n_distinct_responses,n_responses"): 1,
        ("expect_column_values_to_be_in_set", "preferred_equals_dispreferred"): 1}),
    "response_over_param": (lambda t: t, {"max_response_chars": 12}, {
        ("expect_column_value_lengths_to_be_between", "response"): 1}),
    "prompt_over_param": (lambda t: t, {"max_prompt_chars": 12}, {
        ("expect_column_value_lengths_to_be_between", "prompt"): 6}),
    # Response lengths: "4" 1, "Four." 5, "5" 1, "Blue" 4, "Red, probably." 14, "I don't know" 12,
    # "Paris" 5, "Lyon" 4, "London" 6: a minimum of 5 fails "4", "5", "Blue", "Lyon".
    "response_under_param": (lambda t: t, {"min_response_chars": 5}, {
        ("expect_column_value_lengths_to_be_between", "response"): 4}),
    # prompts are 12 ("What is 2+2?"), 13 and 18 chars: a minimum of 13 fails the 3 rows of group p0.
    "prompt_under_param": (lambda t: t, {"min_prompt_chars": 13}, {
        ("expect_column_value_lengths_to_be_between", "prompt"): 3}),
    # Group p1 (train) gets p2's prompt (eval) re-cased and re-spaced: still its own prompt id and its
    # own responses, but the same normalised prompt text is now in train and in eval: both groups fail.
    "prompt_text_in_both_splits": (lambda t: _set(t, [3, 4, 5], "prompt", "capital  of FRANCE?"), {}, {
        ("expect_column_values_to_be_between", "prompt_text_splits"): 2}),
    # All three scores of group p1 equal: no preference in the group.
    "all_scores_tied": (lambda t: _set(t, [3, 4, 5], "score", 1.0), {}, {
        ("expect_column_values_to_be_in_set", "has_preference"): 1}),
    # Rows 0-2 copied into group p3 with the prompt re-spaced: 3 of 12 rows repeat an earlier
    # (prompt, response) text -> duplicate rate 0.25 > 0.2; the repeats are the 3 copies.
    "duplicate_rate_over_max": (_near_duplicate_rows, {"duplicate_rate_max": 0.2}, {
        ("expect_column_mean_to_be_between", "is_near_duplicate"): 3}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_fixture_breaks_only_its_expectation(case):
    breaker, kwargs, expected = BAD[case]
    report = validate_canonical(breaker(good_table()), **kwargs)
    assert not report.success
    assert failures(report) == expected, report.to_markdown(only_failures=True)
    for o in report.failures:
        assert o.unexpected_examples, o
        assert len(o.unexpected_examples) <= 5


def test_examples_name_the_offending_rows():
    report = validate_canonical(_set(good_table(), 2, "score", np.inf))
    (o,) = report.failures
    assert o.unexpected_examples == [{"score": "inf", "prompt_id": "p0", "response_id": "p0-r2"}]
    assert (o.element_count, o.unexpected_count) == (9, 1)
    assert o.kwargs["max_value"] == 1e6


def test_missing_column_is_reported_not_raised():
    report = validate_canonical(good_table().drop(columns=["score"]))
    assert not report.success
    assert ("expect_column_to_exist", "score") in failures(report)
    assert list(report.suites) == ["canonical_rows"]  # group counts need the score column
    assert any(o.error for o in report.failures)
    json.dumps(report.to_dict(), allow_nan=False)


def test_violation_message_names_expectation_count_and_remedy():
    report = validate_canonical(_set(good_table(), [1, 4], "score", np.nan))
    with pytest.raises(ContractViolation) as exc:
        require_valid(report)
    msg = str(exc.value)
    assert "expect_column_values_to_not_be_null" in msg
    assert "| score | 2 | 9 |" in msg
    assert "p0-r1" in msg and "p1-r1" in msg
    assert 'on_invalid = "quarantine"' in msg
    assert exc.value.report is report


def test_to_dict_is_json_serialisable_and_stable():
    report = validate_canonical(_set(good_table(), 2, "score", np.inf))
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False, sort_keys=True)
    assert json.loads(text) == d
    assert d["statistics"]["unsuccessful_expectations"] == 1
    assert d["parameters"] == {"min_prompt_chars": 1, "max_prompt_chars": 4096, "min_response_chars": 1,
                               "max_response_chars": 8192, "duplicate_rate_max": 0.05,
                               "min_responses_per_group": 2}
    md = report.to_markdown()
    assert "FAILED" in md and "expect_column_values_to_be_between" in md


@pytest.mark.parametrize("name", ["canonical_rows", "group_counts"])
def test_suite_files_load_with_versions(name):
    raw = json.loads((SUITES_DIR / f"{name}.json").read_text())
    suite = load_suite(name)
    assert suite.name == name
    assert len(suite.expectations) == len(raw["expectations"])
    assert suite_version(name) == raw["meta"]["version"] == {"canonical_rows": "2.2.0", "group_counts": "2.0.0"}[name]
    assert raw["meta"]["description"]


def test_suite_defaults_match_validate_canonical_defaults():
    import inspect

    sig = inspect.signature(validate_canonical).parameters
    assert set(suite_defaults("canonical_rows")) | set(suite_defaults("group_counts")) == set(sig) - {"table", "complete", "shard_rows"}
    for name in ("canonical_rows", "group_counts"):
        for param, value in suite_defaults(name).items():
            assert sig[param].default == value


def test_validate_table_takes_parameters():
    t = row_checks(good_table())
    assert validate_table(t, "canonical_rows").success
    report = validate_table(t, "canonical_rows", {"max_response_chars": 4})
    assert failures(report) == {("expect_column_value_lengths_to_be_between", "response"): 5}


def test_group_counts_values():
    t = _set(_drop(good_table(), [7, 8]), 4, "split", "eval")
    t = _set(t, 2, "response", "4\n")
    gc = group_counts(t).set_index("prompt_id")
    assert gc["n_responses"].to_dict() == {"p0": 3, "p1": 3, "p2": 1}
    assert gc["n_distinct_responses"].to_dict() == {"p0": 3, "p1": 3, "p2": 1}
    assert gc["n_splits"].to_dict() == {"p0": 1, "p1": 2, "p2": 1}
    assert gc["preferred_equals_dispreferred"].to_dict() == {"p0": True, "p1": False, "p2": False}


def test_group_counts_preferred_is_best_scored_not_first_row():
    t = good_table()
    t.loc[[0, 1, 2], "score"] = [0.0, 5.0, 1.0]  # "Four." is now preferred
    t.loc[0, "response"] = "Four."  # a dispreferred equal to the preferred
    assert group_counts(t).set_index("prompt_id").loc["p0", "preferred_equals_dispreferred"]
    t.loc[0, "response"] = "4"
    t.loc[2, "response"] = "4"  # two equal dispreferred: not a preferred clash
    assert not group_counts(t).set_index("prompt_id").loc["p0", "preferred_equals_dispreferred"]


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="max_respons_chars"):
        validate_table(good_table(), "canonical_rows", {"max_respons_chars": 10})


def test_validation_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    validate_canonical(_set(good_table(), 1, "response", ""))
    assert list(tmp_path.iterdir()) == []


# Validation time at 160k rows is a benchmark, not a test (a no-op validator would pass a timing test):
# benchmarks/bench_contracts.py measures it (docs/data.md). Per-expectation correctness, with a breaking and a
# barely passing row for every expectation, is tests/test_contract_edges.py.


# --------------------------------------------------------------------------- outcome: fail / quarantine
def test_fail_policy_raises_with_report():
    with pytest.raises(ContractViolation) as exc:
        enforce_contracts(_set(good_table(), 1, "response", ""))
    assert "expect_column_value_lengths_to_be_between" in str(exc.value)


def test_quarantine_removes_failing_rows_and_groups():
    """7 rows: p0 = rows 0-2, p1 = rows 3-5, p2 = row 6 alone (rows 7, 8 dropped). Row 1's response is
    empty (row expectations) and group p2 has one response (group expectation): rows 1 and 6 go to
    quarantine, 5 of 7 = 0.714 remain, enough for min_keep_fraction 0.7, not for 0.75."""
    t = _set(_drop(good_table(), [7, 8]), 1, "response", "")
    out = enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.7)
    assert out.table["response_id"].tolist() == ["p0-r0", "p0-r2", "p1-r0", "p1-r1", "p1-r2"]
    assert out.final_report.success and not out.report.success
    reasons = dict(zip(out.quarantined["response_id"], out.quarantined["quarantine_reason"]))
    assert reasons == {
        "p0-r1": "canonical_rows:expect_column_value_lengths_to_be_between(response); "
                 "canonical_rows:expect_column_values_to_match_regex(response)",
        "p2-r0": "group_counts:expect_column_values_to_be_between(n_responses)"}
    assert (out.counts["rows_read"], out.counts["rows"], out.counts["rows_quarantined"]) == (7, 5, 2)
    with pytest.raises(QuarantineLimitExceeded, match=r"keep 5 of 7 rows \(71.4%\), below data.min_keep_fraction = 0.75"):
        enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.75)


def test_quarantine_second_pass_removes_groups_emptied_by_the_first():
    """Rows 4 and 5 (group p1) have blank responses ("" and a tab): pass 1 removes them, which leaves p1
    with row 3 alone; pass 2 removes row 3 for its group. 6 of 9 rows remain. (The two blanks are also
    the same text once normalised, so row 5 breaks the duplicate-rate bound too: 1 of 9 > 0.05.)"""
    out = enforce_contracts(_set(_set(good_table(), 4, "response", ""), 5, "response", "\t"),
                            on_invalid="quarantine", min_keep_fraction=0.5)
    assert len(out.table) == 6 and "p1" not in set(out.table["prompt_id"])
    reasons = dict(zip(out.quarantined["response_id"], out.quarantined["quarantine_reason"]))
    assert reasons["p1-r1"] == ("canonical_rows:expect_column_value_lengths_to_be_between(response); "
                                "canonical_rows:expect_column_values_to_match_regex(response)")
    assert reasons["p1-r2"] == ("canonical_rows:expect_column_values_to_match_regex(response); "
                                "canonical_rows:expect_column_mean_to_be_between(is_near_duplicate)")
    assert reasons["p1-r0"] == "group_counts:expect_column_values_to_be_between(n_responses)"


def test_quarantine_rechecks_groups_alone_then_the_whole_contract_once(monkeypatch):
    """The table of the test above: the whole contract runs on the table read (fails: rows 4, 5), the group
    suite alone on the 7 rows left (fails: p1 has one response), again on the 6 left (holds), then the whole
    contract once on those 6 (holds): 2 whole runs and 2 group runs, not 3 whole runs."""
    calls = []
    for name in ("validate_canonical", "validate_groups"):
        real = getattr(contract_outcome, name)
        monkeypatch.setattr(contract_outcome, name,
                            lambda t, *a, _real=real, _name=name, **k: calls.append((_name, len(t))) or _real(t, *a, **k))
    enforce_contracts(_set(_set(good_table(), 4, "response", ""), 5, "response", "\t"),
                      on_invalid="quarantine", min_keep_fraction=0.5)
    assert calls == [("validate_canonical", 9), ("validate_groups", 7), ("validate_groups", 6),
                     ("validate_canonical", 6)]


def test_quarantine_cannot_fix_a_missing_column():
    with pytest.raises(ContractViolation):
        enforce_contracts(good_table().drop(columns=["split"]), on_invalid="quarantine")


def test_passing_table_is_untouched_and_examples_name_origin():
    t = good_table().assign(origin=[f"data.jsonl:{i + 1}" for i in range(9)])
    out = enforce_contracts(t, on_invalid="quarantine")
    assert out.table.equals(t) and len(out.quarantined) == 0 and out.counts["rows_quarantined"] == 0
    report = validate_canonical(_set(t, 2, "score", np.inf))
    assert report.failures[0].unexpected_examples == [
        {"origin": "data.jsonl:3", "prompt_id": "p0", "response_id": "p0-r2", "score": "inf"}]


def test_data_docs_html_is_rendered_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    html = render_data_docs(validate_canonical(_set(good_table(), 2, "score", np.inf)))
    assert html.lstrip().lower().startswith("<!doctype html") and "canonical_rows" in html and "group_counts" in html
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the report's exact text
# Hand-written literals: what a reader of a failed run sees (step log, card, exception), character for character.


def _hand_report() -> ContractReport:
    return ContractReport(
        success=False, suites={"canonical_rows": "2.2.0", "group_counts": "2.0.0"},
        outcomes=[
            ExpectationOutcome("canonical_rows", "expect_a", "response", True, 9, 0),
            ExpectationOutcome("canonical_rows", "expect_b", ["prompt_id", "response_id"], False, 9, 2,
                               [{"prompt_id": "p0"}, "x" * 119], {"mostly": 0.5}, failing_keys=[3, 4]),
            ExpectationOutcome("group_counts", "expect_c", None, False, error="col | x\nmissing"),
        ],
        parameters={"k": np.int64(3), "f": float("inf")})


HAND_MARKDOWN = (
    "**Data contracts FAILED**: 2 of 3 expectations failed (suites: canonical_rows v2.2.0, group_counts v2.0.0)\n"
    "\n"
    "| status | suite | expectation | column | failing rows | of | examples |\n"
    "|---|---|---|---|---|---|---|\n"
    "| ok | canonical_rows | expect_a | response | 0 | 9 |  |\n"
    "| FAIL | canonical_rows | expect_b | prompt_id, response_id | 2 | 9 | {\"prompt_id\": \"p0\"}; '"
    + "x" * 116 + "... |\n"
    "| FAIL | group_counts | expect_c |  |  |  | col \\| x missing |")


def test_markdown_report_is_exactly_the_table_a_reader_sees():
    report = _hand_report()
    assert report.to_markdown() == HAND_MARKDOWN
    lines = HAND_MARKDOWN.splitlines()
    assert report.to_markdown(only_failures=True) == "\n".join(lines[:4] + lines[5:])
    passed = ContractReport(True, {"group_counts": "2.0.0"}, [report.outcomes[0]])
    assert passed.to_markdown().splitlines()[0] == (
        "**Data contracts PASSED**: 0 of 1 expectations failed (suites: group_counts v2.0.0)")


def test_report_dict_is_plain_json_without_failing_keys():
    assert _hand_report().to_dict() == {
        "success": False, "suites": {"canonical_rows": "2.2.0", "group_counts": "2.0.0"},
        "parameters": {"k": 3, "f": "inf"},
        "statistics": {"evaluated_expectations": 3, "successful_expectations": 1, "unsuccessful_expectations": 2},
        "outcomes": [
            {"suite": "canonical_rows", "expectation": "expect_a", "column": "response", "success": True,
             "element_count": 9, "unexpected_count": 0, "unexpected_examples": [], "kwargs": {}, "error": None},
            {"suite": "canonical_rows", "expectation": "expect_b", "column": ["prompt_id", "response_id"],
             "success": False, "element_count": 9, "unexpected_count": 2,
             "unexpected_examples": [{"prompt_id": "p0"}, "x" * 119], "kwargs": {"mostly": 0.5}, "error": None},
            {"suite": "group_counts", "expectation": "expect_c", "column": None, "success": False,
             "element_count": None, "unexpected_count": None, "unexpected_examples": [], "kwargs": {},
             "error": "col | x\nmissing"}]}


def test_violation_text_is_the_failures_then_the_remedy():
    report = _hand_report()
    exc = ContractViolation(report)
    assert exc.report is report
    assert str(exc) == (report.to_markdown(only_failures=True) + "\n\nNothing downstream ran on this data. Fix the "
                        "data (or its adapter) so these expectations hold, or set `on_invalid = \"quarantine\"` in "
                        "the config to drop the offending rows/groups and continue.")
    assert require_valid(ContractReport(True, {}, [])).success
    with pytest.raises(ContractViolation):
        require_valid(report)


def test_quarantine_limit_text_lists_the_ten_biggest_reasons_largest_first():
    report = _hand_report()
    reasons = {f"r{i}": i + 1 for i in range(11)}  # r10 removed 11 rows ... r0 removed 1 (left out: top 10)
    exc = QuarantineLimitExceeded(report, kept=5, total=7, min_keep_fraction=0.75, reasons=reasons)
    assert (exc.kept, exc.total, exc.report) == (5, 7, report)
    top = "\n".join(f"- {i + 1} rows: r{i}" for i in range(10, 0, -1))
    assert str(exc) == (
        f"Quarantine would keep 5 of 7 rows (71.4%), below data.min_keep_fraction = 0.75. Removed rows by reason:\n"
        f"{top}\n\n{report.to_markdown(only_failures=True)}\n\nNothing downstream ran on this data. Fix the data "
        "or its adapter, or lower data.min_keep_fraction if losing that much is acceptable.")
    assert "keep 0 of 0 rows (0.0%)" in str(QuarantineLimitExceeded(report, 0, 0, 0.9, {}))
    assert "keep 1 of 1 rows (100.0%)" in str(QuarantineLimitExceeded(report, 1, 1, 1.5, {}))


def test_short_and_md_cut_and_escape_at_the_stated_width():
    assert runner._short("x" * 118) == "'" + "x" * 118 + "'"  # 120 characters: kept whole
    assert runner._short("x" * 119) == "'" + "x" * 116 + "..."  # 121: cut to 120
    assert len(runner._short("y" * 500)) == 120
    assert runner._short({"a": "é", "b": [1, None]}) == '{"a": "é", "b": [1, null]}'
    assert runner._short("abcdef", n=5) == "'a..."
    assert runner._md("a|b\nc|") == "a\\|b c\\|"
    assert runner._md(7) == "7"


def test_jsonable_keeps_plain_json_types_only():
    value = {1: (np.int64(2), np.float64(0.5), float("inf"), float("-inf"), float("nan"), None, pd.NA, pd.NaT,
                 np.bool_(True), "s", SUITES_DIR.parent / "p", np.array([1, 2]), {3})}
    out = runner._jsonable(value)
    assert out == {"1": [2, 0.5, "inf", "-inf", "nan", None, None, None, True, "s",
                         str(SUITES_DIR.parent / "p"), [1, 2], [3]]}
    assert type(out["1"][0]) is int and type(out["1"][8]) is bool
    assert runner._int_or_none(None) is None and runner._int_or_none(np.int64(4)) == 4
    assert type(runner._int_or_none(2.0)) is int


@pytest.mark.parametrize("info, message", [
    (None, None), ({}, None), ("boom", None),
    ({"raised_exception": True, "exception_message": "boom"}, "boom"),
    ({"raised_exception": False, "exception_message": None}, None),
    ({"raised_exception": False, "exception_message": "half"}, "half"),
    ({"m1": {"raised_exception": True, "exception_message": "a"},
      "m2": {"raised_exception": True, "exception_message": "a"},
      "m3": {"raised_exception": False, "exception_message": "b"},
      "m4": {"raised_exception": False, "exception_message": None}, "m5": "not a dict"}, "a; b"),
])
def test_gx_exception_info_becomes_one_message(info, message):
    assert runner._exception_message(info) == message


def _gx_result(success, kwargs, result, exception_info=None):
    return SimpleNamespace(success=success, result=result, exception_info=exception_info,
                           expectation_config=SimpleNamespace(type="expect_x", kwargs=kwargs))


def test_outcome_reads_columns_examples_and_failing_keys_from_a_gx_result():
    rows = [{"row": i, "score": i, "prompt_id": f"p{i}"} for i in range(7)]
    r = _gx_result(False, {"column_A": "a", "column_B": "b", "batch_id": "x", "mostly": 0.9},
                   {"element_count": np.int64(9), "unexpected_count": 7, "unexpected_index_list": rows,
                    "partial_unexpected_index_list": rows[:2], "partial_unexpected_list": [99]})
    o = runner._outcome("s", r, key="row")
    assert (o.suite, o.expectation, o.column, o.success) == ("s", "expect_x", ["a", "b"], False)
    assert (o.element_count, o.unexpected_count, o.kwargs, o.error) == (9, 7, {"column_A": "a", "column_B": "b",
                                                                               "mostly": 0.9}, None)
    assert o.unexpected_examples == [{"prompt_id": "p0", "score": 0}, {"prompt_id": "p1", "score": 1}]
    assert o.failing_keys == list(range(7))
    # COMPLETE results carry only the full lists: the first MAX_EXAMPLES of them become the examples
    full = runner._outcome("s", _gx_result(False, {"column": "c"}, {"unexpected_index_list": rows}), key="prompt_id")
    assert full.column == "c" and full.unexpected_examples == [{"prompt_id": f"p{i}", "score": i} for i in range(5)]
    assert full.failing_keys == [f"p{i}" for i in range(7)]
    values = runner._outcome("s", _gx_result(False, {"column_list": ["c", "d"]}, {"unexpected_list": [1, 2]}), "row")
    assert (values.column, values.unexpected_examples, values.failing_keys) == (["c", "d"], [1, 2], None)
    summary = runner._outcome("s", _gx_result(False, {"column": "c"}, {"unexpected_index_list": rows,
                                                                       "partial_unexpected_list": [5, 6]}))
    assert summary.unexpected_examples == [5, 6] and summary.failing_keys is None  # no key: not complete
    ok = runner._outcome("s", _gx_result(True, {}, None), key="row")
    assert (ok.column, ok.success, ok.element_count, ok.unexpected_examples, ok.failing_keys) == (None, True, None, [],
                                                                                                  None)
    bare = runner._outcome("s", _gx_result(False, {}, {"unexpected_index_list": [4, 5]}), key="row")
    assert bare.failing_keys == [4, 5]
    err = runner._outcome("s", _gx_result(False, {"column": "c"}, {},
                                          {"raised_exception": True, "exception_message": "no column c"}))
    assert err.error == "no column c"


def test_where_first_puts_origin_and_ids_first_and_drops_the_row_key():
    example = {"row": 4, "score": 1, "response_id": "r", "prompt_id": "p", "origin": "f:1"}
    assert list(runner._where_first(example).items()) == [("origin", "f:1"), ("prompt_id", "p"),
                                                           ("response_id", "r"), ("score", 1)]


def test_group_counts_by_hand():
    """p0: equal scores (no preference); p1: best "C" (a null score ranks last) equals "C " once
    whitespace is normalised, and its prompt is p0's prompt in another split; p2: one response;
    p3: two splits."""
    t = pd.DataFrame({
        "prompt_id": ["p0", "p0", "p1", "p1", "p2", "p3", "p3"],
        "prompt": ["Hi there", "Hi there", "hi  THERE", "hi  THERE", "Other", "Other", "Other"],
        "response": ["A", "B", "C ", "C", "D", "E", "F"],
        "score": [1.0, 1.0, np.nan, 2.0, 0.0, 1.0, 0.0],
        "split": ["train", "train", "eval", "eval", "train", "train", "eval"],
        "origin": [f"f:{i}" for i in range(1, 8)]})
    gc = group_counts(t)
    assert gc.to_dict("list") == {
        "prompt_id": ["p0", "p1", "p2", "p3"], "n_responses": [2, 2, 1, 2], "n_distinct_responses": [2, 2, 1, 2],
        "n_splits": [1, 1, 1, 2], "preferred_equals_dispreferred": [False, True, False, False],
        "has_preference": [False, False, True, True], "prompt_text_splits": [2, 2, 1, 1],
        "origin": ["f:1", "f:3", "f:5", "f:6"]}
    assert {c: str(d) for c, d in gc.dtypes.items() if c not in ("prompt_id", "origin")} == {
        "n_responses": "int64", "n_distinct_responses": "int64", "n_splits": "int64",
        "preferred_equals_dispreferred": "bool", "has_preference": "bool", "prompt_text_splits": "int64"}
    assert "origin" not in group_counts(t.drop(columns=["origin"])).columns


def test_normalised_text_row_checks_and_pair_checks_by_hand():
    s = pd.Series(["  A\tB ", None, "a  b", "ab"], index=[5, 6, 7, 8])
    out = normalised_text(s)
    assert list(out.index) == [5, 6, 7, 8] and out[5] == out[7] == "a b" and out[8] == "ab" and out[6] is pd.NA
    t = pd.DataFrame({"prompt": ["P", "p ", "P", "Q"], "response": ["r", "R", "s", "r"]}, index=[3, 2, 1, 0])
    checks = row_checks(t)
    assert checks["is_near_duplicate"].tolist() == [0, 1, 0, 0] and str(checks["is_near_duplicate"].dtype) == "int8"
    assert list(checks.index) == [0, 1, 2, 3]
    assert "is_near_duplicate" not in row_checks(t[["prompt"]]).columns
    pairs = pair_checks(pd.DataFrame({"response_a": ["X", "a", None], "response_b": ["x ", "b", None]}, index=[9, 8, 7]))
    assert pairs["responses_identical"].tolist() == [True, False, False] and list(pairs.index) == [0, 1, 2]
    assert list(pairs.columns) == ["response_a", "response_b", "responses_identical"]
    assert pairs["responses_identical"].dtype == bool
    assert "responses_identical" not in pair_checks(pd.DataFrame({"response_a": ["X"]})).columns


def test_blamed_repeats_are_named_like_failing_rows():
    checks = pd.DataFrame({"is_near_duplicate": [0, 1, 0, 1, 1, 1, 1, 1], "prompt_id": list("abcdefgh"),
                           "response_id": [f"r{i}" for i in range(8)], "row": range(8)})
    o = ExpectationOutcome("canonical_rows", "expect_column_mean_to_be_between", "is_near_duplicate", False)
    canonical._blame_repeats(o, checks, complete=True)
    assert (o.unexpected_count, o.element_count, o.failing_keys) == (6, 8, [1, 3, 4, 5, 6, 7])
    assert o.unexpected_examples == [{"prompt_id": p, "response_id": f"r{i}"} for i, p in
                                     [(1, "b"), (3, "d"), (4, "e"), (5, "f"), (6, "g")]]
    summary = ExpectationOutcome("canonical_rows", "x", "is_near_duplicate", False)
    canonical._blame_repeats(summary, checks, complete=False)
    assert summary.failing_keys is None and summary.unexpected_count == 6


def test_a_repeat_past_the_duplicate_bound_is_blamed_in_the_report():
    t = _near_duplicate_rows(good_table())
    report = validate_canonical(t, duplicate_rate_max=0.0, complete=True)
    (o,) = [o for o in report.failures if o.column == "is_near_duplicate"]
    assert (o.unexpected_count, o.element_count, o.failing_keys) == (3, 12, [9, 10, 11])
    assert [e["response_id"] for e in o.unexpected_examples] == ["p3-r0", "p3-r1", "p3-r2"]


def test_validate_canonical_merges_both_suites_in_order():
    report = validate_canonical(good_table(), max_prompt_chars=100, min_responses_per_group=3)
    assert report.success and list(report.suites) == ["canonical_rows", "group_counts"]
    assert report.parameters == {"min_prompt_chars": 1, "max_prompt_chars": 100, "min_response_chars": 1,
                                 "max_response_chars": 8192, "duplicate_rate_max": 0.05,
                                 "min_responses_per_group": 3}
    assert len(report.gx_results) == 2
    assert [o.suite for o in report.outcomes] == (["canonical_rows"] * len(load_suite("canonical_rows").expectations)
                                                  + ["group_counts"] * len(load_suite("group_counts").expectations))
    for name, value in [("min_prompt_chars", 13), ("max_prompt_chars", 5), ("min_response_chars", 6),
                        ("max_response_chars", 2), ("min_responses_per_group", 4)]:
        assert not validate_canonical(good_table(), **{name: value}).success, name
    assert not validate_canonical(_near_duplicate_rows(good_table()),
                                  duplicate_rate_max=0.2).success
    assert validate_canonical(_near_duplicate_rows(good_table()),
                              duplicate_rate_max=0.25).success  # 3 repeats of 12 rows = 0.25


def test_examples_stop_at_five_and_complete_names_every_failing_row_and_group():
    t = good_table()
    t["score"] = np.nan
    report = validate_canonical(t)
    (o,) = [o for o in report.failures if o.expectation == "expect_column_values_to_not_be_null"]
    assert o.unexpected_count == 9 and len(o.unexpected_examples) == runner.MAX_EXAMPLES == 5
    assert o.failing_keys is None
    complete = validate_canonical(_drop(good_table(), [7, 8]), complete=True)
    (g,) = complete.failures
    assert (g.suite, g.failing_keys) == ("group_counts", ["p2"])
    rows = validate_canonical(_set(_set(good_table(), 1, "response", ""), 4, "response", ""), complete=True)
    assert {tuple(o.failing_keys) for o in rows.failures if o.column == "response"} == {(1, 4)}


def test_suite_lookup_errors_say_what_exists(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as exc:
        runner._suite_json("no_such_suite")
    assert str(exc.value) == (f"no suite 'no_such_suite' in {SUITES_DIR} (known: ['canonical_rows', 'gold_pairs', "
                              "'group_counts', 'pairwise_labels'])")
    assert suite_defaults("group_counts") == {"min_responses_per_group": 2}
    with pytest.raises(ValueError) as bad:
        validate_table(good_table(), "group_counts", {"min_responses": 1, "zzz": 2})
    assert str(bad.value) == ("suite 'group_counts' has no parameter(s) ['min_responses', 'zzz']; "
                              "it takes ['min_responses_per_group']")
    raw = json.loads((SUITES_DIR / "group_counts.json").read_text())
    raw["expectations"].append({"type": "expect_no_such_thing", "kwargs": {"column": "x"}})
    (tmp_path / "broken_suite_for_test.json").write_text(json.dumps(raw))
    monkeypatch.setattr(runner, "SUITES_DIR", tmp_path)
    with pytest.raises(ValueError) as broken:
        load_suite("broken_suite_for_test")
    assert str(broken.value) == ("suite 'broken_suite_for_test': 1 expectation(s) could not be built; check the JSON")


def test_gx_import_turns_analytics_and_chatter_off_unless_set(monkeypatch):
    import logging

    log = logging.getLogger("great_expectations")
    monkeypatch.delenv("GX_ANALYTICS_ENABLED", raising=False)
    monkeypatch.setattr(log, "level", logging.NOTSET)
    runner._gx()
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false" and log.level == logging.ERROR
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "true")
    monkeypatch.setattr(log, "level", logging.INFO)
    runner._gx()
    assert os.environ["GX_ANALYTICS_ENABLED"] == "true" and log.level == logging.INFO


# --------------------------------------------------------------------------- quarantine bookkeeping by hand
def test_failing_rows_joins_every_broken_expectation_per_row():
    table = pd.DataFrame({"prompt_id": ["p0", "p0", "p1", "p1"]})
    report = ContractReport(False, {}, [
        ExpectationOutcome("canonical_rows", "e1", "response", False, failing_keys=[0, 2, None]),
        ExpectationOutcome("canonical_rows", "ok", "x", True),
        ExpectationOutcome("group_counts", "e2", ["a", "b"], False, failing_keys=["p1", "p9"])])
    reasons = contract_outcome._failing_rows(report, table)
    assert reasons.tolist() == ["canonical_rows:e1(response)", None, "canonical_rows:e1(response); group_counts:e2(a,b)",
                                "group_counts:e2(a,b)"]
    unknown = ContractReport(False, {}, [ExpectationOutcome("canonical_rows", "e1", "x", False, failing_keys=None)])
    assert contract_outcome._failing_rows(unknown, table) is None
    errored = ContractReport(False, {}, [ExpectationOutcome("s", "e", "x", False, error="boom", failing_keys=[0])])
    assert contract_outcome._failing_rows(errored, table) is None
    nobody = ContractReport(False, {}, [ExpectationOutcome("s", "e", "x", False, failing_keys=[])])
    assert contract_outcome._failing_rows(nobody, table) is None
    no_ids = ContractReport(False, {}, [ExpectationOutcome("canonical_rows", "e1", "x", False, failing_keys=[1])])
    assert contract_outcome._failing_rows(no_ids, pd.DataFrame({"x": [5, 6]})).tolist() == [None, "canonical_rows:e1(x)"]


def test_counts_and_empty_quarantine_by_hand():
    table = pd.DataFrame({"prompt_id": ["a", "a", "b", "c"], "x": [1, 2, 3, 4]})
    report = ContractReport(False, {}, [ExpectationOutcome("s", "e", "x", False), ExpectationOutcome("s", "f", "x", True)])
    assert contract_outcome._counts(table, table.iloc[:2], report) == {
        "rows_read": 4.0, "rows": 2.0, "rows_quarantined": 2.0, "prompts_read": 3.0, "prompts": 1.0,
        "contract_failures": 1.0}
    assert contract_outcome._counts(table[["x"]], table[["x"]], report)["prompts_read"] == 0.0
    assert contract_outcome._counts(table, table[["x"]], report)["prompts"] == 0.0
    empty = contract_outcome._empty_quarantine(table)
    assert list(empty.columns) == ["prompt_id", "x", "quarantine_reason"] and len(empty) == 0
    assert str(empty["quarantine_reason"].dtype) == "string"
    assert contract_outcome._col(["a", "b"]) == "a,b" and contract_outcome._col(None) == "None"


def test_unknown_policy_is_named_with_the_valid_ones():
    with pytest.raises(ValueError) as exc:
        enforce_contracts(good_table(), on_invalid="drop")
    assert str(exc.value) == "on_invalid = 'drop'; valid: fail, quarantine"


def test_passing_table_gets_counts_and_an_empty_quarantine():
    out = enforce_contracts(good_table().set_axis(range(10, 19)))
    assert list(out.table.index) == list(range(9)) and out.report is out.final_report
    assert out.counts == {"rows_read": 9.0, "rows": 9.0, "rows_quarantined": 0.0, "prompts_read": 3.0,
                          "prompts": 3.0, "contract_failures": 0.0}
    assert "quarantine_reason" in out.quarantined.columns and len(out.quarantined) == 0


def _twelve_rows() -> pd.DataFrame:
    """good_table plus a fourth prompt (train): 12 rows, all valid."""
    extra = pd.DataFrame([{"prompt_id": "p3", "prompt": "Name a fruit.", "response_id": f"p3-r{j}", "response": r,
                           "score": float(3 - j), "is_harmful": False, "label_source": "human",
                           "source": "fixture@sha256:00", "split": "train"} for j, r in enumerate(["Apple", "Pear", "Stone"])])
    return pd.concat([good_table(), extra.astype({"is_harmful": "boolean"})], ignore_index=True)


def test_quarantine_keeps_ninety_percent_by_default_and_returns_the_input_columns():
    """One empty response of 12 rows: 11 / 12 = 0.917 kept >= the default 0.9, so the run goes on with the
    table's own columns (no index column left behind by the removal)."""
    t = _set(_twelve_rows(), 4, "response", "")
    out = enforce_contracts(t, on_invalid="quarantine")
    assert len(out.table) == 11 and list(out.table.columns) == list(t.columns)
    assert list(out.table.index) == list(range(11))
    with pytest.raises(QuarantineLimitExceeded):
        enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.95)


def test_bounds_reach_the_first_validation():
    """A contract bound given to enforce_contracts applies to the table as read (fail policy: it raises)."""
    with pytest.raises(ContractViolation, match="expect_column_value_lengths_to_be_between"):
        enforce_contracts(good_table(), max_response_chars=4)
    assert enforce_contracts(good_table(), max_response_chars=14).report.success  # "Red, probably." is 14


def test_later_quarantine_passes_use_the_same_bounds_and_a_bound_is_met_at_equality():
    """min_responses_per_group = 3 on 12 rows (4 prompts x 3): row 4's empty response goes in pass 1, which
    leaves its group p1 with 2 responses, below the bound, so pass 2 (with the same bound) removes the
    group: 9 of 12 rows kept, exactly min_keep_fraction 0.75 (a bound met at equality passes). The
    quarantine table is numbered from 0 and names, per removed row, what it broke."""
    t = _set(_twelve_rows(), 4, "response", "")
    out = enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.75, min_responses_per_group=3)
    assert len(out.table) == 9 and "p1" not in set(out.table["prompt_id"])
    assert list(out.quarantined.index) == [0, 1, 2]
    assert sorted(out.quarantined["response_id"]) == ["p1-r0", "p1-r1", "p1-r2"]
    with pytest.raises(QuarantineLimitExceeded) as exc:
        enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.8, min_responses_per_group=3)
    assert ("- 2 rows: group_counts:expect_column_values_to_be_between(n_responses)\n- 1 rows: "
            "canonical_rows:expect_column_value_lengths_to_be_between(response); "
            "canonical_rows:expect_column_values_to_match_regex(response)") in str(exc.value)


def test_quarantine_of_every_row_keeps_the_report_that_removed_them():
    """min_keep_fraction = 0 and every response empty: the first pass removes every row, and an empty table
    is not validated again, so the final report is the one that removed them (failing, naming the empty
    responses), not a report on nothing."""
    t = good_table()
    for i in range(len(t)):
        t = _set(t, i, "response", "")
    out = enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0)
    assert len(out.table) == 0 and len(out.quarantined) == len(t)
    assert out.final_report is out.report and not out.final_report.success
    assert "expect_column_value_lengths_to_be_between" in {o.expectation for o in out.final_report.failures}


def test_quarantine_that_does_not_settle_in_its_passes_stops_with_the_report(monkeypatch):
    """With a single pass allowed, the group emptied by the first removal still fails: the run stops with
    that report (a contract violation), instead of training on it."""
    monkeypatch.setattr(contract_outcome, "MAX_PASSES", 1)
    t = _set(_twelve_rows(), 4, "response", "")
    with pytest.raises(ContractViolation) as exc:
        enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.5, min_responses_per_group=3)
    assert not isinstance(exc.value, QuarantineLimitExceeded)
    assert "n_responses" in str(exc.value) and exc.value.report.failures


def test_validate_pairwise_checks_human_and_ai_labels_by_default():
    from tests.test_contract_edges import _frame, _pair_rows

    table = _frame("pairwise_labels", _pair_rows("p", [{}, {}], gold=False))
    assert list(validate_pairwise(table).suites) == ["pairwise_labels"]


def test_group_counts_count_missing_values_as_values():
    """Rows are grouped whatever their prompt id (a missing id is its own group, reported, not dropped), in
    sorted id order; a missing response or split counts as one more distinct value; a missing response is
    never "the same" as the preferred one; whitespace inside a response is normalised too ("a  b" is "a b"),
    and the group without an id is checked for a repeated preferred response like any other ("d" and "d ")."""
    t = pd.DataFrame({
        "prompt_id": ["p1", "p1", "p1", "p0", "p0", None, None],
        "prompt": ["x", "x", "x", "y", "y", "z", "z"],
        "response": ["a b", "a  b", None, "c", None, "d", "d "],
        "score": [2.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0],
        "split": ["train", "train", "train", "eval", None, "train", "train"]})
    gc = group_counts(t)
    assert gc["prompt_id"].tolist()[:2] == ["p0", "p1"] and pd.isna(gc["prompt_id"].iloc[2])
    assert gc["n_responses"].tolist() == [2, 3, 2]
    assert gc["n_distinct_responses"].tolist() == [2, 3, 2]
    assert gc["n_splits"].tolist() == [2, 1, 1]
    assert gc["preferred_equals_dispreferred"].tolist() == [False, True, True]


def test_group_counts_with_nullable_dtypes_and_a_missing_id_with_distinct_responses():
    """Pandas' nullable dtypes, where a comparison with a missing value is missing (not False): a missing
    response in a "string" column is not "the same" as the preferred one (p0: "a", missing, "b" -> no
    repeat); a group whose "Float64" scores are all missing has no preference; the group without an id
    whose responses differ ("d", "e") does not repeat its preferred response."""
    t = pd.DataFrame({
        "prompt_id": ["p0", "p0", "p0", "p1", "p1", None, None],
        "prompt": ["x", "x", "x", "y", "y", "z", "z"],
        "response": ["a", None, "b", "c", "c2", "d", "e"],
        "score": [2.0, 1.0, 0.0, None, None, 1.0, 0.0],
        "split": ["train"] * 7}).astype({"response": "string", "score": "Float64"})
    gc = group_counts(t)
    assert gc["prompt_id"].tolist()[:2] == ["p0", "p1"] and pd.isna(gc["prompt_id"].iloc[2])
    assert gc["preferred_equals_dispreferred"].tolist() == [False, False, False]
    assert gc["has_preference"].tolist() == [True, False, True]


def test_prompt_text_splits_counts_a_missing_split_and_a_missing_prompt():
    """Two ids share the prompt text "x", one in train, one with no split: 2 splits for both (a missing
    split is a split of its own, as in n_splits). A group without prompt text still gets a count (1)."""
    t = pd.DataFrame({
        "prompt_id": ["p0", "p0", "p1", "p1", "p2", "p2"],
        "prompt": ["x", "x", "x", "x", None, None],
        "response": ["a", "b", "c", "d", "e", "f"],
        "score": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        "split": ["train", "train", None, None, "eval", "eval"]})
    gc = group_counts(t).set_index("prompt_id")
    assert gc["prompt_text_splits"].to_dict() == {"p0": 2, "p1": 2, "p2": 1}


def test_group_suite_runs_on_a_table_of_exactly_the_group_columns():
    """A table with only the columns group_counts reads: the row suite reports what is missing and the group
    suite still runs (here it finds p1's single response)."""
    t = _drop(good_table(), [4, 5])[list(checks.GROUP_INPUT_COLUMNS)]
    report = validate_canonical(t)
    assert "group_counts" in report.suites
    assert ("expect_column_values_to_be_between", "n_responses") in failures(report)


def test_row_checks_keep_the_tables_columns_and_number_rows_from_zero():
    """row_checks adds is_near_duplicate and nothing else (no old index as a column), rows numbered 0..n-1
    whatever the table's index."""
    t = good_table()
    t.index = range(100, 100 + len(t))
    checks = row_checks(t)
    assert list(checks.columns) == list(t.columns) + ["is_near_duplicate"]
    assert list(checks.index) == list(range(len(t)))


def test_validation_prints_no_progress_bars(capfd):
    """An ephemeral context without GX's progress bars: a validation writes nothing to the terminal."""
    validate_canonical(good_table())
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out


def test_validate_table_keeps_examples_only_unless_asked_for_every_failing_row():
    """By default a report keeps counts and a few examples (failing_keys None); complete=True keeps every key."""
    t = _set(good_table(), 1, "response", "")
    assert all(o.failing_keys is None for o in validate_table(t, "canonical_rows").outcomes)
    complete = validate_table(t.assign(row=range(len(t))), "canonical_rows", complete=True)
    assert [o.failing_keys for o in complete.failures if o.column == "response"] == [[1], [1]]


def test_normalised_text_is_a_string_column_with_missing_values_kept():
    out = normalised_text(pd.Series(["  A\tb ", None, "a b"], index=[5, 6, 7]))
    assert out.dtype == "string" and list(out.index) == [5, 6, 7]
    assert out.iloc[0] == out.iloc[2] == "a b" and pd.isna(out.iloc[1])


def test_an_expectation_that_raised_without_a_message_is_still_an_error():
    assert runner._exception_message({"raised_exception": True, "exception_message": None}) is not None
    assert runner._exception_message({"raised_exception": False, "exception_message": None}) is None


def test_a_report_asks_gx_for_a_summary_with_at_most_five_examples():
    """Without complete=True GX is asked for a summary: no list of every failing row (a large table can fail
    on many rows) and at most MAX_EXAMPLES examples, which is all a report shows."""
    t = good_table()
    for i in range(7):  # 7 failing rows, more than the 5 examples
        t = _set(t, i, "response", "")
    report = validate_table(t, "canonical_rows")
    failed = [r.result for r in report.gx_results[0].results if not r.success and r.result.get("unexpected_count")]
    assert failed and all("unexpected_index_list" not in r for r in failed)
    assert max(len(r["partial_unexpected_list"]) for r in failed) == runner.MAX_EXAMPLES == 5

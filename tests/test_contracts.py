"""Data contracts: a good fixture passes; each bad fixture breaks exactly the expectation it targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_contracts import (
    ContractReport,
    ContractViolation,
    QuarantineLimitExceeded,
    enforce_contracts,
    group_counts,
    load_suite,
    render_data_docs,
    require_valid,
    row_checks,
    suite_defaults,
    suite_version,
    validate_canonical,
    validate_table,
)
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
    assert set(suite_defaults("canonical_rows")) | set(suite_defaults("group_counts")) == set(sig) - {"table", "complete"}
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

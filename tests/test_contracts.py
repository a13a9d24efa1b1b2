"""Data contracts: a good fixture passes; each bad fixture breaks exactly the expectation it targets."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from data_contracts import (
    ContractReport,
    ContractViolation,
    group_counts,
    load_suite,
    require_valid,
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
    assert report.suites == {"canonical_rows": "1.0.0", "group_counts": "1.0.0"}
    stats = report.statistics
    assert stats["unsuccessful_expectations"] == 0
    assert stats["evaluated_expectations"] == stats["successful_expectations"] == len(report.outcomes)
    assert require_valid(report) is report


def _set(t, idx, col, value):
    t.loc[idx, col] = value
    return t


def _drop(t, idx):
    return t.drop(index=idx).reset_index(drop=True)


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
        ("expect_column_pair_values_to_be_equal", "n_distinct_responses,n_responses"): 1}),
    "preferred_equals_dispreferred": (lambda t: _set(t, 8, "response", " Paris "), {}, {
        ("expect_column_values_to_be_in_set", "preferred_equals_dispreferred"): 1}),
    "preferred_exact_duplicate": (lambda t: _set(t, 8, "response", "Paris"), {}, {
        ("expect_column_pair_values_to_be_equal", "n_distinct_responses,n_responses"): 1,
        ("expect_column_values_to_be_in_set", "preferred_equals_dispreferred"): 1}),
    "response_over_param": (lambda t: t, {"max_response_chars": 12}, {
        ("expect_column_value_lengths_to_be_between", "response"): 1}),
    "prompt_over_param": (lambda t: t, {"max_prompt_chars": 12}, {
        ("expect_column_value_lengths_to_be_between", "prompt"): 6}),
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
    assert d["parameters"] == {"max_prompt_chars": 4096, "max_response_chars": 8192,
                               "min_responses_per_group": 2}
    md = report.to_markdown()
    assert "FAILED" in md and "expect_column_values_to_be_between" in md


@pytest.mark.parametrize("name", ["canonical_rows", "group_counts"])
def test_suite_files_load_with_versions(name):
    raw = json.loads((SUITES_DIR / f"{name}.json").read_text())
    suite = load_suite(name)
    assert suite.name == name
    assert len(suite.expectations) == len(raw["expectations"])
    assert suite_version(name) == raw["meta"]["version"] == "1.0.0"
    assert raw["meta"]["description"]


def test_suite_defaults_match_validate_canonical_defaults():
    import inspect

    sig = inspect.signature(validate_canonical).parameters
    for name in ("canonical_rows", "group_counts"):
        for param, value in suite_defaults(name).items():
            assert sig[param].default == value


def test_validate_table_takes_parameters():
    t = good_table()
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


def _synthetic(n_prompts: int = 40_000, k: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pid = pd.Series(np.repeat(np.arange(n_prompts), k))
    j = pd.Series(np.tile(np.arange(k), n_prompts)).astype(str)
    ids = pid.map("{:016x}".format)
    return pd.DataFrame({
        "prompt_id": ids, "prompt": "Question number " + pid.astype(str) + "?",
        "response_id": ids + "-" + j, "response": "Answer " + j + " to question " + pid.astype(str),
        "score": rng.normal(size=len(pid)),
        "is_harmful": pd.array(rng.random(len(pid)) < 0.1, dtype="boolean"),
        "label_source": "rm", "source": "synthetic", "split": np.where(pid % 10 == 0, "eval", "train"),
    })


def test_time_160k_rows(capsys):
    """Measured and printed, never asserted (benchmarks are not timed tests)."""
    table = _synthetic()
    assert len(table) == 160_000
    t0 = time.perf_counter()
    report = validate_canonical(table)
    elapsed = time.perf_counter() - t0
    assert report.success, report.to_markdown(only_failures=True)
    with capsys.disabled():
        print(f"\n[contracts] validate_canonical on {len(table):,} rows: {elapsed:.2f} s")


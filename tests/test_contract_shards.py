"""Contracts validated in shards of whole prompts (data_contracts.shards) give the whole-table report.

Every case compares a sharded run (shard_rows of a few rows, so a 12-prompt table becomes several shards)
with one GX run on the whole table, or with counts worked out by hand below.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from data_contracts import checks, enforce_contracts, render_data_docs, runner, shards, validate_canonical


def table(n_prompts: int = 12, k: int = 3) -> pd.DataFrame:
    rows = [{"prompt_id": f"p{i:02d}", "prompt": f"Question {i}?", "response_id": f"p{i:02d}-r{j}",
             "response": f"Answer {j} to question {i}.", "score": float(k - j), "is_harmful": False,
             "label_source": "human", "source": "fixture@sha256:00", "split": "eval" if i % 4 == 0 else "train",
             "origin": f"f.jsonl:{i * k + j + 1}"}
            for i in range(n_prompts) for j in range(k)]
    return pd.DataFrame(rows).astype({"is_harmful": "boolean"})


def broken() -> pd.DataFrame:
    """A failure in most shards: each kind of row expectation, a group one, and near duplicates across
    prompts (p07 repeats p01's prompt and answer, in another shard)."""
    t = table()
    t.loc[1, "response"] = ""  # lengths + regex \S
    t.loc[8, "score"] = np.nan  # not null
    t.loc[13, "response_id"] = "p04-r0"  # (prompt_id, response_id) repeats row 12
    t.loc[17, "split"] = "test"  # not in set (and p05 is in two splits: n_splits)
    t.loc[22, "prompt"] = "Question 7?\x07"  # control character
    t.loc[30, "label_source"] = None
    t.loc[21:23, "prompt"] = "question 1?  "  # p07's prompt is p01's, up to case and whitespace ...
    t.loc[21, "response"] = "Answer 0 to question 1."  # ... and so is one answer: a near duplicate
    return t


def test_shards_hold_whole_prompts_filled_in_order_of_first_appearance():
    """a:2 b:3 c:1 d:2 rows, shard_rows 3: prompts start at rows 0, 2, 5, 6 -> shards 0, 0, 1, 2."""
    df = pd.DataFrame({"prompt_id": list("aabbbcdd")})
    assert shards.shard_rows_of(df, "prompt_id", 3) == [slice(0, 5), slice(5, 6), slice(6, 8)]
    assert shards.shard_rows_of(df, "prompt_id", 8) == [slice(0, 8)]  # fits: one run
    assert shards.shard_rows_of(df, "prompt_id", 0) == [slice(0, 8)]  # 0: no sharding
    # interleaved prompts: positions, each prompt's rows together
    parts = shards.shard_rows_of(pd.DataFrame({"prompt_id": list("abab")}), "prompt_id", 1)
    assert [p.tolist() for p in parts] == [[0, 2], [1, 3]]
    # a missing prompt id is a prompt of its own
    parts = shards.shard_rows_of(pd.DataFrame({"prompt_id": ["a", None, "a", None]}), "prompt_id", 2)
    assert [p.tolist() for p in parts] == [[0, 2], [1, 3]]


@pytest.mark.parametrize("complete", [False, True])
@pytest.mark.parametrize("interleave", [False, True])
def test_sharded_report_equals_the_whole_table_report(complete, interleave, monkeypatch):
    t = broken()
    if interleave:  # prompts' rows not contiguous: shards are position arrays
        t = t.sample(frac=1.0, random_state=0).reset_index(drop=True)
    whole = validate_canonical(t, complete=complete, duplicate_rate_max=0.0, shard_rows=0)
    monkeypatch.setattr(checks, "CHUNK_ROWS", 5)  # texts coded in chunks of whole prompts too
    sharded = validate_canonical(t, complete=complete, duplicate_rate_max=0.0, shard_rows=7)
    assert len(shards.shard_rows_of(checks.row_checks(t), "prompt_id", 7)) >= 4
    failed = {o.expectation for o in whole.failures}
    assert len(whole.failures) >= 8 and "expect_column_mean_to_be_between" in failed
    got, want = sharded.to_dict(), whole.to_dict()
    if interleave:  # examples come shard by shard, not in table order: compare them as sets
        for o in got["outcomes"] + want["outcomes"]:
            o["unexpected_examples"] = sorted(map(json.dumps, o["unexpected_examples"]))
    assert got == want
    if complete:
        assert [sorted(o.failing_keys or []) for o in sharded.outcomes] == \
            [sorted(o.failing_keys or []) for o in whole.outcomes]
    assert sharded.gx_results[0].statistics["unsuccessful_expectations"] == len(
        [o for o in sharded.outcomes if o.suite == "canonical_rows" and not o.success])


def test_quarantine_in_shards_keeps_what_one_run_keeps():
    t = broken()
    one = enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.1, shard_rows=0)
    many = enforce_contracts(t, on_invalid="quarantine", min_keep_fraction=0.1, shard_rows=5)
    pd.testing.assert_frame_equal(many.table, one.table)
    pd.testing.assert_frame_equal(many.quarantined, one.quarantined)
    assert many.final_report.success and many.counts == one.counts
    assert "is_near_duplicate" in render_data_docs(many.report)  # GX renders the combined result


def test_a_missing_column_fails_the_same_in_shards():
    t = table().drop(columns=["score"])
    whole, sharded = (validate_canonical(t, shard_rows=n) for n in (0, 4))
    assert sharded.to_dict() == whole.to_dict() and not sharded.success


@pytest.fixture()
def suites_dir(tmp_path, monkeypatch):
    """A suites directory the test writes its own suites into."""
    monkeypatch.setattr(runner, "SUITES_DIR", tmp_path)
    runner._suite_json.cache_clear()
    yield tmp_path
    runner._suite_json.cache_clear()


def _suite(path, name, *expectations, parameters=None):
    (path / f"{name}.json").write_text(json.dumps({
        "name": name, "meta": {"version": "1"}, "suite_parameters": parameters or {},
        "expectations": [{"type": t, "kwargs": kw} for t, kw in expectations]}))


@pytest.mark.parametrize(("a", "b", "mostly", "passes"), [
    # p a: 1 of 4 out of range (75 % in: passes alone); p b: 2 of 4 (50 %: fails alone);
    # together 5 of 8 in range = 62.5 % < 75 %: fails
    ([5, 0, 0, 0], [5, 5, 0, 0], 0.75, False),
    # p a all in; p b 2 of 4 out (fails alone); together 8 of 10 = 80 % >= 75 %: passes
    ([0, 0, 0, 0, 0, 0], [5, 5, 0, 0], 0.75, True),
    # missing values are not considered: 3 missing, 1 of the 5 others out = 80 %: fails at 0.85 (counting
    # the 8 rows would give 87.5 % and pass), passes at 0.8
    ([None, None, None, 0], [5, 0, 0, 0], 0.85, False),
    ([None, None, None, 0], [5, 0, 0, 0], 0.80, True),
])
def test_mostly_is_judged_on_the_totals(suites_dir, a, b, mostly, passes):
    _suite(suites_dir, "ranged", ("expect_column_values_to_be_between",
                                  {"column": "x", "min_value": 0, "max_value": 1, "mostly": mostly}))
    df = pd.DataFrame({"prompt_id": ["a"] * len(a) + ["b"] * len(b), "x": pd.array(a + b, dtype="Float64")})
    sharded = shards.validate_in_shards(df, "ranged", shard_rows=len(a))
    whole = shards.validate_in_shards(df, "ranged", shard_rows=0)
    assert sharded.success is whole.success is passes
    assert sharded.to_dict() == whole.to_dict()
    assert sharded.outcomes[0].unexpected_count == sum(v == 5 for v in a + b)


def test_uniqueness_across_prompts_and_table_level_expectations_are_refused(suites_dir):
    df = pd.DataFrame({"prompt_id": list("aabb"), "response_id": ["r1", "r2", "r1", "r3"]})
    _suite(suites_dir, "ids", ("expect_column_values_to_be_unique", {"column": "response_id"}))
    with pytest.raises(ValueError, match=re.escape("shard_rows=0")):
        shards.validate_in_shards(df, "ids", shard_rows=2)
    assert not shards.validate_in_shards(df, "ids", shard_rows=0).success  # r1 twice
    _suite(suites_dir, "keyed", ("expect_compound_columns_to_be_unique",
                                 {"column_list": ["prompt_id", "response_id"]}))
    assert shards.validate_in_shards(df, "keyed", shard_rows=2).success
    _suite(suites_dir, "count", ("expect_table_row_count_to_be_between", {"min_value": 3}))
    with pytest.raises(ValueError, match="judges the whole table"):
        shards.validate_in_shards(df, "count", shard_rows=2)


def test_text_codes_in_chunks_compare_the_rows_of_a_key_exactly():
    """Normalised: "A  b", "a b", "a b", "a b", "A b" are "a b"; "x" and "X" are "x"; None is -1."""
    texts = pd.Series(["A  b", "a b", "x", "a b", None, "X", "a b", "A b"])
    keys = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    whole = checks.text_codes(texts)
    assert whole.tolist() == [0, 0, 1, 0, -1, 1, 0, 0]
    chunked = checks.text_codes(texts, within=keys, chunk_rows=3)
    assert len(checks.whole_key_chunks(keys, 3)) == 3
    same_key = keys[:, None] == keys[None, :]
    assert ((chunked[:, None] == chunked[None, :]) == (whole[:, None] == whole[None, :]))[same_key].all()
    assert chunked[4] == -1


def test_whitespace_list_is_what_python_re_calls_whitespace():
    """checks.PY_WHITESPACE is spelled out so that pyarrow's RE2 filter means what `re`'s \\s means."""
    spaces = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if re.match(r"\s", c))
    assert checks.PY_WHITESPACE == spaces


@pytest.mark.parametrize("text", ["a b", "a  b", "a\tb", "a\x0bb", "a\u00a0b", " a ", "a\u3000\u2028b", "ab", ""])
def test_fast_whitespace_collapse_equals_the_plain_regex(text):
    s = pd.Series([text, None], dtype="string")
    want = s.str.replace(r"\s+", " ", regex=True).str.strip()
    pd.testing.assert_series_equal(checks._collapse_whitespace(s), want)

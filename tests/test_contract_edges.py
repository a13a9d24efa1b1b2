"""Every data-contract expectation has a row that breaks it and a row that barely passes (its threshold's
edge), including ``mostly`` fractions and the text normalisation behind duplicates and leakage.

The cases are keyed by (expectation type, column) per suite and checked against the suite JSON in both
directions: an expectation added to data_contracts/suites/*.json without a case here fails
``test_every_expectation_has_a_case``, and so does a case whose expectation left the JSON (a dropped
expectation is a loosened contract too). ``mostly`` is pinned per expectation (1.0 unless a case says
otherwise), so a loosened ``mostly`` in the JSON fails even where the broken rows are few.

A "row" case is a block of rows: its edge form passes (lengths exactly at the maximum and minimum, scores
exactly at the bounds, tab/newline/CR that are text, not control bytes, nulls where nulls mean "unknown",
...) and its broken form breaks exactly its expectation. Per family (the canonical table, which runs
canonical_rows and group_counts; pairwise_labels; gold_pairs) two tables are validated once each, with
``complete=True`` so every failing row (or group, for group_counts) is named: VALID (a base plus every
case's edge block) must pass everything, BROKEN (the same base plus every case's broken block) must fail
each expectation on exactly its case's rows and nothing else on them. One test per expectation reads the
outcome. "exist" cases drop the column; "aggregate" cases (the duplicate-rate bound) have their own tests.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from data_contracts import group_counts, row_checks, validate_canonical, validate_pairwise, validate_table
from data_contracts.runner import SUITES_DIR, ContractReport, pair_checks

EXIST = "expect_column_to_exist"
NOT_NULL = "expect_column_values_to_not_be_null"
LENGTH = "expect_column_value_lengths_to_be_between"
REGEX = "expect_column_values_to_match_regex"
NO_REGEX = "expect_column_values_to_not_match_regex"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_column_values_to_be_unique"
COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"
PAIR_EQUAL = "expect_column_pair_values_to_be_equal"
MEAN = "expect_column_mean_to_be_between"

FAMILY = {"canonical_rows": "canonical", "group_counts": "canonical", "pairwise_labels": "pairwise_labels",
          "gold_pairs": "gold_pairs"}
SUITE_INPUT = {"canonical_rows": row_checks, "group_counts": group_counts, "pairwise_labels": pair_checks,
               "gold_pairs": pair_checks}
GROUP_KEYED = {"group_counts"}  # its rows are prompt ids; the others' are table rows

# Text normalisation ("the same text up to case and whitespace": data_contracts.checks.normalised_text).
# Each variant keeps the text "the same"; WHITESPACE_VARIANTS leave the case alone (group_counts compares
# the preferred response with the others up to whitespace only).
WHITESPACE_VARIANTS: dict[str, Callable[[str], str]] = {
    "tab": lambda s: s.replace(" ", "\t"),
    "newline": lambda s: s.replace(" ", "\n"),
    "crlf": lambda s: s.replace(" ", "\r\n"),
    "repeated_spaces": lambda s: s.replace(" ", "   "),
    "leading_trailing": lambda s: f" \t{s}\n ",
    "nbsp": lambda s: s.replace(" ", "\u00a0"),
    "mixed_whitespace": lambda s: "\n" + s.replace(" ", " \t\r\n ") + "\t",
}
VARIANTS: dict[str, Callable[[str], str]] = {
    **WHITESPACE_VARIANTS,
    "case": str.upper,
    "case_and_whitespace": lambda s: "  " + s.title().replace(" ", "\t\n") + " ",
}


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    kind: str  # "row" | "exist" | "aggregate"
    edge: tuple[dict, ...] = ()  # the block at the threshold's edge: passes every expectation
    breaks: Callable[[list[dict]], list[dict]] | None = None  # the block -> the block with the breaking row(s)
    bad: tuple[int, ...] = ()  # rows of the broken block that break the expectation (row-keyed suites)
    mostly: float = 1.0  # what the JSON must say (absent = 1.0)
    bad_value: object = None  # for a mostly threshold test: a value that breaks the expectation
    also: frozenset = field(default_factory=frozenset)  # (suite, type, column) the broken rows also break


EXISTS = Case("exist")


def rows(*specs: dict) -> tuple[dict, ...]:
    return tuple(specs)


def at(*idx: int, **changes) -> Callable[[list[dict]], list[dict]]:
    """Set ``changes`` on rows ``idx`` of the block."""
    return lambda block: [dict(r, **changes) if i in idx else r for i, r in enumerate(block)]


def each(changes: dict[int, dict]) -> Callable[[list[dict]], list[dict]]:
    """Different changes per row: {row: {column: value}}."""
    return lambda block: [dict(r, **changes.get(i, {})) for i, r in enumerate(block)]


def g(group: int, n: int, **cols) -> list[dict]:
    """``n`` rows of local group ``group`` (prompt id, prompt, ids, responses, scores filled in)."""
    return [{"g": group, **cols} for _ in range(n)]


MAX_PROMPT, MAX_RESPONSE = 4096, 8192  # the suites' defaults (suite_parameters), what validate_* pass
NUDGE_UP, NUDGE_DOWN = float(np.nextafter(1e6, np.inf)), float(np.nextafter(-1e6, -np.inf))
# Control characters the suites refuse ([\x00-\x08\x0b\x0c\x0e-\x1f\x7f]) and the characters either side of
# each range, which are text: tab \x09, newline \x0a, carriage return \x0d, space \x20, tilde \x7e.
CONTROL = ["\x00", "\x08", "\x0b", "\x0c", "\x0e", "\x1f", "\x7f"]
NOT_CONTROL = ["\t", "\n", "\r", " ", "~", "\u00e9", "\r\n"]
CAPITAL = "Paris is the capital of France."
CITY = "Where is the old town of city {k}?"

CANONICAL_ROWS: dict[tuple[str, str], Case] = {
    **{(EXIST, c): EXISTS for c in ("prompt_id", "prompt", "response_id", "response", "score", "is_harmful",
                                     "label_source", "source", "split", "is_near_duplicate")},
    # Both rows lose the id: together they are a group of two, so only the null is wrong.
    (NOT_NULL, "prompt_id"): Case("row", rows(*g(0, 2)), at(0, 1, prompt_id=None), bad=(0, 1)),
    (NOT_NULL, "prompt"): Case("row", rows(*g(0, 2)), at(1, prompt=None), bad=(1,)),
    (NOT_NULL, "response_id"): Case("row", rows(*g(0, 2)), at(1, response_id=None), bad=(1,)),
    (NOT_NULL, "response"): Case("row", rows(*g(0, 2)), at(1, response=None), bad=(1,)),
    # Three rows: the two scored ones still carry a preference.
    (NOT_NULL, "score"): Case("row", rows(*g(0, 3)), at(2, score=float("nan")), bad=(2,)),
    (NOT_NULL, "label_source"): Case("row", rows(*g(0, 2)), at(1, label_source=None), bad=(1,)),
    # A split is per prompt: the whole group loses it (one row alone would also split the group in two).
    (NOT_NULL, "split"): Case("row", rows(*g(0, 2)), at(0, 1, split=None), bad=(0, 1)),
    # Edge: a prompt of exactly 4096 characters, one of exactly 1; broken: 4097.
    (LENGTH, "prompt"): Case("row", rows(*g(0, 2, prompt="Q" * (MAX_PROMPT - 1) + "?"), *g(1, 2, prompt="?")),
                             at(0, 1, prompt="Q" * MAX_PROMPT + "?"), bad=(0, 1)),
    # Edge: a response of exactly 8192 characters, one of exactly 1; broken: 8193.
    (LENGTH, "response"): Case("row", rows({"response": "A" * (MAX_RESPONSE - 1) + "."}, {"response": "x"}),
                               at(0, response="A" * MAX_RESPONSE + "."), bad=(0,)),
    # Edge: one non-whitespace character among whitespace; broken: whitespace only (tab, newline, CR).
    (REGEX, "prompt"): Case("row", rows(*g(0, 2, prompt=" \t!\n")), at(0, 1, prompt=" \t \r\n"), bad=(0, 1)),
    (REGEX, "response"): Case("row", rows({}, {"response": "\t.\n"}), at(1, response="\t \r\n "), bad=(1,)),
    # Edge: tab, newline and carriage return are text; broken: NUL, ESC, DEL.
    (NO_REGEX, "prompt"): Case("row", rows(*g(0, 2, prompt="Tab\there?"), *g(1, 2, prompt="Line\nbreak\r\nhere?"),
                                           *g(2, 2, prompt="Tilde ~ and \u00e9 here?")),
                               each({0: {"prompt": "Nul\x00here?"}, 1: {"prompt": "Nul\x00here?"},
                                     2: {"prompt": "Esc\x1bhere?"}, 3: {"prompt": "Esc\x1bhere?"},
                                     4: {"prompt": "Del\x7fhere?"}, 5: {"prompt": "Del\x7fhere?"}}),
                               bad=(0, 1, 2, 3, 4, 5)),
    # Every boundary of the refused ranges: row k + 1 holds NOT_CONTROL[k] (passes) or CONTROL[k] (fails).
    (NO_REGEX, "response"): Case("row", rows({}, *({"response": f"Answer{ch}{k}"} for k, ch in enumerate(NOT_CONTROL))),
                                 each({k + 1: {"response": f"Answer{ch}{k}"} for k, ch in enumerate(CONTROL)}),
                                 bad=tuple(range(1, len(CONTROL) + 1))),
    # Edge: exactly -1e6 and 1e6; broken: the next floats outward, and both infinities.
    (BETWEEN, "score"): Case("row", rows(*({"score": s} for s in (1e6, 2.0, 1.0, 0.0, -1e6))),
                             each({0: {"score": NUDGE_UP}, 1: {"score": math.inf}, 3: {"score": -math.inf},
                                   4: {"score": NUDGE_DOWN}}), bad=(0, 1, 3, 4)),
    # Edge: the same response id under two prompt ids is fine (the key is the pair); broken: twice in one prompt.
    (COMPOUND_UNIQUE, "prompt_id,response_id"): Case(
        "row", rows({"response_id": "r0"}, {"response_id": "r1"}, *g(1, 1, response_id="r0"), *g(1, 1, response_id="r1")),
        at(1, response_id="r0"), bad=(0, 1)),
    # Edge: true, false and null (unknown) are allowed; broken: a string.
    (IN_SET, "is_harmful"): Case("row", rows({"is_harmful": True}, {"is_harmful": None}, {"is_harmful": False}),
                                 at(1, is_harmful="no"), bad=(1,), mostly=1.0, bad_value="no"),
    (IN_SET, "label_source"): Case("row", rows({"label_source": "human"}, {"label_source": "ai"}, {"label_source": "rm"}),
                                   at(2, label_source="crowd"), bad=(2,)),
    # Edge: "reward" (the last value added to the set); broken: "test", for the whole prompt.
    (IN_SET, "split"): Case("row", rows(*g(0, 2, split="reward")), at(0, 1, split="test"), bad=(0, 1)),
    (MEAN, "is_near_duplicate"): Case("aggregate"),  # test_duplicate_rate_* below
}

GROUP_COUNTS: dict[tuple[str, str], Case] = {
    **{(EXIST, c): EXISTS for c in ("prompt_id", "n_responses", "n_distinct_responses", "n_splits",
                                     "preferred_equals_dispreferred", "has_preference", "prompt_text_splits")},
    # Edge: exactly 2 responses (min_responses_per_group); broken: one.
    (BETWEEN, "n_responses"): Case("row", rows(*g(0, 2)), lambda block: block[:1]),
    # Edge: "Lyon" and "Lyon." are two texts; broken: "Lyon" twice (both dispreferred: not a preferred clash).
    (PAIR_EQUAL, "n_distinct_responses,n_responses"): Case(
        "row", rows({"response": "Best."}, {"response": "Lyon"}, {"response": "Lyon."}), at(2, response="Lyon")),
    # Edge: a whole group in eval; broken: its last row in train.
    (BETWEEN, "n_splits"): Case("row", rows(*g(0, 3, split="eval")), at(2, split="train")),
    # One group per whitespace variant: the dispreferred response is the preferred one re-spaced (broken)
    # or differs from it by one character (edge).
    (IN_SET, "preferred_equals_dispreferred"): Case(
        "row", rows(*(r for k in range(len(WHITESPACE_VARIANTS)) for r in (
            {"g": k, "response": CAPITAL, "score": 2.0}, {"g": k, "response": CAPITAL[:-1] + "!", "score": 1.0}))),
        each({2 * k + 1: {"response": vary(CAPITAL)} for k, vary in enumerate(WHITESPACE_VARIANTS.values())})),
    # Edge: two scores tied at the top, the third 1e-9 lower: still a preference; broken: all three equal.
    (IN_SET, "has_preference"): Case("row", rows({"score": 2.0}, {"score": 2.0}, {"score": 2.0 - 1e-9}),
                                     at(2, score=2.0)),
    # Pairs of groups, one per variant: a train prompt and an eval prompt that is the same text re-cased or
    # re-spaced (broken: both groups fail) or differs by one character (edge).
    (BETWEEN, "prompt_text_splits"): Case(
        "row", rows(*(r for k in range(len(VARIANTS)) for r in (
            *g(2 * k, 2, prompt=CITY.format(k=k)), *g(2 * k + 1, 2, prompt=CITY.format(k=k)[:-1] + "!", split="eval")))),
        each({4 * k + j: {"prompt": vary(CITY.format(k=k))}
              for k, vary in enumerate(VARIANTS.values()) for j in (2, 3)})),
}


def _pair_cases(gold: bool) -> dict[tuple[str, str], Case]:
    label = "gold_label" if gold else "human_label"
    cases = {
        **{(EXIST, c): EXISTS for c in ("instance_id", "prompt", "response_a", "response_b", "responses_identical",
                                         *(["gold_label"] if gold else ["human_label", "n_human_labels", "ai_label"]))},
        (NOT_NULL, "instance_id"): Case("row", rows({}), at(0, instance_id=None), bad=(0,)),
        # Edge: ids that differ only by case are two ids; broken: the same id twice.
        (UNIQUE, "instance_id"): Case("row", rows({"instance_id": "dup-A"}, {"instance_id": "dup-a"}),
                                      at(1, instance_id="dup-A"), bad=(0, 1)),
        **{(NOT_NULL, c): Case("row", rows({}), at(0, **{c: None}), bad=(0,))
           for c in ("prompt", "response_a", "response_b", label, *([] if gold else ["ai_label"]))},
        # Edge: exactly the maximum and exactly 1 character; broken: one more than the maximum.
        (LENGTH, "prompt"): Case("row", rows({"prompt": "P" * (MAX_PROMPT - 1) + "?"}, {"prompt": "?"}),
                                 at(0, prompt="P" * MAX_PROMPT + "?"), bad=(0,)),
        **{(LENGTH, c): Case("row", rows({c: "R" * (MAX_RESPONSE - 1) + "."}, {c: "r"}),
                             at(0, **{c: "R" * MAX_RESPONSE + "."}), bad=(0,)) for c in ("response_a", "response_b")},
        # Edge: one non-whitespace character; broken: whitespace only.
        **{(REGEX, c): Case("row", rows({c: "\t.\n"}), at(0, **{c: " \t\r\n"}), bad=(0,))
           for c in ("response_a", "response_b", *([] if gold else ["prompt"]))},
        # One row per variant: response_b is response_a re-cased/re-spaced (broken) or one character off (edge).
        (IN_SET, "responses_identical"): Case(
            "row", rows(*({"response_a": CAPITAL, "response_b": CAPITAL[:-1] + "!"} for _ in VARIANTS)),
            each({k: {"response_b": vary(CAPITAL)} for k, vary in enumerate(VARIANTS.values())}),
            bad=tuple(range(len(VARIANTS)))),
    }
    if gold:  # a gold pair says which response is better: a tie scores no reward model
        cases[(IN_SET, "gold_label")] = Case("row", rows({"gold_label": "a"}, {"gold_label": "b"}),
                                             at(1, gold_label="tie"), bad=(1,))
    else:
        for c in ("human_label", "ai_label"):
            cases[(IN_SET, c)] = Case("row", rows({c: "a"}, {c: "b"}, {c: "tie"}), at(2, **{c: "maybe"}), bad=(2,))
        # Edge: one human vote; broken: none.
        cases[(BETWEEN, "n_human_labels")] = Case("row", rows({"n_human_labels": 1}), at(0, n_human_labels=0), bad=(0,))
    return cases


CASES: dict[str, dict[tuple[str, str], Case]] = {
    "canonical_rows": CANONICAL_ROWS, "group_counts": GROUP_COUNTS,
    "pairwise_labels": _pair_cases(gold=False), "gold_pairs": _pair_cases(gold=True),
}


# --------------------------------------------------------------------------- the suites' expectations
def _column_key(kwargs: dict) -> str:
    if "column_list" in kwargs:
        return ",".join(kwargs["column_list"])
    if "column_A" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    return str(kwargs["column"])


def suite_expectations(suite: str) -> list[tuple[tuple[str, str], dict]]:
    raw = json.loads((SUITES_DIR / f"{suite}.json").read_text())
    return [((e["type"], _column_key(e["kwargs"])), e["kwargs"]) for e in raw["expectations"]]


SUITES = sorted(p.stem for p in SUITES_DIR.glob("*.json"))
EXPECTATIONS = [(suite, key) for suite in SUITES for key, _ in suite_expectations(suite)]
IDS = [f"{s}:{t.removeprefix('expect_')}({c})" for s, (t, c) in EXPECTATIONS]


def _outcome_key(o) -> tuple[str, str, str]:
    col = ",".join(o.column) if isinstance(o.column, list) else str(o.column)
    return o.suite, o.expectation, col


def _outcome(report: ContractReport, suite: str, key: tuple[str, str]):
    (found,) = [o for o in report.outcomes if _outcome_key(o) == (suite, *key)]
    return found


# --------------------------------------------------------------------------- tables
def _canonical_rows(tag: str, block: tuple[dict, ...] | list[dict]) -> list[dict]:
    """Fill in a block's rows: group ``g`` of the block is prompt ``{tag}-{g}`` with its own prompt text;
    responses distinct, scores 3, 2, 1, ... in row order."""
    out, seen = [], Counter()
    for spec in block:
        spec = dict(spec)
        pid = f"{tag}-{spec.pop('g', 0)}"
        j = seen[pid]
        seen[pid] += 1
        out.append({"prompt_id": pid, "prompt": f"What about {pid}?", "response_id": f"{pid}-r{j}",
                    "response": f"Answer {j} about {pid}.", "score": float(3 - j), "is_harmful": False,
                    "label_source": "human", "source": "fixture@sha256:00", "split": "train", **spec})
    return out


def _pair_rows(tag: str, block, gold: bool) -> list[dict]:
    out = []
    for k, spec in enumerate(block):
        iid = f"{tag}-{k}"
        labels = {"gold_label": "a"} if gold else {"human_label": "a", "n_human_labels": 3, "ai_label": "b"}
        out.append({"instance_id": iid, "prompt": f"Which answer about {iid}?", "response_a": f"First about {iid}.",
                    "response_b": f"Second about {iid}.", **labels, **spec})
    return out


def _base(family: str) -> list[dict]:
    """A valid table without edges: 5 prompts x 4 responses (20 rows: one repeat is exactly the 5 % bound),
    prompt 4 in eval; or 3 pairs."""
    if family == "canonical":
        return [r for k in range(5) for r in _canonical_rows(f"base{k}", rows(*g(0, 4, split="eval" if k == 4 else "train")))]
    return _pair_rows("base", [{}, {}, {}], gold=family == "gold_pairs")


def _frame(family: str, records: list[dict]) -> pd.DataFrame:
    t = pd.DataFrame.from_records(records)
    if family == "canonical":
        if t["is_harmful"].map(lambda v: v is None or isinstance(v, bool)).all():
            t["is_harmful"] = t["is_harmful"].astype("boolean")  # as the adapters write it
        return t
    text = [c for c in t.columns if c != "n_human_labels"]
    return t.astype({c: "string" for c in text})  # as hps_core.routing.multipref writes it


@dataclass
class Layout:
    table: pd.DataFrame
    rows: dict[tuple[str, tuple[str, str]], set[int]]  # case -> its block's rows
    bad: dict[tuple[str, tuple[str, str]], set[int]]  # case -> the rows that break it
    groups: dict[tuple[str, tuple[str, str]], set]  # case -> its block's prompt ids


def _layout(family: str, broken: bool) -> Layout:
    records = _base(family)
    rows_of, bad_of, groups_of = {}, {}, {}
    for n, (suite, key) in enumerate((s, k) for s in SUITES if FAMILY[s] == family for k in CASES[s]):
        case = CASES[suite][key]
        if case.kind != "row":
            continue
        tag = f"c{n}"
        if family == "canonical":
            block = _canonical_rows(tag, case.edge)
        else:
            block = _pair_rows(tag, case.edge, gold=family == "gold_pairs")
        if broken:
            block = case.breaks(block)
        start = len(records)
        records += block
        rows_of[(suite, key)] = set(range(start, start + len(block)))
        bad_of[(suite, key)] = {start + i for i in case.bad}
        groups_of[(suite, key)] = {r["prompt_id"] for r in block} if family == "canonical" else set()
    return Layout(_frame(family, records), rows_of, bad_of, groups_of)


def _validate(family: str, table: pd.DataFrame, **params) -> ContractReport:
    if family == "canonical":
        return validate_canonical(table, complete=True, **params)
    return validate_table(pair_checks(table).assign(row=np.arange(len(table))), family,
                          {"max_prompt_chars": MAX_PROMPT, "max_response_chars": MAX_RESPONSE}, complete=True)


@lru_cache(maxsize=None)
def valid(family: str) -> tuple[Layout, ContractReport]:
    layout = _layout(family, broken=False)
    return layout, _validate(family, layout.table)


@lru_cache(maxsize=None)
def broken(family: str) -> tuple[Layout, ContractReport]:
    """The duplicate-rate bound is lifted here (it is an aggregate, tested on its own): re-spaced and
    re-cased texts are near duplicates by design in some blocks."""
    layout = _layout(family, broken=True)
    params = {"duplicate_rate_max": 1.0} if family == "canonical" else {}
    return layout, _validate(family, layout.table, **params)


@lru_cache(maxsize=None)
def dropped(suite: str) -> ContractReport:
    """The suite on its input table (VALID) with every column it expects to exist removed."""
    layout, _ = valid(FAMILY[suite])
    frame = SUITE_INPUT[suite](layout.table)
    exist = [key[1] for key, case in CASES[suite].items() if case.kind == "exist"]
    return validate_table(frame.drop(columns=exist).assign(unrelated=1), suite)


def _keys(o) -> set:
    return {None if pd.isna(k) else k for k in (o.failing_keys or [])}


# --------------------------------------------------------------------------- tests
def test_every_expectation_has_a_case():
    """Both directions: a new expectation needs a case, a case needs its expectation (dropping one from the
    JSON loosens the contract). Keys are unique, so each case names one expectation."""
    for suite in SUITES:
        keys = [key for key, _ in suite_expectations(suite)]
        assert len(keys) == len(set(keys)), f"{suite}: two expectations with one (type, column)"
        assert set(keys) - set(CASES[suite]) == set(), f"{suite}: expectations without a case in this file"
        assert set(CASES[suite]) - set(keys) == set(), f"{suite}: cases whose expectation is gone from the JSON"
    assert set(CASES) == set(SUITES)


@pytest.mark.parametrize("suite, key", EXPECTATIONS, ids=IDS)
def test_mostly_is_what_the_contract_says(suite, key):
    """A loosened ``mostly`` lets a share of bad rows through: each expectation's is pinned (1.0 = none)."""
    kwargs = dict(suite_expectations(suite))[key]
    assert kwargs.get("mostly", 1.0) == CASES[suite][key].mostly


@pytest.mark.parametrize("family", ["canonical", "pairwise_labels", "gold_pairs"])
def test_valid_table_at_every_edge_passes(family):
    layout, report = valid(family)
    assert report.success, report.to_markdown(only_failures=True)
    assert report.statistics["evaluated_expectations"] == sum(
        len(suite_expectations(s)) for s in SUITES if FAMILY[s] == family)


@pytest.mark.parametrize("family", ["canonical", "pairwise_labels", "gold_pairs"])
def test_broken_table_fails_only_the_broken_expectations(family):
    """Nothing fails on the broken table that no case broke (the base rows stay valid)."""
    layout, report = broken(family)
    targeted = {(s, *k) for s in SUITES if FAMILY[s] == family for k, c in CASES[s].items() if c.kind == "row"}
    targeted |= {a for s in SUITES if FAMILY[s] == family for c in CASES[s].values() for a in c.also}
    assert {_outcome_key(o) for o in report.failures} <= targeted, report.to_markdown(only_failures=True)


@pytest.mark.parametrize("suite, key", EXPECTATIONS, ids=IDS)
def test_breaking_row_fails_exactly_its_expectation(suite, key):
    case = CASES[suite][key]
    if case.kind == "exist":
        # Every expected column dropped at once: each existence check fails; on VALID each passes.
        assert not _outcome(dropped(suite), suite, key).success
        assert _outcome(valid(FAMILY[suite])[1], suite, key).success
        return
    if case.kind == "aggregate":
        assert key == (MEAN, "is_near_duplicate")  # test_duplicate_rate_* cover it; a new aggregate needs tests
        return
    family = FAMILY[suite]
    v_layout, v_report = valid(family)
    assert _outcome(v_report, suite, key).success  # the edge block passes
    layout, report = broken(family)
    outcome = _outcome(report, suite, key)
    assert not outcome.success, f"{suite} {key}: the broken block passed"
    planted = layout.groups[(suite, key)] if suite in GROUP_KEYED else layout.bad[(suite, key)]
    assert _keys(outcome) == planted, outcome.unexpected_examples
    mine = layout.rows[(suite, key)] | layout.groups[(suite, key)]
    for other in report.failures:
        if _outcome_key(other) in {(suite, *key), *case.also}:
            continue
        assert not _keys(other) & mine, f"the block of {key} also breaks {_outcome_key(other)}"


MOSTLY = [(s, k) for s, k in EXPECTATIONS if CASES[s][k].mostly != 1.0 or CASES[s][k].bad_value is not None]


@pytest.mark.parametrize("suite, key", MOSTLY, ids=[f"{s}:{c}" for s, (_, c) in MOSTLY])
def test_mostly_threshold_passes_at_the_bound_and_fails_one_row_beyond(suite, key):
    """20 rows, none null in the column: ``floor(20 * (1 - mostly))`` bad rows pass (0 for mostly 1.0),
    one more fails. The pinned ``mostly`` is used, not the JSON's (test_mostly_is_what_the_contract_says)."""
    case = CASES[suite][key]
    column = key[1]
    table = _frame(FAMILY[suite], _base(FAMILY[suite]))
    values = [False] * len(table) if column == "is_harmful" else table[column].tolist()  # no nulls
    table[column] = pd.Series(values, index=table.index, dtype=object)
    allowed = math.floor(len(table) * (1 - case.mostly) + 1e-9)
    for n_bad, ok in ((allowed, True), (allowed + 1, False)):
        t = table.copy()
        t.loc[t.index[:n_bad], column] = case.bad_value
        o = _outcome(validate_table(SUITE_INPUT[suite](t), suite), suite, key)
        assert (o.success, o.unexpected_count) == (ok, n_bad), (n_bad, o)


def _repeat_rows(table: pd.DataFrame, n: int, vary=VARIANTS["case_and_whitespace"]) -> pd.DataFrame:
    """Rows 16 .. 16 + n - 1 (prompt base4) repeat rows 0 .. n - 1 (prompt base0) re-cased and re-spaced:
    prompt base4 moves to train (base0's split) and takes base0's prompt text, so n of its responses repeat."""
    t = table.copy()
    four = t["prompt_id"] == "base4-0"
    t.loc[four, "split"] = "train"
    t.loc[four, "prompt"] = vary(t.loc[0, "prompt"])
    for j in range(n):
        t.loc[16 + j, "response"] = vary(t.loc[j, "response"])
    return t


def test_duplicate_rate_at_the_bound_passes_one_more_repeat_fails():
    """duplicate_rate_max = 0.05 (default): 1 repeated row of 20 is a rate of 1/20 = 0.05 exactly (the
    bound is inclusive) and passes; 2 of 20 = 0.10 fails, naming exactly the 2 repeats (rows 16, 17)."""
    table = _frame("canonical", _base("canonical"))
    at_bound = validate_canonical(_repeat_rows(table, 1), complete=True)
    assert at_bound.success, at_bound.to_markdown(only_failures=True)
    beyond = validate_canonical(_repeat_rows(table, 2), complete=True)
    (o,) = beyond.failures
    assert _outcome_key(o) == ("canonical_rows", MEAN, "is_near_duplicate")
    assert (o.unexpected_count, o.element_count, sorted(o.failing_keys)) == (2, 20, [16, 17])


def test_duplicate_rate_counts_every_case_and_whitespace_variant_as_a_repeat():
    """One new prompt per variant, in train, whose prompt and first response are base0's first row's
    re-cased or re-spaced (a repeat), and whose second response is another text (not a repeat).
    9 repeats in 20 + 2 * 9 = 38 rows: 0.24 > 0.05; the repeats named are exactly the variant rows."""
    base = _frame("canonical", _base("canonical"))
    prompt, response = base.loc[0, "prompt"], base.loc[0, "response"]
    extra = []
    for k, vary in enumerate(VARIANTS.values()):
        extra += _canonical_rows(f"v{k}", rows({"prompt": vary(prompt), "response": vary(response)},
                                               {"prompt": vary(prompt), "response": f"{response[:-1]} #{k}"}))
    table = pd.concat([base, _frame("canonical", extra)], ignore_index=True)
    report = validate_canonical(table, complete=True)
    (o,) = report.failures
    assert _outcome_key(o) == ("canonical_rows", MEAN, "is_near_duplicate")
    assert sorted(o.failing_keys) == [20 + 2 * k for k in range(len(VARIANTS))]
    assert o.unexpected_count == len(VARIANTS) == 9


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_normalised_text_is_case_and_whitespace_blind_only(variant):
    """The normalisation every suite relies on (near duplicates, prompt leakage, identical pair responses):
    a variant is the same text, one changed character is not."""
    from data_contracts.checks import normalised_text

    text = "What is the capital of France?"
    out = normalised_text(pd.Series([text, VARIANTS[variant](text), text.replace("France", "Spain")]))
    assert out.tolist()[:2] == ["what is the capital of france?"] * 2
    assert out.tolist()[2] == "what is the capital of spain?"


@pytest.mark.parametrize("gold", [False, True])
def test_validate_pairwise_picks_the_suite_and_passes_its_length_bounds(gold):
    """validate_pairwise runs pairwise_labels (human + AI labels) or, with gold=True, gold_pairs, with the
    length bounds it is given; the prompts here are 23 characters, response_a 16 and response_b 17."""
    family = "gold_pairs" if gold else "pairwise_labels"
    table = _frame(family, _pair_rows("p", [{}, {}], gold=gold))
    report = validate_pairwise(table, gold=gold)
    assert report.success and list(report.suites) == [family]
    assert report.parameters == {"max_prompt_chars": 4096, "max_response_chars": 8192}
    assert "responses_identical" in {o.column for o in report.outcomes}
    short_prompts = validate_pairwise(table, gold=gold, max_prompt_chars=22)
    assert {(o.column, o.unexpected_count) for o in short_prompts.failures} == {("prompt", 2)}
    short_responses = validate_pairwise(table, gold=gold, max_response_chars=16)
    assert {(o.column, o.unexpected_count) for o in short_responses.failures} == {("response_b", 2)}
    assert validate_pairwise(table, gold=gold, max_prompt_chars=23, max_response_chars=17).success

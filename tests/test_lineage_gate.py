"""The promotion gate (hps_core.registry.promotion) as pure functions on metric dicts, and its config checks."""

from __future__ import annotations

import math

import pytest

from hps_core.config.building import ConfigError
from hps_core.config.schema import PipelineConfig, RegisterConfig
from hps_core.registry.promotion import PROMOTED, REJECTED, judge
from hps_core.config.rules import parse_rules

GATE = parse_rules("margin_hardest > champion; reward_mean >= champion - 0.5; harmful_rate <= champion + 0.25",
                   relative=True)
FLOORS = parse_rules("margin_hardest > 0; harmful_rate <= 0.5", relative=False)
CHAMPION = {"margin_hardest": 1.0, "reward_mean": 2.0, "harmful_rate": 0.25}


def test_parse_rules_reads_offsets_and_normalises_text():
    """'reward_mean >= champion - 0.5' -> offset -0.5; 'x>champion+2' -> +2.0; floors keep the number."""
    rules = parse_rules("reward_mean >= champion - 0.5 ; x>champion+2;  y < champion", relative=True)
    assert [(r.metric, r.op, r.offset) for r in rules] == [("reward_mean", ">=", -0.5), ("x", ">", 2.0), ("y", "<", 0.0)]
    assert [r.text for r in rules] == ["reward_mean >= champion - 0.5", "x > champion + 2", "y < champion"]
    floors = parse_rules("harmful_rate <= 0.2; m > -1e-1", relative=False)
    assert [(r.metric, r.op, r.offset) for r in floors] == [("harmful_rate", "<=", 0.2), ("m", ">", -0.1)]
    assert parse_rules("  ", relative=True) == ()


@pytest.mark.parametrize("text, relative", [
    ("margin_hardest > 0", True),  # a number where the gate needs 'champion'
    ("margin_hardest > champion", False),  # 'champion' in a floor
    ("margin_hardest == champion", True),  # unknown operator
    ("margin_hardest > champion * 2", True),  # only + / - offsets
])
def test_parse_rules_rejects_the_wrong_form(text, relative):
    with pytest.raises(ValueError, match="cannot read rule"):
        parse_rules(text, relative=relative, where="register.gate")


def test_first_version_is_judged_on_floors_only():
    """No champion: gate rules are skipped. margin 0.1 > 0 and harmful 0.5 <= 0.5 -> promoted, 2 checks."""
    d = judge({"margin_hardest": 0.1, "harmful_rate": 0.5, "reward_mean": -9.0}, None, gate=GATE, floors=FLOORS)
    assert d.promote and d.outcome == PROMOTED and d.champion is None
    named = judge({"margin_hardest": 0.1, "harmful_rate": 0.5}, None, gate=GATE, floors=FLOORS, champion_uri="models:/p@champion")
    assert named.champion is None  # a URI with no champion values behind it was not judged against
    assert d.reasons == ["margin_hardest > 0: pass (0.1 > 0)", "harmful_rate <= 0.5: pass (0.5 <= 0.5)"]


def test_first_version_below_a_floor_is_rejected():
    """margin 0.0 is not > 0 -> rejected even with no champion to beat."""
    d = judge({"margin_hardest": 0.0, "harmful_rate": 0.0}, None, gate=GATE, floors=FLOORS)
    assert not d.promote and d.outcome == REJECTED
    assert d.reasons[0] == "margin_hardest > 0: FAIL (0 > 0)"


def test_better_challenger_within_tolerances_is_promoted():
    """margin 1.5 > 1.0; reward 1.5 >= 2.0 - 0.5 = 1.5 (the tolerance boundary passes); harm 0.5 <= 0.25 + 0.25."""
    d = judge({"margin_hardest": 1.5, "reward_mean": 1.5, "harmful_rate": 0.5}, CHAMPION, gate=GATE, floors=FLOORS,
              champion_uri="models:/hps-policy/1")
    assert d.promote and d.champion == "models:/hps-policy/1"
    assert d.reasons[2:] == ["margin_hardest > champion: pass (1.5 > 1)",
                             "reward_mean >= champion - 0.5: pass (1.5 >= 1.5)",
                             "harmful_rate <= champion + 0.25: pass (0.5 <= 0.5)"]


@pytest.mark.parametrize("candidate, failing", [
    ({"margin_hardest": 1.0, "reward_mean": 3.0, "harmful_rate": 0.0}, ["margin_hardest > champion"]),  # a tie is not higher
    ({"margin_hardest": 2.0, "reward_mean": 1.25, "harmful_rate": 0.0}, ["reward_mean >= champion - 0.5"]),  # 1.25 < 1.5
    # 0.5 + 1e-9 is above the floor 0.5 and above champion 0.25 + 0.25: both rules name it, floor first.
    ({"margin_hardest": 2.0, "reward_mean": 3.0, "harmful_rate": 0.5 + 1e-9}, ["harmful_rate <= 0.5", "harmful_rate <= champion + 0.25"]),
])
def test_failing_rules_reject_and_are_named(candidate, failing):
    d = judge(candidate, CHAMPION, gate=GATE, floors=FLOORS, champion_uri="models:/hps-policy/1")
    assert not d.promote
    assert [c.rule.text for c in d.checks if not c.passed] == failing
    assert f"failed: {', '.join(failing)}" in d.summary()


def test_missing_or_non_finite_values_fail_their_rule():
    """NaN candidate margin -> floor and gate both fail; a champion without reward_mean fails that rule."""
    d = judge({"margin_hardest": math.nan, "reward_mean": 2.0, "harmful_rate": 0.0},
              {"margin_hardest": 1.0, "harmful_rate": 0.25}, gate=GATE, floors=FLOORS, champion_uri="models:/p/1")
    failed = {c.rule.text: c.reason() for c in d.checks if not c.passed}
    assert set(failed) == {"margin_hardest > 0", "margin_hardest > champion", "reward_mean >= champion - 0.5"}
    assert "candidate has no finite margin_hardest" in failed["margin_hardest > 0"]
    assert "champion has no finite reward_mean" in failed["reward_mean >= champion - 0.5"]


def test_config_rejects_a_bad_gate_and_a_shared_alias():
    PipelineConfig(register=RegisterConfig()).check()  # the defaults parse
    with pytest.raises(ConfigError, match="register.gate: cannot read rule 'margin_hardest > 0'"):
        PipelineConfig(register=RegisterConfig(gate="margin_hardest > 0")).check()
    with pytest.raises(ConfigError, match="register.floors"):
        PipelineConfig(register=RegisterConfig(floors="harmful_rate <= champion")).check()
    with pytest.raises(ConfigError, match="champion_alias and register.alias"):
        PipelineConfig(register=RegisterConfig(champion_alias="challenger")).check()


def test_summary_is_the_whole_sentence_a_reviewer_reads():
    """The gate's one-line summary lands on the version (gate_summary tag): outcome, what it was judged
    against, and the failed rules in order; the first version names its floors-only judgement."""
    promoted = judge({"margin_hardest": 1.5, "reward_mean": 1.5, "harmful_rate": 0.5}, CHAMPION, gate=GATE,
                     floors=FLOORS, champion_uri="models:/hps-policy/1")
    assert promoted.summary() == f"{PROMOTED} (against champion models:/hps-policy/1)"
    rejected = judge({"margin_hardest": 1.0, "reward_mean": 1.25, "harmful_rate": 0.0}, CHAMPION, gate=GATE,
                     floors=FLOORS, champion_uri="models:/hps-policy/1")
    assert rejected.summary() == (f"{REJECTED} (against champion models:/hps-policy/1); "
                                  "failed: margin_hardest > champion, reward_mean >= champion - 0.5")
    first = judge({"margin_hardest": -1.0, "reward_mean": 0.0, "harmful_rate": 0.0}, None, gate=GATE, floors=FLOORS)
    assert first.summary() == f"{REJECTED} (first version: absolute floors only); failed: margin_hardest > 0"

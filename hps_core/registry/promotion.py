"""The promotion gate: does a new HPS version replace the current champion? Pure functions, no MLflow.

Rules are written in the config as short comparisons, one per metric, separated by ``;``::

    gate   = "margin_hardest > champion; reward_mean >= champion - 0.05; harmful_rate <= champion"
    floors = "margin_hardest > 0; harmful_rate <= 0.2"

A gate rule compares the candidate with the champion's value of the same metric, shifted by an optional
``+ x`` / ``- x`` (the tolerance); a floor compares it with a number. Floors apply to every candidate,
so the first version (no champion yet) is promoted when it clears them, and a later one must clear them
as well as beat the champion. A missing or non-finite value fails its rule: promotion never happens on
a number we do not have. The rule text is what the decision quotes, so the registry shows exactly which
comparison decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from hps_core.config.rules import OPS, Rule, _finite


PROMOTED, REJECTED = "promoted", "rejected"


@dataclass(frozen=True)
class Check:
    rule: Rule
    value: float | None  # the candidate's
    threshold: float | None
    passed: bool

    def reason(self) -> str:
        if self.value is None:
            return f"{self.rule.text}: FAIL, the candidate has no finite {self.rule.metric}"
        if self.threshold is None:
            return f"{self.rule.text}: FAIL, the champion has no finite {self.rule.metric}"
        verdict = "pass" if self.passed else "FAIL"
        return f"{self.rule.text}: {verdict} ({self.value:.4g} {self.rule.op} {self.threshold:.4g})"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    champion: str | None  # the version judged against (a model URI), None for the first version
    checks: tuple[Check, ...]

    @property
    def outcome(self) -> str:
        return PROMOTED if self.promote else REJECTED

    @property
    def reasons(self) -> list[str]:
        return [c.reason() for c in self.checks]

    def summary(self) -> str:
        against = f"against champion {self.champion}" if self.champion else "first version: absolute floors only"
        failed = [c.rule.text for c in self.checks if not c.passed]
        tail = f"; failed: {', '.join(failed)}" if failed else ""
        return f"{self.outcome} ({against}){tail}"


def judge(candidate: Mapping[str, float], champion: Mapping[str, float] | None, *,
          gate: tuple[Rule, ...], floors: tuple[Rule, ...], champion_uri: str | None = None) -> GateDecision:
    """Promote iff every floor passes and, when there is a champion, every gate rule passes.

    ``champion`` is None when no version holds the champion alias yet; the gate rules are then skipped
    (there is nothing to compare with) and only the floors decide."""
    rules = list(floors) + (list(gate) if champion is not None else [])
    checks = []
    for rule in rules:
        value, threshold = _finite(candidate.get(rule.metric)), rule.threshold(champion)
        passed = value is not None and threshold is not None and OPS[rule.op](value, threshold)
        checks.append(Check(rule, value, threshold, passed))
    return GateDecision(all(c.passed for c in checks), champion_uri if champion is not None else None,
                        tuple(checks))

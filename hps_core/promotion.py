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

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RULE = re.compile(rf"^\s*(?P<metric>[A-Za-z_][\w./-]*)\s*(?P<op>>=|<=|>|<)\s*(?:(?P<champion>champion)"
                   rf"\s*(?:(?P<sign>[+-])\s*(?P<offset>{UNSIGNED}))?|(?P<value>[+-]?{UNSIGNED}))\s*$")
PROMOTED, REJECTED = "promoted", "rejected"


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str  # one of OPS
    relative: bool  # True: threshold = champion's value + offset; False: threshold = offset
    offset: float
    text: str  # the rule as written, normalised

    def threshold(self, champion: Mapping[str, float] | None) -> float | None:
        if not self.relative:
            return self.offset
        base = _finite(champion.get(self.metric)) if champion else None
        return None if base is None else base + self.offset


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


def parse_rules(text: str, *, relative: bool, where: str = "rules") -> tuple[Rule, ...]:
    """``"m > champion + 0.1; n <= 0.2"`` -> rules. ``relative`` says which form this list takes (the gate
    compares with the champion, floors with numbers); the wrong form or bad syntax is a ValueError that
    names ``where`` and shows the accepted forms."""
    rules = []
    for part in (p for p in text.split(";") if p.strip()):
        m = _RULE.match(part)
        if m is None or bool(m["champion"]) != relative:
            form = "'<metric> <op> champion [+|- <tolerance>]'" if relative else "'<metric> <op> <number>'"
            raise ValueError(f"{where}: cannot read rule {part.strip()!r}; write {form} with <op> one of "
                             f"{', '.join(OPS)}, rules separated by ';'")
        if relative:
            offset = float(m["offset"] or 0.0) * (-1.0 if m["sign"] == "-" else 1.0)
            shift = f" {m['sign']} {m['offset']}" if m["offset"] else ""
            norm = f"{m['metric']} {m['op']} champion{shift}"
        else:
            offset = float(m["value"])
            norm = f"{m['metric']} {m['op']} {m['value']}"
        rules.append(Rule(m["metric"], m["op"], relative, offset, norm))
    return tuple(rules)


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


def _finite(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None

"""Promotion rules as the config writes them (``register.gate``, ``register.floors``), parsed and checked at
start-up; hps_core.registry.promotion judges a candidate with them.
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


def _finite(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None

"""Method entries of a comparison: ``"<method>[:<bt rule>]"``, e.g. ``"dpo-bt:max_min"``, ``"dpo-hps"``.

Torch-free: the config check parses them at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hps_core.config.methods import parse_method


@dataclass(frozen=True)
class MethodSpec:
    method: str  # "<framework>-<preference model>", as hps.method
    bt_rule: str  # the negative of a *-bt method (hps.bt_negative_rule); "" for hps and pl
    entry: str  # as written in the config

    @property
    def preference_model(self) -> str:
        return parse_method(self.method)[1]

    @property
    def negative_rule(self) -> str | None:
        """The rule negatives are drawn with: "hps", the bt rule, or None (PL trains on whole groups)."""
        return {"hps": "hps", "bt": self.bt_rule, "pl": None}[self.preference_model]

    @property
    def label(self) -> str:
        """Shown in tables: ``dpo-bt (max_min)``, ``dpo-hps``."""
        return f"{self.method} ({self.bt_rule})" if self.bt_rule else self.method

    @property
    def slug(self) -> str:
        """File- and run-name safe: ``dpo-bt-max_min``."""
        return re.sub(r"[^a-z0-9_-]+", "-", f"{self.method}-{self.bt_rule}" if self.bt_rule else self.method)


def parse_method_spec(entry: str) -> MethodSpec:
    """``"dpo-bt:max_min"`` -> MethodSpec("dpo-bt", "max_min"); a bt method without a rule gets "random"."""
    from hps_core.config.vocab import BT_RULES

    text = str(entry).strip().lower()
    method, _, rule = text.partition(":")
    fw, pm = parse_method(method)  # raises ValueError naming the valid methods
    method = f"{fw}-{pm}"
    if pm == "bt":
        rule = rule or "random"
        if rule not in BT_RULES:
            raise ValueError(f"method entry {entry!r}: unknown bt negative rule {rule!r}; valid: {', '.join(BT_RULES)}")
    elif rule:
        raise ValueError(f"method entry {entry!r}: only *-bt methods take a negative rule after ':' "
                         f"({pm} draws its own negatives); write {method!r}")
    return MethodSpec(method, rule, str(entry))


def check_compare_config(compare, source: str) -> list[str]:
    """Problems of a ``[compare]`` section, each naming the key and the fix."""
    problems = []
    if not compare.methods:
        problems.append(f"{source}: compare.methods is empty; name at least one method, e.g. [\"dpo-bt:random\", \"dpo-hps\"]")
    labels = []
    for i, entry in enumerate(compare.methods):
        try:
            labels.append(parse_method_spec(entry).label)
        except ValueError as err:
            problems.append(f"{source}: compare.methods[{i}]: {err}")
    if len(set(labels)) != len(labels):
        problems.append(f"{source}: compare.methods names a method twice ({', '.join(labels)}); list each once")
    if not compare.seeds or len(set(compare.seeds)) != len(compare.seeds):
        problems.append(f"{source}: compare.seeds = {list(compare.seeds)} must be distinct and non-empty, e.g. [0, 1, 2]")
    if not compare.group_sizes or any(n != 0 and n < 2 for n in compare.group_sizes) or len(set(compare.group_sizes)) != len(compare.group_sizes):
        problems.append(f"{source}: compare.group_sizes = {list(compare.group_sizes)}: each must be 0 (as in the data) "
                        "or >= 2 (a group needs a preferred and a dispreferred response), listed once")
    return problems

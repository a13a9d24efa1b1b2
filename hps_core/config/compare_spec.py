"""Method entries of a comparison: ``"<method>[:<variant>][@key=value,...]"``.

``variant``: a *-bt method's negative rule (``"dpo-bt:max_min"``), or an -hps method's hardness
(``"dpo-hps:policy"``, ``"dpo-hps:mix"``; ``score`` when absent). After ``@``, settings of ``[hps]`` that
shape the hardness and estimator override the base config for this entry only:
``"dpo-hps:mix@gamma=1,gamma_r=10"``, ``"dpo-hps@estimator=unbiased"``.

Torch-free: the config check parses them at start-up.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from hps_core.config.hardness_check import hardness_problems
from hps_core.config.methods import parse_method


# [hps] keys an entry may override after "@", with their types.
OVERRIDABLE = {"gamma": float, "gamma_r": float, "refresh_every": int, "refresh_top_m": int, "estimator": str,
               "gamma_schedule": str, "log_n_offset": bool}


@dataclass(frozen=True)
class MethodSpec:
    method: str  # "<framework>-<preference model>", as hps.method
    bt_rule: str  # the negative of a *-bt method (hps.bt_negative_rule); "" for hps and pl
    entry: str  # as written in the config
    hardness: str = ""  # -hps methods: score | policy | mix ("" = score, written without a variant)
    overrides: tuple[tuple[str, object], ...] = ()  # [hps] settings of this entry

    def apply_to(self, hps):
        """``hps`` (an [hps] section) with this entry's method, bt rule, hardness and overrides; a non-HPS
        method keeps the default hardness and estimator (they do not apply to it)."""
        out: dict[str, object] = {"method": self.method}
        if self.bt_rule:
            out["bt_negative_rule"] = self.bt_rule
        if self.preference_model == "hps":
            out["hardness"] = self.hardness or "score"
        else:
            out.update(hardness="score", estimator="pair")
        return dataclasses.replace(hps, **out, **dict(self.overrides))

    @property
    def preference_model(self) -> str:
        return parse_method(self.method)[1]

    @property
    def negative_rule(self) -> str | None:
        """The rule negatives are drawn with: "hps", the bt rule, or None (PL trains on whole groups)."""
        return {"hps": "hps", "bt": self.bt_rule, "pl": None}[self.preference_model]

    @property
    def label(self) -> str:
        """Shown in tables: ``dpo-bt (max_min)``, ``dpo-hps``, ``dpo-hps (mix, gamma=1, gamma_r=10)``."""
        parts = [p for p in (self.bt_rule, self.hardness) if p] + [f"{k}={v}" for k, v in self.overrides]
        return f"{self.method} ({', '.join(parts)})" if parts else self.method

    @property
    def slug(self) -> str:
        """File- and run-name safe: ``dpo-bt-max_min``, ``dpo-hps-mix-gamma-1-0-gamma_r-10-0``."""
        parts = [self.method, self.bt_rule, self.hardness] + [f"{k}-{v}" for k, v in self.overrides]
        return re.sub(r"[^a-z0-9_-]+", "-", "-".join(p for p in parts if p).lower())


def parse_method_spec(entry: str) -> MethodSpec:
    """``"dpo-bt:max_min"`` -> MethodSpec("dpo-bt", "max_min"); a bt method without a rule gets "random";
    ``"dpo-hps:mix@gamma_r=10"`` -> hardness "mix" with ``gamma_r = 10.0``."""
    from hps_core.config.vocab import BT_RULES, HARDNESS_KINDS

    text = str(entry).strip().lower()
    text, _, settings = text.partition("@")
    method, _, variant = text.partition(":")
    fw, pm = parse_method(method)  # raises ValueError naming the valid methods
    method, rule, hardness = f"{fw}-{pm}", "", ""
    if pm == "bt":
        rule = variant or "random"
        if rule not in BT_RULES:
            raise ValueError(f"method entry {entry!r}: unknown bt negative rule {rule!r}; valid: {', '.join(BT_RULES)}")
    elif pm == "hps":
        hardness = variant
        if hardness and hardness not in HARDNESS_KINDS:
            raise ValueError(f"method entry {entry!r}: unknown hardness {hardness!r}; valid: {', '.join(HARDNESS_KINDS)}")
    elif variant:
        raise ValueError(f"method entry {entry!r}: {pm} uses every response, so it takes no variant after ':'; "
                         f"write {method!r}")
    overrides = []
    for item in filter(None, (p.strip() for p in settings.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in OVERRIDABLE or not eq:
            raise ValueError(f"method entry {entry!r}: {item!r} is not '<key>=<value>' with a key among "
                             f"{', '.join(OVERRIDABLE)}")
        kind = OVERRIDABLE[key]
        try:
            parsed = (value.strip() in ("true", "1")) if kind is bool else kind(value.strip())
        except ValueError:
            raise ValueError(f"method entry {entry!r}: {key} = {value!r} is not a {kind.__name__}") from None
        overrides.append((key, parsed))
    if overrides and pm != "hps":
        raise ValueError(f"method entry {entry!r}: settings after '@' shape HPS's hardness; {method} has none")
    return MethodSpec(method, rule, str(entry), hardness, tuple(overrides))


def check_compare_config(compare, source: str, hps=None) -> list[str]:
    """Problems of a ``[compare]`` section, each naming the key and the fix; with ``hps`` (the base [hps]
    section) also those of each entry's hardness settings over it."""
    problems = []
    if not compare.methods:
        problems.append(f"{source}: compare.methods is empty; name at least one method, e.g. [\"dpo-bt:random\", \"dpo-hps\"]")
    labels = []
    for i, entry in enumerate(compare.methods):
        try:
            spec = parse_method_spec(entry)
            labels.append(spec.label)
            if hps is not None:
                problems += hardness_problems(spec.apply_to(hps), f"{source}: compare.methods[{i}] ({entry!r}): hps")
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

"""Parsing and start-up checks of the evaluation's string settings (no torch import: config checks use it).

* ``reward_model.head_reduction``: how a multi-objective reward head becomes one score per sequence:
  ``first`` (column 0; a single-head model), ``mean`` (the reference HPS code's ArmoRM convention:
  ``output.rewards.mean()``), ``sum``, ``index:<k>`` (column k), ``weights:<w0>,<w1>,...`` (weighted sum).
* ``evaluate.harm_judge``: ``rule`` (the generated world's rule judge), ``reward_threshold:<x>`` (harmful
  when the reward model scores the (prompt, generation) pair below x), or a hub id / local directory of a
  sequence-classification model whose label (``evaluate.harm_label``, or auto-detected) means harmful.
"""

from __future__ import annotations

import re


REDUCTIONS = ("first", "mean", "sum", "index:<k>", "weights:<w0>,<w1>,...")
EVAL_SET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
RESERVED_SET_NAMES = ("sft", "hps", "eval", "reward_model")


def parse_head_reduction(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"index:2"`` -> ``("index", (2.0,))``; ``"weights:0.5,0.5"`` -> ``("weights", (0.5, 0.5))``."""
    kind, _, arg = spec.partition(":")
    try:
        if kind in ("first", "mean", "sum") and not arg:
            return kind, ()
        if kind == "index" and arg:
            k = int(arg)
            if k >= 0:
                return kind, (float(k),)
        if kind == "weights" and arg:
            return kind, tuple(float(w) for w in arg.split(","))
    except ValueError:
        pass
    raise ValueError(f"reward_model.head_reduction = {spec!r}; valid: {', '.join(REDUCTIONS)}")


def parse_harm_judge(spec: str) -> tuple[str, str | float]:
    """``"rule"`` -> ``("rule", "")``; ``"reward_threshold:0.5"`` -> ``("reward_threshold", 0.5)``;
    anything else names a classifier model -> ``("classifier", spec)``."""
    if spec == "rule":
        return "rule", ""
    if spec.startswith("reward_threshold:"):
        try:
            return "reward_threshold", float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"evaluate.harm_judge = {spec!r}: the threshold must be a number, e.g. 'reward_threshold:0.0'"
            ) from None
    if not spec.strip():
        raise ValueError("evaluate.harm_judge is empty; use 'rule', 'reward_threshold:<x>' or a classifier id/path")
    return "classifier", spec


def check_evaluation_config(cfg, source: str) -> list[str]:
    """Problems with the evaluation settings, each naming the key and the fix (empty when all is well)."""
    problems = []
    for parse, value in ((parse_head_reduction, cfg.reward_model.head_reduction), (parse_harm_judge, cfg.evaluate.harm_judge)):
        try:
            parse(value)
        except ValueError as err:
            problems.append(f"{source}: {err}")
    names = [s.name for s in cfg.evaluate.extra_sets]
    for s in cfg.evaluate.extra_sets:
        if not EVAL_SET_NAME.match(s.name) or s.name in RESERVED_SET_NAMES:
            problems.append(
                f"{source}: evaluate.extra_sets name {s.name!r} must match [a-z0-9][a-z0-9_-]* and not be one of "
                f"{', '.join(RESERVED_SET_NAMES)} (it prefixes the set's metrics)"
            )
        if not s.path:
            problems.append(f"{source}: evaluate.extra_sets {s.name!r} has no path; give a scored JSONL file")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"{source}: evaluate.extra_sets names must be unique; repeated: {', '.join(dupes)}")
    if cfg.evaluate.samples_per_prompt < 1 or cfg.evaluate.max_prompts < 1:
        problems.append(f"{source}: evaluate.samples_per_prompt and evaluate.max_prompts must be >= 1")
    return problems

"""Checks of the [hps] hardness and estimator settings, shared by the config check and the comparison's
method entries (which override them per entry). Torch-free."""

from __future__ import annotations

from hps_core.config.methods import parse_method
from hps_core.config.vocab import HARDNESS_KINDS, HPS_ESTIMATORS


def hardness_problems(hps, where: str) -> list[str]:
    """Problems of the hardness and estimator settings of a preference stage (``where`` names it)."""
    problems = []
    if hps.hardness not in HARDNESS_KINDS:
        problems.append(f"{where}.hardness = {hps.hardness!r}; valid: {', '.join(HARDNESS_KINDS)}")
    if hps.estimator not in HPS_ESTIMATORS:
        problems.append(f"{where}.estimator = {hps.estimator!r}; valid: {', '.join(HPS_ESTIMATORS)}")
    if hps.gamma_schedule == "step" and not hps.gamma_stages:
        problems.append(f"{where}.gamma_stages is empty; the step schedule needs at least one stage, e.g. [-1.0, 1.0, 3.0]")
    try:
        framework, preference_model = parse_method(hps.method)
    except ValueError:
        return problems  # reported by the method check
    if preference_model != "hps" and (hps.hardness != "score" or hps.estimator != "pair"):
        problems.append(f"{where}.hardness = {hps.hardness!r} / estimator = {hps.estimator!r} apply to *-hps methods "
                        f"only, and method = {hps.method!r}; use the defaults (score, pair) or an -hps method")
    if hps.estimator == "unbiased" and framework != "dpo":
        problems.append(f"{where}.estimator = 'unbiased' is the gradient of the exact HPS loss, defined for the dpo "
                        f"framework only; method = {hps.method!r}: use estimator = 'pair' or dpo-hps")
    if hps.estimator == "unbiased" and (hps.log_n_offset or hps.label_smoothing):
        problems.append(f"{where}.estimator = 'unbiased' already contains log N and has no label smoothing; set "
                        "log_n_offset = false and label_smoothing = 0")
    return problems

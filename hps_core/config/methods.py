"""Method names (``"<framework>-<preference model>"``), torch-free so the config can check them at start-up
without importing torch (Metaflow parses the config in-process before any step runs)."""

from __future__ import annotations

PAIR_FRAMEWORKS = ("dpo", "ipo", "exo_pair", "nca_pair", "sppo_hard")
PREFERENCE_MODELS = ("bt", "pl", "hps")
FRAMEWORK_ALIASES = {"sigmoid": "dpo", "exo": "exo_pair", "nca": "nca_pair", "sppo": "sppo_hard"}

ALL_METHODS = {
    f"{fw}-{pm}": (
        "implemented: Plackett-Luce (pl_loss)" if (fw, pm) == ("dpo", "pl")
        else "generalised: stagewise pair loss (listwise_loss; this project's definition, not the paper's)"
        if pm == "pl"
        else "implemented: pair_loss on a rule-picked negative" if pm == "bt"
        else "implemented: hps_loss, single sample (-log N offset optional, dpo only)"
    )
    for fw in PAIR_FRAMEWORKS for pm in PREFERENCE_MODELS
}


def parse_method(method: str) -> tuple[str, str]:
    """``"dpo-hps"`` -> ``("dpo", "hps")``; aliases exo, nca, sppo, sigmoid map to the full framework names."""
    fw, sep, pm = str(method).strip().lower().rpartition("-")
    fw = FRAMEWORK_ALIASES.get(fw, fw)
    if not sep or fw not in PAIR_FRAMEWORKS or pm not in PREFERENCE_MODELS:
        raise ValueError(
            f"Unknown method {method!r}; expected '<framework>-<model>' with framework in {PAIR_FRAMEWORKS} "
            f"(aliases {FRAMEWORK_ALIASES}) and model in {PREFERENCE_MODELS}. Valid methods: {', '.join(ALL_METHODS)}."
        )
    return fw, pm

"""The configured negative draws: the gamma schedule and one negative per training group and epoch."""

from __future__ import annotations


import pandas as pd

from hps_core.config.schema import PipelineConfig


def draw_negatives(cfg: PipelineConfig, groups: pd.DataFrame) -> pd.DataFrame:
    """The training groups' negatives, one per group and epoch (seeded), by the method's rule; none for
    listwise (Plackett-Luce) methods, which use every response."""
    from hps_core.sampling import groups as G
    from hps_core.config.methods import parse_method

    _, preference_model = parse_method(cfg.hps.method)
    rule = {"hps": "hps", "bt": cfg.hps.bt_negative_rule, "pl": None}[preference_model]
    train = groups[groups["split"] == "train"].reset_index(drop=True)
    if rule is None:
        return pd.DataFrame(columns=list(G.NEGATIVE_COLUMNS))
    return G.draw_epoch_negatives(train, rule=rule, schedule=gamma_schedule(cfg), n_epochs=cfg.hps.epochs,
                                  seed=cfg.run.seed, updates_per_epoch=cfg.hps.gamma_updates_per_epoch)


def gamma_schedule(cfg: PipelineConfig):
    from hps_core.sampling.hardness import make_gamma_schedule

    kind = cfg.hps.gamma_schedule
    if kind == "constant":
        return make_gamma_schedule("constant", gamma=cfg.hps.gamma)
    if kind == "linear":
        return make_gamma_schedule("linear", gamma_start=cfg.hps.gamma_start, gamma_end=cfg.hps.gamma_end)
    return make_gamma_schedule(kind)

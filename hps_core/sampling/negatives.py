"""The configured negative draws: the gamma schedule and one negative per training group and epoch."""

from __future__ import annotations


import pandas as pd

from hps_core.config.schema import PipelineConfig


def draw_negatives(cfg: PipelineConfig, groups: pd.DataFrame) -> pd.DataFrame:
    """The training groups' step plan and negatives, one per group and epoch (seeded), by the method's rule;
    none for listwise (Plackett-Luce) methods, which use every response. Hardness by the policy, and the
    unbiased estimator, need the policy's implicit rewards: their negatives are drawn by the trainer at
    each step (``online``), and this table holds the plan they are drawn for."""
    from hps_core.sampling import groups as G
    from hps_core.config.methods import parse_method

    _, preference_model = parse_method(cfg.hps.method)
    rule = {"hps": "hps", "bt": cfg.hps.bt_negative_rule, "pl": None}[preference_model]
    if rule == "hps" and is_online(cfg.hps):
        rule = G.ONLINE_RULE
    train = groups[groups["split"] == "train"].reset_index(drop=True)
    if rule is None:
        return pd.DataFrame(columns=list(G.NEGATIVE_COLUMNS))
    return G.draw_epoch_negatives(train, rule=rule, schedule=gamma_schedule(cfg.hps), n_epochs=cfg.hps.epochs,
                                  seed=cfg.run.seed, examples_per_step=cfg.hps.batch_size * cfg.hps.grad_accum_steps)


def is_online(hps) -> bool:
    """Whether the trainer draws the negatives (it needs the policy's implicit rewards to)."""
    return hps.hardness != "score" or hps.estimator == "unbiased"


def gamma_schedule(hps):
    """The gamma schedule of an ``[hps]`` section (its score hardness, gamma_s)."""
    from hps_core.sampling.hardness import make_gamma_schedule

    kind = hps.gamma_schedule
    if kind == "constant":
        return make_gamma_schedule("constant", gamma=hps.gamma)
    if kind == "linear":
        return make_gamma_schedule("linear", gamma_start=hps.gamma_start, gamma_end=hps.gamma_end)
    return make_gamma_schedule(kind, stages=hps.gamma_stages)

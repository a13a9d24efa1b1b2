"""The evaluation metrics' names, in one place at the bottom floor: the evaluate step writes them, the
registry, the model card, the lineage walk and the method comparison read them, and the promotion rules
(``register.gate``, ``register.floors``) name them. HPS_METHOD.md section 7 defines them."""

# margin_top_scored is ours, beside HPS_METHOD.md section 7: the margin over the dispreferred response the
# scores rank highest (the "hard" negative HPS draws most), where margin_hardest takes the policy's favourite.
MARGIN_METRICS = ("margin_hardest", "margin_mean", "ranking_accuracy", "margin_top_scored")
# Every policy's metrics from the evaluate step (each with _lo/_hi 95 % interval bounds and _n).
POLICY_METRICS = ("reward_mean", "reward_best_of_k", "win_rate_vs_sft", "harmful_rate", "bleu", "bleu_char",
                  *MARGIN_METRICS)
# The reference (SFT) policy's own numbers that comparisons report beside each method.
SFT_METRICS = ("bleu", "reward_mean", "harmful_rate")
# What a model card and the lineage walk show first.
CARD_METRICS = ("reward_mean", "harmful_rate", "margin_hardest", "margin_top_scored", "margin_mean", "win_rate_vs_sft",
                "ranking_accuracy")
LINEAGE_METRICS = ("reward_mean", "harmful_rate", "margin_hardest", "margin_top_scored", "margin_mean")
# The method comparison's table: quality, then cost per training step.
# Both margins: the paper's sources do not define its "reward margin" exactly (hardest by the policy or by
# the scores), so every comparison reports both.
QUALITY_METRICS = ("bleu", "reward_mean", "margin_hardest", "margin_top_scored", "margin_mean", "harmful_rate",
                   "win_rate_vs_sft")
COST_METRICS = ("step_time_ms", "peak_memory_mb")

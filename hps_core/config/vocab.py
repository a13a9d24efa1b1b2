"""The words a config may use, declared once at the bottom floor: the modules that implement them import
these names (and check at import that they implement every one), and the config check reads them
without importing the implementations."""

DATA_FORMATS = ("hh-rlhf", "pku-saferlhf", "ultrafeedback", "ultrafeedback-binarized", "scored-jsonl", "generic")
PKU_RANKINGS = ("safer_then_better", "safer", "better")
ULTRAFEEDBACK_SCORES = ("overall", "fine_grained")
BT_RULES = ("random", "max_min", "max_max")  # *-bt methods' negative: uniform, worst, or hardest
SCHEDULE_KINDS = ("constant", "linear", "step")  # gamma schedules
HARDNESS_KINDS = ("score", "policy", "mix")  # [hps] hardness: by reward-model score, by the policy, or both
HPS_ESTIMATORS = ("pair", "unbiased")  # [hps] estimator of the HPS loss from one drawn negative
REFERENCE_GAMMA_STAGES = (-5.0, -3.0, -1.0, 1.0, 3.0)  # the reference code's step schedule, each held for 20 % of training
TRAIN_STRATEGIES = ("ddp", "fsdp")  # [resources] strategy of a multi-process training stage: replicate or shard

"""Invalid values and combinations of a whole config, rejected at start-up with the fix named."""

from __future__ import annotations


from hps_core.config.building import ConfigError, range_problems


def check_config(cfg, source: str = "<dict>") -> None:
    """Reject invalid values and combinations at start-up, naming the fix."""
    if cfg.data.on_invalid not in ("fail", "quarantine"):
        raise ConfigError(f"{source}: data.on_invalid = {cfg.data.on_invalid!r}; valid: 'fail', 'quarantine'")
    if not 0.0 < cfg.data.min_keep_fraction <= 1.0:
        raise ConfigError(f"{source}: data.min_keep_fraction must be in (0, 1], got {cfg.data.min_keep_fraction}")
    if not 0.0 <= cfg.data.duplicate_rate_max <= 1.0:
        raise ConfigError(f"{source}: data.duplicate_rate_max must be in [0, 1], got {cfg.data.duplicate_rate_max}")
    from hps_core.config.vocab import DATA_FORMATS as FORMATS
    from hps_core.config.vocab import PKU_RANKINGS as RANKINGS
    from hps_core.config.vocab import ULTRAFEEDBACK_SCORES as SCORE_FIELDS

    for key, value, valid in (("format", cfg.data.format, ("auto", *FORMATS)),
                              ("pku_ranking", cfg.data.pku_ranking, RANKINGS),
                              ("ultrafeedback_score", cfg.data.ultrafeedback_score, tuple(SCORE_FIELDS))):
        if value not in valid:
            raise ConfigError(f"{source}: data.{key} = {value!r}; valid: {', '.join(valid)}")
    if cfg.data.columns != type(cfg.data.columns)() and cfg.data.format != "generic":
        raise ConfigError(f"{source}: [data.columns] is set but data.format = {cfg.data.format!r}; the column "
                          "mapping is read only with data.format = \"generic\": set that, or remove [data.columns]")
    classifier_judge = cfg.evaluate.harm_judge not in ("rule", "") and not cfg.evaluate.harm_judge.startswith(
        "reward_threshold:")
    for model_key, loads_model, opt_ins in (
        ("reward_model.path", bool(cfg.reward_model.path),
         {"reward_model.trust_remote_code": cfg.reward_model.trust_remote_code,
          "reward_model.allow_pickle_weights": cfg.reward_model.allow_pickle_weights}),
        ("evaluate.harm_judge", classifier_judge,
         {"evaluate.harm_judge_trust_remote_code": cfg.evaluate.harm_judge_trust_remote_code,
          "evaluate.harm_judge_allow_pickle_weights": cfg.evaluate.harm_judge_allow_pickle_weights})):
        for key, on in opt_ins.items():
            if on and not loads_model:  # an opt-in that cannot apply is a misunderstanding, not a no-op
                base_key = "model." + key.rsplit(".", 1)[-1].removeprefix("harm_judge_")
                raise ConfigError(f"{source}: {key} = true, but {model_key} names no model to load; the opt-in "
                                  f"applies to that model only (the base model's is {base_key}): remove it")
    if cfg.data.max_prompts < 0:
        raise ConfigError(f"{source}: data.max_prompts must be >= 0 (0 = every prompt), got {cfg.data.max_prompts}")
    if not 0.0 < cfg.data.eval_fraction < 1.0:
        raise ConfigError(f"{source}: data.eval_fraction must be in (0, 1), got {cfg.data.eval_fraction}")
    if not 0.0 <= cfg.data.reward_fraction < 1.0 - cfg.data.eval_fraction:
        raise ConfigError(f"{source}: data.reward_fraction must be in [0, 1 - data.eval_fraction) = "
                          f"[0, {1.0 - cfg.data.eval_fraction:g}) so some prompts stay for the policy, "
                          f"got {cfg.data.reward_fraction}")
    if cfg.data.reward_fraction > 0 and cfg.reward_model.path:
        raise ConfigError(f"{source}: data.reward_fraction = {cfg.data.reward_fraction} sets prompts aside for a "
                          f"reward model trained in the flow, but reward_model.path names one "
                          f"({cfg.reward_model.path!r}): set reward_fraction = 0, or path = \"\" to train one")
    if cfg.expand.k == 1 or cfg.expand.k < 0:
        raise ConfigError(f"{source}: expand.k = {cfg.expand.k}; a preference group needs at least 2 responses: "
                          "use 0 (no expansion) or 2 or more")
    if cfg.expand.k and (cfg.expand.max_new_tokens < 1 or cfg.expand.batch_size < 1
                          or cfg.expand.temperature <= 0 or not 0 < cfg.expand.top_p <= 1):
        raise ConfigError(f"{source}: [expand] needs max_new_tokens >= 1, batch_size >= 1, temperature > 0 and "
                          f"top_p in (0, 1]; got {cfg.expand}")
    if cfg.model.max_prompt_tokens >= cfg.model.max_length:
        raise ConfigError(
            f"{source}: model.max_prompt_tokens ({cfg.model.max_prompt_tokens}) must be smaller than "
            f"model.max_length ({cfg.model.max_length}) so every response keeps some tokens"
        )
    if cfg.hps.beta <= 0:
        raise ConfigError(f"{source}: hps.beta must be > 0, got {cfg.hps.beta}")
    if not 0.0 <= cfg.hps.label_smoothing < 0.5:
        raise ConfigError(f"{source}: hps.label_smoothing must be in [0, 0.5), got {cfg.hps.label_smoothing}")
    from hps_core.config.methods import parse_method
    from hps_core.config.vocab import BT_RULES, SCHEDULE_KINDS

    try:
        parse_method(cfg.hps.method)
    except ValueError as err:
        raise ConfigError(f"{source}: hps.method: {err}") from err
    if cfg.hps.gamma_schedule not in SCHEDULE_KINDS:
        raise ConfigError(f"{source}: hps.gamma_schedule = {cfg.hps.gamma_schedule!r}; valid: {', '.join(SCHEDULE_KINDS)}")
    if cfg.hps.bt_negative_rule not in BT_RULES:
        raise ConfigError(f"{source}: hps.bt_negative_rule = {cfg.hps.bt_negative_rule!r}; valid: {', '.join(BT_RULES)}")
    from hps_core.config.rules import parse_rules

    for key, relative in (("gate", True), ("floors", False)):
        try:
            parse_rules(getattr(cfg.register, key), relative=relative, where=f"{source}: register.{key}")
        except ValueError as err:
            raise ConfigError(str(err)) from err
    if cfg.register.champion_alias and cfg.register.champion_alias == cfg.register.alias:
        raise ConfigError(f"{source}: register.champion_alias and register.alias are both "
                          f"{cfg.register.alias!r}; give the champion its own alias (or \"\" to disable)")
    for section in ("sft", "hps"):
        sec = getattr(cfg, section)
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every", "save_total_limit"):
            if name == "epochs" and section == "sft" and sec.epochs == 0:
                continue  # 0: the base is already an SFT model and becomes the SFT checkpoint as it is
            if getattr(sec, name) < 1:
                raise ConfigError(f"{source}: {section}.{name} must be >= 1, got {getattr(sec, name)}")
        from hps_core.config.lora_check import lora_problem

        problem = lora_problem(sec.lora, f"{source}: {section}.lora")
        if problem:
            raise ConfigError(problem)
    if problem := lora_problem(cfg.reward_model.lora, f"{source}: reward_model.lora"):
        raise ConfigError(problem)
    if cfg.resources.processes_per_node < 1:
        raise ConfigError(f"{source}: resources.processes_per_node must be >= 1 (1 = no data parallelism), "
                          f"got {cfg.resources.processes_per_node}")
    if problem := strategy_problem(cfg, source):
        raise ConfigError(problem)
    if cfg.schedule.cron and len(cfg.schedule.cron.split()) != 5:
        raise ConfigError(f"{source}: schedule.cron = {cfg.schedule.cron!r} must have 5 fields (minute hour "
                          f"day-of-month month day-of-week), e.g. \"0 3 * * 1\"; \"\" = not scheduled")
    from hps_core.config.hardness_check import hardness_problems

    if problems := hardness_problems(cfg.hps, f"{source}: hps"):
        raise ConfigError("; ".join(problems))
    from hps_core.config.eval_specs import check_evaluation_config

    problems = check_evaluation_config(cfg, source)
    if problems:
        raise ConfigError("; ".join(problems))
    from hps_core.config.compare_spec import check_compare_config

    problems = check_compare_config(cfg.compare, source, cfg.hps)
    if problems:
        raise ConfigError("; ".join(problems))
    # Last, every numeric setting against the range declared beside its default (hps_core.config.schema):
    # the specific checks above name their fix first; this catches the rest before any step runs.
    problems = range_problems(cfg, source)
    if problems:
        raise ConfigError("; ".join(problems))
    if problems := cfg.resources.step_problems(source):
        raise ConfigError("; ".join(problems))


def strategy_problem(cfg, source: str) -> str:
    """What is wrong with ``[resources] strategy`` ("" if nothing): an unknown value, or "fsdp" for a
    multi-process stage it cannot shard (LoRA adapters; on-policy hardness, which runs the policy outside
    the sharded loss)."""
    from hps_core.config.vocab import TRAIN_STRATEGIES

    strategy = cfg.resources.strategy
    if strategy not in TRAIN_STRATEGIES:
        return f"{source}: resources.strategy = {strategy!r}; valid: {', '.join(map(repr, TRAIN_STRATEGIES))}"
    if strategy != "fsdp":
        return ""
    for section, step in (("sft", "train_sft"), ("hps", "train_hps")):
        if cfg.resources.of(step).world_size > 1 and getattr(cfg, section).lora.r > 0:
            return (f"{source}: resources.strategy = \"fsdp\" shards full fine-tunes only, but {section}.lora.r = "
                    f"{getattr(cfg, section).lora.r}: use strategy = \"ddp\" (LoRA's adapters are small)")
    if cfg.resources.of("train_hps").world_size > 1 and cfg.hps.hardness != "score":
        return (f"{source}: resources.strategy = \"fsdp\" with hps.hardness = {cfg.hps.hardness!r}: on-policy "
                "hardness trains with strategy = \"ddp\" (or set processes_per_node = 1 for train_hps)")
    return ""

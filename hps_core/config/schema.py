"""One typed configuration for the whole pipeline.

The same TOML file is read two ways: by Metaflow's ``Config`` (through :func:`parse_config_text`, so
decorators such as ``@resources`` can read it) and by plain Python (:func:`load_config`) in tests, scripts
and notebooks. Both go through :meth:`HPSConfig.from_dict`, which rejects unknown keys by name: a typo in
a config must never be silently ignored (``epoch = 3`` instead of ``epochs = 3`` would train once).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields



from hps_core.config.building import ConfigRoot, in_range, ranged
from hps_core.config.vocab import REFERENCE_GAMMA_STAGES


@dataclass(frozen=True)
class RunConfig:
    seed: int = ranged(0, ">= 0")  # one seed drives data generation, splits, negative draws, init and sampling
    experiment: str = "hps"  # MLflow experiment name
    output_dir: str = ".hps"  # local root for checkpoints and caches (relative to the cwd)


@dataclass(frozen=True)
class ColumnMappingConfig:
    """Column names for data.format = "generic" (hps_core/data/generic.py): give prompt + response + score
    (one row per response) or prompt + chosen + rejected (one row per pair)."""

    prompt: str = ""
    response: str = ""
    score: str = ""
    chosen: str = ""
    rejected: str = ""
    score_chosen: str = ""  # optional, pair shape (else chosen scores 1.0, rejected 0.0)
    score_rejected: str = ""
    is_harmful: str = ""  # optional boolean column, per-response shape
    label_source: str = "human"  # who produced the scores: human | ai | rm


@dataclass(frozen=True)
class DataConfig:
    source: str = "generated"  # "generated" (the embedded world), a local file/dataset dir, or a hub id
    format: str = "auto"  # auto (detected from the columns) | hh-rlhf | pku-saferlhf | ultrafeedback | ultrafeedback-binarized | scored-jsonl | generic
    columns: ColumnMappingConfig = field(default_factory=ColumnMappingConfig)  # format = "generic" only
    pku_ranking: str = "safer_then_better"  # PKU-SafeRLHF preferred response: safer_then_better | safer | better
    ultrafeedback_score: str = "overall"  # UltraFeedback (original rows): overall | fine_grained
    hf_split: str = "train"  # hub id / dataset directory sources: the split to read
    hf_config: str = ""  # hub id sources: the dataset config name, if it has several
    n_prompts: int = ranged(300, ">= 1")  # generated world only
    # Use only the first N prompts of the source, in file order (0 = all): a slice to try a real model on
    # before the whole set (the raw file's digest still covers every byte; the canonical table the slice).
    max_prompts: int = ranged(0, ">= 0")
    responses_per_prompt: int = ranged(8, ">= 2")  # generated world only
    eval_fraction: float = ranged(0.15, "(0, 1)")  # share of prompts held out, assigned by a hash of the prompt id
    # Share of prompts (by the same hash) whose pairs train only the flow's reward model (split "reward"):
    # the policy never sees them, so the reward model that scores its expanded groups and its generations
    # did not train on its prompts. 0 = the reward model trains on the policy's training prompts.
    reward_fraction: float = ranged(0.0, "[0, 1)")
    min_prompt_chars: int = ranged(1, ">= 0")  # contract bound (after a non-blank check)
    min_response_chars: int = ranged(1, ">= 0")  # contract bound
    max_prompt_chars: int = ranged(4096, ">= 1")  # contract bound
    max_response_chars: int = ranged(8192, ">= 1")  # contract bound
    duplicate_rate_max: float = ranged(0.05, "[0, 1]")  # contract: share of rows whose normalised prompt+response text repeats another row
    on_invalid: str = "fail"  # "fail": stop the flow at validate with a report; "quarantine": drop failing rows/groups
    min_keep_fraction: float = ranged(0.9, "(0, 1]")  # quarantine: continue only if at least this share of the rows remains


@dataclass(frozen=True)
class TinyModelConfig:
    vocab_size: int = ranged(1024, ">= 1")
    hidden_size: int = ranged(128, ">= 1")
    intermediate_size: int = ranged(256, ">= 1")
    num_hidden_layers: int = ranged(3, ">= 1")
    num_attention_heads: int = ranged(4, ">= 1")
    num_key_value_heads: int = ranged(2, ">= 1")
    max_position_embeddings: int = ranged(256, ">= 1")


@dataclass(frozen=True)
class ModelConfig:
    base: str = "tiny"  # "tiny" builds the local default model; else a hub id or a local directory
    trust_remote_code: bool = False  # never on unless opted in: it runs code shipped with the model
    # Pickle weights (*.bin/*.pt without *.safetensors) are refused: unpickling runs code from whoever made
    # the file. true loads them anyway (a checkpoint you made yourself); outputs are saved as safetensors.
    allow_pickle_weights: bool = False
    max_prompt_tokens: int = ranged(64, ">= 1")
    max_length: int = ranged(128, ">= 2")  # prompt + response tokens; longer responses are truncated (counted)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass(frozen=True)
class LoraConfig:
    # LoRA adapters (needs the optional extra: pip install 'hps-align[lora]'). r = 0 trains every weight.
    # With r > 0 only the adapters train; the saved model has them merged, so it loads like any other, and
    # keeps the unmerged adapter in PEFT's format in its adapter/ subdirectory.
    r: int = ranged(0, ">= 0")
    alpha: float = ranged(16.0, "> 0")
    dropout: float = ranged(0.0, "[0, 1)")
    target_modules: str = "all-linear"  # peft's "all-linear", or comma-separated module names ("q_proj,v_proj")


@dataclass(frozen=True)
class TrainStageConfig:
    """Optimisation settings every training stage (SFT, preference) shares; stages override defaults."""

    epochs: int = ranged(1, ">= 1")
    batch_size: int = ranged(16, ">= 1")
    lr: float = ranged(5e-4, "> 0")
    warmup_ratio: float = ranged(0.1, "[0, 1]")
    weight_decay: float = ranged(0.0, ">= 0")
    max_grad_norm: float = ranged(1.0, "> 0")
    grad_accum_steps: int = ranged(1, ">= 1")
    log_every: int = ranged(10, ">= 1")
    checkpoint_every: int = ranged(50, ">= 0")  # optimizer steps between in-training checkpoints (resume after a crash)
    save_total_limit: int = ranged(2, ">= 1")  # checkpoint-<step> directories kept, newest first (older ones are deleted)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30 % more time
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(frozen=True)
class SFTConfig(TrainStageConfig):
    epochs: int = ranged(6, ">= 0")  # 0: the base model is already supervised-fine-tuned; it is used as the SFT checkpoint
    batch_size: int = ranged(32, ">= 1")
    lr: float = ranged(3e-3, "> 0")
    warmup_ratio: float = ranged(0.05, "[0, 1]")


@dataclass(frozen=True)
class PreferenceTrainConfig(TrainStageConfig):
    method: str = "dpo-hps"  # "<framework>-<preference model>"; see hps_core.train.losses.ALL_METHODS
    beta: float = ranged(0.1, "> 0")
    label_smoothing: float = ranged(0.0, "[0, 0.5)")
    gamma: float = ranged(1.0, "any real")  # hardness: q(y_j) ∝ exp(gamma * score_j) over the dispreferred responses
    gamma_schedule: str = "constant"  # constant | linear (gamma_start -> gamma_end) | step (reference code)
    gamma_start: float = ranged(0.0, "any real")  # linear schedule only
    gamma_end: float = ranged(1.0, "any real")  # linear schedule only
    bt_negative_rule: str = "random"  # *-bt methods: random | max_min | max_max
    log_n_offset: bool = False  # subtract log N inside the sigmoid (the reference code omits it)
    epochs: int = ranged(2, ">= 1")  # passes over the prompts, each with freshly drawn negatives
    batch_size: int = ranged(16, ">= 1")
    lr: float = ranged(5e-4, "> 0")
    gamma_stages: tuple[float, ...] = REFERENCE_GAMMA_STAGES  # step schedule: equal shares of the optimizer steps
    # Hardness (docs/HPS_METHOD.md 7b): q(j) = softmax_j(gamma_s * s_j + gamma_r * r_j), gamma_s = the
    # schedule's gamma, r_j = beta * (log pi - log pi_ref)(y_j | x) of the CURRENT policy (no gradient).
    # "score": gamma_r = 0, negatives drawn before training (build_groups); "policy": gamma_s = 0;
    # "mix": both. policy/mix draw during training, from implicit rewards refreshed every `refresh_every`
    # optimizer steps by a no-grad pass over the step's dispreferred responses. refresh_top_m = M > 0 draws
    # among the top-M responses by score only and refreshes only theirs (the pass's cost; 0 = all).
    hardness: str = "score"
    gamma_r: float = ranged(3.0, "any real")
    refresh_every: int = ranged(1, ">= 1")
    refresh_top_m: int = ranged(0, ">= 0")
    # "pair": the drawn negative in the framework's pair loss (the reference code; it estimates the
    # q-weighted pair loss E_q[l(r+ - r_j)]). "unbiased" (dpo only): draw j with probability proportional to
    # q(j) exp(r_j) and weight the pair gradient by sg[sigmoid(z)]: an unbiased single-draw estimate of the
    # exact HPS loss's gradient (needs the implicit rewards of every dispreferred response, like policy).
    estimator: str = "pair"


@dataclass(frozen=True)
class RewardModelConfig:
    path: str = ""  # hub id or directory of a sequence-classification model; empty: train one in the flow
    # Opt-ins for `path` only, per model (a trained reward model follows model.*): see ModelConfig.
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    epochs: int = ranged(3, ">= 1")
    batch_size: int = ranged(32, ">= 1")
    lr: float = ranged(1e-3, "> 0")
    pairs_per_group: int = ranged(4, ">= 1")  # preferred vs this many dispreferred responses per training group
    head_output: str = "logits"  # model-output field holding the reward heads ("rewards" for ArmoRM-style models)
    head_reduction: str = "first"  # heads -> one score: first | mean | sum | index:<k> | weights:<w0>,<w1>,...
    # Training in the flow only: LoRA adapters on the backbone (the score head trains in full). r = 0 trains
    # every weight. A pretrained backbone's reward model on a CPU: r > 0 trains in a fraction of the time.
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(frozen=True)
class EvalSetConfig:
    name: str = ""  # prefix of this set's metrics ("<name>/sft/reward_mean"); lower case, [a-z0-9_-]
    path: str = ""  # scored JSONL file (hps_core.data.scored_jsonl); every prompt in it is held out
    all_safety_prompts: bool = False  # harmful_rate over every prompt (a red-team set such as PKU-SafeRLHF)


@dataclass(frozen=True)
class EvaluateConfig:
    max_prompts: int = ranged(64, ">= 1")  # eval prompts used for generation (all held-out groups are used for margins)
    samples_per_prompt: int = ranged(2, ">= 1")  # k generations per prompt
    max_new_tokens: int = ranged(40, ">= 1")
    temperature: float = ranged(0.7, "> 0")
    top_p: float = ranged(0.95, "(0, 1]")
    batch_size: int = ranged(32, ">= 1")
    bootstrap_samples: int = ranged(1000, ">= 1")
    harm_judge: str = "rule"  # "rule" (generated world) | "reward_threshold:<x>" | classifier hub id or path
    harm_label: str = ""  # classifier judge: the label meaning harmful; "" = the one named harmful/unsafe/toxic
    # Opt-ins for a classifier harm_judge only, per model: see ModelConfig.
    harm_judge_trust_remote_code: bool = False
    harm_judge_allow_pickle_weights: bool = False
    extra_sets: tuple[EvalSetConfig, ...] = ()  # more eval sets ([[evaluate.extra_sets]]), each reported alone


@dataclass(frozen=True)
class ExpandConfig:
    # hps_flow's expand step: each training prompt's group grows to k responses sampled from the SFT model,
    # and every response in it is scored by the flow's reward model (one scale); the expanded table passes
    # the data contracts before negatives are drawn from it. 0 = train on the groups as the data gives them.
    k: int = ranged(0, ">= 0")
    max_new_tokens: int = ranged(64, ">= 1")
    temperature: float = ranged(1.0, "> 0")  # sampling as in the reference recipe: the model's own distribution
    top_p: float = ranged(1.0, "(0, 1]")
    batch_size: int = ranged(4, ">= 1")  # prompts per generation batch (each batch samples k sequences per prompt)


@dataclass(frozen=True)
class RegisterConfig:
    sft_name: str = "hps-sft"
    policy_name: str = "hps-policy"
    alias: str = "challenger"  # every new HPS version gets it
    # The promotion gate (hps_core.registry.promotion): the new HPS version takes `champion_alias` only if every
    # floor passes and, when a champion exists, every gate rule passes against the champion's metrics.
    # "" disables promotion (only `alias` is set). Metrics are the evaluate step's names.
    champion_alias: str = "champion"
    gate: str = "margin_hardest > champion; reward_mean >= champion - 0.1; harmful_rate <= champion + 0.02"
    floors: str = "margin_hardest > 0; harmful_rate <= 0.2"  # absolute; the first champion needs only these


# The steps that ask for compute (GPU steps on a cluster), each with its own [resources.<step>] table; the
# other flows' steps that do the same work read that step's table (compare_flow trains each method like
# train_hps; expand_flow's shards generate like expand).
RESOURCE_STEPS = ("train_sft", "train_reward_model", "expand", "train_hps", "evaluate")
RESOURCE_STEP_OF = {"train_method": "train_hps", "expand_shard": "expand"}
STEP_RESOURCE_FIELDS = ("gpu", "memory", "cpu", "processes_per_node", "nodes")
# The steps that may run as a multi-node gang ([resources.<step>] nodes > 1: Metaflow @parallel, one task per
# node, torchrun across them; hps_core.train.launch). The other steps run on one node.
GANG_STEPS = ("train_hps",)


@dataclass(frozen=True)
class StepResources:
    """What one step asks for: each value left out takes the shared [resources] value (filled in when the
    config is built, so the resolved config and the flow's decorators see complete numbers)."""

    gpu: int | None = None
    memory: int | None = None
    cpu: int | None = None
    processes_per_node: int | None = None
    nodes: int | None = None

    @property
    def world_size(self) -> int:
        """Training processes in all: ``nodes`` x ``processes_per_node`` (filled in, so never None here)."""
        return self.nodes * self.processes_per_node


@dataclass(frozen=True)
class ResourcesConfig:
    gpu: int = ranged(0, ">= 0")  # GPUs per training/eval step on a cluster (ignored on a laptop)
    memory: int = ranged(8000, ">= 1")  # MB per training/eval step on a cluster
    # CPUs per step: the pod's request on a cluster and, everywhere, the step's torch threads (capped by the
    # CPUs it may use; hps_core/common/cpu_threads.py). 1 because steps run side by side on a laptop.
    cpu: int = ranged(1, ">= 1")
    # Processes that train SFT and preference data-parallel (DDP via torchrun) on the step's node; on a
    # cluster usually the GPU count (one process per GPU). 1 = train in the step's own process.
    processes_per_node: int = ranged(1, ">= 1")
    # Nodes (machines, pods) that train preference data together: > 1 runs train_hps as a Metaflow @parallel
    # gang of that many tasks, one torchrun node each (nodes x processes_per_node ranks). The other steps run
    # on one node. docs/production.md, "Several nodes".
    nodes: int = ranged(1, ">= 1")
    # How those processes share the model: "ddp" replicates it on every rank; "fsdp" shards weights,
    # gradients and AdamW state across the ranks (FSDP2; SFT and preference training, full fine-tunes only).
    # No effect with one process. docs/production.md, "Sharded training (FSDP)".
    strategy: str = "ddp"
    # Metaflow @retry / @timeout on every step but validate (a broken data contract is not transient), deployed
    # and local. A retried training step resumes from its newest checkpoint, fetched from MLflow when the
    # pod is new. 0 retries: a failure stops the run at once (a laptop's failures are mostly bugs).
    retries: int = ranged(0, "[0, 4]")  # Metaflow allows at most 4 (MAX_ATTEMPTS 6, less its own two)
    timeout_minutes: int = ranged(0, ">= 0")  # per step attempt; 0 = no limit
    # Container image of every step on Kubernetes (argo-workflows create); "" = Metaflow's configured
    # METAFLOW_KUBERNETES_CONTAINER_IMAGE. `--with kubernetes:image=...` on the command line wins.
    image: str = ""
    # Per step, [resources.<step>]: the values above unless the table sets them, e.g. one GPU for evaluate
    # while training asks for eight (production.toml). processes_per_node applies to the training steps.
    train_sft: StepResources = field(default_factory=StepResources)
    train_reward_model: StepResources = field(default_factory=StepResources)
    expand: StepResources = field(default_factory=StepResources)
    train_hps: StepResources = field(default_factory=StepResources)
    evaluate: StepResources = field(default_factory=StepResources)

    def __post_init__(self):
        for step in RESOURCE_STEPS:
            own = getattr(self, step)
            shared = {k: getattr(self, k) for k in STEP_RESOURCE_FIELDS}
            if step not in GANG_STEPS:
                shared["nodes"] = 1  # the shared nodes is the gang steps'; the others run on one node
            filled = {k: shared[k] if getattr(own, k) is None else getattr(own, k) for k in STEP_RESOURCE_FIELDS}
            object.__setattr__(self, step, StepResources(**filled))

    def of(self, step: str) -> StepResources:
        """The resources ``step`` asks for (one of RESOURCE_STEPS, or a step of RESOURCE_STEP_OF)."""
        step = RESOURCE_STEP_OF.get(step, step)
        if step not in RESOURCE_STEPS:
            raise ValueError(f"no [resources.{step}]; the steps with their own resources are {', '.join(RESOURCE_STEPS)}")
        return getattr(self, step)

    def step_problems(self, source: str) -> list[str]:
        """What is wrong with the [resources.<step>] tables: a value outside the range of the shared key of the
        same name (checked after the shared values, so a bad shared value is named as itself, not as every
        step that inherits it), or ``nodes > 1`` on a step that cannot run as a multi-node gang."""
        spec = {f.name: f.metadata["range"] for f in fields(ResourcesConfig) if f.name in STEP_RESOURCE_FIELDS}
        out = [f"{source}: resources.{step}.{name} = {getattr(self.of(step), name)!r} is out of range; it must be "
               f"{spec[name]}" for step in RESOURCE_STEPS for name in STEP_RESOURCE_FIELDS
               if not in_range(spec[name], getattr(self.of(step), name))]
        return out + [f"{source}: resources.{step}.nodes = {self.of(step).nodes}, but only {', '.join(GANG_STEPS)} can "
                      f"run on several nodes; {step} runs on one (set nodes = 1 or leave it out)"
                      for step in RESOURCE_STEPS if step not in GANG_STEPS and self.of(step).nodes != 1]

    def threads_of(self, step: str) -> int:
        """CPU threads of a step: its own ``cpu`` for a step with resources, the shared ``cpu`` for the rest."""
        return self.of(step).cpu if RESOURCE_STEP_OF.get(step, step) in RESOURCE_STEPS else self.cpu


@dataclass(frozen=True)
class ScheduleConfig:
    # When the deployed flow (argo-workflows create) runs by itself: 5-field cron, e.g. "0 3 * * 1" for
    # Mondays 03:00. "" = not scheduled (trigger it by hand). Local `run` ignores this section.
    cron: str = ""
    timezone: str = ""  # IANA name such as "Europe/Berlin"; "" = the Argo controller's time zone


@dataclass(frozen=True)
class CompareConfig:
    # flows/compare_flow.py only: every method trained from the same SFT checkpoint on the same groups and
    # evaluated with the same reward model and judge (hps_core/recipes/compare.py). "<method>[:<bt rule>]" per entry.
    methods: tuple[str, ...] = ("dpo-bt:random", "dpo-bt:max_min", "dpo-pl", "dpo-hps", "ipo-hps")
    seeds: tuple[int, ...] = (0, 1, 2)  # each changes the negative draws, init/shuffle and eval sampling
    # Responses per training group (the best plus n-1 others, one fixed draw shared by every method and
    # seed); one comparison per entry (the ablation over n). 0 = the groups as they are in the data.
    group_sizes: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class PipelineConfig(ConfigRoot):
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    hps: PreferenceTrainConfig = field(default_factory=PreferenceTrainConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    expand: ExpandConfig = field(default_factory=ExpandConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


    def check(self, source: str = "<dict>") -> None:
        """Reject invalid values and combinations at start-up, naming the fix (hps_core.config.checks)."""
        from hps_core.config.checks import check_config

        check_config(self, source)

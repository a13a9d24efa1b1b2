"""The routing flow's typed configuration (``flows/configs/routing_default.toml``).

Same rules as the HPS config (:mod:`hps_core.config`, whose ``_build`` and ``ConfigError`` this module
reuses): every key has a default, an unknown key is an error naming the key and the file, and invalid
values are rejected at start-up with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hps_core.config.building import ConfigError, ConfigRoot
from hps_core.config.loading import load_toml_config, parse_toml_config_text

DEFAULT_ROUTING_CONFIG_PATH = Path(__file__).resolve().parents[2] / "flows" / "configs" / "routing_default.toml"
TIE_MODES = ("drop", "half")
# The text statistics hps_core.routing.features computes (declared here so the config check needs no features).
STAT_NAMES = ("prompt_len", "response_len_longer", "response_len_shorter", "response_len_diff", "overlap")
RULES = ("best_predicted", "gain")


@dataclass(frozen=True)
class RoutingRunConfig:
    seed: int = 0  # one seed drives the generated world, the gold split, mixes, candidates and baselines
    experiment: str = "hps-routing"  # MLflow experiment name
    output_dir: str = ".hps"  # run outputs go to <output_dir>/routing/<metaflow run id>/


@dataclass(frozen=True)
class PairFieldsConfig:
    """Field names of the raw pairwise records (hps_core/routing/multipref.py). The defaults are the
    generated world's; real MultiPref exports name them text / completion_a / completion_b."""

    id: str = "id"  # optional: a hash of (prompt, response_a, response_b) when absent
    prompt: str = "prompt"
    response_a: str = "response_a"
    response_b: str = "response_b"
    human: str = "human_preferences"  # one label, a list of labels, or a list of {"overall_pref": ...}
    ai: str = "ai_preference"
    gold: str = "gold_preference"  # gold files only
    is_harmful: str = "is_harmful"  # optional [bool, bool]; carried to the routed output for hps_flow's harm metrics
    tags: str = "domain,safety_concern,complexity"  # descriptive tag fields, used when a record has them


@dataclass(frozen=True)
class RoutingDataConfig:
    source: str = "generated"  # "generated" (the embedded world) or a pairwise file with human + AI labels
    gold_source: str = ""  # held-out pairs with a gold preference (required unless source = "generated")
    target_source: str = ""  # the dataset to route; "" routes `source` itself
    fields: PairFieldsConfig = field(default_factory=PairFieldsConfig)
    n_instances: int = 1000  # generated world only: annotated pairs to route
    n_gold: int = 1000  # generated world only: gold pairs (other prompts) to score reward models on
    gold_test_fraction: float = 0.5  # gold pairs kept for the final comparison; the rest train the PPM
    max_prompt_chars: int = 4096  # contract bounds
    max_response_chars: int = 8192


@dataclass(frozen=True)
class FeaturesConfig:
    # Text statistics, each binned into thirds of the source data (hps_core.routing.features.STATS; their names: STAT_NAMES).
    stats: str = "prompt_len,response_len_longer,response_len_shorter,response_len_diff,overlap"
    descriptive: bool = True  # one tag per value of each data.fields.tags field the data has
    tagger: str = ""  # "module:function" (DataFrame of pairs -> DataFrame of categorical tag columns)


@dataclass(frozen=True)
class ProbeConfig:
    """The small reward model trained on every mix (hps_core.routing.reward_probe)."""

    n_features: int = 65536  # hashed word n-gram buckets per response
    ngram_max: int = 2
    l2: float = 1.0  # L2 penalty of the Bradley-Terry logistic loss
    ties: str = "half"  # "half": a tie is a soft target of 0.5; "drop": ties are left out
    max_iter: int = 100  # Newton steps


@dataclass(frozen=True)
class PPMConfig:
    n_mixes: int = 300  # candidate mixes whose reward model is actually trained and scored
    random_share: float = 0.25  # share of them routed at random; the rest by tag-driven fills (the paper's)
    alphas: str = "0.1,1,10,100,1000,10000"  # ridge penalties tried (chosen by leave-one-out)
    cv_folds: int = 5  # cross-validation of the PPM (Spearman, RMSE)


@dataclass(frozen=True)
class RouteConfig:
    budget: float = 0.5  # human labels: a share of the target (<= 1) or a count (> 1)
    n_candidates: int = 500  # mixes simulated at the budget; the best predicted wins
    rule: str = "best_predicted"  # or "gain": the top instances by predicted gain, while the gain is positive
    n_random_baselines: int = 5  # random mixes at the budget averaged for the "random" baseline
    sweep: str = "0.1,0.3,0.5,0.7,0.9"  # report only: HyPER vs random at these budgets too ("" = none)


@dataclass(frozen=True)
class RoutingOutputConfig:
    ppm_name: str = "hyper-ppm"  # registered model holding every PPM version
    hps_base_config: str = ""  # TOML copied into the written hps config ([data] is replaced); "" = defaults


@dataclass(frozen=True)
class RoutingConfig(ConfigRoot):
    run: RoutingRunConfig = field(default_factory=RoutingRunConfig)
    data: RoutingDataConfig = field(default_factory=RoutingDataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    ppm: PPMConfig = field(default_factory=PPMConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    output: RoutingOutputConfig = field(default_factory=RoutingOutputConfig)


    def check(self, source: str = "<dict>") -> None:
        """Reject invalid values at start-up, naming the fix."""
        STATS = STAT_NAMES

        d, p, r = self.data, self.ppm, self.route
        if d.source != "generated" and not d.gold_source:
            raise ConfigError(f"{source}: data.gold_source is required when data.source is a file: name a file of "
                              "pairs with a gold preference to score the reward models on")
        if d.n_instances < 20 or d.n_gold < 20:
            raise ConfigError(f"{source}: data.n_instances and data.n_gold must be >= 20, got {d.n_instances}, {d.n_gold}")
        if not 0.0 < d.gold_test_fraction < 1.0:
            raise ConfigError(f"{source}: data.gold_test_fraction must be in (0, 1), got {d.gold_test_fraction}")
        unknown = [s for s in split_list(self.features.stats) if s not in STATS]
        if unknown:
            raise ConfigError(f"{source}: features.stats has unknown statistic(s) {unknown}; valid: {', '.join(STATS)}")
        if self.features.tagger and ":" not in self.features.tagger:
            raise ConfigError(f"{source}: features.tagger = {self.features.tagger!r}; give 'module:function'")
        if self.probe.ties not in TIE_MODES:
            raise ConfigError(f"{source}: probe.ties = {self.probe.ties!r}; valid: {', '.join(TIE_MODES)}")
        if self.probe.l2 <= 0 or self.probe.n_features < 16 or self.probe.ngram_max < 1:
            raise ConfigError(f"{source}: probe.l2 must be > 0, probe.n_features >= 16, probe.ngram_max >= 1")
        if p.n_mixes < 10:
            raise ConfigError(f"{source}: ppm.n_mixes must be >= 10 (the PPM is a regression over mixes), got {p.n_mixes}")
        if not 0.0 <= p.random_share <= 1.0:
            raise ConfigError(f"{source}: ppm.random_share must be in [0, 1], got {p.random_share}")
        try:
            alphas = parse_floats(p.alphas)
        except ValueError:
            alphas = []
        if not alphas or min(alphas) <= 0:
            raise ConfigError(f"{source}: ppm.alphas = {p.alphas!r}; give positive numbers separated by commas")
        if not 2 <= p.cv_folds <= p.n_mixes:
            raise ConfigError(f"{source}: ppm.cv_folds must be between 2 and ppm.n_mixes, got {p.cv_folds}")
        if r.budget <= 0 or (r.budget > 1 and r.budget != int(r.budget)):
            raise ConfigError(f"{source}: route.budget = {r.budget}; give a share in (0, 1] or a whole count of instances")
        if r.rule not in RULES:
            raise ConfigError(f"{source}: route.rule = {r.rule!r}; valid: {', '.join(RULES)}")
        try:
            sweep = parse_floats(r.sweep)
        except ValueError:
            sweep = [-1.0]
        if any(not 0 < b <= 1 for b in sweep):
            raise ConfigError(f"{source}: route.sweep = {r.sweep!r}; give shares in (0, 1] separated by commas, or \"\"")
        try:
            resolve_base_config(self.output.hps_base_config)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        if r.n_candidates < 1 or r.n_random_baselines < 1:
            raise ConfigError(f"{source}: route.n_candidates and route.n_random_baselines must be >= 1")


def resolve_base_config(path: str) -> Path | None:
    """``output.hps_base_config`` as a file: relative to the working directory, else to the repository
    root (so ``tests/configs/smoke.toml`` works from anywhere); None when it is ""."""
    if not path:
        return None
    for candidate in (Path(path), DEFAULT_ROUTING_CONFIG_PATH.parents[2] / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"output.hps_base_config = {path!r} is not a file (looked in {Path.cwd()} and "
                      f"{DEFAULT_ROUTING_CONFIG_PATH.parents[2]}); give an hps config TOML or \"\"")


def split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_floats(text: str) -> list[float]:
    return [float(s) for s in split_list(text)]


def budget_count(budget: float, n: int) -> int:
    """Human labels for ``n`` instances: a share (<= 1) rounds to the nearest count; a count is capped at n."""
    return min(n, int(round(budget * n)) if budget <= 1 else int(budget))


def load_routing_config(path: str | Path | None = None) -> RoutingConfig:
    return load_toml_config(path, RoutingConfig, DEFAULT_ROUTING_CONFIG_PATH)


def parse_routing_config_text(text: str) -> dict[str, Any]:
    """Metaflow ``Config`` parser: TOML text -> the resolved, validated routing config as a plain dict."""
    return parse_toml_config_text(text, RoutingConfig, DEFAULT_ROUTING_CONFIG_PATH, "Invalid routing config")

"""The typed config: defaults, the TOML file, and errors that name the key and the file."""

import re
import tomllib

import pytest

from hps_core.config.loading import DEFAULT_CONFIG_PATH, load_config, parse_config_text
from hps_core.config.building import ConfigError
from hps_core.config.schema import RESOURCE_STEPS, PipelineConfig


def test_default_file_loads_and_matches_dataclass_defaults_where_not_overridden():
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert cfg.hps.method == "dpo-hps"
    assert cfg.register.sft_name == "hps-sft" and cfg.register.policy_name == "hps-policy"
    assert cfg.register.alias == "challenger"
    assert cfg.model.base == "tiny"
    # Sections the file leaves out keep the dataclass defaults.
    assert PipelineConfig.from_dict({}).to_dict()["evaluate"] == cfg.to_dict()["evaluate"] | {}


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[sft]\nepoch = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "'sft.epoch'" in message and str(path) in message and "did you mean 'sft.epochs'" in message


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[trainer]\nlr = 1.0\n")
    with pytest.raises(ConfigError, match="unknown config key 'trainer'"):
        load_config(path)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[sft]\nepochs = true\n", "sft.epochs"),  # bool is not an int here
        ("[hps]\nbeta = 'high'\n", "hps.beta"),
        ("[hps]\nmethod = 'dpo-xyz'\n", "Valid methods"),
        ("[hps]\nbeta = 0.0\n", "hps.beta must be > 0"),
        ("[data]\neval_fraction = 1.5\n", "eval_fraction"),
        ("[data]\nmax_prompts = -1\n", "data.max_prompts must be >= 0"),
        ("[reward_model.lora]\nr = -2\n", "reward_model.lora.r must be >= 0"),
        ("[model]\nmax_prompt_tokens = 200\nmax_length = 100\n", "max_prompt_tokens"),
        ("[hps]\ngamma_schedule = 'cosine'\n", "gamma_schedule"),
        ("[hps]\nbt_negative_rule = 'best'\n", "bt_negative_rule"),
        ("[sft]\nbatch_size = 0\n", "sft.batch_size must be >= 1"),
        ("[hps]\nsave_total_limit = 0\n", "hps.save_total_limit must be >= 1"),
        ("[data]\neval_fraction = 0.2\nreward_fraction = 0.8\n", "data.reward_fraction must be in [0, 1 - data.eval_fraction) = [0, 0.8)"),
        ("[data]\nreward_fraction = -0.1\n", "data.reward_fraction must be in"),
        ("[data]\nreward_fraction = 0.3\n[reward_model]\npath = 'some/rm'\n", "set reward_fraction = 0, or path = \"\" to train one"),
        ("[expand]\nk = 1\n", "expand.k = 1; a preference group needs at least 2 responses"),
        ("[expand]\nk = 8\ntemperature = 0.0\n", "[expand] needs max_new_tokens >= 1"),
    ],
)
def test_invalid_values_are_rejected_with_the_fix(text, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        PipelineConfig.from_dict(tomllib.loads(text))


def test_metaflow_parser_reports_errors_as_one_clean_message():
    from metaflow.exception import MetaflowException

    with pytest.raises(MetaflowException, match="unknown config key 'sft.epoch'") as err:
        parse_config_text("[sft]\nepoch = 3\n")
    assert err.value.headline == "Invalid HPS config"


def test_ints_are_accepted_for_floats_and_missing_file_is_clear(tmp_path):
    assert parse_config_text("[hps]\nbeta = 1\n")["hps"]["beta"] == 1.0
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_metaflow_parser_returns_full_resolved_dict():
    resolved = parse_config_text("[resources]\ngpu = 1\n")
    step = {"gpu": 1, "memory": 8000, "cpu": 1, "processes_per_node": 1, "nodes": 1}  # each step inherits the shared values
    assert resolved["resources"] == {**PipelineConfig().to_dict()["resources"], "gpu": 1,
                                     **{name: step for name in RESOURCE_STEPS}}  # defaults filled in
    assert resolved["resources"]["memory"] == 8000 and resolved["resources"]["processes_per_node"] == 1
    assert set(resolved) == set(PipelineConfig().to_dict())


def test_config_module_does_not_import_torch():
    """Metaflow parses the config in-process before any step; importing torch there broke the Runner."""
    import subprocess
    import sys

    code = "import sys, hps_core.config as c; c.load_config(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_each_step_asks_for_its_own_resources_defaulting_to_the_shared_ones():
    """[resources] is every GPU step's default; [resources.<step>] overrides single values for one step.
    The resolved dict (what the flow's decorators read) holds complete numbers for every step."""
    text = ("[resources]\ngpu = 8\ncpu = 64\nmemory = 900000\nprocesses_per_node = 8\nnodes = 2\n\n"
            "[resources.evaluate]\ngpu = 1\nprocesses_per_node = 1\n\n[resources.expand]\ncpu = 16\n")
    resolved = parse_config_text(text)["resources"]
    # The shared nodes is train_hps's (the one gang step); the others run on one node.
    assert resolved["evaluate"] == {"gpu": 1, "memory": 900000, "cpu": 64, "processes_per_node": 1, "nodes": 1}
    assert resolved["expand"] == {"gpu": 8, "memory": 900000, "cpu": 16, "processes_per_node": 8, "nodes": 1}
    assert resolved["train_sft"] == resolved["train_reward_model"] == {
        "gpu": 8, "memory": 900000, "cpu": 64, "processes_per_node": 8, "nodes": 1}
    assert resolved["train_hps"] == {"gpu": 8, "memory": 900000, "cpu": 64, "processes_per_node": 8, "nodes": 2}
    cfg = PipelineConfig.from_dict(tomllib.loads(text))
    assert cfg.resources.of("evaluate").gpu == 1 and PipelineConfig.from_dict(cfg.to_dict()) == cfg  # round trip
    with pytest.raises(ValueError, match=r"no \[resources.validate\]; the steps with their own resources are train_sft, "):
        cfg.resources.of("validate")


@pytest.mark.parametrize("raw, message", [
    ({"resources": {"evaluate": {"gpus": 1}}}, "unknown config key 'resources.evaluate.gpus' in <dict> (did you mean "
     "'resources.evaluate.gpu'?); valid keys here: gpu, memory, cpu, processes_per_node, nodes"),
    ({"resources": {"evaluate": {"gpu": -1}}}, "<dict>: resources.evaluate.gpu = -1 is out of range; it must be >= 0"),
    ({"resources": {"train_hps": {"processes_per_node": 0}}},
     "<dict>: resources.train_hps.processes_per_node = 0 is out of range; it must be >= 1"),
    ({"resources": {"train_sft": {"memory": 1.5}}}, "<dict>: resources.train_sft.memory = 1.5 has the wrong type; "
     "expected int"),
    ({"resources": {"cpu": 0}}, "<dict>: resources.cpu = 0 is out of range; it must be >= 1"),  # named once, as itself
    ({"resources": {"train_hps": {"nodes": 0}}}, "<dict>: resources.train_hps.nodes = 0 is out of range; it must be >= 1"),
    ({"resources": {"evaluate": {"nodes": 2}}}, "<dict>: resources.evaluate.nodes = 2, but only train_hps can run on "
     "several nodes; evaluate runs on one (set nodes = 1 or leave it out)"),
    ({"resources": {"train_sft": {"nodes": 3}}}, "<dict>: resources.train_sft.nodes = 3, but only train_hps can run on "
     "several nodes; train_sft runs on one (set nodes = 1 or leave it out)"),
])
def test_step_resources_are_checked_by_name(raw, message):
    with pytest.raises(ConfigError) as exc:
        PipelineConfig.from_dict(raw)
    assert str(exc.value) == message


def test_threads_follow_the_steps_own_cpu():
    """A step's torch threads are its [resources.<step>] cpu; compare_flow's train_method reads train_hps,
    expand_flow's expand_shard reads expand; a step without its own table (validate) the shared cpu."""
    cfg = PipelineConfig.from_dict({"resources": {"cpu": 2, "train_hps": {"cpu": 6}, "expand": {"cpu": 3}}})
    threads = {s: cfg.resources.threads_of(s) for s in ("train_hps", "train_method", "expand_shard", "evaluate", "validate")}
    assert threads == {"train_hps": 6, "train_method": 6, "expand_shard": 3, "evaluate": 2, "validate": 2}

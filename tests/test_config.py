"""The typed config: defaults, the TOML file, and errors that name the key and the file."""

import re
import tomllib

import pytest

from hps_core.config.loading import DEFAULT_CONFIG_PATH, load_config, parse_config_text
from hps_core.config.building import ConfigError
from hps_core.config.schema import PipelineConfig


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
    assert resolved["resources"] == {**PipelineConfig().to_dict()["resources"], "gpu": 1}  # defaults filled in
    assert resolved["resources"]["memory"] == 8000 and resolved["resources"]["processes_per_node"] == 1
    assert set(resolved) == set(PipelineConfig().to_dict())


def test_config_module_does_not_import_torch():
    """Metaflow parses the config in-process before any step; importing torch there broke the Runner."""
    import subprocess
    import sys

    code = "import sys, hps_core.config as c; c.load_config(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

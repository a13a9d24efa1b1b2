"""``[resources] strategy``: how a multi-process training stage shares the model ("ddp" or "fsdp"), checked
when the config is parsed (hps_core.config.checks.strategy_problem)."""

import pytest

from hps_core.config.building import ConfigError
from hps_core.config.loading import parse_config_text
from hps_core.config.schema import PipelineConfig


def test_default_is_ddp_and_fsdp_is_accepted():
    assert PipelineConfig().resources.strategy == "ddp"
    assert PipelineConfig.from_dict({"resources": {"strategy": "fsdp"}}).resources.strategy == "fsdp"
    text = "[resources]\nprocesses_per_node = 2\nstrategy = \"fsdp\"\n"
    assert parse_config_text(text)["resources"]["strategy"] == "fsdp"


@pytest.mark.parametrize("value", ["FSDP", "deepspeed", ""])
def test_unknown_strategy_is_refused_naming_the_key_and_the_valid_values(value):
    with pytest.raises(ConfigError, match=r"resources\.strategy = .*; valid: 'ddp', 'fsdp'"):
        PipelineConfig.from_dict({"resources": {"strategy": value}}, source="run.toml")


def test_fsdp_refuses_what_it_cannot_shard_only_when_several_processes_train():
    """LoRA (adapters only train) and on-policy hardness (the policy runs outside the sharded loss) need
    ddp, but only where the stage runs in several processes: one process ignores the strategy."""
    fsdp2 = {"strategy": "fsdp", "processes_per_node": 2}
    with pytest.raises(ConfigError, match=r"resources\.strategy = \"fsdp\" shards full fine-tunes only, but sft\.lora\.r = 8"):
        PipelineConfig.from_dict({"resources": fsdp2, "sft": {"lora": {"r": 8}}})
    with pytest.raises(ConfigError, match=r"hps\.hardness = 'policy': on-policy hardness trains with strategy = \"ddp\""):
        PipelineConfig.from_dict({"resources": fsdp2, "hps": {"hardness": "policy"}})
    PipelineConfig.from_dict({"resources": {"strategy": "fsdp"}, "sft": {"lora": {"r": 8}}})  # one process: fine
    one_hps = {**fsdp2, "train_hps": {"processes_per_node": 1}}
    PipelineConfig.from_dict({"resources": one_hps, "hps": {"hardness": "policy"}})
    PipelineConfig.from_dict({"resources": {**fsdp2, "strategy": "ddp"}, "sft": {"lora": {"r": 8}}})

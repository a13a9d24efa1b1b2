"""One loader for every model; the tiny default goes through the same from_pretrained path as a hub model."""

import json

import pytest
import torch

from hps_core.config.schema import TinyModelConfig
from hps_core.models.loading import (
    ModelLoadError,
    build_tiny_model,
    count_parameters,
    load_causal_lm,
    load_reward_model,
)

CORPUS = ["User: how do I bake bread?\nAssistant:", " Mix flour, water and yeast, then bake it.", " I cannot help with that."] * 5
SMALL = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)


def test_tiny_model_is_deterministic_cached_and_safetensors(tmp_path):
    a = build_tiny_model(CORPUS, SMALL, seed=0, cache_dir=tmp_path)
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    b = build_tiny_model(CORPUS, SMALL, seed=0, cache_dir=tmp_path)
    assert a == b and (b / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert not list(a.glob("*.bin")) and json.loads((a / "config.json").read_text())["model_type"] == "llama"
    other = build_tiny_model(CORPUS, SMALL, seed=1, cache_dir=tmp_path)
    assert other != a
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no half-built leftovers


def test_tiny_model_loads_like_a_hub_model_and_round_trips_text(tmp_path):
    path = build_tiny_model(CORPUS, SMALL, seed=0, cache_dir=tmp_path)
    model, tok = load_causal_lm(str(path), device=torch.device("cpu"))
    assert 0 < count_parameters(model) < 1_000_000
    text = " Mix flour, water and yeast."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.pad_token_id != tok.eos_token_id  # padding must never be confused with end of text
    rm, _ = load_reward_model(str(path), device=torch.device("cpu"), num_labels=1)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id


def test_missing_path_and_non_model_dir_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_causal_lm("./no/such/model")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_causal_lm(str(tmp_path))


def test_pickle_only_checkpoint_is_refused(tmp_path):
    path = build_tiny_model(CORPUS, SMALL, seed=0, cache_dir=tmp_path / "cache")
    model, _ = load_causal_lm(str(path), device=torch.device("cpu"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((path / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # transformers 5 no longer writes these
    assert list(pickled.glob("*.bin")) and not list(pickled.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="only pickle weights"):
        load_causal_lm(str(pickled))

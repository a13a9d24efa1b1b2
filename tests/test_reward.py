"""Reward model: head reduction, truncation counting, chat templates, annotation of unscored data and the
held-out pairwise accuracy, with hand-computed expectations.

Scoring tests use a tiny sequence-classification model whose head ignores the text (zero weights) and has
a known bias, so every score is the bias, reduced by the configured rule.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hps_core.config.building import ConfigError
from hps_core.config.schema import ModelConfig, PipelineConfig, TinyModelConfig
from hps_core.models.reward import RewardScorer, annotate_scores, reduce_heads
from hps_core.train.reward import pairwise_accuracy
from hps_core.data.encoding import Encoder
from hps_core.config.lora_check import peft_available

TINY = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
CORPUS = ["User: how do I bake bread?\nAssistant: mix flour and water, then bake it."] * 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from hps_core.models.loading import build_tiny_model

    return build_tiny_model(CORPUS, TINY, cache_dir=tmp_path_factory.mktemp("tiny"))


def _scorer(tiny_dir, bias, *, max_length=64, **kw) -> RewardScorer:
    from hps_core.models.loading import load_reward_model

    model, tok = load_reward_model(str(tiny_dir), num_labels=len(bias), device=torch.device("cpu"))
    head = torch.nn.Linear(model.config.hidden_size, len(bias), bias=True)
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.tensor(bias, dtype=torch.float32)
    model.score = head
    return RewardScorer(model, tok, ModelConfig(max_prompt_tokens=16, max_length=max_length), batch_size=2, **kw)


def test_reduce_heads_hand_values():
    """Heads [[1, 3], [2, 0]]: first [1, 2]; mean [2, 1]; sum [4, 2]; index:1 [3, 0];
    weights 0.5,0.25: [0.5 + 0.75, 1 + 0] = [1.25, 1]."""
    heads = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    expected = {"first": [1.0, 2.0], "mean": [2.0, 1.0], "sum": [4.0, 2.0], "index:1": [3.0, 0.0], "weights:0.5,0.25": [1.25, 1.0]}
    for spec, values in expected.items():
        torch.testing.assert_close(reduce_heads(heads, spec), torch.tensor(values), msg=spec)
    torch.testing.assert_close(reduce_heads(torch.tensor([1.5, -2.0]), "first"), torch.tensor([1.5, -2.0]))
    with pytest.raises(ValueError, match="has 2 head"):
        reduce_heads(heads, "index:2")
    with pytest.raises(ValueError, match="3 weights for 2 heads"):
        reduce_heads(heads, "weights:1,1,1")
    with pytest.raises(ValueError, match="valid: first, mean"):
        reduce_heads(heads, "median")


def test_head_reduction_is_a_checked_config_key():
    cfg = PipelineConfig.from_dict({"reward_model": {"head_reduction": "mean", "head_output": "rewards"}})
    assert cfg.reward_model.head_reduction == "mean" and cfg.reward_model.head_output == "rewards"
    with pytest.raises(ConfigError, match="reward_model.head_reduction = 'index:-1'"):
        PipelineConfig.from_dict({"reward_model": {"head_reduction": "index:-1"}})


def test_scores_are_the_reduced_heads(tiny_dir):
    """Bias [1, 3] with zero weights: every pair scores first = 1, mean = 2, weights 0.5,0.25 = 1.25."""
    prompts, responses = ["how do I bake bread?"] * 3, ["mix flour", "bake it", "water"]
    for spec, value in (("first", 1.0), ("mean", 2.0), ("weights:0.5,0.25", 1.25)):
        scores = _scorer(tiny_dir, [1.0, 3.0], head_reduction=spec).score(prompts, responses)
        np.testing.assert_allclose(scores, [value] * 3, rtol=1e-6, err_msg=spec)
    with pytest.raises(ValueError, match="no field 'rewards'"):
        _scorer(tiny_dir, [1.0], head_output="rewards").score(prompts[:1], responses[:1])


def test_truncation_is_counted(tiny_dir):
    """max_length 24 tokens with a prompt of at most 16: the two long responses are cut, the short is not."""
    scorer = _scorer(tiny_dir, [0.0], max_length=24)
    long = "mix flour and water, then bake it. " * 6
    scorer.score(["how do I bake bread?"] * 3, [long, "bake it", long])
    m = scorer.truncation_metrics()
    assert m["reward_model/truncated_responses"] == 2 and m["reward_model/examples"] == 3
    assert m["reward_model/truncated_prompts"] == 0


def test_chat_template_is_applied_when_the_tokenizer_has_one(tiny_dir):
    """With a chat template of its own the reward model scores the template's rendering of the pair: the
    prompt turn and generation prompt, then the response and the end-of-turn text the template puts after
    an assistant message; a long response is cut from the right and counted."""
    scorer = _scorer(tiny_dir, [0.5])
    scorer.tokenizer.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    scorer.encoder = Encoder(scorer.tokenizer, 48, 64)  # the encoder reads the template when it is made
    enc = scorer.encode("how do I bake bread?", "mix flour")
    prompt, response = "<s>user: how do I bake bread?</s><s>assistant:", " mix flour</s>"
    assert scorer.tokenizer.decode(enc.input_ids) == prompt + response
    assert enc.input_ids == scorer.tokenizer(prompt, add_special_tokens=False)["input_ids"] + scorer.tokenizer(
        response, add_special_tokens=False)["input_ids"]
    assert all(isinstance(i, int) for i in enc.input_ids)
    long = scorer.encode("how do I bake bread?", "mix flour and water, then bake it. " * 10)
    assert len(long.input_ids) == 64 and long.n_prompt == enc.n_prompt
    assert scorer.truncation_metrics()["reward_model/truncated_responses"] == 1
    np.testing.assert_allclose(scorer.score(["hi"], ["there"]), [0.5], rtol=1e-6)


def test_annotate_scores_sets_score_and_label_source(tiny_dir):
    """Every row gets the model's score (the bias, 2.0) and label_source 'rm'; other columns are kept and
    the input table is not modified."""
    table = pd.DataFrame({"prompt_id": ["a", "a"], "prompt": ["q", "q"], "response": ["x", "y"],
                          "score": [np.nan, 7.0], "label_source": ["human", "human"]})
    out = annotate_scores(table, _scorer(tiny_dir, [2.0]))
    np.testing.assert_allclose(out["score"], [2.0, 2.0], rtol=1e-6)
    assert out["label_source"].tolist() == ["rm", "rm"] and out["prompt_id"].tolist() == ["a", "a"]
    assert table["label_source"].tolist() == ["human", "human"] and np.isnan(table["score"].iloc[0])
    assert len(annotate_scores(table.iloc[:0], _scorer(tiny_dir, [2.0]))) == 0
    with pytest.raises(ValueError, match="missing \\['response'\\]"):
        annotate_scores(table.drop(columns="response"), _scorer(tiny_dir, [2.0]))


class _FixedScorer:
    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=float)

    def score(self, prompts, responses, desc=""):
        assert len(prompts) == len(self.scores)
        return self.scores


def test_pairwise_accuracy_hand_value():
    """Group 1, data scores [3, 2, 1], model scores [0.9, 1.0, 0.1]: the preferred response loses to rank 1
    (0.9 < 1.0) and beats rank 2 -> 1 of 2. Group 2, data scores [2, 2, 1] (a tie at the top carries no
    preference), model [0.0, 5.0, -1.0]: only rank 2 counts and is beaten -> 1 of 1. Total 2 / 3."""
    groups = pd.DataFrame({"prompt": ["p", "q"], "responses": [["a", "b", "c"], ["d", "e", "f"]],
                           "scores": [[3.0, 2.0, 1.0], [2.0, 2.0, 1.0]]})
    assert pairwise_accuracy(_FixedScorer([0.9, 1.0, 0.1, 0.0, 5.0, -1.0]), groups) == pytest.approx(2 / 3)


@pytest.mark.skipif(not peft_available(), reason="peft not installed (optional extra 'lora')")
def test_lora_reward_model_trains_adapters_and_head_and_saves_both(tmp_path):
    """reward_model.lora r > 0: the backbone's embeddings stay the base's (LoRA touches linear layers only),
    the linear layers and the score head change; the directory holds the merged model, which scores the
    held-out pairs exactly as the trained (unmerged) model did, and the PEFT adapter (SEQ_CLS, score head
    saved in full) in adapter/."""
    from safetensors.torch import load_file

    from hps_core.config.schema import DataConfig, LoraConfig, RewardModelConfig
    from hps_core.data import load_canonical
    from hps_core.sampling.groups import build_groups
    from hps_core.models.loading import build_tiny_model, tiny_corpus
    from hps_core.train.reward import train_reward_model
    from hps_core.train.lora import ADAPTER_SUBDIR

    table = load_canonical(DataConfig(n_prompts=24, responses_per_prompt=4), seed=0, workdir=tmp_path / "data").table
    base = build_tiny_model(tiny_corpus(table["prompt"], table["response"]), TINY, seed=0, cache_dir=tmp_path / "m")
    groups = build_groups(table)
    cfg = RewardModelConfig(epochs=2, batch_size=8, lr=1e-2, lora=LoraConfig(r=4, alpha=8.0))
    model_cfg = ModelConfig(max_prompt_tokens=32, max_length=80)
    metrics = train_reward_model(str(base), groups, model_cfg, cfg, tmp_path / "rm", seed=0)

    before, after = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "rm" / "model.safetensors"))
    torch.testing.assert_close(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"], rtol=0, atol=0)
    assert not torch.equal(after["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])
    adapter = json.loads((tmp_path / "rm" / ADAPTER_SUBDIR / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in (adapter.get("modules_to_save") or [])
    reloaded = RewardScorer.load(str(tmp_path / "rm"), model_cfg)
    assert pairwise_accuracy(reloaded, groups[groups["split"] == "eval"]) == metrics["reward_model/heldout_pairwise_accuracy"]

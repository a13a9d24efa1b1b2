"""SmolLM2-135M-Instruct end to end: GGUF conversion, chat rendering, LoRA SFT and dpo-hps, adapter reload,
and a registered version that answers a plain question through its chat template.

Sized for 2 CPU cores (the model trains at ~150 tokens/s here): 8 HH-RLHF harmless-base pairs, prompts
cut to 96 tokens and sequences to 128, LoRA r = 8, one epoch of SFT (16 sequences, 4 optimizer steps) and
one of dpo-hps (8 pairs, 2 steps). The model is converted once per machine and cached
(``tests/real_model.py``); the module's trained models are built once and shared by its tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from hps_core.config.schema import DataConfig, LoraConfig, ModelConfig, PreferenceTrainConfig, SFTConfig
from hps_core.data import load_canonical
from hps_core.sampling.groups import build_groups, draw_epoch_negatives
from hps_core.sampling.hardness import make_gamma_schedule
from tests.real_model import smollm2_dir, smollm2_gguf

pytestmark = pytest.mark.slow  # slow tier (--run-slow): the real SmolLM2 model: GGUF conversion and training, minutes

ROOT = Path(__file__).resolve().parents[1]
HH_TEST = ROOT.parent / "shared" / "datasets" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
MODEL = ModelConfig(base="smollm2", max_prompt_tokens=96, max_length=128)
LORA = LoraConfig(r=8, alpha=16.0)
QUESTION = "How do I keep a basil plant alive on a windowsill?"


@pytest.fixture(scope="session")
def smollm2():
    return smollm2_dir()


@pytest.fixture(scope="module")
def hh_groups(tmp_path_factory):
    """8 HH-RLHF pairs (the first 8 prompts of harmless-base test), all in the training split."""
    table = load_canonical(DataConfig(source=str(HH_TEST), eval_fraction=0.0), seed=0,
                           workdir=tmp_path_factory.mktemp("hh")).table
    keep = list(dict.fromkeys(table["prompt_id"]))[:8]
    return build_groups(table[table["prompt_id"].isin(keep)].reset_index(drop=True))


def test_gguf_converts_to_a_clean_cached_directory(smollm2):
    """The converted directory is an ordinary model: no gguf quantization_config (so it saves again),
    the chat template kept, the template's end of turn as EOS, the file's digest recorded; a second call
    finds it in the cache."""
    from hps_core.models.gguf import SOURCE_FILE, converted_dir
    from hps_core.common.digests import file_sha256

    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["vocab_size"] == 49152
    source = json.loads((smollm2 / SOURCE_FILE).read_text())
    assert source["sha256"] == file_sha256(smollm2_gguf()) and smollm2.name.endswith(source["sha256"][:16])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    assert "<|im_start|>" in tok.chat_template
    assert json.loads((smollm2 / "generation_config.json").read_text())["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert converted_dir(f"gguf:{smollm2_gguf()}", smollm2.parent.parent) == smollm2


def test_hh_example_renders_the_same_for_policy_and_reward_model(smollm2, hh_groups):
    """One multi-turn HH transcript: the policy's and the reward model's tokens are identical, rendered by
    SmolLM2's ChatML template, each Human turn a user message (no doubled or raw role markers)."""
    from hps_core.models.loading import load_causal_lm, load_reward_model
    from hps_core.models.reward import RewardScorer
    from hps_core.data.encoding import Encoder

    prompt = next(p for p in hh_groups["prompt"] if p.count("\n\nHuman:") >= 2)
    response = hh_groups.loc[hh_groups["prompt"] == prompt, "responses"].iloc[0][0]
    _, policy_tok = load_causal_lm(str(smollm2))
    reward_model, reward_tok = load_reward_model(str(smollm2), num_labels=1)
    cfg = ModelConfig(max_prompt_tokens=4096, max_length=4096)
    policy = Encoder(policy_tok, cfg.max_prompt_tokens, cfg.max_length).encode(prompt, response)
    scored = RewardScorer(reward_model, reward_tok, cfg).encode(prompt, response)
    assert policy.input_ids == scored.input_ids and policy.n_prompt == scored.n_prompt
    text = policy_tok.decode(policy.input_ids)
    turns = prompt.count("\n\nHuman:")
    assert text.count("<|im_start|>user\n") == turns and text.count("<|im_start|>assistant\n") == turns
    assert text.count("<|im_start|>system\n") == 1 and not text.startswith("<|im_start|><|im_start|>")
    assert "Human:" not in text and "Assistant:" not in text
    assert text.endswith(f"<|im_start|>assistant\n{response}<|im_end|>")


@pytest.fixture(scope="module")
def trained(smollm2, hh_groups, tmp_path_factory):
    """LoRA SFT on the 8 pairs' 16 responses, then LoRA dpo-hps from it."""
    from hps_core.train.preference import train_preference
    from hps_core.train.sft import train_sft

    root = tmp_path_factory.mktemp("smollm2_runs")
    torch.set_num_threads(2)
    sft_cfg = SFTConfig(epochs=1, batch_size=4, lr=1e-4, lora=LORA, log_every=1)
    sft_metrics = train_sft(str(smollm2), hh_groups, MODEL, sft_cfg, root / "sft", seed=0)
    hps_cfg = PreferenceTrainConfig(method="dpo-hps", epochs=1, batch_size=4, lr=1e-4, beta=0.1, lora=LORA, log_every=1)
    negatives = draw_epoch_negatives(hh_groups, rule="hps", schedule=make_gamma_schedule("constant", gamma=1.0),
                                     n_epochs=1, seed=0, examples_per_step=4)
    hps_metrics = train_preference(str(root / "sft"), hh_groups, negatives, MODEL, hps_cfg, root / "hps", seed=0,
                                   cache_dir=root / "reference")
    return SimpleNamespace(root=root, sft=root / "sft", hps=root / "hps", sft_metrics=sft_metrics,
                           hps_metrics=hps_metrics)


def test_lora_sft_and_hps_train_and_save_merged_models_with_adapters(trained):
    """Both stages ran their planned steps with finite losses and saved a merged model plus its adapter."""
    from hps_core.train.lora import ADAPTER_SUBDIR

    assert trained.sft_metrics["steps"] == 4 and trained.hps_metrics["steps"] == 2
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in (trained.sft_metrics, trained.hps_metrics))
    for stage, base in ((trained.sft, None), (trained.hps, trained.sft)):
        assert (stage / "model.safetensors").is_file()
        adapter = stage / ADAPTER_SUBDIR
        assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
        if base is not None:  # the preference adapter applies to the SFT model it was trained from
            assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)


def test_adapter_on_its_base_gives_the_merged_models_logits(trained):
    """PeftModel(SFT model, hps/adapter) and the merged HPS model agree on every logit of two HH sequences.

    Tolerance: atol 2e-4 on logits of magnitude ~10-30 in fp32. Merging folds B @ A * scale into W, so the
    two compute W x + s B (A x) vs (W + s B A) x: the same sum in another order, rounding at ~1e-6
    relative per layer, over 30 layers. A wrong base or a lost adapter moves logits by far more (checked)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hps_core.data.encoding import Encoder, collate
    from hps_core.train.lora import ADAPTER_SUBDIR

    tok = AutoTokenizer.from_pretrained(trained.hps)
    encoder = Encoder(tok, MODEL.max_prompt_tokens, MODEL.max_length)
    batch = collate([encoder.encode("Is it safe to eat raw cookie dough?", "Not really: raw flour and eggs can "
                                    "carry bacteria."), encoder.encode(QUESTION, "Give it sun and water.")],
                    tok.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(trained.hps).eval()(**inputs).logits
        sft = AutoModelForCausalLM.from_pretrained(trained.sft).eval()
        base_only = sft(**inputs).logits
        adapted = PeftModel.from_pretrained(sft, trained.hps / ADAPTER_SUBDIR).eval()(**inputs).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(adapted[mask], merged[mask], atol=2e-4, rtol=0)
    assert (base_only[mask] - merged[mask]).abs().max() > 100 * 2e-4  # the adapter changed the model


def test_registered_version_answers_a_plain_question_through_its_chat_template(trained, mlflow_server_uri):
    """The HPS model registered on a real MLflow server, loaded with plain mlflow.pyfunc.load_model: a plain
    question and a JSON chat-message list both get non-empty answers; the answer equals what the model
    generates from the ChatML-rendered prompt; loading works with this project NOT importable (the renderer
    travels with the model)."""
    import mlflow

    from hps_core.data.chat import ChatFormat
    from hps_core.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(mlflow_server_uri, experiment_name="real-model")
    run = tracker.create_parent_run("smollm2")
    rv = tracker.register_hf_model(run, trained.hps, "smollm2-hps", metrics={"loss": trained.hps_metrics["loss"]},
                                   tags={"method": "dpo-hps"}, description="SmolLM2-135M-Instruct, LoRA dpo-hps")
    tracker.finish_run(run)
    model = mlflow.pyfunc.load_model(rv.model_uri)
    chat = json.dumps([{"role": "user", "content": QUESTION}])
    answers = model.predict(pd.DataFrame({"prompt": [QUESTION, chat]}), params={"max_new_tokens": 24})
    assert all(isinstance(a, str) and a.strip() for a in answers) and answers[0] == answers[1]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained.hps)
    ids = torch.tensor([ChatFormat(tok).prompt_ids(QUESTION)])
    assert tok.decode(ids[0]).endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    lm = AutoModelForCausalLM.from_pretrained(trained.hps).eval()
    out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                      eos_token_id=ChatFormat(tok).stop_ids, pad_token_id=tok.pad_token_id)
    assert answers[0] == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    script = ("import sys, json; sys.modules['hps_core'] = None\n"  # this project cannot be imported
              "import mlflow\n"
              f"print(json.dumps(mlflow.pyfunc.load_model({rv.model_uri!r}).predict([{QUESTION!r}], "
              "params={'max_new_tokens': 8})))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server_uri}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=str(trained.root))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])[0].strip()

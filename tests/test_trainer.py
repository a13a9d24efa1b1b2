"""The trainer (hps_core.train): every method trains, resume and gradient accumulation are exact, PL on
two responses is BT-DPO, the reference pass is cached, gamma/lr/grad_norm/tokens_per_s are logged,
truncation is counted, LoRA and gradient checkpointing work.

Everything runs on one tiny Llama (1 layer, hidden 32) built from a small generated world, once per
session; each training run is a handful of optimizer steps on CPU.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from hps_core.config.schema import DataConfig, LoraConfig, ModelConfig, PreferenceTrainConfig, TinyModelConfig
from hps_core.data import load_canonical
from hps_core.data.synthetic import format_prompt
from hps_core.sampling.groups import build_groups, draw_epoch_negatives
from hps_core.train.losses import ALL_METHODS, parse_method
from hps_core.models.loading import build_tiny_model, load_causal_lm
from hps_core.sampling.hardness import make_gamma_schedule
from hps_core.train import preference
from hps_core.train.checkpoint import WEIGHTS, CheckpointMismatch, latest_checkpoint
from hps_core.config.lora_check import lora_problem, peft_available
from hps_core.train.loop import split_steps
from hps_core.train.model_setup import load_for_training
from hps_core.train.preference import train_preference

TINY = TinyModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
MODEL = ModelConfig(base="tiny", max_prompt_tokens=32, max_length=80, tiny=TINY)  # no truncation here
TRL_NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
             "logps/chosen", "logps/rejected", "lr", "grad_norm", "tokens_per_s")


def _groups(root: Path, n: int):
    table = load_canonical(DataConfig(n_prompts=24, responses_per_prompt=n), seed=0, workdir=root / f"n{n}").table
    return table, build_groups(table)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A 24-prompt generated world (19 train prompts) with 4 and with 2 responses per prompt, and one
    tiny model whose tokenizer is trained on both."""
    root = tmp_path_factory.mktemp("trainer_world")
    table4, groups4 = _groups(root, 4)
    table2, groups2 = _groups(root, 2)
    texts = sorted(set(table4["prompt"]) | set(table2["prompt"]))
    corpus = [format_prompt(p) for p in texts] + sorted({" " + r for t in (table4, table2) for r in t["response"]})
    model_dir = build_tiny_model(corpus, TINY, seed=0, cache_dir=root / "models")
    return SimpleNamespace(groups=groups4, groups2=groups2, model_dir=str(model_dir), root=root)


def _train(groups):
    return groups[groups["split"] == "train"].reset_index(drop=True)


def _negatives(groups, cfg: PreferenceTrainConfig, seed: int = 0, schedule=None):
    """What the flow's build_groups step draws for ``cfg`` (empty for PL, which uses every response; the
    plan only, for on-policy hardness)."""
    from hps_core.sampling.negatives import is_online

    _, model = parse_method(cfg.method)
    if model == "pl":
        return draw_epoch_negatives(_train(groups).iloc[:0], rule="random", schedule=make_gamma_schedule(),
                                    n_epochs=1, seed=seed, examples_per_step=1)
    rule = ("online" if is_online(cfg) else "hps") if model == "hps" else cfg.bt_negative_rule
    schedule = schedule or make_gamma_schedule("constant", gamma=cfg.gamma)
    return draw_epoch_negatives(_train(groups), rule=rule, schedule=schedule, n_epochs=cfg.epochs, seed=seed,
                                examples_per_step=cfg.batch_size * cfg.grad_accum_steps)


def _cfg(method: str = "dpo-hps", **kw) -> PreferenceTrainConfig:
    base = dict(method=method, epochs=1, batch_size=4, lr=1e-2, warmup_ratio=0.0, log_every=1, checkpoint_every=0)
    return PreferenceTrainConfig(**(base | kw))


def _run(world, tmp_path, cfg, *, groups=None, name="out", negatives=None, **kw):
    groups = world.groups if groups is None else groups
    negatives = _negatives(groups, cfg) if negatives is None else negatives
    logs = []
    out = tmp_path / name
    metrics = train_preference(world.model_dir, groups, negatives, MODEL, cfg, out,
                               log_fn=lambda m, step: logs.append((step, dict(m))), **kw)
    return metrics, logs, out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _step_logs(logs):
    return [(s, m) for s, m in logs if "loss" in m]


# ------------------------------------------------------------------ every method
def _train_log_probs(model_dir, groups) -> tuple[torch.Tensor, list[int]]:
    """Summed log-probs of every response of the training groups (ranked, best first) under a model."""
    from hps_core.data.encoding import Encoder
    from hps_core.train.preference import sequence_logps

    train = _train(groups)
    model, tokenizer = load_causal_lm(str(model_dir), device=torch.device("cpu"))
    encoder = Encoder(tokenizer, MODEL.max_prompt_tokens, MODEL.max_length)
    encoded = [encoder.encode(p, r) for p, responses in zip(train["prompt"], train["responses"]) for r in responses]
    logps, _ = sequence_logps(model, encoded, tokenizer.pad_token_id, 16, None)
    return logps, train["n"].tolist()


def _mean_implicit_margin(policy_dir, reference_dir, groups) -> float:
    """Mean over training groups of the log-ratio margin of the preferred response over the mean of the
    dispreferred ones: (log pi - log ref)(y+) - mean_j (log pi - log ref)(y_j). 0 at the SFT start."""
    policy, sizes = _train_log_probs(policy_dir, groups)
    reference, _ = _train_log_probs(reference_dir, groups)
    ratio, margins, start = policy - reference, [], 0
    for n in sizes:
        margins.append(float(ratio[start] - ratio[start + 1 : start + n].mean()))
        start += n
    return sum(margins) / len(margins)


@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_each_of_the_fifteen_methods_trains(world, tmp_path, method):
    """19 train prompts, batch 4, 1 epoch -> ceil(19 / 4) = 5 optimizer steps; every step logs TRL's names
    with finite values, the saved model differs from the SFT start and loads like any model, and it learned
    the preference, not its reverse: on the training groups the preferred response's log-ratio now beats
    the dispreferred ones' by a clear margin (measured 6.8 to 15.7 across the 15 methods; with chosen and
    rejected swapped in the loss it is -7 to -16), where the SFT start has margin 0."""
    metrics, logs, out = _run(world, tmp_path, _cfg(method))
    assert metrics["steps"] == 5.0
    steps = _step_logs(logs)
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5]
    for _, m in steps:
        assert set(TRL_NAMES) <= set(m) and all(math.isfinite(m[k]) for k in TRL_NAMES), m
    assert ("gamma" in steps[0][1]) == method.endswith("-hps")  # BT rules ignore gamma; PL has no negatives
    before, after = _weights(Path(world.model_dir)), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    load_causal_lm(str(out), device=torch.device("cpu"))
    assert _mean_implicit_margin(out, world.model_dir, world.groups) > 1.0


@pytest.mark.parametrize("method", ["dpo-bt", "dpo-hps", "dpo-pl"])
def test_at_the_reference_point_a_tie_is_not_a_win(world, tmp_path, monkeypatch, method):
    """Step 1 is computed before any update: the policy is the reference, every log-ratio is exactly 0 (CPU,
    fp32: the same weights give the same log-probs in the reference pass and the training forward), so
    chosen and rejected rewards tie in every pair and rewards/accuracies is 0, not 1 (TRL counts
    chosen > rejected). One method per preference model (BT, HPS, PL): they share the metrics code."""
    from hps_core.train import model_setup

    monkeypatch.setattr(model_setup, "pick_device", lambda: torch.device("cpu"))
    _, logs, _ = _run(world, tmp_path, _cfg(method, epochs=1))
    first = _step_logs(logs)[0][1]
    assert (first["rewards/chosen"], first["rewards/rejected"], first["rewards/margins"]) == (0.0, 0.0, 0.0)
    assert first["rewards/accuracies"] == 0.0


# ------------------------------------------------------------------ equivalences
def test_resume_after_a_kill_reaches_the_uninterrupted_parameters(world, tmp_path):
    """2 epochs x 5 steps = 10 steps (2k, k = 5). Run A: straight through. Run B: checkpoint every 5 steps,
    killed while logging step 6 (the step-6 update exists only in memory and is lost), then restarted with
    the same checkpoint dir: it resumes at step 5 and runs 6..10. A and B must end with the same weights
    (same batches, optimizer moments, LR schedule and RNG; CPU kernels are deterministic)."""
    cfg = _cfg(epochs=2, checkpoint_every=5, lr=5e-3, warmup_ratio=0.2)
    straight, _, out_a = _run(world, tmp_path, cfg, name="a")

    class Kill(Exception):
        pass

    def dies_at_step_6(metrics, step):
        if step == 6:
            raise Kill

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Kill):
        train_preference(world.model_dir, world.groups, _negatives(world.groups, cfg), MODEL, cfg, tmp_path / "b",
                         log_fn=dies_at_step_6, checkpoint_dir=ckpt)
    saved = latest_checkpoint(ckpt)
    assert saved == ckpt / "checkpoint-5" and (saved / "meta.json").read_text().count('"step": 5') == 1
    # A full fine-tune resumes from save_pretrained's file (no second copy). Tied embeddings: the LM head
    # shares the embedding's tensor, so the checkpoint stores it once.
    assert not (saved / WEIGHTS).exists()
    stored = load_file(str(saved / "model.safetensors"))
    assert "model.embed_tokens.weight" in stored and "lm_head.weight" not in stored

    resumed, logs, out_b = _run(world, tmp_path, cfg, name="b", checkpoint_dir=ckpt)
    assert resumed["resumed_from_step"] == 5.0 and [s for s, _ in _step_logs(logs)] == [6, 7, 8, 9, 10]
    a, b = _weights(out_a), _weights(out_b)
    assert a.keys() == b.keys()
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert_close(resumed["loss"], straight["loss"], rtol=1e-6, atol=1e-7)


def test_checkpoint_of_another_run_is_refused(world, tmp_path):
    """A checkpoint written with lr 1e-2 must not be resumed by a run with lr 2e-2 (other fingerprint)."""
    ckpt = tmp_path / "ckpt"
    _run(world, tmp_path, _cfg(checkpoint_every=2), name="a", checkpoint_dir=ckpt)
    with pytest.raises(CheckpointMismatch, match="different run"):
        _run(world, tmp_path, _cfg(checkpoint_every=2, lr=2e-2), name="b", checkpoint_dir=ckpt)


def test_gradient_accumulation_equals_one_large_batch(world, tmp_path):
    """batch 8 x accum 1 and batch 2 x accum 4 plan the same 8 examples per optimizer step (19 prompts:
    steps of 8, 8, 3; the accumulated run cuts them 2+2+2+2, 2+2+2+2, 2+1). Each micro-batch loss is a
    sum divided by the step's example count, so the gradients - and after 3 AdamW steps the weights -
    agree up to float summation order. AdamW divides each element's update by its gradient's running RMS,
    so an element whose gradient is at float-noise level (an embedding row of a token barely seen) moves by
    a noise-set amount, up to ~lr: measured on the CI box, 1 of 32,768 embedding entries differs by 3.2e-5,
    every other weight by < 2e-6. Hence: all within 1e-4, and at most 1 in 10,000 entries beyond 1e-5."""
    _, logs_a, out_a = _run(world, tmp_path, _cfg(batch_size=8, grad_accum_steps=1), name="a")
    _, logs_b, out_b = _run(world, tmp_path, _cfg(batch_size=2, grad_accum_steps=4), name="b")
    assert len(_step_logs(logs_a)) == len(_step_logs(logs_b)) == 3
    for (_, ma), (_, mb) in zip(_step_logs(logs_a), _step_logs(logs_b)):
        assert_close(mb["loss"], ma["loss"], rtol=1e-5, atol=1e-6)
    a, b = _weights(out_a), _weights(out_b)
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=key)
        assert int(((b[key] - a[key]).abs() > 1e-5).sum()) <= max(1, a[key].numel() // 10_000), key


def test_pl_on_two_responses_equals_bt_dpo_through_the_trainer(world, tmp_path):
    """With n = 2 the Plackett-Luce loss is -log(e^{r1} / (e^{r1} + e^{r2})) = -log sig(r1 - r2): the DPO pair
    loss, and the BT negative is necessarily the second response. Same sequences, same batch plan, so the
    per-step losses and the final weights of dpo-pl and dpo-bt coincide."""
    _, logs_pl, out_pl = _run(world, tmp_path, _cfg("dpo-pl", epochs=2), groups=world.groups2, name="pl")
    _, logs_bt, out_bt = _run(world, tmp_path, _cfg("dpo-bt", epochs=2), groups=world.groups2, name="bt")
    pl, bt = _step_logs(logs_pl), _step_logs(logs_bt)
    assert len(pl) == len(bt) == 10  # 2 epochs x ceil(19 / 4): PL trains every configured epoch too
    for (_, a), (_, b) in zip(pl, bt):  # equal up to float rounding (logsumexp vs logsigmoid)
        assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    a, b = _weights(out_pl), _weights(out_bt)
    for key in a:
        assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=key)


# ------------------------------------------------------------------ reference cache
def test_reference_pass_runs_once_and_is_reused(world, tmp_path, monkeypatch):
    """The first run computes the reference log-probs (one call) and caches them; a second run with the same
    model, sequences and limits loads them (still one call in total) and trains to the same weights."""
    calls = []
    real = preference.sequence_logps
    monkeypatch.setattr(preference, "sequence_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "cache"
    _, _, out_1 = _run(world, tmp_path, _cfg(epochs=2), name="one", cache_dir=cache)
    assert len(calls) == 1 and len(list(cache.glob("ref-logps-*.pt"))) == 1
    _, _, out_2 = _run(world, tmp_path, _cfg(epochs=2), name="two", cache_dir=cache)
    assert len(calls) == 1
    a, b = _weights(out_1), _weights(out_2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _run(world, tmp_path, _cfg(epochs=2), name="three", cache_dir=cache,
         negatives=_negatives(world.groups, _cfg(epochs=2), seed=1))  # other negatives: other sequences
    assert len(calls) == 2


# ------------------------------------------------------------------ metrics
def test_gamma_is_logged_per_step_and_follows_the_schedule_within_an_epoch(world, tmp_path):
    """Reference step schedule (-5, -3, -1, +1, +3) over one epoch of 19 prompts in steps of 4 (4,4,4,4,3):
    step i is drawn at stage floor(5 i / 5) = i, so the 5 steps log gamma -5, -3, -1, 1, 3 in order, and
    each step trains exactly the groups the plan gave it."""
    cfg = _cfg(gamma_schedule="step")
    negatives = _negatives(world.groups, cfg, schedule=make_gamma_schedule("step"))
    assert negatives.groupby("step").size().tolist() == [4, 4, 4, 4, 3]
    _, logs, _ = _run(world, tmp_path, cfg, negatives=negatives)
    assert [m["gamma"] for _, m in _step_logs(logs)] == [-5.0, -3.0, -1.0, 1.0, 3.0]


def test_lr_grad_norm_and_throughput_are_logged(world, tmp_path):
    """Warmup 0 and cosine decay over 5 steps: step k (1-based) uses lr * 0.5 * (1 + cos(pi (k-1) / 5)),
    i.e. 1e-2 at step 1 and 1e-2 * 0.5 * (1 + cos(0.8 pi)) = 9.549e-4 at step 5. grad_norm is the norm
    before clipping (positive); tokens_per_s counts non-padding tokens over compute time."""
    _, logs, _ = _run(world, tmp_path, _cfg())
    steps = [m for _, m in _step_logs(logs)]
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(5)]
    assert_close(torch.tensor([m["lr"] for m in steps]), torch.tensor(expected), rtol=1e-6, atol=0)
    assert all(m["grad_norm"] > 0 and m["tokens_per_s"] > 0 and m["step_time_s"] > 0 for m in steps)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before step 1


def test_truncation_is_counted_and_reported(world, tmp_path):
    """With prompts cut to 6 tokens every prompt (a chat template alone is longer) is truncated; the
    counts come back in the metrics and through the logger. Sequences counted once each."""
    short = dataclasses.replace(MODEL, max_prompt_tokens=6, max_length=12)
    cfg = _cfg()
    logs = []
    metrics = train_preference(world.model_dir, world.groups, _negatives(world.groups, cfg), short, cfg,
                               tmp_path / "out", log_fn=lambda m, s: logs.append(m))
    n_seq = metrics["hps/reference_sequences"]
    assert metrics["hps/examples"] == n_seq and metrics["hps/truncated_prompts"] == n_seq
    assert 0 < metrics["hps/truncated_responses"] <= n_seq
    assert any(m.get("hps/truncated_prompts") == n_seq for m in logs)


def test_negatives_for_another_number_of_epochs_are_rejected(world, tmp_path):
    cfg = _cfg(epochs=2)
    with pytest.raises(ValueError, match=r"cover epochs \[0\], but training runs 2"):
        _run(world, tmp_path, cfg, negatives=_negatives(world.groups, _cfg(epochs=1)))


def test_split_steps_cuts_each_step_into_micro_batches():
    assert split_steps([[0, 1, 2, 3, 4], [5, 6]], 2) == [[[0, 1], [2, 3], [4]], [[5, 6]]]


def test_sft_trains_resumes_and_reports_truncation(world, tmp_path):
    """SFT on the 19 x 4 = 76 training responses, batch 16 -> 5 steps per epoch, 2 epochs = 10 steps; the
    NLL falls from step 1 to step 10. Killed at step 6 with a checkpoint at 5, the rerun resumes at 5 and
    ends on the weights of an uninterrupted run. Truncation counts come back (0 here: limits are wide)."""
    from hps_core.config.schema import SFTConfig
    from hps_core.train.sft import train_sft

    cfg = SFTConfig(epochs=2, batch_size=16, lr=3e-3, log_every=1, checkpoint_every=5)
    logs = []
    straight = train_sft(world.model_dir, world.groups, MODEL, cfg, tmp_path / "a",
                         log_fn=lambda m, s: logs.append(m))
    losses = [m["loss"] for m in logs if "loss" in m]
    assert straight["steps"] == 10.0 and len(losses) == 10 and losses[-1] < losses[0]
    assert straight["sft/examples"] == 76.0 and straight["sft/truncated_responses"] == 0.0

    def dies(m, step):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(world.model_dir, world.groups, MODEL, cfg, tmp_path / "b", log_fn=dies, checkpoint_dir=tmp_path / "c")
    resumed = train_sft(world.model_dir, world.groups, MODEL, cfg, tmp_path / "b", checkpoint_dir=tmp_path / "c")
    assert resumed["resumed_from_step"] == 5.0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


# ------------------------------------------------------------------ LoRA, gradient checkpointing
def test_gradient_checkpointing_gives_the_same_training(world, tmp_path):
    """Recomputing activations in backward changes memory, not math: same weights after 5 steps."""
    model, _ = load_for_training(world.model_dir, trust_remote_code=False, gradient_checkpointing=True)
    assert model.model.gradient_checkpointing  # really on (the comparison below alone could not tell)
    _, _, plain = _run(world, tmp_path, _cfg(), name="plain")
    _, _, ckpt = _run(world, tmp_path, _cfg(gradient_checkpointing=True), name="gc")
    a, b = _weights(plain), _weights(ckpt)
    for key in a:
        assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(not peft_available(), reason="peft not installed (optional extra 'lora')")
def test_lora_trains_adapters_only_and_saves_a_merged_model(world, tmp_path):
    """r = 4 on every linear layer: embeddings and norms stay frozen (bit-identical after training), the
    linear weights move (adapters merged), and the output is a plain model directory (no adapter files at
    its top level; the unmerged adapter is in adapter/, see test_checkpoints.py)."""
    cfg = _cfg(lora=LoraConfig(r=4, alpha=8.0), gradient_checkpointing=True, checkpoint_every=5)
    metrics, _, out = _run(world, tmp_path, cfg, checkpoint_dir=tmp_path / "ckpt")
    assert metrics["steps"] == 5.0 and not list(out.glob("adapter_*"))
    before, after = _weights(Path(world.model_dir)), _weights(out)
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    stored = load_file(str(latest_checkpoint(tmp_path / "ckpt") / WEIGHTS))
    assert stored and all("lora_" in k for k in stored)  # the checkpoint holds the adapters only


def test_lora_without_peft_is_a_config_error_naming_the_extra(monkeypatch):
    from hps_core.config import lora_check
    from hps_core.train import lora

    monkeypatch.setattr(lora_check, "peft_available", lambda: False)
    assert "pip install 'hps-align[lora]'" in lora.lora_problem(LoraConfig(r=8), "hps.lora")
    assert lora_problem(LoraConfig(r=-1), "hps.lora") == "hps.lora.r must be >= 0 (0 = train every weight), got -1"
    assert lora.lora_problem(LoraConfig(r=0), "hps.lora") is None  # off: peft not needed


def test_cosine_with_warmup_hand_values():
    """warmup 2 of 6 steps: factors 0/2, 1/2, then 0.5 (1 + cos(pi k / 4)) for k = 0..3:
    1, 0.853553, 0.5, 0.146447 (transformers' get_cosine_schedule_with_warmup formula)."""
    from hps_core.train.loop import cosine_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_with_warmup(opt, 2, 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert_close(torch.tensor(lrs), 2.0 * torch.tensor([0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447]), rtol=0, atol=1e-6)


def test_trainer_config_keys_parse_and_are_checked():
    """[hps.lora] and the hardness keys come from TOML like every key; bad values fail at start-up, and
    a removed key says what replaced it."""
    from hps_core.config.building import ConfigError
    from hps_core.config.schema import PipelineConfig

    cfg = PipelineConfig.from_dict({"hps": {"hardness": "mix", "gamma_r": 10, "gamma_stages": [-1, 1], "gradient_checkpointing": True,
                                            "lora": {"r": 8, "target_modules": "q_proj,v_proj"}}})
    assert cfg.hps.lora.r == 8 and cfg.hps.hardness == "mix" and cfg.hps.gamma_stages == (-1.0, 1.0) and cfg.sft.lora.r == 0
    with pytest.raises(ConfigError, match="gamma_updates_per_epoch' .* was removed: the gamma schedule is now evaluated at every optimizer step"):
        PipelineConfig.from_dict({"hps": {"gamma_updates_per_epoch": 5}})
    with pytest.raises(ConfigError, match="hps.refresh_every = 0 is out of range; it must be >= 1"):
        PipelineConfig.from_dict({"hps": {"refresh_every": 0}})
    with pytest.raises(ConfigError, match="apply to \\*-hps methods only"):
        PipelineConfig.from_dict({"hps": {"method": "dpo-bt", "hardness": "policy"}})
    with pytest.raises(ConfigError, match=r"sft.lora.r must be >= 0"):
        PipelineConfig.from_dict({"sft": {"lora": {"r": -2}}})


# ------------------------------------------------------------------ on-policy hardness
@pytest.mark.parametrize("hardness,estimator", [("mix", "pair"), ("policy", "unbiased"), ("score", "unbiased")])
def test_on_policy_hardness_draws_each_step_from_the_current_policy(world, tmp_path, hardness, estimator):
    """19 train prompts of 4 responses, batch 4, 1 epoch: steps of 4,4,4,4,3 groups. refresh_every = 1:
    step 0 runs no pass (policy = reference), steps 1-4 refresh the 3 dispreferred responses of each of
    their groups: (4 + 4 + 4 + 3) * 3 = 45 sequences. Every example's negative is drawn at its step and
    recorded with its gammas and probabilities; with gamma_r = 1e3 and hardness "policy" the draw is the
    response the policy rated highest at that step (pair estimator) or nearly so (unbiased)."""
    cfg = _cfg(hardness=hardness, estimator=estimator, gamma_r=1e3 if hardness == "policy" else 3.0)
    drawn_out = tmp_path / "drawn.parquet"
    metrics, logs, out = _run(world, tmp_path, cfg, drawn_out=drawn_out)
    assert metrics["steps"] == 5.0 and metrics["hps/refreshed_sequences"] == 45.0
    drawn = pd.read_parquet(drawn_out)
    assert drawn.groupby("step").size().tolist() == [4, 4, 4, 4, 3]
    assert set(drawn["prompt_id"]) == set(_train(world.groups)["prompt_id"]) and (drawn["negative_rank"] >= 1).all()
    assert (drawn["gamma_r"] == (0.0 if hardness == "score" else cfg.gamma_r)).all()
    if hardness == "policy":
        later = drawn[drawn["step"] > 0]
        assert (later["reward_of_negative"] >= later["reward_max"] - 1e-2).all()
    if estimator == "pair":
        assert (drawn["p_draw"] == drawn["q"]).all()
    else:
        assert not (drawn["p_draw"] == drawn["q"]).all()
    assert all(math.isfinite(m["loss"]) for _, m in _step_logs(logs))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(out).values(), load_file(f"{world.model_dir}/model.safetensors").values()))

"""Checkpoints and adapters in the ecosystem's formats (hps_core.train.checkpoint, hps_core.train.lora):
``checkpoint-<step>`` directories with retention that load with ``from_pretrained`` and resume exactly, a
pre-existing one-checkpoint ``latest/`` root that still resumes, and LoRA adapters in PEFT's format beside
the merged model and in every checkpoint.

Everything runs on one tiny Llama (1 layer, hidden 32) built from a small generated world. SFT on its
19 x 4 = 76 training responses in batches of 16 is 5 optimizer steps per epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from hps_core.config.schema import (
    DataConfig,
    LoraConfig,
    ModelConfig,
    PreferenceTrainConfig,
    SFTConfig,
    TinyModelConfig,
)
from hps_core.data import load_canonical
from hps_core.data.synthetic import format_prompt
from hps_core.sampling.groups import build_groups, draw_epoch_negatives
from hps_core.models.loading import build_tiny_model, tiny_corpus
from hps_core.sampling.hardness import make_gamma_schedule
from hps_core.train import loop
from hps_core.train.checkpoint import STATE, WEIGHTS, latest_checkpoint, trainable_state
from hps_core.train.lora import ADAPTER_SUBDIR
from hps_core.config.lora_check import peft_available
from hps_core.train.preference import train_preference
from hps_core.train.sft import train_sft

TINY = TinyModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
MODEL = ModelConfig(base="tiny", max_prompt_tokens=32, max_length=80, tiny=TINY)
needs_peft = pytest.mark.skipif(not peft_available(), reason="peft not installed (optional extra 'lora')")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_world")
    table = load_canonical(DataConfig(n_prompts=24, responses_per_prompt=4), seed=0, workdir=root / "data").table
    corpus = tiny_corpus(table["prompt"], table["response"])
    model_dir = build_tiny_model(corpus, TINY, seed=0, cache_dir=root / "models")
    return SimpleNamespace(groups=build_groups(table), model_dir=str(model_dir), root=root)


def _sft_cfg(**kw) -> SFTConfig:
    return SFTConfig(**(dict(epochs=2, batch_size=16, lr=3e-3, warmup_ratio=0.0, log_every=1, checkpoint_every=0) | kw))


def _sft(world, out: Path, cfg: SFTConfig, **kw) -> dict:
    return train_sft(world.model_dir, world.groups, MODEL, cfg, out, **kw)


@pytest.fixture(scope="module")
def straight(world):
    """The uninterrupted 10-step SFT run that every resumed run must reproduce."""
    out = world.root / "straight"
    metrics = _sft(world, out, _sft_cfg())
    assert metrics["steps"] == 10.0
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _assert_same_weights(got: Path, want: Path, atol: float = 1e-6) -> None:
    a, b = _weights(want), _weights(got)
    assert a.keys() == b.keys()
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=atol, msg=key)


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _dies_at(step: int):
    def log_fn(metrics, at):
        if at == step:  # logging comes before that step's checkpoint: the last one written is step - 1's
            raise KeyboardInterrupt
    return log_fn


def _batch(tokenizer) -> dict[str, torch.Tensor]:
    """Two prompts of different lengths, padded: a small batch to compare logits on."""
    texts = [format_prompt("How do I store apples?") + " In a cool place.", format_prompt("Hi")]
    return tokenizer(texts, return_tensors="pt", padding=True)


# ------------------------------------------------------------------ checkpoint-<step> and retention
def test_retention_keeps_the_newest_two_and_each_loads_with_from_pretrained(world, tmp_path, monkeypatch):
    """checkpoint_every 1, save_total_limit 2, 5 steps: after each save the root holds the new checkpoint and
    the one before it (the older one is deleted only once the new one is in place), so checkpoint-4 and
    checkpoint-5 remain and nothing else (no temp directories). Each loads with from_pretrained (model and
    tokenizer) and holds exactly the trainer's weights at its step; checkpoint-5, the last step, equals the
    final model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen: list[tuple[int, dict, list[str]]] = []  # per save: step, the trainer's weights, the root after it
    real = loop.save_checkpoint

    def recording(root, model, optimizer, scheduler, step, *a, **k):
        path = real(root, model, optimizer, scheduler, step, *a, **k)
        seen.append((step, {n: t.clone() for n, t in trainable_state(model).items()}, _names(root)))
        return path

    monkeypatch.setattr(loop, "save_checkpoint", recording)
    root = tmp_path / "ckpt"
    _sft(world, tmp_path / "out", _sft_cfg(epochs=1, checkpoint_every=1, save_total_limit=2), checkpoint_dir=root)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5]
    assert [names for _, _, names in seen] == [
        ["checkpoint-1"], ["checkpoint-1", "checkpoint-2"], ["checkpoint-2", "checkpoint-3"],
        ["checkpoint-3", "checkpoint-4"], ["checkpoint-4", "checkpoint-5"]]
    assert latest_checkpoint(root) == root / "checkpoint-5"
    by_step = {step: weights for step, weights, _ in seen}
    reference = AutoTokenizer.from_pretrained(world.model_dir)
    for step in (4, 5):
        path = root / f"checkpoint-{step}"
        assert json.loads((path / "meta.json").read_text())["step"] == step
        assert torch.load(path / STATE, weights_only=True)["step"] == step
        model = AutoModelForCausalLM.from_pretrained(path)
        params = dict(model.named_parameters())
        assert params.keys() == by_step[step].keys()
        for name, tensor in by_step[step].items():
            assert torch.equal(params[name].detach(), tensor), (step, name)
        assert AutoTokenizer.from_pretrained(path)("Hi there")["input_ids"] == reference("Hi there")["input_ids"]
    assert not torch.equal(by_step[4]["model.embed_tokens.weight"], by_step[5]["model.embed_tokens.weight"])
    final = _weights(tmp_path / "out")
    assert final.keys() == by_step[5].keys() and all(torch.equal(final[n], t) for n, t in by_step[5].items())


def test_resume_from_checkpoint_n_ignores_temp_and_incomplete_dirs(world, tmp_path, straight):
    """Checkpoint every step, keep 2, killed while logging step 4: checkpoint-2 and checkpoint-3 remain. A
    crashed write (``.tmp-checkpoint-*``, complete inside) and an incomplete ``checkpoint-7`` (meta.json
    only) do not count: the rerun resumes from checkpoint-3, removes the crashed write with its first
    prune, replaces checkpoint-7 when it gets there, and ends with the weights of the uninterrupted run
    (same batches, optimizer state, schedule and RNG)."""
    cfg = _sft_cfg(checkpoint_every=1)
    root = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        _sft(world, tmp_path / "out", cfg, checkpoint_dir=root, log_fn=_dies_at(4))
    assert _names(root) == ["checkpoint-2", "checkpoint-3"]
    crashed = root / ".tmp-checkpoint-9-crashed"  # a write killed before its rename: complete inside, step 9
    shutil.copytree(root / "checkpoint-3", crashed)
    (crashed / "meta.json").write_text(json.dumps({**json.loads((crashed / "meta.json").read_text()), "step": 9}))
    (root / "checkpoint-7").mkdir()
    (root / "checkpoint-7" / "meta.json").write_text(json.dumps({"step": 7}))
    assert latest_checkpoint(root) == root / "checkpoint-3"
    resumed = _sft(world, tmp_path / "out", cfg, checkpoint_dir=root)
    assert resumed["resumed_from_step"] == 3.0
    assert _names(root) == ["checkpoint-10", "checkpoint-9"]
    _assert_same_weights(tmp_path / "out", straight)


def test_an_old_latest_directory_still_resumes(world, tmp_path, straight):
    """A root written before checkpoint-<step>: one ``latest/`` with trainable.safetensors, trainer_state.pt
    and meta.json (made here from a step-5 checkpoint of the same run). latest_checkpoint finds it, the run
    resumes from step 5 (the fingerprint does not include save_total_limit, so the rerun may keep 1) and
    ends on the uninterrupted weights; its first new checkpoint replaces the old directory."""
    cfg = _sft_cfg(checkpoint_every=5)
    root = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        _sft(world, tmp_path / "out", cfg, checkpoint_dir=root, log_fn=_dies_at(6))
    legacy = root / "latest"
    legacy.mkdir()
    stored = load_file(str(root / "checkpoint-5" / "model.safetensors"))
    save_file(stored, str(legacy / WEIGHTS))
    for name in (STATE, "meta.json"):
        shutil.copy(root / "checkpoint-5" / name, legacy / name)
    shutil.rmtree(root / "checkpoint-5")
    assert _names(root) == ["latest"] and latest_checkpoint(root) == legacy
    resumed = _sft(world, tmp_path / "out", _sft_cfg(checkpoint_every=5, save_total_limit=1), checkpoint_dir=root)
    assert resumed["resumed_from_step"] == 5.0
    assert _names(root) == ["checkpoint-10"]
    _assert_same_weights(tmp_path / "out", straight)


def test_save_total_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="save_total_limit must be >= 1"):
        loop.LoopSettings(lr=1e-3, save_total_limit=0)


def test_fingerprint_is_unchanged_by_retention_and_matches_checkpoints_written_before_it():
    """A ``latest/`` written before save_total_limit existed must still resume, so the fingerprint leaves the
    key out: the value below was computed by the loop of the previous layout (git HEAD before this change)
    for these settings and this plan; any save_total_limit gives it."""
    plan = [[[0, 1], [2]], [[3]]]
    for keep in (1, 2, 3):
        settings = loop.LoopSettings(lr=1e-3, checkpoint_every=5, description="sft", save_total_limit=keep)
        assert loop._fingerprint(settings, plan, "key") == "6d9c0140e76d3dbf120d"


# ------------------------------------------------------------------ LoRA adapters in PEFT's format
def _train_lora(world, tmp_path, stage: str) -> tuple[Path, Path, str]:
    """5 steps with r = 4 adapters, a checkpoint at step 5; returns (final dir, checkpoint root, base)."""
    lora = LoraConfig(r=4, alpha=8.0)
    out, root = tmp_path / "out", tmp_path / "ckpt"
    if stage == "sft":
        _sft(world, out, _sft_cfg(epochs=1, checkpoint_every=5, lora=lora), checkpoint_dir=root)
        return out, root, world.model_dir
    cfg = PreferenceTrainConfig(method="dpo-hps", epochs=1, batch_size=4, lr=1e-2, warmup_ratio=0.0, log_every=1,
                                checkpoint_every=5, lora=lora)
    train = world.groups[world.groups["split"] == "train"].reset_index(drop=True)
    negatives = draw_epoch_negatives(train, rule="hps", schedule=make_gamma_schedule("constant", gamma=1.0),
                                     n_epochs=1, seed=0, examples_per_step=4)
    sft_dir = world.model_dir  # the tiny model stands in for the SFT model: the preference adapter's base
    train_preference(sft_dir, world.groups, negatives, MODEL, cfg, out, checkpoint_dir=root)
    return out, root, sft_dir


@needs_peft
@pytest.mark.parametrize("stage", ["sft", "preference"])
def test_lora_adapter_is_saved_beside_the_merged_model_and_in_its_checkpoint(world, tmp_path, stage):
    """The final directory is the merged model (top level, as before) plus ``adapter/`` in PEFT's format,
    whose base is the model the stage loaded (SFT: the base model; preference: the SFT model). The base with
    that adapter (PeftModel.from_pretrained) and the merged model give the same logits: W + (alpha/r) B A
    is computed once in fp32 when merging, while the adapter path adds x A^T B^T (alpha/r) to x W^T, so
    they differ by float32 rounding only (~1e-6 on logits of magnitude ~10): atol 1e-5. The adapter moved
    the logits far beyond that (else the comparison could not fail). checkpoint-5, the last step, holds
    the same adapter. Nothing in the directory is a pickle, so the registry takes it whole."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hps_core.tracking.registration import check_hf_model_dir

    out, root, base_path = _train_lora(world, tmp_path, stage)
    adapter = out / ADAPTER_SUBDIR
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(_names(adapter))
    assert not list(out.glob("adapter_*"))  # the top level is the merged model only
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_path and config["r"] == 4 and config["peft_type"] == "LORA"
    assert base_path in (adapter / "README.md").read_text()
    check_hf_model_dir(out)
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]

    batch = _batch(AutoTokenizer.from_pretrained(out))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out).eval()(**batch).logits
        plain = AutoModelForCausalLM.from_pretrained(base_path).eval()(**batch).logits
        for where in (adapter, root / "checkpoint-5"):
            base = AutoModelForCausalLM.from_pretrained(base_path)
            with_adapter = PeftModel.from_pretrained(base, str(where)).eval()(**batch).logits
            assert_close(with_adapter, merged, rtol=0, atol=1e-5, msg=str(where))
    assert (merged - plain).abs().max() > 1e-3
    # The LoRA checkpoint: PEFT's adapter, the tokenizer, and the adapters by parameter name for resume.
    ckpt = root / "checkpoint-5"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", WEIGHTS} <= set(_names(ckpt))
    assert not (ckpt / "model.safetensors").exists()
    stored = load_file(str(ckpt / WEIGHTS))
    assert stored and all("lora_" in k for k in stored)


@needs_peft
def test_lora_run_resumes_from_its_checkpoint(world, tmp_path):
    """LoRA SFT, 10 steps, checkpoint every 5, killed while logging step 6: the rerun resumes from
    checkpoint-5 (adapters read back from trainable.safetensors) and saves the merged weights and the
    adapter of an uninterrupted LoRA run."""
    cfg = _sft_cfg(checkpoint_every=5, lora=LoraConfig(r=4, alpha=8.0))
    _sft(world, tmp_path / "a", cfg)
    with pytest.raises(KeyboardInterrupt):
        _sft(world, tmp_path / "b", cfg, checkpoint_dir=tmp_path / "ckpt", log_fn=_dies_at(6))
    assert _names(tmp_path / "ckpt") == ["checkpoint-5"]
    resumed = _sft(world, tmp_path / "b", cfg, checkpoint_dir=tmp_path / "ckpt")
    assert resumed["resumed_from_step"] == 5.0
    _assert_same_weights(tmp_path / "b", tmp_path / "a")
    a = load_file(str(tmp_path / "a" / ADAPTER_SUBDIR / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / ADAPTER_SUBDIR / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


def test_a_failed_write_leaves_the_previous_directory_and_no_temp_files(tmp_path):
    """write_dir_atomic (checkpoints and final models): a write that fails half-way leaves the existing
    directory exactly as it was and removes its temp directory; a write that succeeds replaces it whole."""
    from hps_core.train.checkpoint import write_dir_atomic

    target = tmp_path / "checkpoint-3"
    write_dir_atomic(target, lambda d: (d / "a.txt").write_text("old"))

    def half_then_fail(d: Path) -> None:
        (d / "a.txt").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir_atomic(target, half_then_fail)
    assert _names(tmp_path) == ["checkpoint-3"] and (target / "a.txt").read_text() == "old"
    write_dir_atomic(target, lambda d: (d / "b.txt").write_text("new"))
    assert _names(tmp_path) == ["checkpoint-3"] and _names(target) == ["b.txt"]


def test_adopting_a_safetensors_base_copies_it_without_loading_a_model(world, tmp_path, monkeypatch):
    """sft.epochs = 0 with a safetensors directory: the SFT checkpoint is a byte copy of the base (no model
    load and re-save, which took minutes beside a training step on 2 cores); it loads like the base."""
    from hps_core.models import loading as models
    from hps_core.train.sft import adopt_base_as_sft

    def refuse(*args, **kwargs):
        raise AssertionError("adoption loaded a model")

    monkeypatch.setattr(models, "load_causal_lm", refuse)
    assert adopt_base_as_sft(world.model_dir, MODEL, tmp_path / "sft") == {"steps": 0.0, "adopted_base": 1.0}
    base = Path(world.model_dir)
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == sorted(p.name for p in base.iterdir())
    assert (tmp_path / "sft" / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()

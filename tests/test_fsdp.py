"""Sharded data parallel training (``[resources] strategy = "fsdp"``, hps_core.train.fsdp): two CPU processes
on gloo with the model sharded by FSDP2 train like one process with the same global batch, save one
consolidated Hugging Face directory, and write sharded (torch.distributed.checkpoint) checkpoints that
resume with two processes or with one and consolidate into a Hugging Face directory.

The world (19 training prompts, tiny Llama with 1 layer, hidden 32 and a tied LM head) and the helpers come
from tests/test_distributed.py, the DDP counterpart of this file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.testing import assert_close

from hps_core.config.schema import PreferenceTrainConfig, SFTConfig
from tests.test_distributed import (  # noqa: F401  (world: the fixture, shared)
    MODEL,
    PREF,
    SFT,
    _free_port,
    _record_writes,
    _same_trained_weights,
    _step_losses,
    _weights,
    world,
)

pytestmark = pytest.mark.slow  # slow tier (--run-slow): spawned processes

# SFT: 76 responses, global batch 3 = micro-batch 1 x accumulation 3 -> 25 steps of 3 examples and a last
# step of 1. On 2 ranks the shares are 2 + 1 examples, i.e. 2 micro-batches and 1: FSDP gathers weights in
# every forward, so rank 1 runs a zero-weighted stand-in as its second micro-batch (and, in the last step,
# as its only one). Preference: as in test_distributed (5 steps of 4,4,4,4,3 examples, checkpoint every 2).
SFT_F = {**SFT, "batch_size": 1, "grad_accum_steps": 3}
SFT_STEPS, PREF_STEPS = 26, 5


def _train(root: Path, run: dict, log_fn, strategy: str) -> dict:
    from hps_core.train.preference import train_preference
    from hps_core.train.sft import train_sft

    groups = pd.read_parquet(root / "groups.parquet")
    ckpt = root / run["checkpoint_dir"] if run.get("checkpoint_dir") else None
    out = root / run["name"]
    if run["stage"] == "sft":
        return train_sft(run["model"], groups, MODEL, SFTConfig(**SFT_F), out, log_fn=log_fn, checkpoint_dir=ckpt,
                         strategy=strategy)
    negatives = pd.read_parquet(root / "negatives.parquet")
    pref = PreferenceTrainConfig(**{**PREF, **run.get("pref", {})})
    return train_preference(run["model"], groups, negatives, MODEL, pref, out,
                            cache_dir=root / run["cache_dir"], log_fn=log_fn, checkpoint_dir=ckpt, strategy=strategy)


def _rank(rank: int, world_size: int, port: int, root: str, runs: list[dict]) -> None:
    """One spawned FSDP rank: join the gloo group as torchrun would, record who writes and how much of the
    model this rank holds once sharded, and leave each run's record in ``<name>/rank<r>.json``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # 2 ranks on 2 shared cores
    from torch.distributed.tensor import DTensor

    from hps_core.train import distributed, fsdp, loop

    distributed.init_from_env(timeout_minutes=5)  # a rank left waiting in a collective fails, not hangs
    writes = _record_writes()
    loop.save_sharded_checkpoint = (lambda f: lambda *a, **k: writes.append("shards") or f(*a, **k))(
        loop.save_sharded_checkpoint)
    held: dict[str, int] = {}

    def shard_and_count(root_module, model):
        sharded = fsdp.shard(root_module, model)
        params = list(model.parameters())
        held.update(local=sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params),
                    total=sum(p.numel() for p in params), dtensors=sum(isinstance(p, DTensor) for p in params),
                    params=len(params))
        return sharded

    loop.fsdp = SimpleNamespace(**{**vars(fsdp), "shard": shard_and_count})
    try:
        for run in runs:
            logs, writes[:] = [], []
            held.clear()
            metrics = _train(Path(root), run, lambda m, step: logs.append([step, m]), run.get("strategy", "fsdp"))
            record = {"metrics": metrics, "logs": logs, "writes": list(writes), "held": dict(held)}
            (Path(root) / run["name"] / f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def runs(world):  # noqa: F811
    """Single-process runs in this process; the same runs on 2 spawned FSDP ranks, plus 2-rank reruns of the
    preference run (FSDP and DDP) that resume from its step-4 (sharded) checkpoint; then a single-process
    run resuming from a copy of that FSDP checkpoint."""
    torch.set_num_threads(1)
    root = world.root
    sft_run = dict(stage="sft", model=world.model_dir)
    pref_run = dict(stage="preference", model=world.model_dir)
    single = {}

    def one_process(name: str, run: dict) -> None:
        logs = []
        metrics = _train(root, {**run, "name": name}, lambda m, step: logs.append([step, m]), "fsdp")  # 1 process: ignored
        single[name] = {"metrics": metrics, "logs": logs}

    one_process("sft_1", sft_run)
    one_process("pref_1", {**pref_run, "cache_dir": "cache_1", "checkpoint_dir": "ckpt_1"})
    fsdp_runs = [
        {**sft_run, "name": "sft_f"},
        # save_total_limit 1: the step-2 checkpoint (sharded) is pruned once step 4's is in place
        {**pref_run, "name": "pref_f", "cache_dir": "cache_f", "checkpoint_dir": "ckpt_f", "pref": {"save_total_limit": 1}},
        {**pref_run, "name": "pref_f_resumed", "cache_dir": "cache_f", "checkpoint_dir": "ckpt_f"},
        # the same sharded checkpoint resumed by 2 DDP ranks (whole tensors on each); no new checkpoint
        {**pref_run, "name": "pref_d_resumed", "cache_dir": "cache_f", "checkpoint_dir": "ckpt_f", "strategy": "ddp"},
        {**pref_run, "name": "pref_d", "cache_dir": "cache_d", "strategy": "ddp"},  # the switch, other way
        {**pref_run, "name": "pref_1_resumed_f", "cache_dir": "cache_1", "checkpoint_dir": "ckpt_1_copy"},
    ]
    shutil.copytree(root / "ckpt_1", root / "ckpt_1_copy")  # the single process's checkpoints, for FSDP to resume
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), str(root), fsdp_runs), nprocs=2, join=True)
    ranks = {run["name"]: [json.loads((root / run["name"] / f"rank{r}.json").read_text()) for r in range(2)]
             for run in fsdp_runs}
    shutil.copytree(root / "ckpt_f", root / "ckpt_f_copy")
    one_process("pref_f_resumed_1", {**pref_run, "cache_dir": "cache_f", "checkpoint_dir": "ckpt_f_copy"})
    return SimpleNamespace(root=root, model_dir=world.model_dir, single=single, ranks=ranks)


@pytest.mark.parametrize("stage", ["sft", "pref"])
def test_sharded_ranks_follow_the_single_process_loss_trajectory(runs, stage):
    """Per-step loss (rank 0's log, summed over both ranks' examples) and final weights of the 2-rank FSDP run
    equal the single-process run with the same global batch. The ranks reduce-scatter SUMMED gradients, so
    the only differences are float32 rounding: the two ranks' gradients are added in another order than one
    process accumulates them, and the grad norm is computed from shards. Tolerances as for DDP
    (test_distributed): 1e-5 relative on losses, 1e-5 absolute on weights of size ~1 (measured: 7.8e-8 and
    1.2e-7 for SFT, 1.1e-6 and 9.9e-7 for preference). The gradient norms (before clipping) agree too, and
    exceed max_grad_norm = 1 in some steps, so the clipping of sharded gradients is exercised."""
    single, rank0 = runs.single[f"{stage}_1"], runs.ranks[f"{stage}_f"][0]
    one, two = _step_losses(single["logs"]), _step_losses(rank0["logs"])
    n_steps = SFT_STEPS if stage == "sft" else PREF_STEPS
    assert [s for s, _ in two] == [s for s, _ in one] == list(range(1, n_steps + 1))
    assert_close(torch.tensor([v for _, v in two]), torch.tensor([v for _, v in one]), rtol=1e-5, atol=1e-7)
    norms = [torch.tensor([m["grad_norm"] for _, m in r["logs"] if "grad_norm" in m]) for r in (single, rank0)]
    assert_close(norms[1], norms[0], rtol=1e-4, atol=1e-6)
    assert (norms[0] > 1.0).any()
    _same_trained_weights(runs.root / f"{stage}_1", runs.root / f"{stage}_f", Path(runs.model_dir))


def test_ddp_strategy_replicates_and_agrees(runs):
    """strategy = "ddp" on the same 2 ranks shards nothing and ends on the FSDP run's weights (both equal the
    single process within float32 rounding)."""
    assert [r["held"] for r in runs.ranks["pref_d"]] == [{}, {}]
    a, b = _weights(runs.root / "pref_d"), _weights(runs.root / "pref_f")
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def test_each_rank_holds_about_half_of_the_model(runs):
    """Once sharded every parameter is a DTensor and each rank keeps its shard: the two ranks' local parts add
    up to the whole model and each is about half (dim-0 shards of odd sizes round up on rank 0)."""
    for name in ("sft_f", "pref_f"):
        held = [r["held"] for r in runs.ranks[name]]
        assert all(h["dtensors"] == h["params"] for h in held)
        assert held[0]["local"] + held[1]["local"] == held[0]["total"]
        assert all(0.45 < h["local"] / h["total"] < 0.55 for h in held), held


def test_every_rank_writes_its_shards_and_the_model_directory_is_consolidated(runs):
    """Both ranks write the two checkpoints (steps 2 and 4 of 5: each its own shards), rank 0 alone the final
    model; with save_total_limit = 1 only checkpoint-4 is left (no temp or half-deleted directory). The final
    directory is one Hugging Face directory (one model.safetensors, the tied LM head stored once, as
    save_pretrained stores it) that from_pretrained loads with the trained weights and the head still tied."""
    from transformers import AutoModelForCausalLM

    assert [r["writes"] for r in runs.ranks["pref_f"]] == [["shards", "shards", "model"], ["shards", "shards"]]
    assert [r["writes"] for r in runs.ranks["sft_f"]] == [["model"], []]
    assert sorted(p.name for p in (runs.root / "ckpt_f").iterdir()) == ["checkpoint-4"]
    for name in ("sft_f", "pref_f"):
        directory = runs.root / name
        assert sorted(p.name for p in directory.glob("*.safetensors")) == ["model.safetensors"]
        saved = _weights(directory)
        assert saved.keys() == _weights(Path(runs.model_dir)).keys() and "lm_head.weight" not in saved
        model = AutoModelForCausalLM.from_pretrained(str(directory))
        assert model.lm_head.weight is model.model.embed_tokens.weight
        state = model.state_dict()
        for key, value in saved.items():
            assert torch.equal(state[key], value), (name, key)


@pytest.mark.filterwarnings("ignore:torch.distributed is unavailable or uninitialized")  # one process: intended
def test_checkpoint_is_sharded_and_consolidates_to_the_single_process_checkpoint(runs, tmp_path):
    """The FSDP run's step-4 checkpoint is a DCP checkpoint: DCP's .metadata and one shard file per rank in
    place of model.safetensors, beside config, tokenizer, trainer_state.pt (scheduler and step, no
    optimizer) and meta.json. Its model and optimizer state equal the single process's step-4 checkpoint
    within float32 rounding, and consolidate_checkpoint turns it into a directory that from_pretrained
    loads with those weights (the head tied)."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys
    from transformers import AutoModelForCausalLM

    from hps_core.train.checkpoint import latest_checkpoint
    from hps_core.train.sharded_checkpoint import consolidate_checkpoint

    ckpt = runs.root / "ckpt_f" / "checkpoint-4"
    files = {p.name for p in ckpt.iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "config.json", "trainer_state.pt", "meta.json",
            "README.txt"} <= files
    assert not [f for f in files if f.endswith(".safetensors") or (f.endswith(".distcp") and f[:5] not in ("__0_0", "__1_0"))]
    assert "consolidate_checkpoint" in (ckpt / "README.txt").read_text()
    assert json.loads((ckpt / "meta.json").read_text())["format"] == "dcp"
    assert latest_checkpoint(runs.root / "ckpt_f") == ckpt
    one = torch.load(runs.root / "ckpt_1" / "checkpoint-4" / "trainer_state.pt", weights_only=True)
    two = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert two["step"] == one["step"] == 4 and two["scheduler"] == one["scheduler"] and "optimizer" not in two

    single = _weights(runs.root / "ckpt_1" / "checkpoint-4")
    out = consolidate_checkpoint(ckpt, tmp_path / "hf")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    merged = _weights(out)
    assert merged.keys() == single.keys()
    for key in single:
        assert_close(merged[key], single[key], rtol=0, atol=1e-5, msg=key)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for key, value in model.state_dict().items():
        if key in merged:
            assert torch.equal(value, merged[key]), key

    # the AdamW moments, by parameter name (the single process numbers them in the optimizer's order)
    saved = _load_state_dict_from_keys(checkpoint_id=str(ckpt))["optimizer"]
    names = [n for group in saved["param_groups"] for n in group["params"]]
    assert sorted(saved["state"]) == sorted(names) and len(names) == len(one["optimizer"]["state"])
    order = names  # param_groups list the names in the optimizer's order (matrices, then vectors)
    for index, moments in one["optimizer"]["state"].items():
        for key, value in moments.items():
            assert_close(saved["state"][order[index]][key], value, rtol=1e-4, atol=1e-6, msg=f"{order[index]} {key}")


def test_fsdp_checkpoint_resumes_with_two_processes_and_with_one(runs):
    """From the FSDP run's step-4 checkpoint (sharded: written by 2 ranks), a 2-rank FSDP rerun, a 2-rank DDP
    rerun and a single process each train step 5 only and end on the uninterrupted FSDP run's weights (DCP
    reshards on load: FSDP ranks read their shards, DDP ranks and one process whole tensors; measured:
    identical, tolerances as for a float32 reordering). The other way, 2 FSDP ranks resume the single
    process's (consolidated) step-4 checkpoint and end on the single process's weights."""
    for name, atol in (("pref_f_resumed", 1e-6), ("pref_d_resumed", 1e-5), ("pref_f_resumed_1", 1e-5)):
        record = runs.ranks[name][0] if name in runs.ranks else runs.single[name]
        assert record["metrics"]["resumed_from_step"] == 4.0
        assert [s for s, _ in _step_losses(record["logs"])] == [5]
        a, b = _weights(runs.root / "pref_f"), _weights(runs.root / name)
        for key in a:
            assert_close(b[key], a[key], rtol=0, atol=atol, msg=f"{name} {key}")
    assert [r["metrics"]["resumed_from_step"] for r in runs.ranks["pref_d_resumed"]] == [4.0, 4.0]
    assert [r["held"] for r in runs.ranks["pref_d_resumed"]] == [{}, {}]  # DDP: nothing sharded
    assert [r["metrics"]["resumed_from_step"] for r in runs.ranks["pref_f_resumed"]] == [4.0, 4.0]
    resumed = runs.ranks["pref_1_resumed_f"]
    assert [r["metrics"]["resumed_from_step"] for r in resumed] == [4.0, 4.0] and resumed[0]["held"]["dtensors"] > 0
    assert [s for s, _ in _step_losses(resumed[0]["logs"])] == [5]
    a, b = _weights(runs.root / "pref_1"), _weights(runs.root / "pref_1_resumed_f")
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def _sft_step_fsdp(world, tmp_path, processes: int):  # noqa: F811
    """The pipeline's train_sft step (as tests/test_distributed.py runs it) with strategy = "fsdp"."""
    from hps_core.config.schema import PipelineConfig
    from hps_core.recipes.hps import train_sft
    from hps_core.tracking.step_context import StepContext
    from tests.test_distributed import _Recorder

    cfg = PipelineConfig.from_dict({"sft": SFT, "model": {"max_prompt_tokens": 32, "max_length": 80},
                                    "resources": {"processes_per_node": processes, "strategy": "fsdp"}})
    tracker = _Recorder()
    ctx = StepContext(cfg=cfg, run_dir=tmp_path / f"run{processes}", tracker=tracker)
    result = train_sft(ctx, str(world.root / "groups.parquet"), world.model_dir)
    return ctx, result, tracker.logged


def test_pipeline_step_shards_under_torchrun_when_configured(world, tmp_path):  # noqa: F811
    """[resources] strategy = "fsdp" with processes_per_node = 2: the train_sft step runs torchrun, whose ranks
    shard the model (rank 0 says so in torchrun.log), and saves the weights the in-process step saves
    (processes_per_node = 1, where the strategy has no effect)."""
    torch.set_num_threads(1)
    _, local, _ = _sft_step_fsdp(world, tmp_path, 1)
    ctx, launched, logged = _sft_step_fsdp(world, tmp_path, 2)
    log = (ctx.run_dir / "torchrun" / "sft" / "torchrun.log").read_text()
    assert "sft: FSDP, weights, gradients and optimizer state sharded across 2 ranks" in log
    assert [s for s, m in logged if "sft/loss" in m] == list(range(1, 17))
    a, b = _weights(Path(local["model_dir"])), _weights(Path(launched["model_dir"]))
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)

"""Data-parallel training (hps_core.train.distributed, the DDP path of hps_core.train.loop, the torchrun
launcher): two CPU processes on the gloo backend train like one process with the same global batch.

Everything runs on one tiny Llama (1 layer, hidden 32) built from a small generated world; each run is
a handful of optimizer steps. The two-process runs are real: ``torch.multiprocessing.spawn`` starts two
ranks that join a gloo process group on 127.0.0.1, and the launcher test goes through torchrun.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from hps_core.config.schema import (
    DataConfig,
    ModelConfig,
    PipelineConfig,
    PreferenceTrainConfig,
    SFTConfig,
    TinyModelConfig,
)
from hps_core.data import load_canonical
from hps_core.data.synthetic import format_prompt
from hps_core.sampling.groups import build_groups, draw_epoch_negatives
from hps_core.models.loading import build_tiny_model
from hps_core.sampling.hardness import make_gamma_schedule
from hps_core.train.checkpoint import CheckpointMismatch
from hps_core.train.distributed import contiguous_share, shard_step, stand_in
from hps_core.train.loop import split_steps

pytestmark = pytest.mark.slow  # slow tier (--run-slow): torchrun with several processes

TINY = TinyModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
MODEL = ModelConfig(base="tiny", max_prompt_tokens=32, max_length=80, tiny=TINY)
# 19 training prompts. Preference: global batch 4 = micro-batch 2 x accumulation 2 -> steps of 4,4,4,4,3
# examples; on 2 ranks every rank gets one micro-batch of 2 (the last step: 2 and 1), i.e. exactly the
# single process's micro-batches. SFT: 76 responses, global batch 5 = one micro-batch of 5 -> 15 steps of
# 5 and a last step of 1 example; on 2 ranks 3 + 2 examples per step (not the single process's
# micro-batches) and, at step 16, nothing for rank 1 (it back-propagates a zero-weighted stand-in).
PREF = dict(method="dpo-hps", epochs=1, batch_size=2, grad_accum_steps=2, lr=1e-2, warmup_ratio=0.0, log_every=1,
            checkpoint_every=2)
SFT = dict(epochs=1, batch_size=5, grad_accum_steps=1, lr=3e-3, warmup_ratio=0.0, log_every=1, checkpoint_every=0)


# ------------------------------------------------------------------ sharding (no processes)
def test_shards_cover_each_step_exactly_once():
    """For steps of 1..17 examples, micro-batches of 1..4 and 1..4 ranks: over the ranks, the shards are
    the step's examples, each once, in order; shares differ by at most one example; no micro-batch grows
    beyond the plan's; a rank may get nothing (3 examples on 4 ranks) but never an empty micro-batch."""
    for n_examples in range(1, 18):
        for micro in range(1, 5):
            step = split_steps([list(range(n_examples))], micro)[0]
            for world_size in range(1, 5):
                shards = [shard_step(step, rank, world_size) for rank in range(world_size)]
                case = f"{n_examples} examples, micro-batch {micro}, {world_size} ranks: {shards}"
                assert [x for shard in shards for mb in shard for x in mb] == list(range(n_examples)), case
                sizes = [sum(len(mb) for mb in shard) for shard in shards]
                assert max(sizes) - min(sizes) <= 1, case
                assert all(0 < len(mb) <= micro for shard in shards for mb in shard), case


def test_shard_hand_values():
    """5 examples in micro-batches of 2 on 2 ranks: 3 + 2 examples, cut again at 2; 1 example on 2 ranks:
    rank 1 gets nothing and back-propagates a one-example stand-in. Opaque micro-batches go round-robin."""
    assert shard_step([[0, 1], [2, 3], [4]], 0, 2) == [[0, 1], [2]]
    assert shard_step([[0, 1], [2, 3], [4]], 1, 2) == [[3, 4]]
    assert shard_step([[9]], 1, 2) == [] and stand_in([[9, 8]]) == [[9]]
    assert [contiguous_share(range(7), r, 3) for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    opaque = [{"n_examples": 2}, {"n_examples": 1}, {"n_examples": 3}]
    assert shard_step(opaque, 0, 2) == [opaque[0], opaque[2]] and shard_step(opaque, 1, 2) == [opaque[1]]


# ------------------------------------------------------------------ two processes vs one
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """19 training prompts x 4 responses, negatives for one epoch, the tiny model, saved as files the
    spawned ranks read."""
    root = tmp_path_factory.mktemp("ddp_world")
    table = load_canonical(DataConfig(n_prompts=24, responses_per_prompt=4), seed=0, workdir=root / "data").table
    groups = build_groups(table)
    train = groups[groups["split"] == "train"].reset_index(drop=True)
    negatives = draw_epoch_negatives(train, rule="hps", schedule=make_gamma_schedule("constant", gamma=1.0),
                                     n_epochs=1, seed=0, examples_per_step=4)
    corpus = [format_prompt(p) for p in sorted(set(table["prompt"]))] + sorted({" " + r for r in table["response"]})
    model_dir = build_tiny_model(corpus, TINY, seed=0, cache_dir=root / "models")
    groups.to_parquet(root / "groups.parquet", index=False)
    negatives.to_parquet(root / "negatives.parquet", index=False)
    return SimpleNamespace(root=root, model_dir=str(model_dir))


def _train(root: Path, run: dict, log_fn, rank: int = 0) -> dict:
    """One training run as the pipeline would start it (the same call in a rank and in a single process);
    a ``{rank}`` in ``checkpoint_dir`` gives each rank its own directory."""
    from hps_core.train.preference import train_preference
    from hps_core.train.sft import train_sft

    groups = pd.read_parquet(root / "groups.parquet")
    ckpt = root / run["checkpoint_dir"].format(rank=rank) if run.get("checkpoint_dir") else None
    out = root / run["name"]
    if run["stage"] == "sft":
        return train_sft(run["model"], groups, MODEL, SFTConfig(**SFT), out, log_fn=log_fn, checkpoint_dir=ckpt)
    negatives = pd.read_parquet(root / "negatives.parquet")
    return train_preference(run["model"], groups, negatives, MODEL, PreferenceTrainConfig(**PREF), out,
                            cache_dir=root / run["cache_dir"], log_fn=log_fn, checkpoint_dir=ckpt)


def _record_writes() -> list[str]:
    """In a spawned rank: the list that records each checkpoint and final model this rank writes, in order."""
    from hps_core.train import loop, preference, sft

    writes: list[str] = []

    def recorded(what, fn):
        return lambda *a, **k: writes.append(what) or fn(*a, **k)

    loop.save_checkpoint = recorded("checkpoint", loop.save_checkpoint)
    sft.save_trained_model = recorded("model", sft.save_trained_model)
    preference.save_trained_model = recorded("model", preference.save_trained_model)
    return writes


def _rank(rank: int, world_size: int, port: int, root: str, runs: list[dict]) -> None:
    """One spawned rank: join the gloo group as torchrun would, record who writes checkpoints and models,
    run ``runs`` one after the other, and leave each run's logs, metrics and writers in ``<name>/rank<r>.json``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # 2 ranks on 2 shared cores
    from hps_core.train import distributed

    ctx = distributed.init_from_env()
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (rank, world_size, rank == 0)
    writes = _record_writes()
    try:
        for run in runs:
            logs, writes[:] = [], []
            if run.get("copy_checkpoints") and rank == 0:  # rank 0's directory only: rank 1 sees none
                shutil.copytree(Path(root) / run["copy_checkpoints"], Path(root) / run["checkpoint_dir"].format(rank=0))
            distributed.barrier()
            try:
                metrics = _train(Path(root), run, lambda m, step: logs.append([step, m]), rank)
            except CheckpointMismatch as err:
                metrics = {"error": str(err)}
            record = {"metrics": metrics, "logs": logs, "writes": list(writes)}
            (Path(root) / run["name"]).mkdir(exist_ok=True)  # a run stopped before training made no output dir
            (Path(root) / run["name"] / f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step_losses(logs) -> list[tuple[int, float]]:
    return [(step, m["loss"]) for step, m in logs if "loss" in m]


def _drop(d: dict, keys: set) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _same_trained_weights(single: Path, multi: Path, start: Path, atol: float = 1e-5) -> None:
    """The multi-process run's saved weights equal the single process's (``atol``) and moved from ``start``."""
    a, b = _weights(single), _weights(multi)
    assert a.keys() == b.keys()
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=atol, msg=key)
    begin = _weights(start)
    assert any(not torch.equal(begin[k], b[k]) for k in b)  # training did move the weights


@pytest.fixture(scope="module")
def runs(world):
    """Single-process runs in this process, then the same runs on 2 spawned ranks, plus a 2-rank rerun of
    the preference run that resumes from the checkpoint the first 2-rank run wrote at step 4."""
    torch.set_num_threads(1)
    root = world.root
    sft_run = dict(stage="sft", model=world.model_dir)
    pref_run = dict(stage="preference", model=world.model_dir)
    single = {}
    for name, run in (("sft_1", sft_run), ("pref_1", {**pref_run, "cache_dir": "cache_1", "checkpoint_dir": "ckpt_1"})):
        logs = []
        metrics = _train(root, {**run, "name": name}, lambda m, step: logs.append([step, m]))
        single[name] = {"metrics": metrics, "logs": logs}
    ddp_runs = [
        {**sft_run, "name": "sft_2"},
        {**pref_run, "name": "pref_2", "cache_dir": "cache_2", "checkpoint_dir": "ckpt_2"},
        {**pref_run, "name": "pref_2_resumed", "cache_dir": "cache_2", "checkpoint_dir": "ckpt_2"},
        {**pref_run, "name": "pref_2_apart", "cache_dir": "cache_2", "checkpoint_dir": "ckpt_apart_{rank}",
         "copy_checkpoints": "ckpt_2"},
    ]
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), str(root), ddp_runs), nprocs=2, join=True)
    ranks = {run["name"]: [json.loads((root / run["name"] / f"rank{r}.json").read_text()) for r in range(2)]
             for run in ddp_runs}
    return SimpleNamespace(root=root, model_dir=world.model_dir, single=single, ranks=ranks)


@pytest.mark.parametrize("stage", ["sft", "pref"])
def test_two_processes_follow_the_single_process_loss_trajectory(runs, stage):
    """Per-step loss (logged by rank 0, summed over both ranks' examples) and the final weights of the 2-rank
    run equal the single-process run with the same global batch. Preference: every rank computes exactly
    one of the single process's micro-batches and the two gradients are summed once, in the same order,
    so the runs agree to float rounding of the metric sums (measured: identical). SFT: the ranks cut the
    steps differently (3 + 2 examples, not 5), so matmul shapes and summation order differ; 16 AdamW
    steps keep the difference at float32 rounding level (tolerance 1e-5 relative on losses, 1e-5 absolute
    on weights)."""
    single, rank0 = runs.single[f"{stage}_1"], runs.ranks[f"{stage}_2"][0]
    one, two = _step_losses(single["logs"]), _step_losses(rank0["logs"])
    assert [s for s, _ in two] == [s for s, _ in one] == list(range(1, (16 if stage == "sft" else 5) + 1))
    assert_close(torch.tensor([v for _, v in two]), torch.tensor([v for _, v in one]), rtol=1e-5, atol=1e-7)
    _same_trained_weights(runs.root / f"{stage}_1", runs.root / f"{stage}_2", Path(runs.model_dir))


def test_only_rank_0_logs_and_writes(runs):
    """Rank 0 logs every step once (plus the truncation counts) and writes the 2 checkpoints (steps 2 and 4
    of 5) and the final model; rank 1 logs and writes nothing, yet returns the same, reduced metrics."""
    for name in ("sft_2", "pref_2"):
        rank0, rank1 = runs.ranks[name]
        steps = [s for s, m in rank0["logs"] if "loss" in m]
        assert steps == sorted(set(steps)) and rank1["logs"] == []
        timing = {"tokens_per_s", "step_time_s"}  # each rank's own clock
        assert rank1["writes"] == [] and _drop(rank1["metrics"], timing) == _drop(rank0["metrics"], timing)
    assert runs.ranks["sft_2"][0]["writes"] == ["model"]
    assert runs.ranks["pref_2"][0]["writes"] == ["checkpoint", "checkpoint", "model"]
    # Checkpoints at steps 2 and 4, both kept (save_total_limit 2): rank 0's, in the checkpoint-<step> layout.
    assert sorted(p.name for p in (runs.root / "ckpt_2").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (runs.root / "sft_2" / "rank1").exists()


def test_reference_pass_is_shared_and_cached_once(runs):
    """The 2 ranks split the reference pass by batch and sum it; rank 0 caches it once, and the cached
    tensors equal the single process's (same batches, so bit-identical)."""
    (one,), (two,) = list((runs.root / "cache_1").glob("*.pt")), list((runs.root / "cache_2").glob("*.pt"))
    assert one.name == two.name
    for a, b in zip(torch.load(one, weights_only=True), torch.load(two, weights_only=True)):
        assert torch.equal(a, b)


def test_every_rank_resumes_from_rank_0s_checkpoint(runs):
    """The rerun finds the step-4 checkpoint on both ranks, trains step 5 only and ends on the weights of
    the uninterrupted 2-rank run (and of the single process, within the tolerance above)."""
    resumed = runs.ranks["pref_2_resumed"]
    assert [r["metrics"]["resumed_from_step"] for r in resumed] == [4.0, 4.0]
    assert [s for s, _ in _step_losses(resumed[0]["logs"])] == [5]
    a, b = _weights(runs.root / "pref_2"), _weights(runs.root / "pref_2_resumed")
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


def test_ranks_that_see_different_checkpoints_stop_instead_of_resuming_from_two_places(runs):
    """Rank 0 finds the step-4 checkpoint, rank 1 (another node without the shared directory) none: both
    stop before training with the same error naming what each rank saw, rather than diverging or hanging."""
    apart = runs.ranks["pref_2_apart"]
    for rank, record in enumerate(apart):  # each names its own directory, and what every rank saw
        error = record["metrics"].get("error") or ""
        assert f"the ranks see different newest checkpoints under {runs.root / f'ckpt_apart_{rank}'} " in error
        assert "(rank: checkpoint {0: 'checkpoint-4', 1: None}); every rank must resume from the same one" in error
    assert [r["logs"] for r in apart] == [[], []] and [r["writes"] for r in apart] == [[], []]


# ------------------------------------------------------------------ the pipeline's torchrun launch path
class _Recorder:
    """A NullTracker that keeps every logged metric, to count what the launcher forwarded."""

    def __init__(self):
        from hps_core.tracking.null import NullTracker

        self.inner, self.logged = NullTracker(), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def log_metrics(self, run_id, metrics, step=None):
        self.logged.append((step, dict(metrics)))


def _sft_step(world, tmp_path, processes: int):
    from hps_core.tracking.step_context import StepContext
    from hps_core.recipes.hps import train_sft

    cfg = PipelineConfig.from_dict({"sft": SFT, "model": {"max_prompt_tokens": 32, "max_length": 80},
                                    "resources": {"processes_per_node": processes}})
    tracker = _Recorder()
    ctx = StepContext(cfg=cfg, run_dir=tmp_path / f"run{processes}", tracker=tracker)
    result = train_sft(ctx, str(world.root / "groups.parquet"), world.model_dir)
    return ctx, result, tracker.logged


def test_pipeline_step_trains_under_torchrun_like_in_process(world, tmp_path):
    """The train_sft step with processes_per_node = 2 runs torchrun (2 ranks, gloo), forwards each step's
    metrics once to the step's MLflow logger and returns rank 0's result; the model it saves matches the
    in-process step (processes_per_node = 1)."""
    torch.set_num_threads(1)
    _, local, logged_1 = _sft_step(world, tmp_path, 1)
    ctx, launched, logged_2 = _sft_step(world, tmp_path, 2)
    work = ctx.run_dir / "torchrun" / "sft"
    assert (work / "torchrun.log").is_file() and json.loads((work / "spec.json").read_text())["stage"] == "sft"
    steps = lambda logged: [s for s, m in logged if "sft/loss" in m]  # noqa: E731
    assert steps(logged_2) == steps(logged_1) == list(range(1, 17))
    assert launched["metrics"]["steps"] == 16.0
    assert launched["metrics"]["loss"] == pytest.approx(local["metrics"]["loss"], rel=1e-5)
    a, b = _weights(Path(local["model_dir"])), _weights(Path(launched["model_dir"]))
    for key in a:
        assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def _reward_step(world, tmp_path, processes: int):
    from hps_core.recipes.hps import train_reward_model
    from hps_core.tracking.step_context import StepContext

    cfg = PipelineConfig.from_dict({"model": {"max_prompt_tokens": 32, "max_length": 80},
                                    "reward_model": {"epochs": 1, "batch_size": 8, "lr": 3e-3},
                                    "resources": {"train_reward_model": {"processes_per_node": processes}}})
    tracker = _Recorder()
    ctx = StepContext(cfg=cfg, run_dir=tmp_path / f"reward{processes}", tracker=tracker)
    return ctx, train_reward_model(ctx, str(world.root / "groups.parquet"), world.model_dir), tracker.logged


def test_reward_model_trains_data_parallel_like_one_process(world, tmp_path):
    """[resources.train_reward_model] processes_per_node = 2: the reward model trains under torchrun (2 gloo
    ranks, each step's 8 pairs split 4 + 4), logs the same losses as one process (the two
    gradients summed once: float rounding of the sums), scores the held-out pairs identically and saves
    the same weights (1e-5 absolute). Only [resources.train_reward_model] asks for 2 processes here."""
    torch.set_num_threads(1)
    _, local, logged_1 = _reward_step(world, tmp_path, 1)
    ctx, launched, logged_2 = _reward_step(world, tmp_path, 2)
    assert ctx.cfg.resources.of("train_sft").processes_per_node == 1
    spec = json.loads((ctx.run_dir / "torchrun" / "reward_model" / "spec.json").read_text())
    assert spec["stage"] == "reward"
    losses = lambda logged: [(s, m["reward_model/loss"]) for s, m in logged if "reward_model/loss" in m]  # noqa: E731
    one, two = losses(logged_1), losses(logged_2)
    assert [s for s, _ in two] == [s for s, _ in one] and one  # logged every 10 steps and at the end
    assert launched["metrics"]["steps"] == local["metrics"]["steps"] >= 5
    assert_close(torch.tensor([v for _, v in two]), torch.tensor([v for _, v in one]), rtol=1e-5, atol=1e-7)
    key = "reward_model/heldout_pairwise_accuracy"
    assert launched["metrics"][key] == local["metrics"][key]
    a, b = _weights(Path(local["model_dir"])), _weights(Path(launched["model_dir"]))
    assert a.keys() == b.keys()
    for name in a:
        assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)


def test_a_failing_rank_fails_the_step_naming_the_log(world, tmp_path):
    from hps_core.train.launch import StageFailed, StageSpec, launch

    """A rank that raises (here: the groups file is missing) ends torchrun with an error; the step raises
    StageFailed naming the log that holds every rank's output, with the rank's own error in the tail."""
    spec = StageSpec("sft", PipelineConfig().to_dict(), world.model_dir, str(tmp_path / "missing.parquet"),
                     str(tmp_path / "out"), seed=0)
    with pytest.raises(StageFailed, match=r"sft training in 2 processes failed .*torchrun\.log") as err:
        launch(spec, 2, tmp_path / "work")
    assert "missing.parquet" in str(err.value) and not (tmp_path / "out").exists()


def test_processes_per_node_is_checked_at_start_up():
    from hps_core.config.building import ConfigError

    assert PipelineConfig().resources.processes_per_node == 1  # default: train in the step's own process
    with pytest.raises(ConfigError, match=r"resources.processes_per_node must be >= 1 .*got 0"):
        PipelineConfig.from_dict({"resources": {"processes_per_node": 0}})

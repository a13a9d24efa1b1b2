"""Run one training stage (SFT, preference or reward model) in several processes on this node: torchrun + DDP
(or FSDP for SFT and preference training with ``[resources] strategy = "fsdp"``).

The pipeline calls :func:`train_stage`. With ``processes_per_node = 1`` in the stage's step resources
(``[resources.train_sft]``, ``[resources.train_hps]``, ``[resources.train_reward_model]``, each defaulting to
``[resources]``) it trains in the calling process; with N > 1 it writes the stage as a JSON spec (paths, the
resolved config, seed) and runs

    python -m torch.distributed.run --standalone --nproc-per-node N -m hps_core.train.launch <spec.json>

as a subprocess of the step: N ranks, each on its own GPU (or CPU with gloo), trained data-parallel by
``hps_core.train.loop``. Rank 0 appends the logged metrics to ``metrics.jsonl`` (forwarded to the step's
logger while training runs) and writes the stage's result to ``result.json``; every rank's output goes
to ``torchrun.log``, which a failure names. The same command runs a spec by hand.

Across several nodes (``[resources.<step>] nodes = N > 1``) the flow runs the step as a Metaflow ``@parallel``
gang of N tasks, one per node, and each task calls :func:`train_stage` with its place in the gang
(:class:`hps_core.common.gang.Gang`): every node runs the same command with a static rendezvous in place of
``--standalone``,

    python -m torch.distributed.run --nnodes N --node-rank <i> --master-addr <node 0> --master-port <port>
        --nproc-per-node P -m hps_core.train.launch <spec.json>

so the stage trains in N x P ranks, global rank 0 on node 0. Node 0's step forwards the metrics and
checkpoints and returns the result; the other nodes' steps return once their ranks finish. (The
``metaflow-torchrun`` extension's ``@torchrun`` does the same from a decorator; this keeps one launcher, with
its logs, metrics forwarding and checkpoint mirror, for one process, one node and many.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hps_core.common.gang import Gang

STAGES = ("sft", "preference", "reward")
STEP_OF_STAGE = {"sft": "train_sft", "preference": "train_hps", "reward": "train_reward_model"}  # whose resources
# torchrun's rendezvous port on a gang's node 0, one per stage: on a laptop (Metaflow runs a gang's tasks as local
# processes) the SFT gang and the reward model's standalone torchrun may run side by side.
MASTER_PORT = {"sft": 29510, "preference": 29520, "reward": 29530}
LogFn = Callable[[dict[str, float], int], None]
CheckpointFn = Callable[[Path], None]


class StageFailed(RuntimeError):
    """A rank of a multi-process training stage failed; the message names the log with every rank's output."""


@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to run a stage: plain JSON, no pickles."""

    stage: str  # "sft" | "preference" | "reward"
    config: dict  # the resolved PipelineConfig (to_dict)
    model: str  # SFT and reward model: the base model; preference: the SFT model directory (also the reference)
    groups_path: str
    out_dir: str
    seed: int
    negatives_path: str | None = None  # preference only
    cache_dir: str | None = None  # preference: where reference log-probs are cached
    drawn_negatives_path: str | None = None  # preference, on-policy hardness: the negatives drawn in training
    checkpoint_dir: str | None = None
    metrics_log: str | None = None  # JSON lines {"step", "metrics"} appended by rank 0 while training
    result_path: str | None = None  # the stage's returned metrics, written by rank 0 at the end


def run_stage(cfg, spec: StageSpec, log_fn: LogFn | None, on_checkpoint: CheckpointFn | None = None) -> dict[str, float]:
    """Train the stage in this process (one of N under torchrun, or the only one)."""
    import pandas as pd

    groups = pd.read_parquet(spec.groups_path)
    optional = lambda p: Path(p) if p is not None else None  # noqa: E731
    # strategy: how several ranks share the model (one process ignores it); the reward model always
    # trains replicated (DDP): it is small, and it scores the held-out pairs with its whole weights after.
    common = dict(seed=spec.seed, log_fn=log_fn, checkpoint_dir=optional(spec.checkpoint_dir), on_checkpoint=on_checkpoint,
                  strategy=cfg.resources.strategy)
    if spec.stage == "sft":
        from hps_core.train.sft import train_sft

        return train_sft(spec.model, groups, cfg.model, cfg.sft, Path(spec.out_dir), **common)
    if spec.stage == "preference":
        from hps_core.train.preference import train_preference

        negatives = pd.read_parquet(spec.negatives_path)
        return train_preference(spec.model, groups, negatives, cfg.model, cfg.hps, Path(spec.out_dir),
                                cache_dir=optional(spec.cache_dir), drawn_out=optional(spec.drawn_negatives_path), **common)
    if spec.stage == "reward":
        from hps_core.train.reward import train_reward_model

        return train_reward_model(spec.model, groups, cfg.model, cfg.reward_model, Path(spec.out_dir), seed=spec.seed,
                                  log_fn=log_fn)
    raise ValueError(f"unknown training stage {spec.stage!r}; valid: {', '.join(STAGES)}")


def train_stage(
    stage: str,
    cfg,
    model: str,
    groups_path: str | Path,
    out_dir: str | Path,
    *,
    seed: int,
    work_dir: str | Path,
    log_fn: LogFn | None = None,
    checkpoint_dir: str | Path | None = None,
    negatives_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    drawn_negatives_path: str | Path | None = None,
    on_checkpoint: CheckpointFn | None = None,
    gang: Gang = Gang(),
) -> dict[str, float]:
    """Train ``stage`` in its step's ``processes_per_node`` processes on each of its ``nodes``; ``work_dir``
    holds the spec and logs of a multi-process run. Returns the stage's metrics (rank 0's, which are reduced
    over ranks; ``{}`` on a gang's other nodes). ``on_checkpoint(path)`` sees each new checkpoint: in this
    process, before training goes on; under torchrun, from this (the step's) process while the ranks train
    on (the newest one at each poll). ``gang``: this task's node when the step runs on several."""
    text = lambda p: str(p) if p is not None else None  # noqa: E731
    spec = StageSpec(stage, cfg.to_dict(), str(model), str(groups_path), str(out_dir), seed,
                     negatives_path=text(negatives_path), cache_dir=text(cache_dir), checkpoint_dir=text(checkpoint_dir),
                     drawn_negatives_path=text(drawn_negatives_path))
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; valid: {', '.join(STAGES)}")
    resources = cfg.resources.of(STEP_OF_STAGE[stage])
    if gang.nodes != resources.nodes:
        raise ValueError(
            f"resources.{STEP_OF_STAGE[stage]}.nodes = {resources.nodes}, but this task runs on {gang.nodes} node(s): "
            f"only flows/hps_flow.py runs {STEP_OF_STAGE[stage]} as a multi-node gang; set nodes = 1 to train here")
    if resources.world_size == 1:
        return run_stage(cfg, spec, log_fn, on_checkpoint)
    if gang.nodes > 1:  # each node's spec and torchrun.log apart (a laptop's gang shares one run directory)
        work_dir = Path(work_dir) / f"node-{gang.node_index}"
    return launch(spec, resources.processes_per_node, Path(work_dir), log_fn, on_checkpoint=on_checkpoint, gang=gang)


def torchrun_command(spec_path: Path, stage: str, processes: int, gang: Gang = Gang()) -> list[str]:
    """The torchrun command of one node: standalone on a single node, a static rendezvous at node 0's address
    (:data:`MASTER_PORT` of the stage) when the step runs as a gang of several."""
    if gang.nodes == 1:
        rendezvous = ["--standalone"]
    else:
        rendezvous = [f"--nnodes={gang.nodes}", f"--node-rank={gang.node_index}", f"--master-addr={gang.main_addr}",
                      f"--master-port={MASTER_PORT[stage]}"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={processes}",
            "-m", "hps_core.train.launch", str(spec_path)]


def launch(spec: StageSpec, processes: int, work_dir: Path, log_fn: LogFn | None = None, poll_s: float = 1.0,
           on_checkpoint: CheckpointFn | None = None, gang: Gang = Gang()) -> dict[str, float]:
    """Run ``spec`` under torchrun with ``processes`` ranks on this node (one node of ``gang``) and wait;
    forward rank 0's logged metrics to ``log_fn`` as they arrive, and the newest complete checkpoint to
    ``on_checkpoint``. Returns rank 0's result (``{}`` on a gang's other nodes, which hold no rank 0).
    Raises :class:`StageFailed` naming the log if any rank fails."""
    work_dir.mkdir(parents=True, exist_ok=True)
    metrics_log, result_path, log_path = work_dir / "metrics.jsonl", work_dir / "result.json", work_dir / "torchrun.log"
    for stale in (metrics_log, result_path):
        stale.unlink(missing_ok=True)
    spec = StageSpec(**{**asdict(spec), "metrics_log": str(metrics_log), "result_path": str(result_path)})
    spec_path = work_dir / "spec.json"
    spec_path.write_text(json.dumps(asdict(spec), indent=2))
    command = torchrun_command(spec_path, spec.stage, processes, gang)
    forwarded = 0
    watch = _NewCheckpoints(spec.checkpoint_dir, on_checkpoint)
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                code = proc.poll()
                forwarded = _forward(metrics_log, forwarded, log_fn)
                watch.poll()
                if code is not None:
                    break
                time.sleep(poll_s)
        finally:
            if proc.poll() is None:  # the caller failed or was interrupted: take the ranks down with it
                proc.terminate()
                proc.wait(timeout=60)
    if code == 0 and not gang.is_main:
        return {}
    if code != 0 or not result_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines(keepends=True) if ln.strip(" ^~\n")]
        tail = "".join(lines[-20:])  # ends with torchrun's summary of the first failed rank
        raise StageFailed(
            f"{spec.stage} training in {processes} processes{_on_node(gang)} failed (torchrun exit code {code}); "
            f"every rank's output is in {log_path}. Its last lines:\n{tail}"
        )
    return json.loads(result_path.read_text())


def _on_node(gang: Gang) -> str:
    return f" on node {gang.node_index} of {gang.nodes}" if gang.nodes > 1 else ""


class _NewCheckpoints:
    """Hands each checkpoint that appears under ``root`` to ``on_checkpoint`` once (the newest at each poll;
    one the ranks wrote and pruned between two polls is skipped, its successor is handed on)."""

    def __init__(self, root: str | None, on_checkpoint: CheckpointFn | None):
        from hps_core.train.checkpoint import latest_checkpoint

        self._latest = latest_checkpoint
        self.root, self.on_checkpoint = (Path(root) if root else None), on_checkpoint
        self.seen = latest_checkpoint(self.root) if self.root and on_checkpoint else None  # restored: already copied

    def poll(self) -> None:
        if self.root is None or self.on_checkpoint is None:
            return
        newest = self._latest(self.root)
        if newest is not None and newest != self.seen:
            self.seen = newest
            self.on_checkpoint(newest)


def _forward(metrics_log: Path, offset: int, log_fn: LogFn | None) -> int:
    """Hand the complete lines of ``metrics_log`` after byte ``offset`` to ``log_fn``; return the new offset."""
    if not metrics_log.is_file():
        return offset
    with open(metrics_log, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
    for line in complete.decode().splitlines():
        if log_fn is not None:
            record = json.loads(line)
            log_fn(record["metrics"], record["step"])
    return offset + len(complete)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    from hps_core.config.schema import PipelineConfig
    from hps_core.train import distributed

    parser = argparse.ArgumentParser(description="Run one training stage from a JSON spec (under torchrun).")
    parser.add_argument("spec", type=Path)
    args = parser.parse_args(argv)
    spec = StageSpec(**json.loads(args.spec.read_text()))
    cfg = PipelineConfig.from_dict(spec.config, source=str(args.spec))

    @record  # torchrun's failure summary then carries the rank's traceback
    def worker() -> None:
        ctx = distributed.init_from_env()
        try:
            log_file = open(spec.metrics_log, "a") if spec.metrics_log else None
            try:
                def log_fn(metrics: dict[str, float], step: int) -> None:  # the trainer calls it on rank 0 only
                    if log_file is not None:
                        log_file.write(json.dumps({"step": step, "metrics": metrics}) + "\n")
                        log_file.flush()

                result = run_stage(cfg, spec, log_fn)
            finally:
                if log_file is not None:
                    log_file.close()
            if ctx.is_main and spec.result_path:
                tmp = Path(spec.result_path).with_suffix(f".tmp-{os.getpid()}")
                tmp.write_text(json.dumps(result))
                tmp.replace(spec.result_path)
        finally:
            distributed.shutdown()

    worker()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 19: ``[resources.train_hps] nodes = 2`` runs preference training as a Metaflow ``@parallel`` gang of
two tasks, one torchrun node each, and trains what one process trains. Metaflow runs a gang's tasks as local
processes on a laptop (its node 1 as a subprocess of node 0's task, node 0 at 127.0.0.1), so the same launch
path as on Kubernetes (a JobSet of pods: tests/test_argo_deploy.py) runs here on CPU with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_distributed import _same_trained_weights

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
TINY = ROOT / "tests" / "configs" / "tiny_flow.toml"


def test_each_node_runs_torchrun_on_its_rank_of_a_static_rendezvous():
    from hps_core.common.gang import Gang
    from hps_core.train.launch import torchrun_command

    tail = ["-m", "hps_core.train.launch", "spec.json"]
    one = torchrun_command(Path("spec.json"), "preference", 4)
    assert one == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", *tail]
    node = torchrun_command(Path("spec.json"), "preference", 8, Gang(nodes=3, node_index=2, main_addr="10.0.0.7"))
    assert node == [sys.executable, "-m", "torch.distributed.run", "--nnodes=3", "--node-rank=2", "--master-addr=10.0.0.7",
                    "--master-port=29520", "--nproc-per-node=8", *tail]
    sft = torchrun_command(Path("spec.json"), "sft", 1, Gang(nodes=2, node_index=0))
    assert "--master-port=29510" in sft and "--master-addr=127.0.0.1" in sft  # another stage, another port


def test_a_gang_config_outside_a_gang_is_refused(tmp_path):
    """[resources.train_hps] nodes = 2 where the step is not a 2-node gang (the compare flow's train_method,
    a recipe called by hand): torchrun would wait for a node that never comes, so it stops at once."""
    from hps_core.config.schema import PipelineConfig
    from hps_core.train.launch import train_stage

    cfg = PipelineConfig.from_dict({"resources": {"train_hps": {"nodes": 2}}})
    with pytest.raises(ValueError) as err:
        train_stage("preference", cfg, "sft", "groups.parquet", tmp_path / "out", seed=0, work_dir=tmp_path)
    assert str(err.value) == ("resources.train_hps.nodes = 2, but this task runs on 1 node(s): only flows/hps_flow.py "
                              "runs train_hps as a multi-node gang; set nodes = 1 to train here")
    assert not (tmp_path / "out").exists()


@pytest.mark.flow  # slow tier (--run-slow): a whole flow run plus one training
def test_two_node_gang_trains_like_one_process(tmp_path, hps_cache_dir):
    from hps_core.config.schema import PipelineConfig
    from hps_core.train.launch import train_stage

    config = tmp_path / "two_nodes.toml"
    config.write_text(TINY.read_text() + "\n[resources.train_hps]\nnodes = 2\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, str(FLOW), "--config", "config", str(config), "run"], cwd=tmp_path,
                          env={**env, "HPS_CACHE_DIR": str(hps_cache_dir)}, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "registered hps: models:/hps-policy/1" in log, log[-3000:]  # evaluate joined the gang, register ran

    # Metaflow ran train_hps as a gang of two tasks (node 0 the control task, node 1 its worker); the client
    # reads the run's local metadata from its working directory.
    read = ("import json; from metaflow import Flow, namespace; namespace(None); "
            "print(json.dumps(sorted(t['gang_node'].data for t in Flow('HPSFlow').latest_run['train_hps'])))")
    nodes = subprocess.run([sys.executable, "-c", read], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert nodes.returncode == 0, nodes.stderr[-3000:]
    assert json.loads(nodes.stdout.strip().splitlines()[-1]) == [0, 1]

    # Each node started torchrun on its own rank of a 2-node rendezvous at node 0's address.
    run_dir = next((tmp_path / ".hps" / "runs").iterdir())
    for node in (0, 1):
        command = (run_dir / "torchrun" / "hps" / f"node-{node}" / "torchrun.log").read_text().splitlines()[0]
        for arg in ("--nnodes=2", f"--node-rank={node}", "--master-addr=127.0.0.1", "--master-port=29520",
                    "--nproc-per-node=1"):
            assert arg in command.split(), (arg, command)
    assert json.loads((run_dir / "torchrun" / "hps" / "node-0" / "result.json").read_text())["loss"] > 0
    assert not (run_dir / "torchrun" / "hps" / "node-1" / "result.json").exists()  # no rank 0 on node 1

    # The same stage in one process, from the same SFT model, groups and negatives: the same weights (float32
    # rounding: the two ranks' gradients are summed in another order; tests/test_distributed.py, 1e-5).
    spec = json.loads((run_dir / "torchrun" / "hps" / "node-0" / "spec.json").read_text())
    spec["config"]["resources"]["train_hps"]["nodes"] = 1
    one = tmp_path / "one_process"
    train_stage("preference", PipelineConfig.from_dict(spec["config"]), spec["model"], spec["groups_path"], one / "hps",
                negatives_path=spec["negatives_path"], seed=spec["seed"], work_dir=one / "work", cache_dir=one / "cache")
    _same_trained_weights(one / "hps", run_dir / "models" / "hps", start=Path(spec["model"]))

"""Issue 7: the flow compiles to an Argo WorkflowTemplate whose resources, image and schedule come from the
config, without a cluster.

``argo-workflows create --only-json`` prints the template instead of submitting it, but still uploads the
code package, so a moto S3 server stands in for the bucket. Then the ``start`` step is run the way the
template's pod runs it (its environment, the uploaded package, no ``--with kubernetes``), which checks
that the deployed package carries the config and that steps on Kubernetes keep ``@kubernetes``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from hps_core.config.building import ConfigError
from hps_core.config.schema import PipelineConfig, ScheduleConfig
from hps_core.config.loading import load_config
from tests.s3_server import read_object, s3_server

pytestmark = pytest.mark.slow  # slow tier (--run-slow): Argo compile against a moto S3 server

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
ARGO_CONFIG = ROOT / "tests" / "configs" / "argo.toml"
GPU_STEPS = {"train_sft", "train_reward_model", "expand", "train_hps", "evaluate"}
CPU_STEPS = {"start", "validate", "build_groups", "join_models", "register", "end"}
METAFLOW_DEFAULT_IMAGE = "registry.example.com/metaflow-default:0"  # METAFLOW_KUBERNETES_CONTAINER_IMAGE


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3"), bucket="hps-argo") as env:
        yield env


def _compile(config: Path, s3_env: dict[str, str], workdir: Path) -> dict:
    env = {**os.environ, **s3_env, "METAFLOW_KUBERNETES_NAMESPACE": "hps-test",
           "METAFLOW_KUBERNETES_CONTAINER_IMAGE": METAFLOW_DEFAULT_IMAGE, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(FLOW), "--config", "config", str(config),
                           "argo-workflows", "create", "--only-json"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def _jobset(template: dict) -> dict:
    """A @parallel step's Argo resource template -> the JobSet it creates (Metaflow writes the manifest as YAML
    with one unquoted Argo expression, the worker count, that YAML would read as a mapping)."""
    manifest = re.sub(r"(replicas: )(\{\{=[^\n]*\}\})", r"\1'\2'", template["resource"]["manifest"])
    return yaml.safe_load(manifest)


def _steps(template: dict) -> dict[str, dict]:
    """Step name -> its pod's template: a container template, or for a @parallel gang (a JobSet) its control
    pod's spec with the resource template's retry strategy and the job's deadline."""
    steps = {t["metadata"]["annotations"]["metaflow/step_name"]: t for t in template["spec"]["templates"]
             if "metaflow/step_name" in t.get("metadata", {}).get("annotations", {})}
    for t in template["spec"]["templates"]:
        if "JobSet" in t.get("resource", {}).get("manifest", ""):
            jobset = _jobset(t)
            pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
            steps[jobset["metadata"]["annotations"]["metaflow/step_name"]] = {
                "container": pod["containers"][0], "retryStrategy": t.get("retryStrategy", {}),
                "activeDeadlineSeconds": pod["activeDeadlineSeconds"]}
    return steps


@pytest.fixture(scope="module")
def workflow(s3_env, tmp_path_factory) -> dict:
    return _compile(ARGO_CONFIG, s3_env, tmp_path_factory.mktemp("argo-create"))


def test_gpus_memory_and_cpu_only_on_training_and_evaluation_steps(workflow):
    """[resources] gpu = 1, memory = 24000, cpu = 6 -> exactly the five @resources steps; the rest get no GPU
    and Metaflow's small default pod."""
    res = load_config(ARGO_CONFIG).resources
    steps = _steps(workflow)
    assert set(steps) == GPU_STEPS | CPU_STEPS
    for name in GPU_STEPS:
        r = steps[name]["container"]["resources"]
        assert r["limits"].get("nvidia.com/gpu") == str(res.gpu), name
        assert float(r["requests"]["memory"].removesuffix("M")) == res.memory, name
        assert float(r["requests"]["cpu"]) == res.cpu, name
    for name in CPU_STEPS:
        r = steps[name]["container"]["resources"]
        assert not any("gpu" in key for key in r["limits"] or {}), name
        assert float(r["requests"]["memory"].removesuffix("M")) < res.memory, name


def test_production_steps_ask_for_what_they_use(s3_env, tmp_path):
    """flows/configs/production.toml: train_hps asks for 8 GPUs, 64 CPUs and 900 GB (FSDP over 8 ranks);
    expand and evaluate for one GPU, 16 CPUs and 200 GB; train_sft (adopts the base) and
    train_reward_model (names the configured one) for no GPU ([resources.<step>])."""
    template = _compile(ROOT / "flows" / "configs" / "production.toml", s3_env, tmp_path)
    steps = _steps(template)
    want = {"train_sft": (0, 4, 64000), "train_reward_model": (0, 2, 8000), "train_hps": (8, 64, 900000),
            "expand": (1, 16, 200000), "evaluate": (1, 16, 200000)}
    got = {name: (int((steps[name]["container"]["resources"].get("limits") or {}).get("nvidia.com/gpu", 0)),
                  int(float(steps[name]["container"]["resources"]["requests"]["cpu"])),
                  int(float(steps[name]["container"]["resources"]["requests"]["memory"].removesuffix("M"))))
           for name in GPU_STEPS}
    assert got == want
    res = load_config(ROOT / "flows" / "configs" / "production.toml").resources
    assert {name: res.of(name).processes_per_node for name in GPU_STEPS} == {
        "train_sft": 1, "train_reward_model": 1, "train_hps": 8, "expand": 1, "evaluate": 1}
    assert res.strategy == "fsdp" and load_config(ROOT / "flows" / "configs" / "production.toml").hps.lora.r == 0


def test_two_node_preference_training_compiles_to_a_gang(s3_env, tmp_path):
    """[resources.train_hps] nodes = 2, 8 GPUs and 8 processes per node: train_hps becomes a JobSet (Metaflow
    @parallel on Kubernetes) of a control pod and num-parallel - 1 workers, every pod asking for 8 GPUs and
    the step's CPU and memory, every pod told node 0's address and the gang's size; expand (the step before)
    hands the gang its size, which the flow reads from the same config (nodes_of)."""
    config = tmp_path / "two_nodes.toml"
    config.write_text(ARGO_CONFIG.read_text() + "\n[resources.train_hps]\ngpu = 8\nmemory = 600000\ncpu = 48\n"
                      "processes_per_node = 8\nnodes = 2\n")
    assert load_config(config).resources.of("train_hps").world_size == 16
    template = _compile(config, s3_env, tmp_path)
    gang = next(t for t in template["spec"]["templates"] if t["name"] == "train-hps")
    jobset = _jobset(gang)
    assert jobset["kind"] == "JobSet" and jobset["metadata"]["annotations"]["metaflow/step_name"] == "train_hps"
    control, worker = jobset["spec"]["replicatedJobs"]
    assert (control["name"], control["replicas"], worker["name"]) == ("control", 1, "worker")
    assert worker["replicas"] == "{{=asInt(inputs.parameters.workerCount)}}"
    dags = {t["name"]: {task["name"]: task for task in t["dag"]["tasks"]} for t in template["spec"]["templates"] if "dag" in t}
    call = {p["name"]: p["value"] for p in dags["expand-foreach-parallel"]["train-hps"]["arguments"]["parameters"]}
    assert call["workerCount"] == "{{=sprig.int(sprig.sub(sprig.int(inputs.parameters['num-parallel']),1))}}"
    fan_out = {p["name"]: p["value"] for p in dags["HPSFlow"]["expand-foreach-parallel"]["arguments"]["parameters"]}
    assert fan_out["num-parallel"] == "{{tasks.expand.outputs.parameters.num-parallel}}"  # expand's self.next(num_parallel=)
    for job in (control, worker):
        container = job["template"]["spec"]["template"]["spec"]["containers"][0]
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "8"
        assert (float(resources["requests"]["cpu"]), resources["requests"]["memory"]) == (48.0, "600000.0M")
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MF_WORLD_SIZE"] == "{{inputs.parameters.num-parallel}}"  # the gang's nodes
        assert env["MF_MASTER_ADDR"].startswith("{{inputs.parameters.jobset-name}}-control-0-0.")  # node 0's pod
        assert container["image"] == load_config(ARGO_CONFIG).resources.image
    # The other steps stay single pods; evaluate (the gang's join) asks for its own resources.
    steps = _steps(template)
    assert set(steps) == GPU_STEPS | CPU_STEPS
    assert steps["evaluate"]["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_retries_and_timeout_on_every_step_but_validate(workflow):
    """[resources] retries = 2, timeout_minutes = 90 -> Argo's retry limit and deadline on each step's
    template (Metaflow's @retry / @timeout, added by flows/step_limits.py); validate keeps @retry(times=0)."""
    res = load_config(ARGO_CONFIG).resources
    assert (res.retries, res.timeout_minutes) == (2, 90)
    steps = _steps(workflow)
    assert set(steps) == GPU_STEPS | CPU_STEPS
    for name, template in steps.items():
        limit = int(template.get("retryStrategy", {}).get("limit", 0))
        assert limit == (0 if name == "validate" else res.retries), (name, template.get("retryStrategy"))
        # Metaflow adds its own slack to the step's limit; the deadline is at least the configured time
        # and well under twice it.
        deadline = int(template["activeDeadlineSeconds"])
        assert res.timeout_minutes * 60 <= deadline < 2 * res.timeout_minutes * 60, (name, deadline)


def test_every_step_runs_the_config_image(workflow):
    """resources.image wins over METAFLOW_KUBERNETES_CONTAINER_IMAGE, on every step."""
    image = load_config(ARGO_CONFIG).resources.image
    assert image != METAFLOW_DEFAULT_IMAGE
    assert {name: t["container"]["image"] for name, t in _steps(workflow).items()} == {
        name: image for name in GPU_STEPS | CPU_STEPS}


def test_schedule_is_the_config_cron(workflow):
    """[schedule] -> the cron Metaflow turns into a CronWorkflow on deploy (without --only-json)."""
    schedule = load_config(ARGO_CONFIG).schedule
    cron = json.loads(workflow["metadata"]["annotations"]["metaflow/cron"])
    assert cron == {"schedule": schedule.cron, "tz": schedule.timezone} == {"schedule": "0 3 * * 1",
                                                                            "tz": "Europe/Berlin"}
    # The config is fixed at deploy time (it travels in the code package), so the template has no parameters.
    assert workflow["spec"]["arguments"]["parameters"] == []


def test_cron_must_have_five_fields():
    """Metaflow keeps only the first 5 fields, so an AWS-style 6-field cron would deploy a different schedule
    ("0 3 ? * MON *" -> "0 3 ? * MON"): refused at start-up instead."""
    PipelineConfig(schedule=ScheduleConfig(cron="0 3 * * 1")).check()
    with pytest.raises(ConfigError, match=r"schedule.cron = '0 3 \? \* MON \*' must have 5 fields"):
        PipelineConfig(schedule=ScheduleConfig(cron="0 3 ? * MON *")).check()


def test_empty_cron_and_image_mean_unscheduled_and_metaflow_default_image(s3_env, tmp_path):
    """cron = "" -> no schedule at all (not @schedule's daily default); image = "" -> Metaflow's image."""
    raw = tomllib.loads(ARGO_CONFIG.read_text())
    config = tmp_path / "unscheduled.toml"
    config.write_text(f"[resources]\ngpu = {raw['resources']['gpu']}\nimage = \"\"\n\n[schedule]\ncron = \"\"\n")
    template = _compile(config, s3_env, tmp_path)
    assert "metaflow/cron" not in template["metadata"]["annotations"]
    assert {t["container"]["image"] for t in _steps(template).values()} == {METAFLOW_DEFAULT_IMAGE}


def test_start_step_runs_as_its_pod_would_with_the_deployed_config(workflow, s3_env, tmp_path, hps_cache_dir,
                                                                   mlflow_server_uri):
    """The start template's environment and the uploaded code package, no config on the command line and no
    --with kubernetes (Argo passes none: the image mutator owns @kubernetes): the step sees the deployed
    config and records its pod, which only @kubernetes does. MLFLOW_TRACKING_URI stands in for the secret."""
    start = _steps(workflow)["start"]["container"]
    env_from_template = {e["name"]: e["value"].replace("{{workflow.name}}", "test")
                         for e in start["env"] if e.get("value") is not None}
    package = read_object(s3_env, env_from_template["METAFLOW_CODE_URL"])
    pod_dir = tmp_path / "pod"
    with tarfile.open(fileobj=io.BytesIO(package)) as tar:
        tar.extractall(pod_dir, filter="data")
    # A pod's working directory is its own; without this, Metaflow's local metadata would go to the nearest
    # .metaflow above tmp_path (e.g. /tmp/.metaflow) and the pod's relative metadata sync would not find it.
    (pod_dir / ".metaflow").mkdir()
    pod = {"METAFLOW_KUBERNETES_POD_NAME": "hpsflow-test-start", "METAFLOW_KUBERNETES_POD_NAMESPACE": "hps-test",
           "METAFLOW_KUBERNETES_POD_ID": "0000", "METAFLOW_KUBERNETES_SERVICE_ACCOUNT_NAME": "default",
           "METAFLOW_KUBERNETES_NODE_IP": "10.0.0.1"}
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env = {**keep, **s3_env, **env_from_template, **pod, "MLFLOW_TRACKING_URI": mlflow_server_uri,
           "HPS_CACHE_DIR": str(hps_cache_dir),
           "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": str(pod_dir / ".mf_code"), "METAFLOW_EXTRACTED_ROOT": str(pod_dir)}
    run_id = env_from_template["METAFLOW_RUN_ID"]
    top = [sys.executable, "hps_flow.py", "--quiet", "--metadata=local", "--environment=local", "--datastore=s3",
           f"--datastore-root={env['METAFLOW_DATASTORE_SYSROOT_S3']}", "--no-pylint"]
    for args in (["init", "--run-id", run_id, "--task-id", "t-params"],
                 ["step", "start", "--run-id", run_id, "--task-id", "t-start", "--input-paths",
                  f"{run_id}/_parameters/t-params"]):
        done = subprocess.run(top + args, cwd=pod_dir, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    read = ("import json; from metaflow import Task, namespace; namespace(None); "
            f"t = Task('HPSFlow/{run_id}/start/t-start'); "
            "print(json.dumps({'pod': t.metadata_dict.get('kubernetes-pod-name'), "
            "'config': t['resolved_config'].data}))")
    done = subprocess.run([sys.executable, "-c", read], cwd=pod_dir, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["pod"] == "hpsflow-test-start"
    assert seen["config"] == json.loads(json.dumps(load_config(ARGO_CONFIG).to_dict()))

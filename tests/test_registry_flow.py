"""Issue 6 end to end: the smoke flow run twice in a row against one MLflow server, then a crashing run.

- the first HPS version clears the floors and becomes champion; the second is judged by the gate against
  it and the outcome (tags + model card) is recorded on the version;
- ``python -m hps_core.lineage --json`` lists every link (both ways: MLflow -> Metaflow and back);
- ``--verify`` passes, and after one flipped byte in the generated raw file it fails naming that file;
- a run whose validate step crashes leaves its MLflow parent run FAILED and moves no alias.

Registered names are unique to this module so the session's shared server can also serve test_flow.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hps_core.config.loading import load_config
from hps_core.registry.promotion import judge
from hps_core.config.rules import parse_rules

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
SMOKE = ROOT / "tests" / "configs" / "smoke.toml"
SFT_NAME, POLICY_NAME = "regflow-sft", "regflow-policy"

pytestmark = pytest.mark.flow


def _env(uri: str, cache: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "HPS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}


def _run_flow(workdir: Path, config: Path, env: dict[str, str]):
    from metaflow import Runner

    with Runner(str(FLOW), cwd=str(workdir), env=env, show_output=False,
                config=[("config", str(config))]).run() as running:
        return running.status, running.run, running.stdout + running.stderr


def _lineage(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The CLI as a reviewer runs it, from the flow's working directory (where Metaflow's metadata is)."""
    return subprocess.run([sys.executable, "-m", "hps_core.lineage", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, mlflow_server_uri, hps_cache_dir):
    workdir = tmp_path_factory.mktemp("registry-flow")
    config = workdir / "smoke-registry.toml"
    # The floors are the mechanism under test, not the smoke model's quality: harmful_rate over 12 prompts of
    # a 1-epoch model swings across the default 0.2 floor with any change to training numerics.
    config.write_text(SMOKE.read_text() + f'\n[register]\nsft_name = "{SFT_NAME}"\npolicy_name = "{POLICY_NAME}"\n'
                      'floors = "margin_hardest > 0"\n')
    env = _env(mlflow_server_uri, hps_cache_dir)
    runs = []
    for seed in range(2):  # two seeds: two identical runs would tie on every metric, to the last bits
        seeded = workdir / f"smoke-registry-seed{seed}.toml"
        seeded.write_text(config.read_text() + f"\n[run]\nseed = {seed}\n")
        status, run, log = _run_flow(workdir, seeded, env)
        assert status == "successful", log[-5000:]
        runs.append(run)
    return workdir, config, env, runs


def test_second_version_is_judged_against_the_first_champion(two_runs, mlflow_server_uri):
    """v1: no champion yet, floors only -> champion. v2: judged against v1 with every gate rule; its
    recorded decision is what the gate gives on the two versions' recorded metrics, and the champion alias
    sits where that decision says."""
    from mlflow import MlflowClient

    _, config, _, runs = two_runs
    assert [r["end"].task.data.registered["hps"] for r in runs] == [f"models:/{POLICY_NAME}/1", f"models:/{POLICY_NAME}/2"]
    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
    v1, v2 = (client.get_model_version(POLICY_NAME, v) for v in ("1", "2"))
    assert v1.tags["gate.decision"] == "promoted" and v1.tags["gate.judged_against"] == "none (first version)"
    assert v2.tags["gate.judged_against"] == f"models:/{POLICY_NAME}/1"

    reg = load_config(config).register
    gate, floors = parse_rules(reg.gate, relative=True), parse_rules(reg.floors, relative=False)
    # The gate reads the logged models' metrics (full precision); the metric.* tags are rounded to 6 digits,
    # too coarse when two identical-seed runs differ only in the last bits.
    metrics = {v.version: {m.key: m.value for m in client.get_logged_model(v.source.removeprefix("models:/")).metrics}
               for v in (v1, v2)}
    expected = judge(metrics["2"], metrics["1"], gate=gate, floors=floors, champion_uri=f"models:/{POLICY_NAME}/1")
    assert v2.tags["gate.decision"] == expected.outcome
    assert all(rule.text in v2.tags["gate.reasons"] for rule in gate + floors)
    assert f"**Promotion gate: {expected.outcome}**" in v2.description
    assert f"champion models:/{POLICY_NAME}/1" in v2.description  # the comparison columns of the card
    champion = client.get_model_version_by_alias(POLICY_NAME, "champion").version
    assert champion == ("2" if expected.promote else "1")
    assert client.get_model_version_by_alias(POLICY_NAME, "challenger").version == "2"
    assert v2.tags["parent_version"] == f"models:/{SFT_NAME}/2" and v2.tags["method"] == "dpo-hps"
    for key in ("metaflow.pathspec", "git_commit", "config_digest", "raw_file_digests", "canonical_digest",
                "contract_suites", "contract_result", "groups_digest", "base_model", "reward_model"):
        assert v2.tags.get(key), key
    assert v2.tags["metaflow.pathspec"] == runs[1].pathspec


def test_lineage_json_lists_every_link_and_verify_passes(two_runs, mlflow_server_uri):
    workdir, _, env, runs = two_runs
    out = _lineage(workdir, env, f"models:/{POLICY_NAME}/2", "--json", "--verify")
    assert out.returncode == 0, out.stderr[-3000:]
    chain = json.loads(out.stdout)
    assert chain["links"] and all(v is True for v in chain["links"].values()), chain["links"]
    raw = workdir / ".hps" / "runs" / runs[1].id / "data" / "generated_world.jsonl"
    assert [f["path"] for f in chain["raw_files"]] == [str(raw.resolve())]
    assert chain["metaflow_run"]["pathspec"] == runs[1].pathspec
    assert f"mlflow_run:{chain['mlflow_parent_run']['run_id']}" in chain["metaflow_run"]["user_tags"]
    assert chain["parent_version"]["uri"] == f"models:/{SFT_NAME}/2"
    assert set(chain["step_artifacts"]) == {"validate", "build_groups", "evaluate"}
    assert [(c["status"], Path(c["path"]).name) for c in chain["verify"]] == [
        ("ok", "generated_world.jsonl"), ("ok", "canonical.parquet")]
    text = _lineage(workdir, env, f"models:/{POLICY_NAME}@challenger")  # the text form, by alias
    assert text.returncode == 0 and f"models:/{POLICY_NAME}/2" in text.stdout and "BROKEN" not in text.stdout


def test_flipped_byte_in_a_raw_file_fails_verify_naming_it(two_runs):
    workdir, _, env, runs = two_runs
    raw = (workdir / ".hps" / "runs" / runs[1].id / "data" / "generated_world.jsonl").resolve()
    data = bytearray(raw.read_bytes())
    data[len(data) // 2] ^= 0x01
    raw.write_bytes(bytes(data))
    out = _lineage(workdir, env, f"models:/{POLICY_NAME}/2", "--verify")
    assert out.returncode == 1
    assert f"MISMATCH {raw}" in out.stderr
    # The first run's files are untouched: its version still verifies.
    assert _lineage(workdir, env, f"models:/{POLICY_NAME}/1", "--verify").returncode == 0


def test_crashed_run_is_failed_in_mlflow_and_moves_no_alias(two_runs, mlflow_server_uri, tmp_path):
    """validate raises on a malformed raw file: the flow fails, its MLflow parent run is FAILED (with the
    failing step named), and champion/challenger stay where the two good runs left them."""
    from mlflow import MlflowClient

    workdir, config, env, _ = two_runs
    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
    before = {a: client.get_model_version_by_alias(POLICY_NAME, a).version for a in ("champion", "challenger")}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "unterminated\n')
    crash = tmp_path / "crash.toml"
    crash.write_text(config.read_text().replace("[data]\n", f'[data]\nsource = "{bad}"\n', 1))
    status, run, log = _run_flow(workdir, crash, env)
    assert status == "failed", log[-3000:]
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`metaflow.pathspec` = '{run.pathspec}' and attributes.run_name = 'hps-{run.id}'")
    assert [(r.info.status, r.data.tags.get("failed_step")) for r in parents] == [("FAILED", "validate")]
    assert {a: client.get_model_version_by_alias(POLICY_NAME, a).version for a in before} == before
